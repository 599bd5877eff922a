/**
 * Harness for accessRequestWorkflow tests: the real workflow code on a real Temporal server, the
 * activities faked (./fakes.ts, typed from the real factories' slices).
 *
 * Time. The STYLE wants timing logic in skipped time, but `TestWorkflowEnvironment.createTimeSkipping()`
 * needs Temporal's Java test server, which the SDK downloads from temporal.download; this machine
 * cannot reach it ("Failed to start ephemeral server: failed to download ephemeral server
 * executable: … dns error: failed to lookup address information"). So the tests run on the dev
 * server the integration global setup starts (`inject('temporalAddress')`), with second-scale
 * timings that each test states once, and the tests of a file run concurrently (each has its own
 * worker, task queue and workflow ids; their real seconds overlap, keeping the folder near 25 s).
 * Every wait goes through the environment (`env.sleep`, which skips time on a time-skipping
 * server). Moving to skipped time is the `TIME_SKIPPING` switch below: it picks the server and
 * makes the files' tests sequential (skipped time is global to the test server). The few
 * assertions that compare the fakes' wall-clock timestamps with workflow time (marked "wall
 * clock") would then compare against `env.currentTimeMs()` instead.
 *
 * Shape (sdk-typescript's own tests): `useWorkflowHarness()` bundles the workflow code once per
 * file; `run(fake, body)` creates a fresh Worker on a unique task queue and runs the body inside
 * `worker.runUntil(...)`; every request gets a unique request id, hence workflow id.
 */
import { randomUUID } from 'node:crypto';
import { WorkflowUpdateFailedError, type WorkflowHandle } from '@temporalio/client';
import { ApplicationFailure, defaultPayloadConverter } from '@temporalio/common';
import { TestWorkflowEnvironment } from '@temporalio/testing';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type WorkflowBundleWithSourceMap } from '@temporalio/worker';
import { afterAll, beforeAll, describe, inject } from 'vitest';
import { workflowsPath } from '../../temporal/worker.js';
import { accessRequestWorkflow } from '../../workflows/index.js';
import {
  type AccessRequestInput,
  type DecisionArgs,
  type ExtendArgs,
  type LifecycleTiming,
  type RequestStateView,
  type RevokeArgs,
  type RotateArgs,
  decideUpdate,
  extendUpdate,
  revokeSignal,
  rotateCredentialUpdate,
  stateQuery,
} from '../../workflows/messages.js';
import { accessRequestWorkflowId } from '../../workflows/ids.js';
import { type FakeActivities, type LifecycleActivityName, lifecycleActivityNames } from './fakes.js';

/** The one switch (see the header): the Java test server in skipped time, or the dev server in real seconds. */
const TIME_SKIPPING = false;

function createEnvironment(): Promise<TestWorkflowEnvironment> {
  return TIME_SKIPPING ? TestWorkflowEnvironment.createTimeSkipping() : TestWorkflowEnvironment.createFromExistingServer({ address: inject('temporalAddress') });
}

/** `describe` for a file's workflow tests: concurrent in real time, sequential in (shared) skipped time. */
export const describeWorkflows = TIME_SKIPPING ? describe : describe.concurrent;

/** Lifecycle timing for the tests: removal deadlines in seconds, short enough to watch pass. */
export const TEST_TIMING: LifecycleTiming = { revokeVerifyDeadlineSeconds: 2, verifyMaxIntervalSeconds: 1, defaultApprovalTimeoutSeconds: 30 };

export const REQUESTER = 'requester-1';

export function requestInput(overrides: Partial<Omit<AccessRequestInput, 'version' | 'requestId' | 'grantId'>> = {}): AccessRequestInput {
  return {
    version: 1,
    requestId: randomUUID(),
    grantId: randomUUID(),
    requesterId: REQUESTER,
    subjectId: 'subject-1',
    entitlementId: 'entitlement-1',
    systemId: 'system-1',
    durationSeconds: 60,
    timing: TEST_TIMING,
    ...overrides,
  };
}

export interface WaitOptions {
  /** Bounded: a wait that times out fails the test with what it last saw. */
  timeoutMs?: number;
  intervalMs?: number;
}

export class Lease {
  constructor(
    readonly handle: WorkflowHandle<typeof accessRequestWorkflow>,
    readonly input: AccessRequestInput,
    private readonly h: Run,
  ) {}

  state(): Promise<RequestStateView> {
    return this.handle.query(stateQuery);
  }

  /** Polls the state query until `pred` holds; returns that state. */
  async waitForState(what: string, pred: (s: RequestStateView) => boolean, opts?: WaitOptions): Promise<RequestStateView> {
    let seen: RequestStateView | undefined;
    return this.h.until(() => `${what} (last state: ${JSON.stringify(seen)})`, async () => {
      seen = await this.state();
      return pred(seen) ? seen : undefined;
    }, opts);
  }

  waitForStatus(status: RequestStateView['status'], opts?: WaitOptions): Promise<RequestStateView> {
    return this.waitForState(`status ${status}`, (s) => s.status === status, opts);
  }

  decide(args: DecisionArgs) {
    return this.handle.executeUpdate(decideUpdate, { args: [args] });
  }

  extend(args: ExtendArgs) {
    return this.handle.executeUpdate(extendUpdate, { args: [args] });
  }

  rotate(args: RotateArgs) {
    return this.handle.executeUpdate(rotateCredentialUpdate, { args: [args] });
  }

  revoke(args: RevokeArgs) {
    return this.handle.signal(revokeSignal, args);
  }

  result(): Promise<RequestStateView> {
    return this.handle.result();
  }

  async history() {
    const { events } = await this.handle.fetchHistory();
    return events ?? [];
  }

  /** Updates the workflow accepted, as history records them (a validator's refusal is not there). */
  async acceptedUpdates(): Promise<Array<{ name: string; args: unknown[] }>> {
    return (await this.history()).flatMap((e) => {
      const input = e.workflowExecutionUpdateAcceptedEventAttributes?.acceptedRequest?.input;
      return input ? [{ name: input.name ?? '', args: (input.args?.payloads ?? []).map((p) => defaultPayloadConverter.fromPayload(p)) }] : [];
    });
  }
}

/** The UpdateRejection type an update was refused with; fails if it was accepted. */
export async function refusal(update: Promise<unknown>): Promise<string | undefined> {
  const outcome = await update.then(
    (value) => ({ accepted: value }),
    (err: unknown) => ({ err }),
  );
  if (!('err' in outcome)) throw new Error(`expected the update to be refused; it returned ${JSON.stringify(outcome.accepted)}`);
  const { err } = outcome;
  if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) return err.cause.type ?? undefined;
  throw err;
}

export class Run {
  private readonly leases: Lease[] = [];

  constructor(
    readonly env: TestWorkflowEnvironment,
    readonly taskQueue: string,
    readonly fake: FakeActivities,
  ) {}

  async start(input: AccessRequestInput = requestInput()): Promise<Lease> {
    const handle = await this.env.client.workflow.start(accessRequestWorkflow, {
      taskQueue: this.taskQueue,
      workflowId: accessRequestWorkflowId(input.requestId),
      args: [input],
    });
    const lease = new Lease(handle, input, this);
    this.leases.push(lease);
    return lease;
  }

  /** Polls `fn` until it returns a value (not undefined/false), sleeping through the environment. */
  async until<T>(what: string | (() => string), fn: () => Promise<T | undefined | false> | T | undefined | false, opts: WaitOptions = {}): Promise<T> {
    const timeoutMs = opts.timeoutMs ?? 15_000;
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const value = await fn();
      if (value !== undefined && value !== false) return value;
      if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : what()}`);
      await this.env.sleep(opts.intervalMs ?? 100);
    }
  }

  /** Waits until the fake has seen `n` attempts of an activity. */
  untilCalled(name: LifecycleActivityName, n = 1, opts?: WaitOptions): Promise<true> {
    return this.until(() => `${n} call(s) of ${name} (seen ${this.fake.count(name)}: ${this.fake.names().join(', ')})`, () => this.fake.count(name) >= n || undefined, opts);
  }

  /** Elapses time in the environment (real on the dev server, skipped on a time-skipping server). */
  sleep(ms: number): Promise<void> {
    return this.env.sleep(ms);
  }

  /** Leaves no workflow behind on the shared server when a test fails half-way. */
  async terminateRunning(): Promise<void> {
    await Promise.all(
      this.leases.map(async (l) => {
        const { status } = await l.handle.describe();
        if (status.name === 'RUNNING') await l.handle.terminate('test finished');
      }),
    );
  }
}

/**
 * Bundles once for the file and connects once; `runWith` runs a body against a fresh Worker (on a
 * unique task queue) with the given activities. Any workflow of the bundle can be started there.
 */
export function useWorkflowEnvironment(): { runWith: (activities: object, body: (env: TestWorkflowEnvironment, taskQueue: string) => Promise<void>) => Promise<void> } {
  let env: TestWorkflowEnvironment;
  let bundle: WorkflowBundleWithSourceMap;

  beforeAll(async () => {
    installQuietRuntime();
    [env, bundle] = await Promise.all([createEnvironment(), bundleWorkflowCode({ workflowsPath, logger: new DefaultLogger('WARN') })]);
  });
  afterAll(async () => {
    await env?.teardown();
  });

  return {
    async runWith(activities, body) {
      const taskQueue = `wf-test-${randomUUID()}`;
      const worker = await Worker.create({
        connection: env.nativeConnection,
        namespace: env.namespace ?? 'default',
        taskQueue,
        workflowBundle: bundle,
        activities,
        // A slow fake still running when the body ends must not hold the next test.
        shutdownGraceTime: '1s',
      });
      await worker.runUntil(() => body(env, taskQueue));
    },
  };
}

/** Bundles once for the file and connects once; returns `run` for each test of accessRequestWorkflow. */
export function useWorkflowHarness(): { run: (fake: FakeActivities, body: (r: Run) => Promise<void>) => Promise<void> } {
  const { runWith } = useWorkflowEnvironment();
  return {
    run: (fake, body) =>
      runWith(fake.activities, async (env, taskQueue) => {
        const r = new Run(env, taskQueue, fake);
        try {
          await body(r);
        } finally {
          await r.terminateRunning();
        }
      }),
  };
}

/**
 * SDK and worker logs at WARN (a worker per test makes INFO noise), minus the "Activity failed"
 * warnings of failures a fake was scripted to throw (an ApplicationFailure from one of our
 * activities): those are the test's point. Anything else, such as an activity the fake does not
 * register, is still shown.
 */
function installQuietRuntime(): void {
  // The identity workflow's fakes (./identity.test.ts) script failures of these too.
  const ours = new Set<string>([...lifecycleActivityNames, 'grantBirthright', 'enableAccounts', 'disableAccounts', 'awaitIdentityRemovals', 'pumpServiceDesk']);
  const logger = new DefaultLogger('WARN', ({ level, message, meta }) => {
    if (message === 'Activity failed' && ours.has(String(meta?.activityType)) && meta?.error instanceof ApplicationFailure) return;
    console.warn(`[${level}] ${message}`, meta ?? '');
  });
  try {
    Runtime.install({ logger });
  } catch {
    // Already installed in this process (the Runtime is a process-wide singleton): keep it.
  }
}
