import { createHash } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { entitlements, identities, reviewCampaigns, reviewItems } from '../db/schema.js';
import type { ActivityDeps } from './deps.js';
import { campaignDefinition } from './domain/reviews/definition.js';
import { openCampaign } from './domain/reviews/open.js';
import { ReviewRuleError } from './domain/reviews/reviewers.js';
import { tickCampaign, type TickInput, type TickResult } from './domain/reviews/tick.js';

/** A UUID-shaped id derived from a key: the same scheduled run always names the same campaign. */
function idFromKey(key: string): string {
  const h = createHash('sha256').update(key).digest('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`;
}

/** A target that does not answer within this long has no last-use date on the review: it is shown, not waited for. */
const LAST_USE_TIMEOUT_MS = 5_000;

function within<T>(ms: number, p: Promise<T>): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  return Promise.race([p, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error('timeout')), ms)))]).finally(() => clearTimeout(timer));
}

/** Access reviews: the campaign's pass over its rows, and the last-use read-out from the targets. */
export function createReviewActivities(deps: Pick<ActivityDeps, 'db' | 'notifier' | 'connectors' | 'log' | 'policies'>) {
  const { db, notifier, connectors, log, policies } = deps;
  return {
    /**
     * A recurring campaign's scheduled run: opens the campaign the active policy defines under
     * `name` (trigger `schedule`), due `dueInDays` from now. Idempotent per run (`runKey`, the
     * run's workflow id): a retry finds the campaign it opened. Skips, writing nothing, when the
     * policy no longer defines it or its scope is empty today.
     */
    async openScheduledReviewCampaign(input: { name: string; runKey: string; nowMs: number }): Promise<{ campaignId: string } | { skipped: 'not_in_policy' | 'empty_scope' | 'no_eligible_reviewer' }> {
      const campaignId = idFromKey(`review-schedule/${input.runKey}`);
      const [done] = await db.select({ id: reviewCampaigns.id }).from(reviewCampaigns).where(eq(reviewCampaigns.id, campaignId));
      if (done) return { campaignId };
      const active = await policies.active();
      const recurring = active.document.reviews?.campaigns.find((c) => c.name === input.name);
      if (!recurring) return { skipped: 'not_in_policy' };
      const now = new Date(input.nowMs);
      const definition = campaignDefinition.parse({
        name: recurring.name,
        scope: recurring.scope,
        dueAt: new Date(input.nowMs + recurring.dueInDays * 86_400_000).toISOString(),
        reviewers: recurring.reviewers,
        ...(recurring.reminders ? { reminders: recurring.reminders } : {}),
        ...(recurring.deadline ? { deadline: recurring.deadline } : {}),
      });
      try {
        await openCampaign(db, { definition, kind: 'campaign', trigger: 'schedule', actor: { actorType: 'system', actorId: 'review-schedule' }, policyVersion: active.version, campaignId, data: { runKey: input.runKey }, now });
      } catch (e) {
        if (e instanceof ReviewRuleError && (e.code === 'empty_scope' || e.code === 'no_eligible_reviewer')) {
          log.warn({ code: e.code, runKey: input.runKey }, 'scheduled review campaign not opened');
          return { skipped: e.code };
        }
        throw e;
      }
      return { campaignId };
    },

    async reviewTick(input: TickInput): Promise<TickResult> {
      return tickCampaign({ db, notifier }, input);
    },

    /**
     * Best effort: asks each target that records it when the holder last authenticated, with a
     * timeout per call, and stores it on the pending items. A target without `lastUsed`, or one
     * that fails or is slow, leaves the date empty; the review goes on either way.
     */
    async reviewRecordLastUse(input: { campaignId: string }): Promise<{ recorded: number; unsupported: number; failed: number }> {
      const rows = await db
        .select({ id: reviewItems.id, username: identities.username, systemId: entitlements.systemId })
        .from(reviewItems)
        .innerJoin(identities, eq(identities.id, reviewItems.identityId))
        .innerJoin(entitlements, eq(entitlements.id, reviewItems.entitlementId))
        .where(and(eq(reviewItems.campaignId, input.campaignId), eq(reviewItems.status, 'pending')));
      const counts = { recorded: 0, unsupported: 0, failed: 0 };
      const bySystem = new Map<string, typeof rows>();
      for (const r of rows) bySystem.set(r.systemId, [...(bySystem.get(r.systemId) ?? []), r]);
      for (const [systemId, items] of bySystem) {
        let target;
        try {
          target = await connectors.forSystem(systemId);
        } catch {
          counts.failed += items.length;
          continue;
        }
        const lastUsed = target.connector.lastUsed?.bind(target.connector);
        if (!lastUsed) {
          counts.unsupported += items.length;
          continue;
        }
        for (const item of items) {
          try {
            const seen = await within(LAST_USE_TIMEOUT_MS, lastUsed(target.accountFor(item)));
            if (seen.at) await db.update(reviewItems).set({ lastUsedAt: seen.at }).where(eq(reviewItems.id, item.id));
            counts.recorded++;
          } catch (err) {
            counts.failed++;
            log.warn({ campaignId: input.campaignId, systemId, errorType: err instanceof Error ? err.name : typeof err }, 'last-use read failed; the review shows none');
          }
        }
      }
      return counts;
    },

  };
}
