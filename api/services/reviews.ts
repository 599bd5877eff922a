import type { Client } from '@temporalio/client';
import { and, asc, desc, eq, inArray, sql, type SQL } from 'drizzle-orm';
import { appendAudit } from '../../activities/domain/audit.js';
import { loadEvidenceSigner, type EvidenceSigner } from '../../activities/domain/evidence/index.js';
import { commentRequired, reviewOutlivesGrant, type CampaignDefinition } from '../../activities/domain/reviews/definition.js';
import { openMicroReview, startCampaignWorkflow } from '../../activities/domain/reviews/micro.js';
import type { PolicyImpact } from '../../activities/domain/policy/impact.js';
import type { PolicyDocument } from '../../activities/domain/policy/schema.js';
import { openCampaign } from '../../activities/domain/reviews/open.js';
import { buildReviewReport, reviewReportCsv } from '../../activities/domain/reviews/report.js';
import { isEligibleReviewer, ReviewRuleError } from '../../activities/domain/reviews/reviewers.js';
import type { Db } from '../../db/client.js';
import { accessRequests, entitlements, grants, identities, reviewCampaigns, reviewItems, type ReviewCampaign, type ReviewItem } from '../../db/schema.js';
import type { Config } from '../../temporal/config.js';
import { ensureReviewSchedules } from '../../temporal/review-workflows.js';
import type { Logger } from '../../temporal/logger.js';
import { extendUpdate, reviewItemsChangedSignal, shortenUpdate } from '../../workflows/messages.js';
import { actorRef, hasRole, identityOf, type Principal } from '../auth.js';
import { badRequest, HttpError, notFound } from '../errors.js';
import { fromUpdateError, sendUpdate } from './update-rejections.js';

export interface ReviewServiceDeps {
  db: Db;
  temporal: Pick<Client, 'workflow' | 'schedule'>;
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE' | 'ACCESSLOOP_DATA_DIR' | 'ACCESSLOOP_EVIDENCE_SIGNING_KEY'>;
  log: Logger;
}

export interface ReviewActor {
  principal: Principal;
  httpRequestId: string;
}

export interface DecisionBody {
  decision: 'keep' | 'revoke';
  comment?: string | undefined;
  newExpiresAt?: string | undefined;
}

/** The one mapping of the review rules' refusals onto the HTTP contract. */
export function fromReviewError(e: unknown): never {
  if (!(e instanceof ReviewRuleError)) throw e;
  const status: Record<ReviewRuleError['code'], number> = { empty_scope: 422, no_eligible_reviewer: 422, self_review: 403, not_reviewer: 403, not_eligible: 403, not_pending: 409, grant_not_active: 409, comment_required: 400, not_found: 404 };
  throw new HttpError(status[e.code], e.code, e.message, e.details);
}

const refuse = (code: ReviewRuleError['code'], message: string): never => {
  throw new ReviewRuleError(code, message);
};

/**
 * The access-review rules: open a campaign, decide, bulk-keep, delegate, read progress and the
 * reports. Each writes its rows and hash-chained event in one transaction, then tells the
 * campaign's workflow to look (`reviewItemsChanged`); the workflow applies the consequences.
 */
export function createReviewService(deps: ReviewServiceDeps) {
  const { db, temporal, config, log } = deps;
  // The evidence key signs the JSON report (loaded on first use; a failed load is retried).
  let signer: Promise<EvidenceSigner> | undefined;
  const getSigner = () => {
    signer ??= loadEvidenceSigner({ key: config.ACCESSLOOP_EVIDENCE_SIGNING_KEY, dataDir: config.ACCESSLOOP_DATA_DIR }).catch((e: unknown) => {
      signer = undefined;
      throw e;
    });
    return signer;
  };

  async function loadCampaign(id: string): Promise<ReviewCampaign> {
    const [c] = await db.select().from(reviewCampaigns).where(eq(reviewCampaigns.id, id));
    if (!c) throw notFound('review campaign');
    return c;
  }

  async function loadItem(id: string): Promise<{ item: ReviewItem; campaign: ReviewCampaign }> {
    const [row] = await db.select({ item: reviewItems, campaign: reviewCampaigns }).from(reviewItems).innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId)).where(eq(reviewItems.id, id));
    if (!row) throw notFound('review item');
    return row;
  }

  /** Best effort: the workflow also looks on its own timer, so a lost nudge only delays. */
  async function nudge(campaign: Pick<ReviewCampaign, 'workflowId'>): Promise<void> {
    await temporal.workflow
      .getHandle(campaign.workflowId)
      .signal(reviewItemsChangedSignal)
      .catch((err: unknown) => log.warn({ workflowId: campaign.workflowId, errorType: err instanceof Error ? err.name : typeof err }, 'could not nudge the review campaign workflow'));
  }

  async function progress(campaignId: string) {
    const [c] = await db
      .select({
        items: sql<number>`count(*)::int`,
        pending: sql<number>`count(*) filter (where ${reviewItems.status} = 'pending')::int`,
        kept: sql<number>`count(*) filter (where ${reviewItems.status} = 'kept')::int`,
        revoked: sql<number>`count(*) filter (where ${reviewItems.status} = 'revoked')::int`,
        skipped: sql<number>`count(*) filter (where ${reviewItems.status} = 'skipped')::int`,
        flagged: sql<number>`count(*) filter (where ${reviewItems.flagged})::int`,
        escalated: sql<number>`count(*) filter (where ${reviewItems.escalatedAt} is not null)::int`,
        removalVerified: sql<number>`count(*) filter (where ${reviewItems.removalVerifiedAt} is not null)::int`,
      })
      .from(reviewItems)
      .where(eq(reviewItems.campaignId, campaignId));
    const p = c ?? { items: 0, pending: 0, kept: 0, revoked: 0, skipped: 0, flagged: 0, escalated: 0, removalVerified: 0 };
    return { ...p, completionPercent: p.items ? Math.round(((p.items - p.pending) / p.items) * 1000) / 10 : 100 };
  }

  async function create({ principal: p, httpRequestId }: ReviewActor, definition: CampaignDefinition) {
    if (new Date(definition.dueAt).getTime() <= Date.now()) throw badRequest('due_in_past', 'dueAt must lie in the future');
    const opened = await openCampaign(db, {
      definition,
      kind: 'campaign',
      trigger: 'api',
      actor: { actorType: p.identityId ? 'identity' : 'client', actorId: actorRef(p) },
      data: { httpRequestId },
      now: new Date(),
    }).catch(fromReviewError);
    await startCampaignWorkflow(temporal, config.TEMPORAL_TASK_QUEUE, opened.campaign);
    return { ...opened.campaign, progress: await progress(opened.campaign.id) };
  }

  async function list(query: { status?: ReviewCampaign['status'] | undefined; limit: number }) {
    const rows = await db
      .select()
      .from(reviewCampaigns)
      .where(query.status ? eq(reviewCampaigns.status, query.status) : undefined)
      .orderBy(desc(reviewCampaigns.createdAt))
      .limit(query.limit);
    return { items: rows };
  }

  async function get(id: string) {
    const c = await loadCampaign(id);
    return { ...c, progress: await progress(id), overdue: c.status === 'open' && c.dueAt.getTime() < Date.now() };
  }

  async function items(id: string, query: { status?: ReviewItem['status'] | undefined; reviewerId?: string | undefined; limit: number }) {
    await loadCampaign(id);
    const where: SQL[] = [eq(reviewItems.campaignId, id)];
    if (query.status) where.push(eq(reviewItems.status, query.status));
    if (query.reviewerId) where.push(eq(reviewItems.reviewerId, query.reviewerId));
    return { items: await db.select().from(reviewItems).where(and(...where)).orderBy(asc(reviewItems.createdAt), asc(reviewItems.id)).limit(query.limit) };
  }

  /** The caller's open review tasks, with enough context to decide. */
  async function pending(p: Principal, query: { campaignId?: string | undefined; riskTier?: ReviewItem['riskTier'] | undefined; limit: number }) {
    const me = identityOf(p);
    const where: SQL[] = [eq(reviewItems.reviewerId, me), eq(reviewItems.status, 'pending'), eq(reviewCampaigns.status, 'open')];
    if (query.campaignId) where.push(eq(reviewItems.campaignId, query.campaignId));
    if (query.riskTier) where.push(eq(reviewItems.riskTier, query.riskTier));
    const rows = await db
      .select({
        itemId: reviewItems.id,
        campaignId: reviewItems.campaignId,
        campaignName: reviewCampaigns.name,
        kind: reviewCampaigns.kind,
        dueAt: reviewCampaigns.dueAt,
        grantId: reviewItems.grantId,
        holderId: reviewItems.identityId,
        holderUsername: identities.username,
        entitlementId: reviewItems.entitlementId,
        entitlementName: entitlements.name,
        riskTier: reviewItems.riskTier,
        escalatedAt: reviewItems.escalatedAt,
        lastUsedAt: reviewItems.lastUsedAt,
        provenance: reviewItems.provenance,
        commentRequired: sql<boolean>`${reviewItems.riskTier} = 'privileged'`,
      })
      .from(reviewItems)
      .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
      .innerJoin(identities, eq(identities.id, reviewItems.identityId))
      .innerJoin(entitlements, eq(entitlements.id, reviewItems.entitlementId))
      .where(and(...where))
      .orderBy(asc(reviewCampaigns.dueAt), asc(reviewItems.id))
      .limit(query.limit);
    return { items: rows };
  }

  /** A keep with a new end moves the lease's expiry through its workflow's own updates (extend later, shorten earlier). */
  async function moveLeaseEnd(item: ReviewItem, reviewerId: string, newExpiresAt: Date, campaignId: string, httpRequestId: string) {
    const [g] = await db.select({ expiresAt: grants.expiresAt, workflowId: accessRequests.workflowId }).from(grants).innerJoin(accessRequests, eq(accessRequests.id, grants.requestId)).where(eq(grants.id, item.grantId));
    if (!g) refuse('grant_not_active', 'the grant has no lease workflow');
    if (newExpiresAt.getTime() <= Date.now()) throw badRequest('invalid_expiry', 'newExpiresAt must lie in the future');
    const justification = `access review ${campaignId}`;
    const handle = temporal.workflow.getHandle(g!.workflowId);
    if (g!.expiresAt && newExpiresAt.getTime() < g!.expiresAt.getTime()) {
      return sendUpdate((updateId) => handle.executeUpdate(shortenUpdate, { updateId, args: [{ actorId: reviewerId, expiresAt: newExpiresAt.toISOString(), justification, httpRequestId }] }), `review-item/${item.id}/expiry`).catch(fromUpdateError);
    }
    const durationSeconds = Math.ceil((newExpiresAt.getTime() - Date.now()) / 1000);
    return sendUpdate((updateId) => handle.executeUpdate(extendUpdate, { updateId, args: [{ actorId: reviewerId, durationSeconds, justification, httpRequestId }] }), `review-item/${item.id}/expiry`).catch(fromUpdateError);
  }

  /** Checks that the caller may decide this item now, as it stands (before any write). */
  function mayDecide(me: string, item: ReviewItem, campaign: ReviewCampaign, body: DecisionBody) {
    if (item.identityId === me) refuse('self_review', 'nobody reviews their own access');
    if (item.reviewerId !== me) refuse('not_reviewer', 'only the assigned reviewer decides this item');
    if (item.status !== 'pending' || campaign.status !== 'open') refuse('not_pending', `the item is ${item.status}`);
    if (commentRequired(body.decision, item.riskTier) && !body.comment?.trim()) {
      refuse('comment_required', body.decision === 'revoke' ? 'a revoke needs a comment' : 'keeping privileged access needs a comment');
    }
  }

  async function record(me: string, item: ReviewItem, campaign: ReviewCampaign, body: DecisionBody, httpRequestId: string, expiresAt?: string): Promise<ReviewItem> {
    const status = body.decision === 'revoke' ? 'revoked' : 'kept';
    return db.transaction(async (tx) => {
      const [g] = await tx.select({ status: grants.status }).from(grants).where(eq(grants.id, item.grantId));
      if (!g || (g.status !== 'active' && !reviewOutlivesGrant(campaign.trigger))) refuse('grant_not_active', `the grant is ${g?.status ?? 'gone'}`);
      const [done] = await tx
        .update(reviewItems)
        .set({ status, decidedAt: new Date(), decidedBy: me, comment: body.comment ?? null, newExpiresAt: body.newExpiresAt ? new Date(body.newExpiresAt) : null })
        .where(and(eq(reviewItems.id, item.id), eq(reviewItems.status, 'pending'), eq(reviewItems.reviewerId, me)))
        .returning();
      if (!done) refuse('not_pending', 'the item was decided or reassigned meanwhile');
      await appendAudit(tx, {
        idempotencyKey: `review-item/${item.id}/decided`,
        actorType: 'identity',
        actorId: me,
        action: 'review.item_decided',
        grantId: item.grantId,
        identityId: item.identityId,
        reason: body.comment ?? null,
        data: { campaignId: campaign.id, itemId: item.id, decision: body.decision, riskTier: item.riskTier, httpRequestId, ...(expiresAt ? { newExpiresAt: expiresAt } : {}), ...(item.reviewerId !== item.assignedReviewerId ? { onBehalfOf: item.assignedReviewerId } : {}) },
      });
      return done!;
    });
  }

  async function decide({ principal: p, httpRequestId }: ReviewActor, itemId: string, body: DecisionBody) {
    const me = identityOf(p);
    const { item, campaign } = await loadItem(itemId);
    try {
      mayDecide(me, item, campaign, body);
      let expiresAt: string | undefined;
      if (body.decision === 'keep' && body.newExpiresAt) expiresAt = (await moveLeaseEnd(item, me, new Date(body.newExpiresAt), campaign.id, httpRequestId)).expiresAt;
      const done = await record(me, item, campaign, body, httpRequestId, expiresAt);
      await nudge(campaign);
      return { ...done, ...(expiresAt ? { leaseExpiresAt: expiresAt } : {}) };
    } catch (e) {
      return fromReviewError(e);
    }
  }

  /** Keeps many items at once; each is checked on its own and answered on its own (privileged ones still need the comment). */
  async function decideMany({ principal: p, httpRequestId }: ReviewActor, body: { itemIds: string[]; decision: 'keep'; comment?: string | undefined }) {
    const me = identityOf(p);
    const rows = await db.select({ item: reviewItems, campaign: reviewCampaigns }).from(reviewItems).innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId)).where(inArray(reviewItems.id, body.itemIds));
    const byId = new Map(rows.map((r) => [r.item.id, r]));
    const results: Array<{ itemId: string; status: string; error?: { code: string; message: string } }> = [];
    const touched = new Map<string, ReviewCampaign>();
    for (const itemId of body.itemIds) {
      const row = byId.get(itemId);
      if (!row) {
        results.push({ itemId, status: 'error', error: { code: 'not_found', message: 'review item not found' } });
        continue;
      }
      try {
        mayDecide(me, row.item, row.campaign, { decision: 'keep', comment: body.comment });
        const done = await record(me, row.item, row.campaign, { decision: 'keep', comment: body.comment }, `${httpRequestId}/${itemId}`);
        touched.set(row.campaign.id, row.campaign);
        results.push({ itemId, status: done.status });
      } catch (e) {
        if (!(e instanceof ReviewRuleError)) throw e;
        results.push({ itemId, status: 'error', error: { code: e.code, message: e.message } });
      }
    }
    await Promise.all([...touched.values()].map(nudge));
    return { decided: results.filter((r) => r.status !== 'error').length, results };
  }

  /** The reviewer hands one item to someone else; never to its holder, never to an excluded original approver. */
  async function delegate({ principal: p, httpRequestId }: ReviewActor, itemId: string, body: { toIdentityId: string; comment: string }) {
    const me = identityOf(p);
    const { item, campaign } = await loadItem(itemId);
    try {
      if (item.reviewerId !== me && !hasRole(p, 'operator')) refuse('not_reviewer', 'only the assigned reviewer (or an operator) delegates this item');
      if (item.status !== 'pending' || campaign.status !== 'open') refuse('not_pending', `the item is ${item.status}`);
      if (body.toIdentityId === item.identityId) refuse('self_review', 'an item cannot be delegated to the holder of the access');
      if (body.toIdentityId === item.reviewerId) throw badRequest('same_reviewer', 'the item is already assigned to that identity');
      const [to] = await db.select({ id: identities.id, status: identities.status }).from(identities).where(eq(identities.id, body.toIdentityId));
      if (!to) throw notFound('identity');
      const def = campaign.definition as { reviewers?: { excludeOriginalApprover?: boolean } };
      const approverIds = ((item.provenance as { approvals?: Array<{ approverId: string; onBehalfOf?: string | null }> }).approvals ?? []).flatMap((a) => [a.approverId, ...(a.onBehalfOf ? [a.onBehalfOf] : [])]);
      const eligible = isEligibleReviewer(to.id, { holderId: item.identityId, approverIds }, { excludeOriginalApprover: def.reviewers?.excludeOriginalApprover === true, isActive: () => to.status === 'active' });
      if (!eligible) refuse('not_eligible', 'that identity may not review this item (inactive, or an original approver the campaign excludes)');
      const updated = await db.transaction(async (tx) => {
        const [done] = await tx.update(reviewItems).set({ reviewerId: to.id }).where(and(eq(reviewItems.id, item.id), eq(reviewItems.status, 'pending'), eq(reviewItems.reviewerId, item.reviewerId))).returning();
        if (!done) refuse('not_pending', 'the item was decided or reassigned meanwhile');
        await appendAudit(tx, {
          idempotencyKey: `review-item/${item.id}/delegated/${httpRequestId}`,
          actorType: p.identityId ? 'identity' : 'client',
          actorId: actorRef(p),
          action: 'review.item_delegated',
          grantId: item.grantId,
          identityId: item.identityId,
          reason: body.comment,
          data: { campaignId: campaign.id, itemId: item.id, from: item.reviewerId, to: to.id, httpRequestId },
        });
        return done!;
      });
      await nudge(campaign);
      return updated;
    } catch (e) {
      if (e instanceof HttpError) throw e;
      return fromReviewError(e);
    }
  }

  /**
   * Ends a campaign without deciding what is left: pending items are skipped (`rule:cancelled`),
   * decisions already made stand — a revoke still goes through the lease's verified removal — and
   * the campaign ends `cancelled` once those are verified. A break-glass post-use review is a
   * mandatory control and cannot be cancelled; it is decided.
   */
  async function cancel({ principal: p, httpRequestId }: ReviewActor, id: string, body: { reason: string }) {
    const c = await loadCampaign(id);
    if (c.trigger === 'break_glass') throw new HttpError(409, 'mandatory_review', 'a post-use review of a break-glass cannot be cancelled; decide it');
    if (c.status !== 'open' && c.status !== 'closing') throw new HttpError(409, 'not_open', `the campaign is ${c.status}`);
    const now = new Date();
    const skipped = await db.transaction(async (tx) => {
      const [moved] = await tx
        .update(reviewCampaigns)
        .set({ status: 'cancelled', decidedAt: sql`coalesce(${reviewCampaigns.decidedAt}, ${now.toISOString()}::timestamptz)` })
        .where(and(eq(reviewCampaigns.id, id), inArray(reviewCampaigns.status, ['open', 'closing'])))
        .returning({ id: reviewCampaigns.id });
      if (!moved) throw new HttpError(409, 'not_open', 'the campaign was closed or cancelled meanwhile');
      const rows = await tx
        .update(reviewItems)
        .set({ status: 'skipped', decidedAt: now, decidedBy: 'rule:cancelled', comment: `campaign cancelled: ${body.reason}` })
        .where(and(eq(reviewItems.campaignId, id), eq(reviewItems.status, 'pending')))
        .returning({ id: reviewItems.id });
      await appendAudit(tx, {
        idempotencyKey: `review-campaign/${id}/cancelled`,
        actorType: p.identityId ? 'identity' : 'client',
        actorId: actorRef(p),
        action: 'review.campaign_cancelled',
        reason: body.reason,
        data: { campaignId: id, skippedItems: rows.length, httpRequestId },
        at: now,
      });
      return rows.length;
    });
    await nudge(c);
    return { ...(await get(id)), skippedItems: skipped };
  }

  async function reportJson(p: Principal, id: string) {
    const report = await buildReviewReport(db, await getSigner(), id, { exportedBy: actorRef(p) });
    if (!report) throw notFound('review campaign');
    return report;
  }

  async function reportCsv(id: string) {
    const csv = await reviewReportCsv(db, id);
    if (csv === undefined) throw notFound('review campaign');
    return csv;
  }

  /**
   * After a policy version commits: its recurring campaigns' schedules are brought in line, and
   * when the document asks for it (`reviews.onPolicyChange:
   * micro_review`), every live lease it no longer allows gets a micro-review (trigger
   * `policy_change`); the answer lists what was opened and what was skipped, for the publisher.
   */
  async function openPolicyChangeReviews(impact: PolicyImpact, version: string, document: PolicyDocument, actorId: string) {
    // The version's recurring campaigns get (or lose) their schedules. The version is committed
    // already: a Temporal outage here is logged, and the next start of the service catches up.
    await ensureReviewSchedules(temporal, config, document).catch((err: unknown) => log.error({ errorType: err instanceof Error ? err.name : typeof err, policyVersion: version }, 'could not update the recurring review schedules'));
    const cfg = document.reviews;
    if (cfg?.onPolicyChange !== 'micro_review') return undefined;
    const dueAt = new Date(Date.now() + cfg.policyChangeReviewDueDays * 86_400_000);
    const opened: Array<{ grantId: string; campaignId: string; itemId: string }> = [];
    const skipped: Array<{ grantId: string; reason: string }> = [];
    for (const g of impact.grants) {
      try {
        const r = await openMicroReview(
          { db, temporal, taskQueue: config.TEMPORAL_TASK_QUEUE, actor: { actorType: actorId.startsWith('client:') ? 'client' : 'identity', actorId }, policyVersion: version },
          { grantId: g.grantId, trigger: 'policy_change', dueAt, reason: `policy ${version}: ${g.kind}`, deadlineRule: cfg.policyChangeDeadline },
        );
        if ('campaignId' in r) opened.push({ grantId: g.grantId, ...r });
        else skipped.push({ grantId: g.grantId, reason: r.skipped });
      } catch (e) {
        if (!(e instanceof ReviewRuleError)) throw e;
        skipped.push({ grantId: g.grantId, reason: e.code });
      }
    }
    return { mode: 'micro_review' as const, dueAt: dueAt.toISOString(), opened, skipped };
  }

  return { create, cancel, list, get, items, pending, decide, decideMany, delegate, reportJson, reportCsv, progress, openPolicyChangeReviews };
}

export type ReviewService = ReturnType<typeof createReviewService>;
