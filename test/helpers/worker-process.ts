/**
 * The worker as a child process (`temporal/worker-main.ts`, what `npm run worker` runs), so a test
 * can SIGKILL it like a crashed pod. Used by the fault drills and the model-based test.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));

export interface WorkerProcess {
  /** Starts a worker and resolves once it printed its ready line. */
  start(): Promise<void>;
  /** SIGKILL: no drain, no graceful shutdown; in-flight activities are abandoned. */
  kill(): Promise<void>;
  /** SIGTERM: the worker drains and stops. */
  stop(): Promise<void>;
  /** Throws, with the worker's last output, when it died without being killed by the test. */
  assertAlive(): void;
  /** Exits the test did not cause (a crash is a finding). */
  readonly unexpectedExits: string[];
  /** The running worker's process id (for memory sampling), if one is running. */
  readonly pid: number | undefined;
}

export function workerProcess(env: () => Record<string, string | undefined>, logLevel = 'error'): WorkerProcess {
  let current: ChildProcess | undefined;
  /** A worker still starting: kill()/stop() end it too, so no stray worker keeps polling the queue. */
  let starting: ChildProcess | undefined;
  const unexpectedExits: string[] = [];

  async function end(signal: NodeJS.Signals) {
    const w = current ?? starting;
    current = undefined;
    starting = undefined;
    if (!w || w.exitCode !== null || w.signalCode !== null) return;
    const exited = new Promise((r) => w.once('exit', r));
    w.kill(signal);
    await exited;
  }

  return {
    unexpectedExits,
    get pid() {
      return current?.pid;
    },
    start() {
      const child = spawn(process.execPath, ['--import', 'tsx', 'temporal/worker-main.ts'], {
        cwd: root,
        env: { ...process.env, ...env(), LOG_LEVEL: logLevel },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      starting = child;
      // The test process exiting ends the worker with it: the worker would otherwise keep polling
      // the task queue of a stack that no longer exists. (A SIGKILLed test process cannot do this.)
      const orphanGuard = () => child.kill('SIGKILL');
      process.once('exit', orphanGuard);
      child.once('exit', () => process.removeListener('exit', orphanGuard));
      let out = '';
      return new Promise((resolve, reject) => {
        const t = setTimeout(() => {
          // Never leave a half-started worker behind.
          if (starting === child) starting = undefined;
          child.kill('SIGKILL');
          reject(new Error(`worker did not become ready: ${out}`));
        }, 60_000);
        child.stdout!.on('data', (d) => {
          out = (out + d).slice(-20_000);
          if (out.includes('accessloop-worker-ready') && starting === child) {
            clearTimeout(t);
            starting = undefined;
            current = child;
            resolve();
          }
        });
        child.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
        child.on('exit', (code, signal) => {
          clearTimeout(t);
          if (starting === child) starting = undefined;
          if (current === child) {
            current = undefined;
            unexpectedExits.push(`worker exited (${code ?? signal}): ${out.slice(-3000)}`);
          }
          reject(new Error(`worker exited early (${code ?? signal}): ${out}`));
        });
      });
    },
    kill: () => end('SIGKILL'),
    stop: () => end('SIGTERM'),
    assertAlive() {
      if (unexpectedExits.length) throw new Error(unexpectedExits.join('\n'));
    },
  };
}
