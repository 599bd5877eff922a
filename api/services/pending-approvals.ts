import { and, asc, eq, inArray } from 'drizzle-orm';
import { alias } from 'drizzle-orm/pg-core';
import type { Db } from '../../db/client.js';
import { accessRequests, approvals, entitlements, identities } from '../../db/schema.js';

/**
 * An approver's open tasks: the one selection behind `GET /v1/approvals/pending` and the
 * `/approvals` page, so the two can never disagree about what is waiting on someone.
 */
export async function pendingApprovalsOf(db: Pick<Db, 'select'>, approverId: string) {
  const subject = alias(identities, 'subject');
  return db
    .select({
      requestId: approvals.requestId,
      stage: approvals.stage,
      stageName: approvals.stageName,
      dueAt: approvals.dueAt,
      createdAt: approvals.createdAt,
      policyVersion: approvals.policyVersion,
      subjectId: accessRequests.subjectId,
      subjectDisplayName: subject.displayName,
      requesterId: accessRequests.requesterId,
      justification: accessRequests.justification,
      durationSeconds: accessRequests.requestedDurationSeconds,
      ticketRef: accessRequests.ticketRef,
      entitlementId: entitlements.id,
      entitlementName: entitlements.name,
      riskTier: entitlements.riskTier,
    })
    .from(approvals)
    .innerJoin(accessRequests, eq(accessRequests.id, approvals.requestId))
    .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
    .innerJoin(subject, eq(subject.id, accessRequests.subjectId))
    // 'active' too: an extension that policy sends back for approval.
    .where(and(eq(approvals.approverId, approverId), eq(approvals.status, 'pending'), inArray(accessRequests.status, ['pending_approval', 'active'])))
    .orderBy(asc(approvals.dueAt));
}
