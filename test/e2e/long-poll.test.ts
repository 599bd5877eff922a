/**
 * Following a request without polling: `GET /v1/access-requests/:id?waitFor=…` answers when the
 * status is reached (woken by the database's notification, migration 0014), at a final status,
 * or at its timeout; a decision sent before its stage is open waits for the stage instead of
 * answering 409. Checked against the real stack (API, worker, Postgres, slapd).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { approvals } from '../../db/schema.js';
import { startStack, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<'operator' | 'alice' | 'bob' | 'carol', string>;
let ent: Record<string, string>;

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as typeof tok;
  ent = s.catalog.entitlements;
});
afterAll(async () => {
  await s?.stop();
});

async function request(entitlementId: string, durationSeconds = 600) {
  const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId, durationSeconds, justification: 'following the request without polling' });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body as { id: string; workflowId: string };
}
const revoke = (id: string) => s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual', comment: 'test over' });

describe('long polls on a request', () => {
  it('a decision sent at once waits for its stage to open, and a long poll in flight answers when the grant is verified', async () => {
    const req = await request(ent.engineering!);
    // No approval row can exist yet: the workflow was started a moment ago.
    const decided = s.call('POST', `/v1/access-requests/${req.id}/decision`, tok.bob, { decision: 'approve' });
    const polled = s.call('GET', `/v1/access-requests/${req.id}?waitFor=active&waitSeconds=30`, tok.alice);
    const t0 = Date.now();
    const d = await decided;
    expect(d.status, JSON.stringify(d.body)).toBe(200);
    const p = await polled;
    expect(p.status).toBe(200);
    expect(p.body.status).toBe('active');
    // Woken by the change, not by the 30 s timeout.
    expect(Date.now() - t0).toBeLessThan(15_000);
    // The API said active: the membership is on the directory, read independently.
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));
    await revoke(req.id);
    const gone = await s.call('GET', `/v1/access-requests/${req.id}?waitFor=revoked&waitSeconds=30`, tok.operator);
    expect(gone.body.status).toBe('revoked');
    expect(gone.body.removalVerifiedAt).toBeTruthy();
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
  });

  it('answers at the timeout with the status as it is, and at a final status it did not ask for', async () => {
    const req = await request(ent['finance-readers']!);
    const t0 = Date.now();
    const waited = await s.call('GET', `/v1/access-requests/${req.id}?waitFor=active&waitSeconds=2`, tok.alice);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(1_900);
    expect(waited.status).toBe(200);
    expect(waited.body.status).toBe('pending_approval');

    // Waiting for `active`, the rejection ends the wait: nobody waits for a status that cannot come.
    const polled = s.call('GET', `/v1/access-requests/${req.id}?waitFor=active&waitSeconds=30`, tok.alice);
    const r = await s.call('POST', `/v1/access-requests/${req.id}/decision`, tok.bob, { decision: 'reject', comment: 'not needed' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect((await polled).body.status).toBe('rejected');
  });

  it('refuses malformed waits, and never waits for someone who may not see the request', async () => {
    const req = await request(ent.engineering!);
    for (const q of ['waitFor=granted', 'waitFor=', 'waitFor=active&waitSeconds=0', 'waitFor=active&waitSeconds=31', 'waitSeconds=5', 'waitFor=active&since=1']) {
      const r = await s.call('GET', `/v1/access-requests/${req.id}?${q}`, tok.alice);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code, q).toBe('invalid_request');
    }
    // dave (a requester) is neither party nor approver: a 404 at once, as without the wait.
    const daveToken = await s.call('POST', '/v1/tokens', tok.operator, { principalId: s.catalog.identities.dave, roles: ['requester'] });
    expect(daveToken.status, JSON.stringify(daveToken.body)).toBe(201);
    const t0 = Date.now();
    const hidden = await s.call('GET', `/v1/access-requests/${req.id}?waitFor=active&waitSeconds=10`, daveToken.body.token);
    expect(hidden.status).toBe(404);
    expect(Date.now() - t0).toBeLessThan(5_000);
    // Nothing of the refused reads changed the request.
    expect((await s.call('GET', `/v1/access-requests/${req.id}`, tok.alice)).body.status).toBe('pending_approval');
    await revoke(req.id);
    expect((await s.call('GET', `/v1/access-requests/${req.id}?waitFor=cancelled`, tok.alice)).body.status).toBe('cancelled');
  });

  it('a decision from someone who is not an approver is refused once the stage opens, not let through by the wait', async () => {
    const req = await request(ent['finance-readers']!);
    const r = await s.call('POST', `/v1/access-requests/${req.id}/decision`, tok.carol, { decision: 'approve' });
    expect(r.status, JSON.stringify(r.body)).toBe(403);
    const rows = await s.rt.db.select().from(approvals);
    expect(rows.filter((a) => a.requestId === req.id).every((a) => a.status === 'pending')).toBe(true);
    await revoke(req.id);
  });
});
