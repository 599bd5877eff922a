import { isCancellation, log, patched, proxyActivities, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import type { MicroReviewActivities, SentinelActivities } from '../activities/index.js';
import { failureType } from './removal.js';

// Short on purpose: the next scheduled run is the retry, so a failed run must not hold the
// schedule (overlap SKIP) for long.
const check = proxyActivities<SentinelActivities & MicroReviewActivities>({
  startToCloseTimeout: '2m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '20s', maximumAttempts: 3 },
});

export interface SentinelInput {
  v: 1;
  /** How far past a deadline before it is a finding (ACCESSLOOP_SENTINEL_GRACE_SECONDS). */
  graceSeconds: number;
  /** The lease workflows' removal verification deadline (ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS). */
  revokeDeadlineSeconds: number;
  /** Running lease workflows described per run for a failing workflow task; absent: the activity's default. */
  workflowDescribeBatch?: number | undefined;
}

/**
 * One sentinel pass (a Temporal Schedule starts it every ACCESSLOOP_SENTINEL_INTERVAL_SECONDS).
 * Database first, so access it ends directly is gone before the targets are read.
 */
export async function sentinelWorkflow(input: SentinelInput) {
  const args = { runId: workflowInfo().runId, graceSeconds: input.graceSeconds, revokeDeadlineSeconds: input.revokeDeadlineSeconds, workflowDescribeBatch: input.workflowDescribeBatch };
  setCurrentDetails('checking grants, targets and lease workflows');
  const grants = await check.sentinelCheckGrants(args);
  const targets = await check.sentinelCheckTargets(args);
  const workflows = await check.sentinelCheckWorkflows(args);
  const total = [grants, targets, workflows].reduce((a, c) => ({ findings: a.findings + c.findings, alerted: a.alerted + c.alerted, removed: a.removed + c.removed, unreachable: a.unreachable + c.unreachable }));
  // Grants past their tier's review interval get a micro-review (docs/micro-reviews.md). Runs
  // started before this step existed end without it.
  // A failure there is logged and leaves the findings' report standing; the next run tries again.
  const reviews = patched('sentinel-review-intervals')
    ? await check.sentinelCheckReviewIntervals({ runId: args.runId }).catch((err: unknown) => {
        if (isCancellation(err)) throw err;
        log.warn('review-interval check failed; the next run tries again', { errorType: failureType(err) });
        return { opened: 0, skipped: 0, campaignIds: [], failed: true as const };
      })
    : undefined;
  const opened = reviews ? `, ${reviews.opened} interval review(s) opened${'failed' in reviews ? ' (the check failed)' : ''}` : '';
  setCurrentDetails(`**done** — ${total.findings} findings (${total.alerted} new alerts), ${total.removed} removed, ${total.unreachable} systems unreachable${opened}`);
  return reviews ? { ...total, intervalReviewsOpened: reviews.opened } : total;
}
