/**
 * /readyz of a process that runs a worker says whether the worker still polls its task queue:
 * a replica whose worker stopped is taken out of rotation (503, worker: down) instead of
 * serving while its share of the queue waits. An API-only process reports worker: absent.
 */
import { afterAll, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const stacks: Stack[] = [];
afterAll(async () => {
  for (const s of stacks) await s.stop();
});

describe('/readyz and the worker', () => {
  it('is ready while the worker polls, and 503 with worker down once it has stopped', async () => {
    const s = await startStack();
    stacks.push(s);
    expect(await s.call('GET', '/readyz')).toEqual({ status: 200, body: { status: 'ready', database: 'ok', temporal: 'ok', worker: 'ok' } });

    const worker = s.rt.worker!;
    worker.shutdown();
    await waitFor(async () => worker.getState() === 'STOPPED', 'the worker to stop');
    expect(await s.call('GET', '/readyz')).toEqual({ status: 503, body: { status: 'not_ready', database: 'ok', temporal: 'ok', worker: 'down' } });
    // liveness is not readiness: the process itself is fine
    expect((await s.call('GET', '/healthz')).status).toBe(200);
  });

  it('an API-only process has no worker to wait for', async () => {
    const s = await startStack({ worker: false });
    stacks.push(s);
    expect(await s.call('GET', '/readyz')).toEqual({ status: 200, body: { status: 'ready', database: 'ok', temporal: 'ok', worker: 'absent' } });
  });
});
