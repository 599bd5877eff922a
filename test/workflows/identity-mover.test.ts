import { randomUUID } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { afterAll, beforeAll, expect, inject, it } from 'vitest';
import type { HrActivities, LeaseActivities, MicroReviewActivities } from '../../activities/index.js';
import { workflowsPath } from '../../temporal/worker.js';
import { identityWorkflowId } from '../../workflows/ids.js';
import { type HrEventRef, type IdentityStateView, hrEventSignal, identityStateQuery } from '../../workflows/messages.js';
import { TEST_TIMING, describeWorkflows } from './harness.js';

// The mover's re-approval as micro-reviews (docs/micro-reviews.md), and the patch that keeps
// runs recorded before it replaying: the identity workflow as it was before the change
// (./fixtures/identity-before-mover-micro-review.ts) records a mover on the real server, and that
// history replays against today's workflow code.

type IdentityActivities = HrActivities & LeaseActivities & MicroReviewActivities;
type Fakes = { [N in keyof IdentityActivities]?: (input: Parameters<IdentityActivities[N]>[0]) => Awaited<ReturnType<IdentityActivities[N]>> };

const GRACE_S = 5;
let env: TestWorkflowEnvironment;
let current: WorkflowBundleWithSourceMap;
let before: WorkflowBundleWithSourceMap;

beforeAll(async () => {
  const logger = new DefaultLogger('WARN');
  [env, current, before] = await Promise.all([
    TestWorkflowEnvironment.createFromExistingServer({ address: inject('temporalAddress') }),
    bundleWorkflowCode({ workflowsPath, logger }),
    bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./fixtures/identity-before-mover-micro-review.ts', import.meta.url)), logger }),
  ]);
});
afterAll(async () => {
  await env?.teardown();
});

function fakesFor(calls: Array<{ name: string; input: unknown }>): object {
  const fakes: Fakes = {
    applyHrEvent: () => ({ outcome: 'applied', type: 'mover', status: 'active', endDate: null, receivedAt: new Date().toISOString() }),
    planBirthright: () => ({ policyVersion: 'p@1', rules: [], errors: [], graceSeconds: GRACE_S, revoke: [], grant: [] }),
    // The old path: one request workflow that does not exist (the signal fails and is recorded).
    moverReviewTargets: () => ({ requestWorkflowIds: [`access-request/${randomUUID()}`] }),
    openMoverReviews: () => ({ opened: 2, skipped: 0, campaignIds: [randomUUID(), randomUUID()] }),
  };
  return Object.fromEntries(Object.entries(fakes).map(([name, impl]) => [name, async (input: unknown) => (calls.push({ name, input }), (impl as (i: unknown) => unknown)(input))]));
}

/** Runs one mover through the identity workflow of `bundle`; returns the run's history once it has handled it. */
async function recordMover(bundle: WorkflowBundleWithSourceMap, calls: Array<{ name: string; input: unknown }>, handled: (s: IdentityStateView) => boolean) {
  const taskQueue = `wf-test-${randomUUID()}`;
  const worker = await Worker.create({ connection: env.nativeConnection, namespace: env.namespace ?? 'default', taskQueue, workflowBundle: bundle, activities: fakesFor(calls), shutdownGraceTime: '1s' });
  const identityId = randomUUID();
  const event: HrEventRef = { eventId: randomUUID(), type: 'mover', sequence: 1, effectiveAt: new Date().toISOString() };
  let handle: WorkflowHandle | undefined;
  const signalledAt = Date.now();
  const state = await worker.runUntil(async () => {
    handle = await env.client.workflow.start('identityWorkflow', { taskQueue, workflowId: identityWorkflowId(identityId), args: [{ version: 1, identityId, timing: TEST_TIMING }] });
    try {
      await handle.signal(hrEventSignal, event);
      const deadline = Date.now() + 20_000;
      for (;;) {
        const s = await handle.query(identityStateQuery);
        if (handled(s)) return s;
        if (Date.now() > deadline) throw new Error(`mover not handled: ${JSON.stringify(s)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
    } finally {
      await handle.terminate('test finished').catch(() => undefined);
    }
  });
  return { identityId, event, state, signalledAt, history: await handle!.fetchHistory(), workflowId: handle!.workflowId };
}

describeWorkflows('identityWorkflow mover: micro-reviews, and runs recorded before them', () => {
  it('opens micro-reviews for the mover (one activity, due when the grace ends) and signals no lease', async () => {
    const calls: Array<{ name: string; input: unknown }> = [];
    const run = await recordMover(current, calls, (s) => s.processed === 1 && calls.some((c) => c.name === 'openMoverReviews'));
    const [opened] = calls.filter((c) => c.name === 'openMoverReviews').map((c) => c.input as { identityId: string; eventId: string; dueAt: string });
    expect(opened).toMatchObject({ identityId: run.identityId, eventId: run.event.eventId });
    // Workflow time: within a few seconds of the signal, plus the grace.
    expect(Date.parse(opened!.dueAt)).toBeGreaterThanOrEqual(run.signalledAt + GRACE_S * 1000 - 1000);
    expect(Date.parse(opened!.dueAt)).toBeLessThanOrEqual(Date.now() + GRACE_S * 1000);
    expect(calls.map((c) => c.name)).not.toContain('moverReviewTargets');
    const events = run.history.events ?? [];
    expect(events.filter((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes)).toEqual([]);
    const markers = events.flatMap((e) =>
      Object.values(e.markerRecordedEventAttributes?.details ?? {}).flatMap((d) => (d.payloads ?? []).map((p) => Buffer.from(p.data ?? new Uint8Array()).toString('utf8'))),
    );
    expect(markers.some((m) => m.includes('mover-review-as-micro-review'))).toBe(true);
    expect(run.state.failures ?? []).toEqual([]);
    // Its own history replays too.
    await Worker.runReplayHistory({ workflowBundle: current, replayName: 'mover-micro-review' }, run.history, run.workflowId);
  });

  it('replays a mover recorded before the change (the lease review signal) against today’s code', async () => {
    const calls: Array<{ name: string; input: unknown }> = [];
    const run = await recordMover(before, calls, (s) => s.processed === 1 && (s.failures ?? []).some((f) => f.step === 'signal_review'));
    expect(calls.map((c) => c.name)).toContain('moverReviewTargets');
    expect(calls.map((c) => c.name)).not.toContain('openMoverReviews');
    expect((run.history.events ?? []).filter((e) => e.signalExternalWorkflowExecutionInitiatedEventAttributes)).toHaveLength(1);
    await expect(Worker.runReplayHistory({ workflowBundle: current, replayName: 'mover-before-micro-review' }, run.history, run.workflowId)).resolves.toBeUndefined();
  });

  it('records a failure to open the reviews instead of failing the identity workflow', async () => {
    const calls: Array<{ name: string; input: unknown }> = [];
    const taskQueue = `wf-test-${randomUUID()}`;
    const activities = {
      ...(fakesFor(calls) as Record<string, unknown>),
      openMoverReviews: async () => {
        calls.push({ name: 'openMoverReviews', input: undefined });
        throw ApplicationFailure.nonRetryable('reviews store down', 'ReviewsUnavailable');
      },
    };
    const worker = await Worker.create({ connection: env.nativeConnection, namespace: env.namespace ?? 'default', taskQueue, workflowBundle: current, activities, shutdownGraceTime: '1s' });
    const identityId = randomUUID();
    await worker.runUntil(async () => {
      const handle = await env.client.workflow.start('identityWorkflow', { taskQueue, workflowId: identityWorkflowId(identityId), args: [{ version: 1, identityId, timing: TEST_TIMING }] });
      try {
        await handle.signal(hrEventSignal, { eventId: randomUUID(), type: 'mover', sequence: 1, effectiveAt: new Date().toISOString() });
        const deadline = Date.now() + 20_000;
        let s = await handle.query(identityStateQuery);
        while (!(s.failures ?? []).length && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 100));
          s = await handle.query(identityStateQuery);
        }
        expect(s.failures).toEqual([expect.objectContaining({ step: 'open_review', ref: identityId, errorType: 'ReviewsUnavailable' })]);
        expect((await handle.describe()).status.name).toBe('RUNNING');
      } finally {
        await handle.terminate('test finished').catch(() => undefined);
      }
    });
  });
});
