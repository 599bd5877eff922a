import { Context } from '@temporalio/activity';
import { and, asc, eq, inArray, isNotNull, ne, sql } from 'drizzle-orm';
import { entitlements, grants, identities, reviewCampaigns, reviewItems } from '../db/schema.js';
import type { ActivityDeps } from './deps.js';
import { riskTiers, type RiskTier } from './domain/reviews/definition.js';
import { openMicroReview, startCampaignWorkflow, type MicroReviewDeps, type MicroReviewInput, type MicroReviewResult } from './domain/reviews/micro.js';

const DAY_MS = 86_400_000;
/** Review-interval micro-reviews opened per sentinel pass at most (the oldest first); the next pass goes on. */
export const INTERVAL_REVIEWS_PER_RUN = 200;

export interface MicroReviewCounts {
  opened: number;
  /** Already under review, the grant ended meanwhile, or only its holder could review it. */
  skipped: number;
  /** The opened campaigns (ids only: no names in history). */
  campaignIds: string[];
}

const BY_IDENTITY_WORKFLOW = { actorType: 'workflow', actorId: 'identityWorkflow' } as const;
const BY_SENTINEL = { actorType: 'system', actorId: 'sentinel' } as const;

/**
 * Micro-certifications opened by events the worker sees (docs/micro-reviews.md): a mover's
 * requested access goes to the new manager, and the sentinel opens one for every grant that
 * outlived its tier's review interval. Each is a one-item campaign (openMicroReview), decided
 * through /v1/review-items and enforced at its deadline by the campaign's workflow.
 */
export function createMicroReviewActivities(deps: Pick<ActivityDeps, 'db' | 'policies' | 'temporal'>) {
  const { db, policies } = deps;

  function reviewDeps(actor: MicroReviewDeps['actor'], policyVersion?: string | null): MicroReviewDeps {
    // The campaign workflow runs on this worker's task queue.
    return { db, taskQueue: Context.current().info.taskQueue, actor, policyVersion: policyVersion ?? null, ...(deps.temporal ? { temporal: deps.temporal } : {}) };
  }

  /**
   * Opens one, or says why not. `already_open` also covers a retry of this very activity after
   * the campaign committed but before its workflow started: the open campaign's workflow is
   * started again (idempotent on its id), so a review is never left without its deadline.
   */
  async function open(d: MicroReviewDeps, input: MicroReviewInput, counts: MicroReviewCounts): Promise<MicroReviewResult> {
    const r = await openMicroReview(d, input);
    Context.current().heartbeat();
    if ('campaignId' in r) {
      counts.opened++;
      counts.campaignIds.push(r.campaignId);
      return r;
    }
    counts.skipped++;
    if (r.skipped === 'already_open' && d.temporal) {
      const [c] = await db
        .select({ id: reviewCampaigns.id, workflowId: reviewCampaigns.workflowId })
        .from(reviewItems)
        .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
        .where(and(eq(reviewItems.grantId, input.grantId), eq(reviewItems.status, 'pending'), inArray(reviewCampaigns.status, ['open', 'closing']), eq(reviewCampaigns.kind, 'micro'), eq(reviewCampaigns.trigger, input.trigger)))
        .limit(1);
      if (c) await startCampaignWorkflow(d.temporal, d.taskQueue!, c);
    }
    return r;
  }

  return {
    /**
     * A mover's requested (non-birthright) live grants were justified by the old role: each gets
     * a micro-review by the new manager (the entitlement's owner when there is none, or they
     * cannot review), due when the mover grace ends; undecided at the deadline it is revoked.
     * Idempotent: a grant already under review is skipped.
     */
    async openMoverReviews(input: { identityId: string; eventId: string; dueAt: string }): Promise<MicroReviewCounts> {
      const [who] = await db.select({ managerId: identities.managerId }).from(identities).where(eq(identities.id, input.identityId));
      const live = await db
        .select({ id: grants.id })
        .from(grants)
        .where(and(eq(grants.identityId, input.identityId), eq(grants.status, 'active'), ne(grants.source, 'birthright'), isNotNull(grants.requestId)))
        .orderBy(grants.id);
      const counts: MicroReviewCounts = { opened: 0, skipped: 0, campaignIds: [] };
      const d = reviewDeps(BY_IDENTITY_WORKFLOW, (await policies.active()).version);
      for (const g of live) {
        await open(
          d,
          {
            grantId: g.id,
            trigger: 'mover',
            ...(who?.managerId ? { reviewerId: who.managerId } : {}),
            dueAt: new Date(input.dueAt),
            reason: `mover: HR event ${input.eventId}`,
            deadlineRule: 'revoke',
          },
          counts,
        );
      }
      return counts;
    },

    /**
     * The review_interval trigger, run by the sentinel: every live grant of a tier with
     * `reviews.intervalDays` whose last review (a keep, by a person or the deadline rule) or,
     * never reviewed, whose grant is older than the interval gets a micro-review by the holder's
     * manager (fallback: the entitlement's owner). Bounded per pass, oldest first; grants
     * already under review are not selected again.
     */
    async sentinelCheckReviewIntervals(input: { runId: string; nowMs?: number | undefined }): Promise<MicroReviewCounts> {
      const policy = await policies.active();
      const cfg = policy.document.reviews;
      const counts: MicroReviewCounts = { opened: 0, skipped: 0, campaignIds: [] };
      const intervals = Object.entries(cfg?.intervalDays ?? {}).filter((e): e is [RiskTier, number] => riskTiers.includes(e[0] as RiskTier) && typeof e[1] === 'number');
      if (!intervals.length) return counts;
      const now = new Date(input.nowMs ?? Date.now());
      const lastKept = sql`(select max(ri.decided_at) from ${reviewItems} ri where ri.grant_id = ${grants.id} and ri.status = 'kept')`;
      const since = sql`greatest(coalesce(${grants.grantedAt}, ${grants.createdAt}), coalesce(${lastKept}, '-infinity'::timestamptz))`;
      const overdue = sql.join(
        intervals.map(([tier, days]) => sql`(${entitlements.riskTier} = ${tier} and ${since} < ${new Date(now.getTime() - days * DAY_MS).toISOString()}::timestamptz)`),
        sql` or `,
      );
      const rows = await db
        .select({ id: grants.id })
        .from(grants)
        .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
        .where(
          and(
            eq(grants.status, 'active'),
            isNotNull(grants.requestId),
            sql`(${overdue})`,
            sql`not exists (select 1 from ${reviewItems} ri join ${reviewCampaigns} rc on rc.id = ri.campaign_id
              where ri.grant_id = ${grants.id} and ri.status = 'pending' and rc.status in ('open', 'closing'))`,
          ),
        )
        .orderBy(asc(since), asc(grants.id))
        .limit(INTERVAL_REVIEWS_PER_RUN);
      const d = reviewDeps(BY_SENTINEL, policy.version);
      const dueAt = new Date(now.getTime() + (cfg?.intervalReviewDueDays ?? 14) * DAY_MS);
      for (const g of rows) {
        await open(d, { grantId: g.id, trigger: 'review_interval', dueAt, reason: `review interval (sentinel run ${input.runId})`, deadlineRule: cfg?.intervalDeadline ?? 'keep_and_flag' }, counts);
      }
      return counts;
    },
  };
}
