import { ParentClosePolicy, allHandlersFinished, condition, continueAsNew, getExternalWorkflowHandle, isCancellation, log, proxyActivities, setCurrentDetails, setHandler, startChild, workflowInfo } from '@temporalio/workflow';
import type { ReviewActivities } from '../activities/index.js';
import { BOOKKEEPING, TARGET_SCAN } from './activity-options.js';
import { reviewCampaignWorkflowId } from './ids.js';
import { reviewCampaignStateQuery, reviewItemsChangedSignal, revokeSignal, type ReviewCampaignInput, type ReviewCampaignStateView } from './messages.js';

const book = proxyActivities<ReviewActivities>(BOOKKEEPING);
const scan = proxyActivities<ReviewActivities>(TARGET_SCAN);

/** At most this many revocations the campaign caused are awaiting verified removal at once. */
export const REVOKE_WINDOW = 20;
/** Passes per run before continuing as new: each is a handful of events, so history stays small. */
const TICKS_PER_RUN = 500;
const DEFAULT_VERIFY_POLL_SECONDS = 3;

/**
 * One workflow per review campaign. The items are rows: each pass (`reviewTick`) reads them at
 * workflow time and applies reminders, escalations and the deadline rule there; the workflow
 * only decides when to look again (the next due instant, a `reviewItemsChanged` signal, or a
 * short poll while removals it caused are unverified) and delivers the revoke signals the pass
 * hands back, at most REVOKE_WINDOW in flight. It returns once the campaign is closed: every item
 * decided and every revoke it caused verified removed on its target.
 */
export async function reviewCampaignWorkflow(input: ReviewCampaignInput): Promise<ReviewCampaignStateView> {
  const state: ReviewCampaignStateView = { campaignId: input.campaignId, status: 'open', pending: 0, revokesInFlight: 0, ticks: 0, undeliveredRevokes: 0 };
  let changed = false;
  setHandler(reviewItemsChangedSignal, () => {
    changed = true;
  });
  setHandler(reviewCampaignStateQuery, () => state);
  const pollMs = (input.verifyPollSeconds ?? DEFAULT_VERIFY_POLL_SECONDS) * 1000;

  if (!input.lastUseRecorded) {
    // Best effort: a target that cannot say when an account was last used leaves the date empty.
    await scan.reviewRecordLastUse({ campaignId: input.campaignId }).catch((err: unknown) => {
      if (isCancellation(err)) throw err;
      log.warn('last-use read-out failed; items show no last use', { campaignId: input.campaignId });
    });
  }

  for (let i = 0; i < TICKS_PER_RUN && !workflowInfo().continueAsNewSuggested; i++) {
    changed = false;
    const r = await book.reviewTick({ campaignId: input.campaignId, nowMs: Date.now(), window: REVOKE_WINDOW });
    state.ticks++;
    state.status = r.status;
    state.pending = r.pending;
    state.revokesInFlight = r.revokesInFlight;
    state.nextWakeAt = r.nextWakeAt ? new Date(r.nextWakeAt).toISOString() : undefined;
    setCurrentDetails(`**${state.status}**: ${r.pending} pending, ${r.revokesInFlight} revocation(s) awaiting verified removal`);
    if (r.status === 'closed' || r.status === 'cancelled') {
      await condition(allHandlersFinished);
      return state;
    }
    if (r.toSignal.length) {
      // The pass attested each revoke before handing it back; the lease's own workflow removes and verifies.
      const results = await Promise.allSettled(
        r.toSignal.map((s) => getExternalWorkflowHandle(s.workflowId).signal(revokeSignal, { reason: s.reason ?? 'review', actorId: s.actorId, httpRequestId: s.httpRequestId })),
      );
      state.undeliveredRevokes += results.filter((x) => x.status === 'rejected').length;
      continue;
    }
    const wait = r.revokesInFlight > 0 ? pollMs : r.nextWakeAt !== null ? Math.max(0, r.nextWakeAt - Date.now()) : undefined;
    if (wait === undefined) await condition(() => changed);
    else await condition(() => changed, wait);
  }
  await condition(allHandlersFinished);
  return continueAsNew<typeof reviewCampaignWorkflow>({ ...input, lastUseRecorded: true });
}

/** A recurring campaign's scheduled run: its name in the active policy, nothing else. */
export interface ScheduledReviewInput {
  version: 1;
  name: string;
}

/**
 * Started by a recurring campaign's Temporal Schedule: opens this period's campaign from the
 * active policy, then starts its campaign workflow (abandoned: it outlives this short run, and a
 * retry finds it already started). The campaign's id derives from this run's id, so a retried
 * open finds the campaign it made.
 */
export async function scheduledReviewCampaignWorkflow(input: ScheduledReviewInput): Promise<{ campaignId?: string; skipped?: string }> {
  const r = await book.openScheduledReviewCampaign({ name: input.name, runKey: workflowInfo().workflowId, nowMs: Date.now() });
  if ('skipped' in r) return { skipped: r.skipped };
  try {
    await startChild(reviewCampaignWorkflow, { workflowId: reviewCampaignWorkflowId(r.campaignId), args: [{ version: 1, campaignId: r.campaignId }], parentClosePolicy: ParentClosePolicy.ABANDON });
  } catch (e) {
    // A retried run: the campaign's workflow is already running (the error class lives outside the sandbox's imports).
    if ((e as Error).name !== 'WorkflowExecutionAlreadyStartedError') throw e;
  }
  return { campaignId: r.campaignId };
}
