/**
 * Restarts for the model-based test: the Temporal worker (the product's own runtime in worker
 * mode, as `npm run worker` composes it, stopped and started again in this process so the
 * workflow bundle is built once) and slapd (stopped and started on the same data dir and port).
 */
import fc from 'fast-check';
import { createLogger } from '../../temporal/logger.js';
import { startRuntime, type Runtime } from '../../temporal/runtime.js';
import type { Stack } from '../helpers/stack.js';
import type { Model, Real } from './commands.js';

export interface ModelWorker {
  /** Stops the running worker (its in-flight activities drain or are cancelled) and starts a new one. */
  restart(): Promise<void>;
  stop(): Promise<void>;
}

/** The stack must be started with `worker: false`; this worker joins its task queue. */
export async function startModelWorker(stack: Stack): Promise<ModelWorker> {
  const start = () => startRuntime({ config: stack.config, log: createLogger(process.env.TEST_LOG_LEVEL ?? 'error'), api: false, worker: true, env: stack.workerEnv, say: () => {} });
  let rt: Runtime | undefined = await start();
  return {
    async restart() {
      await rt?.stop();
      rt = undefined;
      rt = await start();
    },
    async stop() {
      await rt?.stop();
      rt = undefined;
    },
  };
}

type Cmd = fc.AsyncCommand<Model, Real>;

class RestartWorkerCmd implements Cmd {
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    const t = Date.now();
    await r.env.worker.restart();
    r.trace.push(`${this} → back after ${Date.now() - t} ms`);
  }
  toString() {
    return 'restart.worker()';
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

/** Rare on purpose (each costs seconds): together about one step in forty. */
export const restartWeighted = [
  { weight: 1, arbitrary: fc.constant(new RestartWorkerCmd()) },
  { weight: 1, arbitrary: fc.integer({ min: 200, max: 2000 }).map((ms) => new RestartSlapdCmd(ms)) },
].map(({ weight, arbitrary }) => ({ weight, arbitrary: arbitrary as fc.Arbitrary<Cmd> }));

export const restartCmd = {
  worker: () => new RestartWorkerCmd(),
  slapd: (downMs: number) => new RestartSlapdCmd(downMs),
};
