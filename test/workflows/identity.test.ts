import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/common';
import { expect, it } from 'vitest';
import type { HrActivities, LeaseActivities } from '../../activities/index.js';
import { identityWorkflow } from '../../workflows/index.js';
import { identityWorkflowId } from '../../workflows/ids.js';
import { type HrEventRef, type IdentityStateView, hrEventSignal, identityStateQuery } from '../../workflows/messages.js';
import { TEST_TIMING, describeWorkflows, useWorkflowEnvironment } from './harness.js';

// identityWorkflow when its targets fail: a failed birthright grant, an unsignallable request
// workflow, removals that do not verify and an account disabling that keeps failing are recorded
// and retried, never a failed identity workflow; past the deadline the leaver alerts once.

const { runWith } = useWorkflowEnvironment();

type IdentityActivities = HrActivities & LeaseActivities;
type Fakes = { [N in keyof IdentityActivities]?: (input: Parameters<IdentityActivities[N]>[0]) => Awaited<ReturnType<IdentityActivities[N]>> | Promise<Awaited<ReturnType<IdentityActivities[N]>>> };

const G_DOWN = randomUUID();
const G_UP = randomUUID();

const hrEvent = (type: HrEventRef['type'], sequence: number): HrEventRef => ({ eventId: randomUUID(), type, sequence, effectiveAt: new Date().toISOString() });

async function until<T>(what: string, fn: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

describeWorkflows('identityWorkflow under failing targets', () => {
  it('records a failed birthright grant and goes on; a stuck leaver alerts once, keeps waiting and retries the disabling until it lands', () => {
    const timing = { ...TEST_TIMING, revokeVerifyDeadlineSeconds: 2, verifyMaxIntervalSeconds: 1, leaverAlertAfterSeconds: 1 };
    const calls: Array<{ name: string; input: unknown }> = [];
    let removalsVerified = false;
    let disableAttempts = 0;
    const fakes: Fakes = {
      applyHrEvent: () => ({ outcome: 'applied', type: 'joiner', status: 'active', endDate: null, receivedAt: new Date().toISOString() }),
      planBirthright: () => ({ policyVersion: 'p@1', rules: ['r'], errors: [], graceSeconds: 0, revoke: [], grant: [{ entitlementId: 'e-down', grantId: G_DOWN }, { entitlementId: 'e-up', grantId: G_UP }] }),
      grantBirthright: (input) => {
        if (input.grantId === G_DOWN) throw ApplicationFailure.nonRetryable('directory down', 'TargetUnavailable');
        return { changed: true };
      },
      markBirthrightFailed: () => undefined,
      enableAccounts: () => ({ changed: [] }),
      leaverTargets: () => ({ requestWorkflowIds: [`access-request/${randomUUID()}`], birthright: [{ grantId: G_UP, entitlementId: 'e-up' }] }),
      beginRevocation: () => undefined,
      removeAndVerify: () => ({ changed: true, retainedBy: undefined, verifiedAt: new Date().toISOString() }),
      markRevocationUnverified: () => undefined,
      completeRevocation: () => undefined,
      awaitIdentityRemovals: () => {
        if (!removalsVerified) throw ApplicationFailure.retryable('1 request(s) still open', 'RemovalsPending');
        return { lastVerifiedAt: new Date().toISOString() };
      },
      disableAccounts: () => {
        if (++disableAttempts <= 2) throw ApplicationFailure.nonRetryable('one system down', 'TargetUnavailable');
        return { changed: ['sys-1'] };
      },
      completeLeaver: () => ({ timeToRevokeMs: 1 }),
      alertStuckLeaver: () => ({ status: 'sent' }) as never,
    };
    const activities = Object.fromEntries(
      Object.entries(fakes).map(([name, impl]) => [name, async (input: unknown) => (calls.push({ name, input }), (impl as (i: unknown) => unknown)(input))]),
    );
    const inputsOf = (name: keyof IdentityActivities) => calls.filter((c) => c.name === name).map((c) => c.input);

    return runWith(activities, async (env, taskQueue) => {
      const identityId = randomUUID();
      const handle = await env.client.workflow.start(identityWorkflow, { taskQueue, workflowId: identityWorkflowId(identityId), args: [{ version: 1, identityId, timing }] });
      try {
        const state = () => handle.query(identityStateQuery);
        await handle.signal('hrEvent');
        await handle.signal(hrEventSignal, hrEvent('joiner', 1));
        await handle.signal(hrEventSignal, { eventId: 'e', type: 'Leaver', sequence: 2, effectiveAt: 'tomorrow' } as unknown as HrEventRef);
        const joined = await until('the joiner applied, one grant failed', async () => {
          const s = await state();
          // The failure is in state before its bookkeeping activity runs: wait for both.
          return s.processed === 1 && s.failures?.length && inputsOf('markBirthrightFailed').length ? s : undefined;
        });
        expect(joined.ignoredSignals).toBe(2);
        expect(joined.failures).toEqual([expect.objectContaining({ step: 'grant_birthright', ref: G_DOWN, errorType: 'TargetUnavailable' })]);
        expect(inputsOf('markBirthrightFailed')).toEqual([expect.objectContaining({ identityId, grantId: G_DOWN, errorType: 'TargetUnavailable' })]);
        expect(inputsOf('grantBirthright')).toHaveLength(2);

        await handle.signal(hrEventSignal, hrEvent('leaver', 2));
        // Past the deadline the leaver alerts, once, and keeps waiting for the removals.
        await until('the stuck-leaver alert', async () => (inputsOf('alertStuckLeaver').length ? true : undefined));
        expect(inputsOf('alertStuckLeaver')).toEqual([expect.objectContaining({ identityId, pendingGrantIds: [] })]);
        const stuck: IdentityStateView = await state();
        expect(stuck.leaver).toMatchObject({ phase: 'verifying', alertedAt: expect.any(String), unsignalled: [expect.stringMatching(/^access-request\//)] });
        expect(stuck.failures?.map((f) => f.step)).toEqual(['grant_birthright', 'signal_revoke']);
        expect(inputsOf('completeLeaver')).toEqual([]);

        removalsVerified = true;
        const done = await until('the leaver done', async () => ((await state()).leaver?.phase === 'done' ? state() : undefined));
        expect(disableAttempts).toBe(3);
        expect(done.failures?.filter((f) => f.step === 'disable_accounts')).toHaveLength(2);
        expect(inputsOf('completeLeaver')).toEqual([expect.objectContaining({ identityId, disabledSystems: ['sys-1'] })]);
        const { events } = await handle.fetchHistory();
        expect((events ?? []).filter((e) => e.workflowTaskFailedEventAttributes)).toEqual([]);
        expect((await handle.describe()).status.name).toBe('RUNNING');
      } finally {
        await handle.terminate('test finished').catch(() => undefined);
      }
    });
  });
});
