import { and, eq, inArray, isNotNull, isNull, sql } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import { accessRequests, auditEvents, grants, reviewCampaigns, reviewItems, type ReviewItem } from '../../../db/schema.js';
import { appendAudit } from '../audit.js';
import type { Notifier } from '../notifier.js';
import { campaignDefinition, deadlineRuleFor, reminderTimes, reviewOutlivesGrant, type CampaignDefinition } from './definition.js';
import { isEligibleReviewer } from './reviewers.js';

/** The actor recorded for what the campaign's rules decide on their own. */
export const DEADLINE_ACTOR = 'rule:deadline';

/** The HTTP-request-id slot of a revoke the campaign sends: ties the lease's revoke event to the item. */
export const reviewRevokeRef = (itemId: string) => `review-item/${itemId}`;
/** Items the deadline rule decides per pass at most; the rest follow in the next pass, at once. */
const DEADLINE_BATCH = 500;
const attestationKey = (requestId: string, itemId: string) => `request/${requestId}/revoke_submitted/${reviewRevokeRef(itemId)}`;

export interface TickInput {
  campaignId: string;
  /** Workflow time (ms): the clock every deadline is measured on. */
  nowMs: number;
  /** Revocations allowed in flight at once. */
  window: number;
}

export interface RevokeToSignal {
  itemId: string;
  workflowId: string;
  actorId: string;
  httpRequestId: string;
  /** `mover` for a mover's micro-review (the access the old role justified), else `review`. */
  reason: 'review' | 'mover';
}

export interface TickResult {
  status: 'open' | 'closing' | 'closed' | 'cancelled';
  pending: number;
  revokesInFlight: number;
  toSignal: RevokeToSignal[];
  /** The next instant a reminder, an escalation or a deadline falls due (ms); null: none. */
  nextWakeAt: number | null;
}

type DeciderRow = Pick<ReviewItem, 'id' | 'grantId' | 'identityId' | 'riskTier' | 'reviewerId' | 'escalatedAt'>;

/**
 * One pass of a campaign over its rows, at workflow time `nowMs`: items whose grant ended are
 * skipped, due reminders go out, the deadline rule applies, escalations move items to the
 * fallback, up to `window` revocations are attested and handed back for the workflow to signal,
 * verified removals are copied onto the items, and the campaign closes when nothing is left.
 * Idempotent: every write is conditional on the row's state, every event keyed.
 */
export async function tickCampaign(deps: { db: Db; notifier: Pick<Notifier, 'send'> }, input: TickInput): Promise<TickResult> {
  const { db, notifier } = deps;
  const now = new Date(input.nowMs);
  const [campaign] = await db.select().from(reviewCampaigns).where(eq(reviewCampaigns.id, input.campaignId));
  if (!campaign) return { status: 'cancelled', pending: 0, revokesInFlight: 0, toSignal: [], nextWakeAt: null };
  // A cancelled campaign still sees its decided revokes through to verified removal (closedAt set then).
  if (campaign.status === 'closed' || (campaign.status === 'cancelled' && campaign.closedAt)) return { status: campaign.status, pending: 0, revokesInFlight: 0, toSignal: [], nextWakeAt: null };
  const cancelled = campaign.status === 'cancelled';
  const def = campaignDefinition.parse(campaign.definition);
  const key = (what: string) => `review-campaign/${campaign.id}/${what}`;

  if (!reviewOutlivesGrant(campaign.trigger)) await skipEnded(db, campaign.id, now);
  const revokeReason = campaign.trigger === 'mover' ? ('mover' as const) : ('review' as const);

  // ---- reminders: one message per reviewer per reminder instant ----
  const times = reminderTimes(def, campaign.createdAt.getTime(), campaign.dueAt.getTime());
  const due = times.filter((t) => t <= input.nowMs).length;
  if (due > 0) {
    const behind = await db
      .select({ id: reviewItems.id, reviewerId: reviewItems.reviewerId, grantId: reviewItems.grantId })
      .from(reviewItems)
      .where(and(eq(reviewItems.campaignId, campaign.id), eq(reviewItems.status, 'pending'), sql`${reviewItems.reminders} < ${due}`));
    const byReviewer = new Map<string, typeof behind>();
    for (const r of behind) byReviewer.set(r.reviewerId, [...(byReviewer.get(r.reviewerId) ?? []), r]);
    for (const [reviewerId, rows] of byReviewer) {
      await notifier.send({ event: 'review.reminder', identityId: reviewerId, recipientIds: [reviewerId], details: { campaignId: campaign.id, pendingItems: rows.length, dueAt: campaign.dueAt.toISOString() }, idempotencyKey: key(`reminder/${due}/${reviewerId}`) });
      await db.update(reviewItems).set({ reminders: due, remindedAt: now }).where(and(inArray(reviewItems.id, rows.map((r) => r.id)), eq(reviewItems.status, 'pending')));
    }
  }

  // ---- the deadline ----
  let moreOverdue = false;
  const escalationEnd = campaign.dueAt.getTime() + def.deadline.escalationSeconds * 1000;
  if (input.nowMs >= campaign.dueAt.getTime()) {
    const overdue = await db
      .select({ id: reviewItems.id, grantId: reviewItems.grantId, identityId: reviewItems.identityId, riskTier: reviewItems.riskTier, reviewerId: reviewItems.reviewerId, escalatedAt: reviewItems.escalatedAt, provenance: reviewItems.provenance })
      .from(reviewItems)
      .where(and(eq(reviewItems.campaignId, campaign.id), eq(reviewItems.status, 'pending'), isNull(reviewItems.escalatedAt)))
      .orderBy(reviewItems.id)
      .limit(DEADLINE_BATCH);
    // A large campaign is worked through in batches: the pass asks to be run again at once.
    moreOverdue = overdue.length === DEADLINE_BATCH;
    const escalatedDue = input.nowMs >= escalationEnd
      ? await db
          .select({ id: reviewItems.id, grantId: reviewItems.grantId, identityId: reviewItems.identityId, riskTier: reviewItems.riskTier, reviewerId: reviewItems.reviewerId, escalatedAt: reviewItems.escalatedAt, provenance: reviewItems.provenance })
          .from(reviewItems)
          .where(and(eq(reviewItems.campaignId, campaign.id), eq(reviewItems.status, 'pending'), isNotNull(reviewItems.escalatedAt)))
          .orderBy(reviewItems.id)
          .limit(DEADLINE_BATCH)
      : [];
    moreOverdue ||= escalatedDue.length === DEADLINE_BATCH;
    for (const item of [...overdue, ...escalatedDue]) {
      const rule = deadlineRuleFor(def, item.riskTier);
      if (rule === 'escalate' && !item.escalatedAt) {
        const to = def.reviewers.fallbackReviewerId;
        const approverIds = ((item.provenance as { approvals?: Array<{ approverId: string; onBehalfOf?: string | null }> }).approvals ?? []).flatMap((a) => [a.approverId, ...(a.onBehalfOf ? [a.onBehalfOf] : [])]);
        // The fallback never reviews their own access (nor, when excluded, what they approved),
        // and escalating to the same person changes nothing.
        const eligible = isEligibleReviewer(to, { holderId: item.identityId, approverIds }, { excludeOriginalApprover: def.reviewers.excludeOriginalApprover, isActive: () => true });
        if (eligible && to !== item.reviewerId) {
          await escalate(deps, campaign.id, item, to, now, key);
          continue;
        }
        await decideByRule(db, campaign.id, item, def.deadline.afterEscalation, now, 'no_escalation_target');
        continue;
      }
      if (rule === 'escalate') {
        if (input.nowMs >= escalationEnd) await decideByRule(db, campaign.id, item, def.deadline.afterEscalation, now, 'escalation_expired');
        continue;
      }
      await decideByRule(db, campaign.id, item, rule, now, 'deadline');
    }
  }

  // ---- verified removals onto the items ----
  await db.execute(sql`update ${reviewItems} set removal_verified_at = g.removal_verified_at from ${grants} g
    where ${reviewItems.campaignId} = ${campaign.id} and ${reviewItems.status} = 'revoked' and ${reviewItems.removalVerifiedAt} is null
      and g.id = ${reviewItems.grantId} and g.removal_verified_at is not null`);

  // ---- revocations: attest and hand back up to the window ----
  const unverified = await db
    .select({ id: reviewItems.id, grantId: reviewItems.grantId, decidedBy: reviewItems.decidedBy, grantStatus: grants.status, requestId: grants.requestId, workflowId: accessRequests.workflowId })
    .from(reviewItems)
    .innerJoin(grants, eq(grants.id, reviewItems.grantId))
    .leftJoin(accessRequests, eq(accessRequests.id, grants.requestId))
    .where(and(eq(reviewItems.campaignId, campaign.id), eq(reviewItems.status, 'revoked'), isNull(reviewItems.removalVerifiedAt)))
    .orderBy(reviewItems.decidedAt, reviewItems.id);
  const keys = unverified.filter((r) => r.requestId).map((r) => attestationKey(r.requestId!, r.id));
  const attested = new Set(keys.length ? (await db.select({ k: auditEvents.idempotencyKey }).from(auditEvents).where(inArray(auditEvents.idempotencyKey, keys))).map((r) => r.k) : []);
  const isAttested = (r: (typeof unverified)[number]) => !!r.requestId && attested.has(attestationKey(r.requestId, r.id));
  // In flight: sent by us, or already being removed for another reason (a lease that expired meanwhile).
  const inFlight = unverified.filter((r) => isAttested(r) || r.grantStatus !== 'active').length;
  const toSignal: RevokeToSignal[] = [];
  for (const r of unverified) {
    if (toSignal.length >= Math.max(0, input.window - inFlight)) break;
    if (isAttested(r) || r.grantStatus !== 'active' || !r.requestId || !r.workflowId) continue;
    const actorId = r.decidedBy ?? DEADLINE_ACTOR;
    const httpRequestId = reviewRevokeRef(r.id);
    // The attestation the lease's revocation activity looks for before it credits the actor
    // (activities/lease.ts revocationActor): the signal alone is only a claim.
    await db.transaction((tx) =>
      appendAudit(tx, {
        idempotencyKey: attestationKey(r.requestId!, r.id),
        actorType: actorId.startsWith('rule:') ? 'system' : 'identity',
        actorId,
        action: 'request.revoke_submitted',
        requestId: r.requestId,
        grantId: r.grantId,
        data: { reason: revokeReason, httpRequestId, campaignId: campaign.id, reviewItemId: r.id },
        at: now,
      }),
    );
    toSignal.push({ itemId: r.id, workflowId: r.workflowId, actorId, httpRequestId, reason: revokeReason });
  }

  // ---- progress and closing ----
  const [counts] = await db
    .select({
      pending: sql<number>`count(*) filter (where ${reviewItems.status} = 'pending')::int`,
      unverified: sql<number>`count(*) filter (where ${reviewItems.status} = 'revoked' and ${reviewItems.removalVerifiedAt} is null)::int`,
      nextEscalated: sql<boolean>`bool_or(${reviewItems.status} = 'pending' and ${reviewItems.escalatedAt} is not null)`,
    })
    .from(reviewItems)
    .where(eq(reviewItems.campaignId, campaign.id));
  const pending = counts?.pending ?? 0;
  const revokesLeft = counts?.unverified ?? 0;
  let status: TickResult['status'] = cancelled ? 'closing' : campaign.status;
  if (pending === 0) {
    if (!campaign.decidedAt) {
      await db.transaction(async (tx) => {
        await tx.update(reviewCampaigns).set({ decidedAt: now, status: 'closing' }).where(and(eq(reviewCampaigns.id, campaign.id), isNull(reviewCampaigns.decidedAt)));
        await appendAudit(tx, { idempotencyKey: key('decided'), actorType: 'workflow', actorId: campaign.workflowId, action: 'review.campaign_decided', data: { campaignId: campaign.id }, at: now });
      });
      status = 'closing';
    }
    if (revokesLeft === 0) {
      await db.transaction(async (tx) => {
        await tx.update(reviewCampaigns).set({ status: cancelled ? 'cancelled' : 'closed', closedAt: now }).where(and(eq(reviewCampaigns.id, campaign.id), isNotNull(reviewCampaigns.decidedAt)));
        await appendAudit(tx, { idempotencyKey: key('closed'), actorType: 'workflow', actorId: campaign.workflowId, action: 'review.campaign_closed', data: { campaignId: campaign.id, ...(cancelled ? { cancelled: true } : {}) }, at: now });
      });
      status = cancelled ? 'cancelled' : 'closed';
    }
  }
  const wakes = [...times.filter((t) => t > input.nowMs)];
  if (pending > 0) wakes.push(input.nowMs < campaign.dueAt.getTime() ? campaign.dueAt.getTime() : escalationEnd);
  if (counts?.nextEscalated && input.nowMs < escalationEnd) wakes.push(escalationEnd);
  if (moreOverdue) wakes.push(input.nowMs + 1);
  const nextWakeAt = wakes.length && pending > 0 ? Math.min(...wakes.filter((t) => t > input.nowMs), Infinity) : null;
  return { status, pending, revokesInFlight: inFlight + toSignal.length, toSignal, nextWakeAt: nextWakeAt === Infinity ? null : nextWakeAt };
}

/** Items whose grant is no longer live (expired, revoked for another reason) need no decision. */
async function skipEnded(db: Db, campaignId: string, now: Date): Promise<void> {
  const ended = await db
    .select({ id: reviewItems.id, grantId: reviewItems.grantId, identityId: reviewItems.identityId, grantStatus: grants.status })
    .from(reviewItems)
    .innerJoin(grants, eq(grants.id, reviewItems.grantId))
    .where(and(eq(reviewItems.campaignId, campaignId), eq(reviewItems.status, 'pending'), sql`${grants.status} <> 'active'`));
  for (const item of ended) {
    await db.transaction(async (tx) => {
      const done = await tx.update(reviewItems).set({ status: 'skipped', decidedAt: now, decidedBy: 'rule:grant_ended' }).where(and(eq(reviewItems.id, item.id), eq(reviewItems.status, 'pending'))).returning({ id: reviewItems.id });
      if (done.length) await appendAudit(tx, { idempotencyKey: `review-item/${item.id}/skipped`, actorType: 'system', actorId: 'rule:grant_ended', action: 'review.item_skipped', grantId: item.grantId, identityId: item.identityId, data: { campaignId, itemId: item.id, grantStatus: item.grantStatus }, at: now });
    });
  }
}

async function decideByRule(db: Db, campaignId: string, item: DeciderRow, rule: 'keep_and_flag' | 'revoke', now: Date, why: string): Promise<void> {
  const status = rule === 'revoke' ? 'revoked' : 'kept';
  await db.transaction(async (tx) => {
    const done = await tx
      .update(reviewItems)
      .set({ status, decidedAt: now, decidedBy: DEADLINE_ACTOR, flagged: rule === 'keep_and_flag', comment: `deadline rule: ${rule} (${why})` })
      .where(and(eq(reviewItems.id, item.id), eq(reviewItems.status, 'pending')))
      .returning({ id: reviewItems.id });
    if (done.length) {
      await appendAudit(tx, { idempotencyKey: `review-item/${item.id}/decided`, actorType: 'system', actorId: DEADLINE_ACTOR, action: 'review.item_decided', grantId: item.grantId, identityId: item.identityId, reason: why, data: { campaignId, itemId: item.id, decision: status === 'revoked' ? 'revoke' : 'keep', rule, flagged: rule === 'keep_and_flag', riskTier: item.riskTier }, at: now });
    }
  });
}

async function escalate(deps: { db: Db; notifier: Pick<Notifier, 'send'> }, campaignId: string, item: DeciderRow, to: string, now: Date, key: (w: string) => string): Promise<void> {
  const moved = await deps.db.transaction(async (tx) => {
    const done = await tx.update(reviewItems).set({ reviewerId: to, escalatedAt: now }).where(and(eq(reviewItems.id, item.id), eq(reviewItems.status, 'pending'), isNull(reviewItems.escalatedAt))).returning({ id: reviewItems.id });
    if (done.length) await appendAudit(tx, { idempotencyKey: `review-item/${item.id}/escalated`, actorType: 'system', actorId: DEADLINE_ACTOR, action: 'review.item_escalated', grantId: item.grantId, identityId: item.identityId, data: { campaignId, itemId: item.id, from: item.reviewerId, to }, at: now });
    return done.length > 0;
  });
  if (moved) await deps.notifier.send({ event: 'review.escalated', identityId: to, recipientIds: [to], details: { campaignId, itemId: item.id }, idempotencyKey: key(`escalated/${item.id}`) });
}

export type { CampaignDefinition };
