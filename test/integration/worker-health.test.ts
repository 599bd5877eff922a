/**
 * The worker-only process (`temporal/worker-main.ts`, what `npm run worker` runs) with
 * ACCESSLOOP_WORKER_HEALTH_PORT=0: it prints the bound port in its ready line, answers a
 * supervisor's probes on it, and stops listening on SIGTERM.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
let s: Stack | undefined;
let child: ChildProcess | undefined;

/** Spawns the worker and resolves with the `health=host:port` of its ready line. */
function startWorker(env: Record<string, string>): Promise<{ child: ChildProcess; health: string }> {
  const c = spawn(process.execPath, ['--import', 'tsx', 'temporal/worker-main.ts'], {
    cwd: root,
    env: { ...process.env, ...env, LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  child = c;
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`worker did not become ready: ${out}`)), 60_000);
    c.stdout!.on('data', (d) => {
      out += d;
      const m = /^accessloop-worker-ready health=(\S+)$/m.exec(out);
      if (m) {
        clearTimeout(t);
        resolve({ child: c, health: m[1]! });
      }
    });
    c.stderr!.on('data', (d) => (out += d));
    c.on('exit', (code) => {
      clearTimeout(t);
      reject(new Error(`worker exited early (${code}): ${out}`));
    });
  });
}

async function get(url: string) {
  const r = await fetch(url);
  return { status: r.status, body: (await r.json()) as unknown };
}

beforeAll(async () => {
  s = await startStack({ worker: false });
});
afterAll(async () => {
  if (child && child.exitCode === null && child.signalCode === null) {
    const exited = new Promise((r) => child!.once('exit', r));
    child.kill('SIGKILL');
    await exited;
  }
  await s?.stop();
});

describe('npm run worker with ACCESSLOOP_WORKER_HEALTH_PORT', () => {
  it('serves /healthz and /readyz on the port of its ready line, 404 elsewhere, and closes the listener on SIGTERM', async () => {
    const { child: worker, health } = await startWorker({ ...s!.workerEnv, ACCESSLOOP_WORKER_HEALTH_PORT: '0' });
    expect(health).toMatch(/^127\.0\.0\.1:\d+$/);
    expect(health).not.toBe('127.0.0.1:0');
    const base = `http://${health}`;

    expect(await get(`${base}/healthz`)).toEqual({ status: 200, body: { status: 'ok' } });
    // the real worker polling the stack's task queue and the real database answering
    const ready = await waitFor(async () => {
      const r = await get(`${base}/readyz`);
      return r.status === 200 && r;
    }, 'the worker to report ready');
    expect(ready).toEqual({ status: 200, body: { status: 'ready', database: 'ok', temporal: 'ok', worker: 'ok' } });
    expect((await get(`${base}/metrics`)).status).toBe(404);

    const exited = new Promise<number | null>((r) => worker.once('exit', (code) => r(code)));
    worker.kill('SIGTERM');
    await waitFor(
      () =>
        fetch(`${base}/healthz`).then(
          () => false,
          (e: { cause?: { code?: string } }) => e.cause?.code === 'ECONNREFUSED',
        ),
      'the health listener to close',
    );
    expect(await exited).toBe(0);
    await expect(fetch(`${base}/healthz`)).rejects.toMatchObject({ cause: { code: 'ECONNREFUSED' } });
  });
});
