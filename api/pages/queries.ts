import { and, asc, desc, eq, inArray } from 'drizzle-orm';
import { alias } from 'drizzle-orm/pg-core';
import { settingsOf } from '../../activities/domain/break-glass.js';
import { pendingApprovalsOf } from '../services/pending-approvals.js';
import type { Db } from '../../db/client.js';
import {
  accessRequests,
  actionLinkUses,
  approvals,
  auditEvents,
  breakGlassChallenges,
  entitlements,
  grants,
  identities,
  reviewCampaigns,
  reviewItems,
  systems,
  type ReviewItem,
} from '../../db/schema.js';

/**
 * Read models for the pages: what an approver needs on screen, and nothing more. Every rule that
 * changes state stays in api/services; these only read.
 */

export interface ApprovalView {
  request: { id: string; status: string; justification: string; durationSeconds: number | null; ticketRef: string | null; createdAt: Date; startAt: Date | null };
  subject: { displayName: string; username: string; department: string | null; kind: string };
  requester: { displayName: string; self: boolean };
  entitlement: { name: string; description: string | null; riskTier: string; system: string };
  /** This approver's own tasks on the request (never the other approvers' comments). */
  myTasks: Array<{ stage: number; stageName: string; status: string; dueAt: Date; onBehalfOf: string | null }>;
  /** The open task, when there is one: the page offers the decision form only then. */
  open: { stage: number; stageName: string; dueAt: Date; requireComment: boolean } | null;
  /** The policy rules that shaped the routing, as the workflow recorded them. */
  policyReasons: string[];
  /** Separation-of-duties notes: SoD rules that fired, and the entitlements this one conflicts with that the subject holds. */
  sodNotes: string[];
  /** What the subject holds right now (active leases). */
  currentAccess: Array<{ entitlement: string; riskTier: string; system: string; expiresAt: Date | null; source: string }>;
}

/**
 * The approval page's content for one approver, or null when that approver has no task on the
 * request (the page then says nothing about it, as the API says "not found").
 */
export async function approvalView(db: Pick<Db, 'select'>, requestId: string, approverId: string): Promise<ApprovalView | null> {
  const subject = alias(identities, 'subject');
  const requester = alias(identities, 'requester');
  const [row] = await db
    .select({
      r: accessRequests,
      subject: { displayName: subject.displayName, username: subject.username, department: subject.department, kind: subject.kind },
      requesterName: requester.displayName,
      e: { name: entitlements.name, description: entitlements.description, riskTier: entitlements.riskTier, sodConflicts: entitlements.sodConflicts, id: entitlements.id },
      system: systems.name,
    })
    .from(accessRequests)
    .innerJoin(subject, eq(subject.id, accessRequests.subjectId))
    .innerJoin(requester, eq(requester.id, accessRequests.requesterId))
    .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
    .innerJoin(systems, eq(systems.id, entitlements.systemId))
    .where(eq(accessRequests.id, requestId));
  if (!row) return null;
  const mine = await db
    .select({ stage: approvals.stage, stageName: approvals.stageName, status: approvals.status, dueAt: approvals.dueAt, onBehalfOf: approvals.onBehalfOf })
    .from(approvals)
    .where(and(eq(approvals.requestId, requestId), eq(approvals.approverId, approverId)))
    .orderBy(asc(approvals.stage));
  if (mine.length === 0) return null;

  const [opened, held] = await Promise.all([
    db
      .select({ data: auditEvents.data })
      .from(auditEvents)
      .where(and(eq(auditEvents.requestId, requestId), inArray(auditEvents.action, ['approval.stage_opened', 'extension.stage_opened', 'review.stage_opened'])))
      .orderBy(asc(auditEvents.seq)),
    db
      .select({ id: entitlements.id, entitlement: entitlements.name, riskTier: entitlements.riskTier, system: systems.name, expiresAt: grants.expiresAt, source: grants.source })
      .from(grants)
      .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
      .innerJoin(systems, eq(systems.id, entitlements.systemId))
      .where(and(eq(grants.identityId, row.r.subjectId), inArray(grants.status, ['granting', 'active'])))
      .orderBy(asc(entitlements.name)),
  ]);
  const policyReasons = [...new Set(opened.flatMap((o) => ((o.data as { rules?: unknown }).rules as unknown[] | undefined) ?? []).map(String))];
  const sodNotes = policyReasons.filter((r) => r.startsWith('sod/'));
  const conflicting = held.filter((h) => row.e.sodConflicts.includes(h.id));
  for (const c of conflicting) sodNotes.push(`the subject already holds ${c.entitlement}, listed as a conflict of ${row.e.name}`);
  const open = mine.find((m) => m.status === 'pending');
  return {
    request: { id: row.r.id, status: row.r.status, justification: row.r.justification, durationSeconds: row.r.requestedDurationSeconds, ticketRef: row.r.ticketRef, createdAt: row.r.createdAt, startAt: row.r.startAt },
    subject: row.subject,
    requester: { displayName: row.requesterName, self: row.r.requesterId === row.r.subjectId },
    entitlement: { name: row.e.name, description: row.e.description, riskTier: row.e.riskTier, system: row.system },
    myTasks: mine,
    open: open ? { stage: open.stage, stageName: open.stageName, dueAt: open.dueAt, requireComment: open.stageName.startsWith('sod-') } : null,
    policyReasons,
    sodNotes,
    currentAccess: held.map(({ id: _id, ...h }) => h),
  };
}

/** Whether an action link's single use has already been claimed. */
export async function linkUsed(db: Pick<Db, 'select'>, jti: string): Promise<boolean> {
  const [row] = await db.select({ jti: actionLinkUses.jti }).from(actionLinkUses).where(eq(actionLinkUses.jti, jti));
  return !!row;
}

/** The signed-in approver's open tasks (the selection GET /v1/approvals/pending makes), with names for the screen. */
export async function pendingApprovals(db: Pick<Db, 'select'>, approverId: string) {
  const rows = await pendingApprovalsOf(db, approverId);
  return rows.map((r) => ({ ...r, subject: r.subjectDisplayName, entitlement: r.entitlementName }));
}

/** The entitlements that allow break-glass, with their cap (who may invoke is the service's rule, checked on invoke). */
export async function breakGlassEntitlements(db: Pick<Db, 'select'>) {
  const rows = await db
    .select({ id: entitlements.id, name: entitlements.name, riskTier: entitlements.riskTier, system: systems.name, breakGlassAllowed: entitlements.breakGlassAllowed, breakGlass: entitlements.breakGlass })
    .from(entitlements)
    .innerJoin(systems, eq(systems.id, entitlements.systemId))
    .where(eq(entitlements.breakGlassAllowed, true))
    .orderBy(asc(entitlements.name));
  return rows.flatMap((r) => {
    const s = settingsOf(r);
    return s ? [{ id: r.id, name: r.name, riskTier: r.riskTier, system: r.system, maxDurationSeconds: s.maxDurationSeconds }] : [];
  });
}

/** The invoker's confirmed break-glass uses, newest first, with the lease they started. */
export async function breakGlassUses(db: Pick<Db, 'select'>, invokerId: string, requestId?: string) {
  return db
    .select({
      requestId: accessRequests.id,
      status: accessRequests.status,
      entitlement: entitlements.name,
      riskTier: entitlements.riskTier,
      incidentRef: breakGlassChallenges.incidentRef,
      confirmedAt: breakGlassChallenges.confirmedAt,
      grantStatus: grants.status,
      expiresAt: grants.expiresAt,
    })
    .from(breakGlassChallenges)
    .innerJoin(accessRequests, eq(accessRequests.id, breakGlassChallenges.requestId))
    .innerJoin(entitlements, eq(entitlements.id, breakGlassChallenges.entitlementId))
    .leftJoin(grants, eq(grants.requestId, accessRequests.id))
    .where(and(eq(breakGlassChallenges.invokerId, invokerId), requestId ? eq(accessRequests.id, requestId) : undefined))
    .orderBy(desc(breakGlassChallenges.confirmedAt))
    .limit(20);
}

/** The reviewer's decided items (the service lists the open ones): for the "decided" filter and the reviewer's own progress. */
export async function decidedReviewItems(db: Pick<Db, 'select'>, reviewerId: string, f: { campaignId?: string | undefined; riskTier?: string | undefined }) {
  const holder = alias(identities, 'holder');
  return db
    .select({
      itemId: reviewItems.id,
      campaignId: reviewItems.campaignId,
      campaignName: reviewCampaigns.name,
      holderUsername: holder.username,
      entitlementName: entitlements.name,
      riskTier: reviewItems.riskTier,
      status: reviewItems.status,
      decidedAt: reviewItems.decidedAt,
      comment: reviewItems.comment,
      removalVerifiedAt: reviewItems.removalVerifiedAt,
    })
    .from(reviewItems)
    .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
    .innerJoin(holder, eq(holder.id, reviewItems.identityId))
    .innerJoin(entitlements, eq(entitlements.id, reviewItems.entitlementId))
    .where(
      and(
        eq(reviewItems.decidedBy, reviewerId),
        f.campaignId ? eq(reviewItems.campaignId, f.campaignId) : undefined,
        f.riskTier ? eq(reviewItems.riskTier, f.riskTier as ReviewItem['riskTier']) : undefined,
      ),
    )
    .orderBy(desc(reviewItems.decidedAt))
    .limit(500);
}
