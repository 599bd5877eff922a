/**
 * accessloop scaled out as a deployment runs it: N worker processes (`temporal/worker-main.ts`,
 * what `npm run worker` runs) and M API replicas (`api/server.ts --api-only`, what `npm run api`
 * runs), each its own child process on one task queue and database, so a test can SIGKILL any
 * one of them like a crashed pod.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { freePort } from '../../temporal/dev-server.js';
import { workerProcess, type WorkerProcess } from './worker-process.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const READY_TIMEOUT_MS = 90_000;

export interface ApiProcess {
  /** `http://127.0.0.1:<port>`, fixed for the process's life (a restart listens there again). */
  readonly url: string;
  /** Starts the replica and resolves once it printed that it is running. */
  start(): Promise<void>;
  /** SIGKILL: connections in flight are reset, nothing is drained. */
  kill(): Promise<void>;
  /** SIGTERM: the replica drains HTTP and stops. */
  stop(): Promise<void>;
  /** Throws, with the replica's last output, when it died without being killed by the test. */
  assertAlive(): void;
  readonly pid: number | undefined;
}

/** One API replica as a child process on `port` (the port is the replica's identity behind the balancer). */
export function apiProcess(env: () => Record<string, string | undefined>, port: number, logLevel = 'error'): ApiProcess {
  let current: ChildProcess | undefined;
  const unexpectedExits: string[] = [];

  async function end(signal: NodeJS.Signals) {
    const c = current;
    current = undefined;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise((r) => c.once('exit', r));
    c.kill(signal);
    await exited;
  }

  return {
    url: `http://127.0.0.1:${port}`,
    get pid() {
      return current?.pid;
    },
    start() {
      const child = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts', '--api-only'], {
        cwd: root,
        env: { ...process.env, ...env(), PORT: String(port), HOST: '127.0.0.1', LOG_LEVEL: logLevel },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      current = child;
      // A replica outliving the test would keep answering on a port the next run may reuse.
      const orphanGuard = () => child.kill('SIGKILL');
      process.once('exit', orphanGuard);
      child.once('exit', () => process.removeListener('exit', orphanGuard));
      let out = '';
      return new Promise<void>((resolve, reject) => {
        let ready = false;
        const t = setTimeout(() => {
          if (current === child) current = undefined;
          child.kill('SIGKILL');
          reject(new Error(`API replica on ${port} did not become ready: ${out}`));
        }, READY_TIMEOUT_MS);
        child.stdout!.on('data', (d) => {
          out = (out + d).slice(-20_000);
          if (!ready && out.includes('accessloop is running')) {
            ready = true;
            clearTimeout(t);
            resolve();
          }
        });
        child.stderr!.on('data', (d) => (out = (out + d).slice(-20_000)));
        child.on('exit', (code, signal) => {
          clearTimeout(t);
          if (current === child) {
            current = undefined;
            if (ready) unexpectedExits.push(`API replica on ${port} exited (${code ?? signal}): ${out.slice(-3000)}`);
          }
          if (!ready) reject(new Error(`API replica on ${port} exited early (${code ?? signal}): ${out}`));
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

/**
 * What every process of a multi-process deployment must share, fresh per run: multi-process mode
 * and the keys it refuses to start without (action links, credentials, payloads, evidence, HR
 * webhooks; `hrSecret` when the caller signs HR events itself).
 */
export function sharedKeysEnv(hrSecret: Buffer = randomBytes(24)): Record<string, string> {
  return {
    ACCESSLOOP_MULTI_PROCESS: 'true',
    ACCESSLOOP_ACTION_LINK_SECRET: randomBytes(24).toString('hex'),
    ACCESSLOOP_CREDENTIAL_KEY: randomBytes(32).toString('hex'),
    ACCESSLOOP_PAYLOAD_KEYS: `shared-1:${randomBytes(32).toString('hex')}`,
    ACCESSLOOP_EVIDENCE_SIGNING_KEY: randomBytes(32).toString('hex'),
    ACCESSLOOP_HR_WEBHOOK_SECRETS: `whsec_${hrSecret.toString('base64')}`,
  };
}

export interface ScaleOutOptions {
  workers: number;
  apis: number;
  /** Each process's environment, by name (`worker-1`…, `api-1`…): e.g. a different frontend per process. */
  env: (name: string) => Record<string, string | undefined>;
  logLevel?: string;
}

export interface ScaleOut {
  /** `worker-1`…`worker-N`, `api-1`…`api-M`. */
  readonly names: string[];
  /** The API replicas' base URLs, in name order (the balancer's upstreams). */
  readonly apiUrls: string[];
  /** SIGKILL one process by name. */
  kill(name: string): Promise<void>;
  /** Names of the processes the test has not killed. */
  running(): string[];
  /** Throws when a process the test did not kill has exited (a crash is a finding). */
  assertAlive(): void;
  pid(name: string): number | undefined;
  /** SIGTERM to every process still running, waiting for each to exit. */
  stop(): Promise<void>;
}

type Member = { kill(): Promise<void>; stop(): Promise<void>; start(): Promise<void>; assertAlive(): void; readonly pid: number | undefined };

/** Starts every process and resolves when all are ready; if one fails, ends the others. */
export async function startScaleOut(opts: ScaleOutOptions): Promise<ScaleOut> {
  const members = new Map<string, Member>();
  const workers: Member[] = [];
  const apis: ApiProcess[] = [];
  for (let i = 1; i <= opts.workers; i++) {
    const name = `worker-${i}`;
    const w: WorkerProcess = workerProcess(() => opts.env(name), opts.logLevel);
    members.set(name, w);
    workers.push(w);
  }
  for (let i = 1; i <= opts.apis; i++) {
    const name = `api-${i}`;
    const a = apiProcess(() => opts.env(name), await freePort(), opts.logLevel);
    members.set(name, a);
    apis.push(a);
  }
  const killed = new Set<string>();
  const stop = async () => {
    await Promise.all([...members.values()].map((m) => m.stop()));
  };
  // Workers one after another (each bundles the workflow code with webpack, CPU-bound, within
  // its own ready deadline), the API replicas alongside them.
  const inTurn = async () => {
    for (const w of workers) await w.start();
  };
  const started = await Promise.allSettled([inTurn(), ...apis.map((a) => a.start())]);
  const failed = started.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed.length) {
    await stop();
    throw new Error(`scale-out did not start:\n${failed.map((f) => (f.reason as Error).message.slice(-4000)).join('\n')}`);
  }
  const member = (name: string) => {
    const m = members.get(name);
    if (!m) throw new Error(`no process ${name} (one of ${[...members.keys()].join(', ')})`);
    return m;
  };
  return {
    names: [...members.keys()],
    apiUrls: apis.map((a) => a.url),
    async kill(name) {
      killed.add(name);
      await member(name).kill();
    },
    running: () => [...members.keys()].filter((n) => !killed.has(n)),
    assertAlive() {
      for (const m of members.values()) m.assertAlive();
    },
    pid: (name) => member(name).pid,
    stop,
  };
}
