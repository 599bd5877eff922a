import { Context } from '@temporalio/activity';
import { eq } from 'drizzle-orm';
import { accessRequests, grants, reconciliationFindings } from '../db/schema.js';
import { appendAudit } from './domain/audit.js';
import { openMicroReview, type MicroReviewResult } from './domain/reviews/micro.js';
import type { ActivityDeps } from './deps.js';
import { BY_WORKFLOW, notFound, setRequestStatus, type Keyed, type LeaseRef } from './lease-context.js';

type AdoptedLease = Keyed & LeaseRef & { requestId: string; findingId: string };
/** Reconciliation's adoption (with its finding), or an operator's import. */
type AdoptionRecord = Keyed & LeaseRef & { requestId: string } & ({ from: 'reconciliation'; findingId: string } | { from: 'import' });

const BY_RECONCILIATION = { actorType: 'workflow', actorId: 'reconciliationWorkflow' } as const;

/**
 * The lease steps of access that existed before its lease: reconciliation's adoption
 * (docs/micro-reviews.md: the `discovered` grant row, and the micro-review that decides whether
 * the access stays) and an operator's import (docs/import.md: the `imported` grant row).
 */
export function createAdoptionActivities(deps: Pick<ActivityDeps, 'db' | 'policies' | 'temporal'>) {
  const { db, policies } = deps;

  return {
    /** The grant row is a `discovered` (`imported`) one from the start, the request goes straight to granting, and a finding points at the lease. */
    async recordAdoption(input: AdoptionRecord): Promise<void> {
      const adopted = input.from === 'reconciliation';
      await db.transaction(async (tx) => {
        await tx
          .insert(grants)
          .values({ id: input.grantId, identityId: input.subjectId, entitlementId: input.entitlementId, requestId: input.requestId, source: adopted ? 'discovered' : 'imported', status: 'granting' })
          .onConflictDoNothing();
        await setRequestStatus(tx, input.requestId, 'granting', { decidedAt: new Date() });
        if (adopted) await tx.update(reconciliationFindings).set({ grantId: input.grantId }).where(eq(reconciliationFindings.id, input.findingId));
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...(adopted ? BY_RECONCILIATION : BY_WORKFLOW),
          action: adopted ? 'reconciliation.adopted' : 'request.imported',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          reason: adopted ? 'unauthorized_access' : 'existing access imported',
          data: { ...(adopted ? { findingId: input.findingId } : {}), entitlementId: input.entitlementId },
        });
      });
    },

    /**
     * The micro-review (trigger `unauthorized_access`) by the holder's manager, the entitlement's
     * owner as fallback, due `reviews.unauthorizedReviewHours` after the lease began holding it.
     */
    async openAdoptionReview(input: AdoptedLease): Promise<MicroReviewResult> {
      const [request] = await db.select({ id: accessRequests.id }).from(accessRequests).where(eq(accessRequests.id, input.requestId));
      if (!request) throw notFound('request');
      const policy = await policies.active();
      const cfg = policy.document.reviews;
      const [g] = await db.select({ verifiedAt: grants.grantVerifiedAt }).from(grants).where(eq(grants.id, input.grantId));
      const from = g?.verifiedAt ?? new Date();
      return openMicroReview(
        // The campaign workflow runs on this worker's task queue, like the lease.
        { db, taskQueue: Context.current().info.taskQueue, actor: BY_RECONCILIATION, policyVersion: policy.version, ...(deps.temporal ? { temporal: deps.temporal } : {}) },
        {
          grantId: input.grantId,
          trigger: 'unauthorized_access',
          dueAt: new Date(from.getTime() + (cfg?.unauthorizedReviewHours ?? 72) * 3600_000),
          reason: `unexplained membership found by reconciliation (finding ${input.findingId})`,
          deadlineRule: cfg?.unauthorizedDeadline ?? 'revoke',
        },
      );
    },
  };
}
