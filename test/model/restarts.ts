/**
 * Restarts for the model-based test: the Temporal worker as a child process (what `npm run
 * worker` runs), SIGKILLed like a crashed pod or, less often, stopped with SIGTERM like a rolling
 * deploy, and slapd (stopped and started on the same data dir and port).
 */
import fc from 'fast-check';
import type { ActivityOptions } from '@temporalio/workflow';
import { AWAIT_REMOVALS, BOOKKEEPING, TARGET_WRITE, removalOverdue, removalWithinDeadline } from '../../workflows/activity-options.js';
import type { Stack } from '../helpers/stack.js';
import { workerProcess } from '../helpers/worker-process.js';
import type { Model, Real } from './commands.js';

/** A stretch of time with no worker polling, as the invariants' grace must allow for it. */
export interface WorkerOutage {
  down: number;
  up: number;
  /** How long after `up` an activity the dead worker abandoned may still sit "started" on the server. */
  abandonedMs: number;
}

const seconds = (d: ActivityOptions['startToCloseTimeout']) => {
  const m = /^(\d+)s$/.exec(String(d));
  if (!m) throw new Error(`expected a timeout in seconds, got ${String(d)}`);
  return Number(m[1]) * 1000;
};
const anyTiming = { revokeVerifyDeadlineSeconds: 3, verifyMaxIntervalSeconds: 1, defaultApprovalTimeoutSeconds: 60 };
/**
 * How long an activity in flight on a SIGKILLed worker waits before Temporal retries it
 * elsewhere: its heartbeat timeout (the lease path's profiles heartbeat, 10 s), else its
 * start-to-close timeout; the longest over the profiles a lease or a leaver uses.
 */
export const ABANDONED_ACTIVITY_MS = Math.max(
  // A heartbeating attempt is given up after its heartbeat timeout, the others after start-to-close.
  ...[BOOKKEEPING, TARGET_WRITE, AWAIT_REMOVALS, removalWithinDeadline(anyTiming), removalOverdue(anyTiming)].map((o) => Math.min(seconds(o.startToCloseTimeout), o.heartbeatTimeout ? seconds(o.heartbeatTimeout) : Infinity)),
);

export interface ModelWorker {
  /** SIGKILL (no drain: in-flight activities are abandoned), then a new process. */
  crash(): Promise<void>;
  /** SIGTERM (the runtime drains in-flight activities), then a new process. */
  restart(): Promise<void>;
  /** Exits nobody asked for since the last call (each a finding); a worker that died is started again. */
  unexpectedExits(): Promise<string[]>;
  stop(): Promise<void>;
}

/** The stack must be started with `worker: false`; this worker joins its task queue. */
export async function startModelWorker(stack: Stack): Promise<ModelWorker> {
  const w = workerProcess(() => stack.workerEnv, process.env.TEST_LOG_LEVEL ?? 'error');
  let seen = 0;
  let running = false;
  const start = async () => {
    await w.start();
    running = true;
  };
  const end = async (how: 'kill' | 'stop') => {
    running = false;
    await w[how]();
  };
  await start();
  return {
    async crash() {
      await end('kill');
      await start();
    },
    async restart() {
      await end('stop');
      await start();
    },
    async unexpectedExits() {
      const fresh = w.unexpectedExits.slice(seen);
      seen = w.unexpectedExits.length;
      if (fresh.length > 0 && running) await start();
      return fresh;
    },
    stop: () => end('stop'),
  };
}

type Cmd = fc.AsyncCommand<Model, Real>;

class RestartWorkerCmd implements Cmd {
  constructor(readonly how: 'crash' | 'graceful') {}
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const down = Date.now();
    await (this.how === 'crash' ? r.env.worker.crash() : r.env.worker.restart());
    const up = Date.now();
    r.outages.push({ down, up, abandonedMs: this.how === 'crash' ? ABANDONED_ACTIVITY_MS : 0 });
    r.trace.push(`${this} → back after ${up - down} ms`);
  }
  toString() {
    return this.how === 'crash' ? 'crash.worker()' : 'restart.worker()';
  }
}

/** The directory away for a moment: grants and removals in flight must retry, not give up. */
class RestartSlapdCmd implements Cmd {
  constructor(readonly downMs: number) {}
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    await r.env.stack.slapd.stop();
    await new Promise((res) => setTimeout(res, this.downMs));
    await r.env.stack.slapd.start();
    r.trace.push(`${this} → back`);
  }
  toString() {
    return `restart.slapd(${this.downMs}ms down)`;
  }
}

/**
 * Rare on purpose (each costs seconds: a new worker process bundles the workflow code, and a
 * crash can leave an activity to its startToCloseTimeout): together about one step in forty.
 * Crashes are what the issue asks for; a graceful restart is the cheaper, rarer variant.
 */
// MODEL_RESTART_WEIGHT scales both restart kinds (default 1): the bench's survey raises it so that
// a bounded survey reliably draws worker crashes.
const RESTART_WEIGHT = Math.max(1, Math.round(Number(process.env.MODEL_RESTART_WEIGHT ?? 1)) || 1);
export const restartWeighted = [
  { weight: RESTART_WEIGHT, arbitrary: fc.oneof({ weight: 3, arbitrary: fc.constant(new RestartWorkerCmd('crash')) }, { weight: 1, arbitrary: fc.constant(new RestartWorkerCmd('graceful')) }) },
  { weight: RESTART_WEIGHT, arbitrary: fc.integer({ min: 200, max: 2000 }).map((ms) => new RestartSlapdCmd(ms)) },
].map(({ weight, arbitrary }) => ({ weight, arbitrary: arbitrary as fc.Arbitrary<Cmd> }));

export const restartCmd = {
  crashWorker: () => new RestartWorkerCmd('crash'),
  restartWorker: () => new RestartWorkerCmd('graceful'),
  slapd: (downMs: number) => new RestartSlapdCmd(downMs),
};
