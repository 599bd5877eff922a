/**
 * Submitting commits the request first and starts its workflow afterwards. These tests put a
 * second API (the product's createApp, same database and Temporal) in front of a client whose
 * workflow start misbehaves: a start that keeps failing must close the row (503, an audit event,
 * nothing left pending), and a start whose answer was lost must count as started on the retry.
 */
import { randomBytes } from 'node:crypto';
import type { Server } from 'node:http';
import { WorkflowNotFoundError, type Client, type WorkflowClient } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createMetrics } from '../../activities/domain/metrics.js';
import { verifyChain } from '../../activities/domain/audit.js';
import { createCredentialVault } from '../../activities/domain/vault.js';
import { createApp } from '../../api/app.js';
import { createLogger } from '../../temporal/logger.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<string, string>;

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
});
afterAll(async () => {
  await s?.stop();
});

/** The stack's real client, with `workflow.start` replaced. */
function withStart(start: WorkflowClient['start']): Client {
  const real = s.rt.temporal;
  const workflow = new Proxy(real.workflow, { get: (t, k) => (k === 'start' ? start : Reflect.get(t, k, t)) });
  return new Proxy(real, { get: (t, k) => (k === 'workflow' ? workflow : Reflect.get(t, k, t)) });
}

/** An API on an ephemeral port built by createApp over the stack's deps and the given client. */
async function apiWith(temporal: Client): Promise<{ url: string; close: () => Promise<void> }> {
  const app = createApp({
    db: s.rt.db,
    temporal,
    config: s.config,
    log: createLogger('silent'),
    metrics: createMetrics(),
    policies: s.rt.policies,
    actionLinkSecret: randomBytes(32),
    vault: createCredentialVault(randomBytes(32)),
  });
  const server = await new Promise<Server>((resolve) => {
    const srv = app.listen(0, '127.0.0.1', () => resolve(srv));
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

async function submit(url: string, entitlementId: string) {
  const res = await fetch(`${url}/v1/access-requests`, {
    method: 'POST',
    headers: { authorization: `Bearer ${tok.alice}`, 'content-type': 'application/json', 'x-request-id': `start-test-${randomBytes(4).toString('hex')}` },
    body: JSON.stringify({ entitlementId, durationSeconds: 600, justification: 'needs access to test the workflow start path' }),
  });
  return { status: res.status, body: (await res.json()) as any };
}

describe('workflow start after the request commits', () => {
  it('closes the request with an audit event and answers 503 when the start keeps failing', async () => {
    let attempts = 0;
    const api = await apiWith(
      withStart(async () => {
        attempts++;
        throw new Error('temporal is unreachable');
      }),
    );
    try {
      const entitlementId = s.catalog.entitlements.engineering!;
      const r = await submit(api.url, entitlementId);
      expect(r.status).toBe(503);
      expect(r.body).toEqual({ error: { code: 'workflow_unavailable', message: expect.any(String), details: { id: expect.any(String), status: 'failed' }, requestId: expect.any(String) } });
      expect(attempts).toBeGreaterThan(1); // retried, boundedly

      const id = r.body.error.details.id as string;
      const row = (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body;
      expect(row).toMatchObject({ status: 'failed', failureReason: expect.stringContaining('could not be started'), grant: null });
      expect(row.timeline.map((t: { action: string }) => t.action)).toEqual(['request.submitted', 'request.failed']);
      expect(row.timeline[1]).toMatchObject({ actorType: 'system', data: { cause: 'workflow_start_failed', error: 'Error' } });
      expect(await verifyChain(s.rt.db)).toMatchObject({ ok: true });
      await expect(s.rt.temporal.workflow.getHandle(row.workflowId).describe()).rejects.toBeInstanceOf(WorkflowNotFoundError);

      // Closed, not open: the same request through the healthy API is not a duplicate.
      const again = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId, durationSeconds: 600, justification: 'needs access to test the workflow start path' });
      expect(again.status).toBe(202);
      await s.call('POST', `/v1/access-requests/${again.body.id}/revoke`, tok.operator, { reason: 'manual' });
    } finally {
      await api.close();
    }
  });

  it('counts a start whose answer was lost as started: the retry finds the workflow, one run, 202', async () => {
    const real = s.rt.temporal.workflow;
    let attempts = 0;
    const api = await apiWith(
      withStart(async (fn, opts) => {
        attempts++;
        const handle = await real.start(fn, opts);
        if (attempts === 1) throw new Error('connection reset after the server accepted the start');
        return handle;
      }),
    );
    try {
      // another entitlement: the first test's follow-up request may still be open on engineering
      const r = await submit(api.url, s.catalog.entitlements['finance-readers']!);
      expect(r.status).toBe(202);
      expect(r.body).toEqual({ id: expect.any(String), status: 'pending_approval', workflowId: `access-request/${r.body.id}` });
      expect(attempts).toBe(2);
      // visibility lags a little: wait until the run shows, then there must be exactly one
      const runs = await waitFor(async () => {
        const c = await real.count(`WorkflowId = '${r.body.workflowId}'`);
        return c.count > 0 && c;
      }, 'the run in visibility');
      expect(runs.count).toBe(1);
      const row = await s.waitForStatus(r.body.id, ['pending_approval']);
      expect(row.timeline.map((t: { action: string }) => t.action)).toContain('request.submitted');
      expect(row.timeline.map((t: { action: string }) => t.action)).not.toContain('request.failed');
      expect((await s.call('POST', `/v1/access-requests/${r.body.id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
    } finally {
      await api.close();
    }
  });
});
