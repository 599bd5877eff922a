/**
 * The worker-only process's probe listener (temporal/worker-health.ts) on a loopback port, with
 * fake readiness sources: routing, the /readyz body shared with the API, and closing.
 */
import { afterEach, describe, expect, it } from 'vitest';
import type { ReadinessSources } from '../../temporal/readiness.js';
import { workerPolling } from '../../temporal/readiness.js';
import { startHealthListener, type HealthListener } from '../../temporal/worker-health.js';

let listener: HealthListener | undefined;
afterEach(async () => {
  await listener?.close();
  listener = undefined;
});

/** Mutable fakes: each test flips the part it takes down. */
function fakes() {
  const state = { db: true, temporal: true, worker: true as boolean | 'throws' };
  const sources: ReadinessSources = {
    pingDb: async () => {
      if (!state.db) throw new Error('connection refused');
    },
    pingTemporal: () => (state.temporal ? Promise.resolve({}) : Promise.reject(new Error('unavailable'))),
    workerReady: () => {
      if (state.worker === 'throws') throw new Error('worker gone');
      return state.worker;
    },
  };
  return { state, sources };
}

async function start(sources: () => ReadinessSources | undefined) {
  listener = await startHealthListener({ host: '127.0.0.1', port: 0, sources });
  return `http://${listener.address}`;
}

async function get(url: string, init?: RequestInit) {
  const r = await fetch(url, init);
  const text = await r.text();
  return { status: r.status, type: r.headers.get('content-type'), body: text ? (JSON.parse(text) as unknown) : undefined };
}

describe('worker health listener', () => {
  it('binds the port it was given 0 for, and reports it as host:port', async () => {
    const base = await start(() => fakes().sources);
    expect(listener!.port).toBeGreaterThan(0);
    expect(listener!.address).toBe(`127.0.0.1:${listener!.port}`);
    expect(base).toBe(`http://127.0.0.1:${listener!.port}`);
  });

  it('/healthz is 200 whatever the dependencies say, and also while the process is still starting', async () => {
    const { state, sources } = fakes();
    let started = false;
    const base = await start(() => (started ? sources : undefined));
    expect(await get(`${base}/healthz`)).toEqual({ status: 200, type: 'application/json; charset=utf-8', body: { status: 'ok' } });
    started = true;
    state.db = false;
    state.worker = false;
    expect(await get(`${base}/healthz`)).toMatchObject({ status: 200, body: { status: 'ok' } });
  });

  it('/readyz is 200 with every part ok, and 503 naming the part that is down', async () => {
    const { state, sources } = fakes();
    const base = await start(() => sources);
    expect(await get(`${base}/readyz`)).toEqual({ status: 200, type: 'application/json; charset=utf-8', body: { status: 'ready', database: 'ok', temporal: 'ok', worker: 'ok' } });

    state.worker = false;
    expect(await get(`${base}/readyz`)).toMatchObject({ status: 503, body: { status: 'not_ready', database: 'ok', temporal: 'ok', worker: 'down' } });
    state.worker = 'throws';
    expect(await get(`${base}/readyz`)).toMatchObject({ status: 503, body: { worker: 'down' } });
    state.worker = true;

    state.db = false;
    expect(await get(`${base}/readyz`)).toMatchObject({ status: 503, body: { status: 'not_ready', database: 'down', temporal: 'ok', worker: 'ok' } });
    state.db = true;

    state.temporal = false;
    expect(await get(`${base}/readyz`)).toMatchObject({ status: 503, body: { status: 'not_ready', database: 'ok', temporal: 'down', worker: 'ok' } });
    state.temporal = true;

    // a query string does not change the route
    expect(await get(`${base}/readyz?verbose=1`)).toMatchObject({ status: 200, body: { status: 'ready' } });
  });

  it('/readyz is 503 with everything down while the runtime is not up yet', async () => {
    const base = await start(() => undefined);
    expect(await get(`${base}/readyz`)).toEqual({ status: 503, type: 'application/json; charset=utf-8', body: { status: 'not_ready', database: 'down', temporal: 'down', worker: 'down' } });
  });

  it('a ping that throws instead of rejecting counts as down', async () => {
    const base = await start(() => ({
      pingDb: () => {
        throw new Error('pool closed');
      },
      pingTemporal: async () => ({}),
      workerReady: () => true,
    }));
    expect(await get(`${base}/readyz`)).toMatchObject({ status: 503, body: { database: 'down', temporal: 'ok', worker: 'ok' } });
  });

  it('answers 404 to any other path or method', async () => {
    const base = await start(() => fakes().sources);
    for (const p of ['/', '/metrics', '/healthz/', '/readyz/x', '/HEALTHZ']) expect((await get(`${base}${p}`)).status, p).toBe(404);
    for (const method of ['POST', 'PUT', 'DELETE']) {
      expect((await get(`${base}/healthz`, { method })).status, method).toBe(404);
      expect((await get(`${base}/readyz`, { method })).status, method).toBe(404);
    }
    // HEAD is a GET without a body (some probes use it)
    expect(await get(`${base}/healthz`, { method: 'HEAD' })).toMatchObject({ status: 200, body: undefined });
  });

  it('close() stops listening: the next probe is refused; closing twice is fine', async () => {
    const base = await start(() => fakes().sources);
    expect((await get(`${base}/healthz`)).status).toBe(200);
    const l = listener!;
    listener = undefined;
    await l.close();
    await l.close();
    await expect(fetch(`${base}/healthz`)).rejects.toMatchObject({ cause: { code: 'ECONNREFUSED' } });
  });

  it('refuses to start on a port already taken', async () => {
    await start(() => fakes().sources);
    await expect(startHealthListener({ host: '127.0.0.1', port: listener!.port, sources: () => undefined })).rejects.toMatchObject({ code: 'EADDRINUSE' });
  });
});

describe('workerPolling (the worker part of /readyz, API and worker process alike)', () => {
  const status = (runState: string, workflowPollerState = 'POLLING', activityPollerState = 'POLLING') => ({
    getStatus: () => ({ runState, workflowPollerState, activityPollerState }) as ReturnType<Parameters<typeof workerPolling>[0]['getStatus']>,
  });
  it('is ok only while running with both pollers polling', () => {
    expect(workerPolling(status('RUNNING'))).toBe(true);
    expect(workerPolling(status('STOPPING'))).toBe(false);
    expect(workerPolling(status('RUNNING', 'FAILED'))).toBe(false);
    expect(workerPolling(status('RUNNING', 'POLLING', 'SHUTDOWN'))).toBe(false);
  });
});
