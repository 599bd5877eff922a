/**
 * One id per HTTP request: echoed to the caller, on the structured access-log line, and in the
 * audit events the request caused, including those the workflow writes later (decision, revoke).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLogger } from '../../temporal/logger.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<string, string>;
const lines: Array<Record<string, unknown>> = [];

beforeAll(async () => {
  const log = createLogger('info', { write: (line: string) => void lines.push(JSON.parse(line) as Record<string, unknown>) });
  s = await startStack({ log });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
});

afterAll(async () => {
  await s?.stop();
});

const accessLine = (requestId: string) => lines.find((l) => l.msg === 'http request' && l.requestId === requestId);

async function timeline(id: string): Promise<Array<{ action: string; data: Record<string, unknown> }>> {
  return (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.timeline;
}

describe('request ids', () => {
  it('join the access log and the audit events of a request, decision and revoke', async () => {
    const justification = 'needs the engineering group for the build farm';
    const created = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements.engineering, durationSeconds: 600, justification }, { 'x-request-id': 'test-create-0001' });
    expect(created.status).toBe(202);
    const id = created.body.id as string;
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' }, { 'x-request-id': 'test-decide-0001' })).status === 200, 'approval');
    await s.waitForStatus(id, ['active']);
    expect((await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.alice, { reason: 'manual' }, { 'x-request-id': 'test-revoke-0001' })).status).toBe(202);
    await s.waitForStatus(id, ['revoked']);

    const events = await timeline(id);
    const byAction = (a: string) => events.find((e) => e.action === a);
    expect(byAction('request.submitted')?.data.httpRequestId).toBe('test-create-0001');
    expect(byAction('request.approved')?.data.httpRequestId).toBe('test-decide-0001');
    expect(byAction('grant.revoke_requested')?.data.httpRequestId).toBe('test-revoke-0001');

    expect(accessLine('test-create-0001')).toMatchObject({ method: 'POST', route: '/v1/access-requests/', status: 202, principal: s.catalog.identities.alice });
    expect(accessLine('test-revoke-0001')).toMatchObject({ route: '/v1/access-requests/:id/revoke', status: 202 });
    // the decision was retried until the stage opened: every attempt logged under the same id
    expect(lines.filter((l) => l.requestId === 'test-decide-0001').some((l) => l.status === 200)).toBe(true);
    // structured, and free of secrets and free text
    const all = JSON.stringify(lines);
    expect(all).not.toContain(tok.alice);
    expect(all).not.toContain(justification);
    expect(all).not.toContain(`/v1/access-requests/${id}`);
  });

  it('echoes a well-formed caller id, replaces a hostile one, and puts it in error bodies', async () => {
    const ok = await fetch(`${s.rt.apiUrl}/healthz`, { headers: { 'x-request-id': 'caller-abc-123' } });
    expect(ok.headers.get('x-request-id')).toBe('caller-abc-123');
    for (const hostile of ['short', 'has spaces in it', 'x'.repeat(200), 'inject"quote']) {
      const r = await fetch(`${s.rt.apiUrl}/healthz`, { headers: { 'x-request-id': hostile } });
      expect(r.headers.get('x-request-id')).toMatch(/^[0-9a-f-]{36}$/);
    }
    const bad = await fetch(`${s.rt.apiUrl}/v1/approvals/pending`);
    const body = (await bad.json()) as { error: { requestId: string } };
    expect(bad.status).toBe(401);
    expect(body.error.requestId).toBe(bad.headers.get('x-request-id'));
    expect(accessLine(body.error.requestId)).toMatchObject({ status: 401 });
  });
});
