import { randomUUID } from 'node:crypto';
import { Context } from '@temporalio/activity';
import type { WorkflowHandle, WorkflowHandleWithFirstExecutionRunId } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import type { TestWorkflowEnvironment } from '@temporalio/testing';
import { expect, it } from 'vitest';
import type { ServiceDeskActivities } from '../../activities/index.js';
import { serviceDeskWorkflow } from '../../workflows/index.js';
import { serviceDeskWorkflowId } from '../../workflows/ids.js';
import { checkTicketsSignal } from '../../workflows/service-desk.js';
import { delay } from './fakes.js';
import { describeWorkflows, useWorkflowEnvironment } from './harness.js';

// serviceDeskWorkflow on the dev server with its three activities faked: pump rounds one after
// another, the ticket check beside them (on its interval or at once on the signal), a fresh run
// every ROUNDS_PER_RUN (12) rounds, and a pump failure that escapes the activity retried rather
// than failing the loop.

const { runWith } = useWorkflowEnvironment();

const ROUNDS_PER_RUN = 12;

type DeskActivityName = 'pumpServiceDesk' | 'ticketCheckIntervalSeconds' | 'checkDeskTickets';
type DeskActivities = Pick<ServiceDeskActivities, DeskActivityName>;
type DeskScript = { [N in DeskActivityName]?: (input: Parameters<DeskActivities[N]>[0]) => Awaited<ReturnType<DeskActivities[N]>> | Promise<Awaited<ReturnType<DeskActivities[N]>>> };

interface DeskCall {
  name: DeskActivityName;
  deskId: string;
  runId: string;
  attempt: number;
  startedAt: number;
  endedAt?: number;
  failed?: boolean;
}

/** Typed from the real factory; a test scripts what it needs, the rest answer like a quiet desk. */
class DeskFake {
  readonly calls: DeskCall[] = [];
  readonly activities: DeskActivities;

  constructor(script: DeskScript = {}) {
    const quiet: Required<DeskScript> = {
      pumpServiceDesk: async () => (await delay(50), { events: 0, delivered: 0 }),
      ticketCheckIntervalSeconds: () => 3600,
      checkDeskTickets: () => ({ checked: 2, findings: 0, revoked: 0, intervalSeconds: 3600 }),
    };
    const names = Object.keys(quiet) as DeskActivityName[];
    this.activities = Object.fromEntries(
      names.map((name) => {
        const impl = (script[name] ?? quiet[name]) as (input: { deskId: string }) => unknown;
        return [
          name,
          async (input: { deskId: string }) => {
            const { info } = Context.current();
            const call: DeskCall = { name, deskId: input.deskId, runId: info.workflowExecution?.runId ?? '', attempt: info.attempt, startedAt: Date.now() };
            this.calls.push(call);
            try {
              return await impl(input);
            } catch (err) {
              call.failed = true;
              throw err;
            } finally {
              call.endedAt = Date.now();
            }
          },
        ];
      }),
    ) as unknown as DeskActivities;
  }

  of(name: DeskActivityName): DeskCall[] {
    return this.calls.filter((c) => c.name === name);
  }
}

async function until<T>(what: () => string, fn: () => Promise<T | undefined> | T | undefined, env: TestWorkflowEnvironment, timeoutMs = 20_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what()}`);
    await env.sleep(50);
  }
}

/** Starts a desk loop on the test's queue, runs the body, and leaves no run behind on the shared server. */
function withDesk(fake: DeskFake, body: (desk: { handle: WorkflowHandleWithFirstExecutionRunId<typeof serviceDeskWorkflow>; deskId: string; env: TestWorkflowEnvironment }) => Promise<void>): Promise<void> {
  return runWith(fake.activities, async (env, taskQueue) => {
    const deskId = randomUUID();
    const handle = await env.client.workflow.start(serviceDeskWorkflow, { taskQueue, workflowId: serviceDeskWorkflowId(deskId), args: [{ version: 1, deskId }] });
    try {
      await body({ handle, deskId, env });
    } finally {
      await handle.terminate('test finished').catch(() => undefined);
    }
  });
}

type HistoryEvents = NonNullable<Awaited<ReturnType<WorkflowHandle['fetchHistory']>>['events']>;

/** Every run's history of the workflow, oldest first (a run continued as new names the next). */
async function histories(env: TestWorkflowEnvironment, workflowId: string, firstRunId: string) {
  const runs: Array<{ runId: string; events: HistoryEvents }> = [];
  for (let runId: string | undefined = firstRunId; runId; ) {
    const events: HistoryEvents = (await env.client.workflow.getHandle(workflowId, runId).fetchHistory()).events ?? [];
    runs.push({ runId, events });
    runId = events.at(-1)?.workflowExecutionContinuedAsNewEventAttributes?.newExecutionRunId ?? undefined;
  }
  return runs;
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

const workflowTaskFailures = (events: Array<{ workflowTaskFailedEventAttributes?: unknown }>) => events.filter((e) => e.workflowTaskFailedEventAttributes);

describeWorkflows('serviceDeskWorkflow', () => {
  it('runs the pump rounds one after another, never two at once', () => {
    const t = { roundMs: 300, rounds: 3 };
    const fake = new DeskFake({ pumpServiceDesk: async () => (await delay(t.roundMs), { events: 0, delivered: 0 }) });
    return withDesk(fake, async ({ handle, deskId, env }) => {
      await until(() => `${t.rounds} finished rounds (seen ${fake.of('pumpServiceDesk').length})`, () => fake.of('pumpServiceDesk').filter((c) => c.endedAt).length >= t.rounds || undefined, env);
      const rounds = fake.of('pumpServiceDesk');
      const overlapping = rounds.flatMap((a, i) => rounds.slice(i + 1).filter((b) => a.startedAt < (b.endedAt ?? Infinity) && b.startedAt < (a.endedAt ?? Infinity)).map((b) => `${i} ∥ ${rounds.indexOf(b)}`));
      expect({ overlapping, desks: [...new Set(rounds.map((c) => c.deskId))] }).toEqual({ overlapping: [], desks: [deskId] });
      // Each round is a new activity, not a retry of the last one.
      expect(rounds.map((c) => c.attempt)).toEqual(rounds.map(() => 1));
      const events = (await handle.fetchHistory()).events ?? [];
      expect(workflowTaskFailures(events)).toEqual([]);
    });
  });

  it('checks the tickets at once on checkTicketsSignal, with an hour-long interval, and then waits the interval the check returned', () => {
    const t = { intervalSeconds: 3600, promptMs: 5000, nextIntervalSeconds: 1 };
    const fake = new DeskFake({
      // Slow rounds: the run does not reach its 12 rounds (and continue as new) during the test.
      pumpServiceDesk: async () => (await delay(1000), { events: 0, delivered: 0 }),
      ticketCheckIntervalSeconds: () => t.intervalSeconds,
      // The check's own answer sets the next wait: far shorter than the first.
      checkDeskTickets: () => ({ checked: 2, findings: 0, revoked: 0, intervalSeconds: t.nextIntervalSeconds }),
    });
    return withDesk(fake, async ({ handle, deskId, env }) => {
      await until(() => 'the ticket check interval read', () => fake.of('ticketCheckIntervalSeconds').find((c) => c.endedAt), env);
      expect(fake.of('checkDeskTickets')).toEqual([]);

      const signalledAt = Date.now();
      await handle.signal(checkTicketsSignal);
      const first = await until(() => 'a ticket check after the signal', () => fake.of('checkDeskTickets')[0], env, t.promptMs);
      expect(first).toMatchObject({ deskId, attempt: 1 });
      // Prompt: seconds after the signal, not the 3600 s interval (wall clock).
      expect(first.startedAt - signalledAt).toBeLessThan(t.promptMs);

      // Unsignalled, the next check comes after the interval the first one returned.
      const second = await until(() => 'a second, unsignalled ticket check', () => fake.of('checkDeskTickets')[1], env, t.nextIntervalSeconds * 1000 + 5000);
      expect(second.startedAt - (first.endedAt ?? Infinity)).toBeGreaterThanOrEqual(t.nextIntervalSeconds * 1000 - 100);
      expect((await handle.describe()).status.name).toBe('RUNNING');
      const events = (await handle.fetchHistory()).events ?? [];
      expect(workflowTaskFailures(events)).toEqual([]);
    });
  });

  it('does not drop a checkTicketsSignal that arrives while the last check of a run is running', () => {
    const t = { promptMs: 5000 };
    const checkStarted = deferred();
    const secondSignalSent = deferred();
    const fake = new DeskFake({
      // The run's rounds wait for the first check, so the run ends while that check runs.
      pumpServiceDesk: async () => (await checkStarted.promise, await delay(10), { events: 0, delivered: 0 }),
      checkDeskTickets: async () => {
        if (fake.of('checkDeskTickets').length === 1) {
          checkStarted.resolve();
          await secondSignalSent.promise;
        }
        return { checked: 1, findings: 0, revoked: 0, intervalSeconds: 3600 };
      },
    });
    return withDesk(fake, async ({ handle, env }) => {
      const firstRunId = handle.firstExecutionRunId;
      await until(() => 'the ticket check interval read', () => fake.of('ticketCheckIntervalSeconds').find((c) => c.endedAt), env);
      await handle.signal(checkTicketsSignal);
      await checkStarted.promise;
      const roundsDone = () => fake.of('pumpServiceDesk').filter((c) => c.runId === firstRunId && c.endedAt).length;
      await until(() => `the run's ${ROUNDS_PER_RUN} rounds done (seen ${roundsDone()})`, () => roundsDone() >= ROUNDS_PER_RUN || undefined, env);

      // The operator asks again while the first check is still running, at the end of the run.
      await handle.signal(checkTicketsSignal);
      const askedAt = Date.now();
      secondSignalSent.resolve();
      const second = await until(() => `a check for the second signal (checks: ${fake.of('checkDeskTickets').length})`, () => fake.of('checkDeskTickets')[1], env, t.promptMs);
      expect(second.startedAt - askedAt).toBeLessThan(t.promptMs);
    });
  });

  it(`continues as new after ${ROUNDS_PER_RUN} rounds: same workflow id, a new run, the same desk`, () => {
    const fake = new DeskFake({ pumpServiceDesk: async () => (await delay(10), { events: 0, delivered: 0 }) });
    return withDesk(fake, async ({ handle, deskId, env }) => {
      const firstRunId = handle.firstExecutionRunId;
      const next = await until(
        () => `a second run (rounds seen: ${fake.of('pumpServiceDesk').length})`,
        async () => {
          const { runId } = await handle.describe();
          return runId !== firstRunId && fake.calls.some((c) => c.runId === runId) ? runId : undefined;
        },
        env,
      );
      const first = await env.client.workflow.getHandle(handle.workflowId, firstRunId).describe();
      expect(first.status.name).toBe('CONTINUED_AS_NEW');
      expect((await env.client.workflow.getHandle(handle.workflowId, next).describe()).workflowId).toBe(serviceDeskWorkflowId(deskId));

      const runs = await histories(env, handle.workflowId, firstRunId);
      expect(runs[1]?.runId).toBe(next);
      const [startedFirst, startedNext] = runs.map((r) => r.events[0]?.workflowExecutionStartedEventAttributes);
      expect(startedNext?.continuedExecutionRunId).toBe(firstRunId);
      expect(startedNext?.input).toEqual(startedFirst?.input);
      // Exactly ROUNDS_PER_RUN rounds in the first run, every one for this desk; the new run reads the interval again.
      const inFirst = fake.calls.filter((c) => c.runId === firstRunId);
      expect(inFirst.filter((c) => c.name === 'pumpServiceDesk')).toHaveLength(ROUNDS_PER_RUN);
      expect(new Set(fake.calls.map((c) => c.deskId))).toEqual(new Set([deskId]));
      await until(() => 'the new run reading its check interval', () => fake.calls.find((c) => c.runId === next && c.name === 'ticketCheckIntervalSeconds'), env);
      expect(runs.flatMap((r) => workflowTaskFailures(r.events))).toEqual([]);
    });
  });

  it('retries a pump that fails with a retryable error; the workflow does not fail', () => {
    const t = { failures: 2 };
    let attempts = 0;
    const fake = new DeskFake({
      pumpServiceDesk: async () => {
        if (++attempts <= t.failures) throw ApplicationFailure.retryable('database unavailable', 'DatabaseUnavailable');
        await delay(200);
        return { events: 0, delivered: 0 };
      },
    });
    return withDesk(fake, async ({ handle, env }) => {
      await until(() => `a pump round that succeeds (attempts: ${attempts})`, () => fake.of('pumpServiceDesk').find((c) => c.endedAt && !c.failed), env);
      const pumps = fake.of('pumpServiceDesk');
      // The same activity retried (attempts 1, 2, 3), not rounds skipped past.
      expect(pumps.slice(0, t.failures + 1).map((c) => ({ attempt: c.attempt, failed: c.failed ?? false }))).toEqual([
        { attempt: 1, failed: true },
        { attempt: 2, failed: true },
        { attempt: 3, failed: false },
      ]);
      expect((await handle.describe()).status.name).toBe('RUNNING');
      const events = (await handle.fetchHistory()).events ?? [];
      expect(events.filter((e) => e.workflowExecutionFailedEventAttributes || e.activityTaskFailedEventAttributes)).toEqual([]);
      expect(workflowTaskFailures(events)).toEqual([]);
    });
  });
});
