import { randomUUID } from 'node:crypto';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { expect, it } from 'vitest';
import type { ReviewActivities } from '../../activities/index.js';
import type { TickInput, TickResult } from '../../activities/domain/reviews/tick.js';
import { accessRequestWorkflow, reviewCampaignWorkflow } from '../../workflows/index.js';
import { accessRequestWorkflowId, reviewCampaignWorkflowId } from '../../workflows/ids.js';
import { reviewCampaignStateQuery, reviewItemsChangedSignal, stateQuery, type ReviewCampaignInput } from '../../workflows/messages.js';
import { FakeActivities } from './fakes.js';
import { describeWorkflows, requestInput, useWorkflowEnvironment } from './harness.js';

// The campaign workflow's timing: it wakes at the instants its pass names (reminders, the due
// date), at once on `reviewItemsChanged`, and on a short poll only while revocations it caused
// await verification; it hands revokes to the lease workflows (reason `review`) and returns once
// the pass reports the campaign closed. The pass itself (activities/domain/reviews/tick.ts, run
// against Postgres in test/e2e/reviews.test.ts) is faked here: the fake below is typed from the
// real factory. Real seconds on the dev server, as the rest of this folder (./harness.ts says why).

const { runWith } = useWorkflowEnvironment();

type Pass = (input: TickInput, n: number) => TickResult | Promise<TickResult>;

/** The review slice, with every pass recorded (wall clock and the workflow time it was given). */
class FakeReview {
  readonly ticks: Array<{ input: TickInput; at: number }> = [];
  lastUse = 0;
  constructor(private readonly pass: Pass) {}
  readonly activities: ReviewActivities = {
    reviewTick: async (input) => {
      this.ticks.push({ input, at: Date.now() });
      return this.pass(input, this.ticks.length);
    },
    openScheduledReviewCampaign: async () => ({ skipped: 'not_in_policy' }),
    reviewRecordLastUse: async () => {
      this.lastUse++;
      return { recorded: 0, unsupported: 1, failed: 0 };
    },
  };
}

const open = (over: Partial<TickResult> = {}): TickResult => ({ status: 'open', pending: 1, revokesInFlight: 0, toSignal: [], nextWakeAt: null, ...over });
const closed: TickResult = { status: 'closed', pending: 0, revokesInFlight: 0, toSignal: [], nextWakeAt: null };

function startCampaign(env: TestWorkflowEnvironment, taskQueue: string, over: Partial<ReviewCampaignInput> = {}) {
  const campaignId = randomUUID();
  return env.client.workflow.start(reviewCampaignWorkflow, { workflowId: reviewCampaignWorkflowId(campaignId), taskQueue, args: [{ version: 1, campaignId, ...over }] });
}

describeWorkflows('reviewCampaignWorkflow', () => {
  it('sleeps until the due instant its pass names, wakes once then, and returns when the pass says closed', () => {
    const t = { dueInMs: 2500, wakeWithinMs: 1500 };
    let dueAt = 0;
    const review = new FakeReview((input) => (input.nowMs >= dueAt ? closed : open({ nextWakeAt: dueAt })));
    return runWith(review.activities, async (env, taskQueue) => {
      dueAt = Date.now() + t.dueInMs;
      const h = await startCampaign(env, taskQueue);
      const result = await h.result();
      expect(result).toMatchObject({ status: 'closed', ticks: 2 });
      expect(review.lastUse).toBe(1);
      // One pass at the start, one at the due instant: no polling in between (wall clock).
      expect(review.ticks).toHaveLength(2);
      expect(review.ticks[1]!.input.nowMs).toBeGreaterThanOrEqual(dueAt);
      expect(review.ticks[1]!.at - dueAt).toBeLessThan(t.wakeWithinMs);
      expect(review.ticks[0]!.input.window).toBe(20);
    });
  });

  it('looks at its rows at once on reviewItemsChanged, without waiting for a far timer', () => {
    const t = { farMs: 10 * 60_000, reactWithinMs: 3000 };
    const review = new FakeReview((input, n) => (n >= 2 ? closed : open({ nextWakeAt: input.nowMs + t.farMs })));
    return runWith(review.activities, async (env, taskQueue) => {
      const h = await startCampaign(env, taskQueue);
      await waitUntil(env, async () => (await h.query(reviewCampaignStateQuery)).ticks === 1);
      const sent = Date.now();
      await h.signal(reviewItemsChangedSignal);
      expect(await h.result()).toMatchObject({ status: 'closed', ticks: 2 });
      expect(review.ticks[1]!.at - sent).toBeLessThan(t.reactWithinMs);
    });
  });

  it("hands a revoke to the lease's workflow (reason review, the attested actor), polls while it is unverified, and closes only after", () => {
    const t = { pollSeconds: 1 };
    const lifecycle = new FakeActivities();
    let leaseWorkflowId = '';
    const removed = () => lifecycle.calls.some((c) => c.name === 'completeRevocation' && c.endedAt !== undefined);
    const review = new FakeReview((_input, n) => {
      if (n === 1) return open({ pending: 0, status: 'closing', revokesInFlight: 1, toSignal: [{ itemId: 'item-1', workflowId: leaseWorkflowId, actorId: 'reviewer-1', httpRequestId: 'review-item/item-1', reason: 'review' }] });
      return removed() ? closed : open({ pending: 0, status: 'closing', revokesInFlight: 1 });
    });
    return runWith({ ...lifecycle.activities, ...review.activities }, async (env, taskQueue) => {
      const input = requestInput({ durationSeconds: 600 });
      leaseWorkflowId = accessRequestWorkflowId(input.requestId);
      const lease = await env.client.workflow.start(accessRequestWorkflow, { workflowId: leaseWorkflowId, taskQueue, args: [input] });
      await waitUntil(env, async () => (await lease.query(stateQuery)).status === 'active');

      const h = await startCampaign(env, taskQueue, { verifyPollSeconds: t.pollSeconds });
      expect(await h.result()).toMatchObject({ status: 'closed', undeliveredRevokes: 0 });
      expect(await lease.result()).toMatchObject({ status: 'revoked', revokeReason: 'review' });
      expect(lifecycle.inputsOf('beginRevocation')).toEqual([expect.objectContaining({ reason: 'review', actorId: 'reviewer-1', httpRequestId: 'review-item/item-1', signalActorClaimed: true })]);
      // Closed only by a pass that saw the removal done; the passes in between came on the poll (wall clock).
      const closing = review.ticks.at(-1)!.at;
      const completed = lifecycle.calls.find((c) => c.name === 'completeRevocation')!.endedAt!;
      expect(closing).toBeGreaterThanOrEqual(completed);
      const gaps = review.ticks.slice(2).map((x, i) => x.at - review.ticks[i + 1]!.at);
      for (const g of gaps) expect(g).toBeGreaterThanOrEqual(t.pollSeconds * 1000 - 100);
    });
  });

  it('counts a revoke whose lease workflow has closed as undelivered and goes on, without a failed workflow task', () => {
    const review = new FakeReview((_input, n) =>
      n === 1 ? open({ pending: 0, status: 'closing', revokesInFlight: 1, toSignal: [{ itemId: 'item-2', workflowId: `access-request/${randomUUID()}`, actorId: 'rule:deadline', httpRequestId: 'review-item/item-2', reason: 'review' }] }) : closed,
    );
    return runWith(review.activities, async (env, taskQueue) => {
      const h = await startCampaign(env, taskQueue, { verifyPollSeconds: 1 });
      expect(await h.result()).toMatchObject({ status: 'closed', undeliveredRevokes: 1 });
      const history = await h.fetchHistory();
      expect(history.events!.filter((e) => e.workflowTaskFailedEventAttributes)).toEqual([]);
    });
  });
});

async function waitUntil(env: TestWorkflowEnvironment, fn: () => Promise<boolean>, timeoutMs = 15_000): Promise<void> {
  const until = Date.now() + timeoutMs;
  while (!(await fn())) {
    if (Date.now() > until) throw new Error('condition not reached');
    await env.sleep(100);
  }
}
