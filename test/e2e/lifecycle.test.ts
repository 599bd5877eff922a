import { WorkflowUpdateFailedError } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../activities/domain/audit.js';
import { decideUpdate, revokeSignal } from '../../workflows/messages.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<'operator' | 'alice' | 'bob' | 'carol', string>;
let ids: Stack['catalog']['identities'];
let ent: Record<string, string>;

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as typeof tok;
  ids = s.catalog.identities;
  ent = s.catalog.entitlements;
});
afterAll(async () => {
  await s?.stop();
});

async function request(token: string, body: Record<string, unknown>) {
  const r = await s.call('POST', '/v1/access-requests', token, { justification: 'needed for the on-call rotation', ...body });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return r.body as { id: string; workflowId: string; status: string };
}
const decide = (token: string, id: string, decision: 'approve' | 'reject', comment?: string) =>
  s.call('POST', `/v1/access-requests/${id}/decision`, token, { decision, ...(comment ? { comment } : {}) });
async function pendingFor(token: string, id: string) {
  // The approval task exists once the workflow has evaluated policy and opened the stage.
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', token)).body.items?.some((i: { requestId: string }) => i.requestId === id), `approval task for ${id}`);
}
async function historyEventTypes(workflowId: string): Promise<string[]> {
  const h = await s.rt.temporal.workflow.getHandle(workflowId).fetchHistory();
  return (h.events ?? []).map((e) => String(e.eventType));
}
async function scheduledActivities(workflowId: string): Promise<string[]> {
  const h = await s.rt.temporal.workflow.getHandle(workflowId).fetchHistory();
  return (h.events ?? []).map((e) => e.activityTaskScheduledEventAttributes?.activityType?.name).filter((n): n is string => !!n);
}

describe('request → approve → grant → expire → verified removal', () => {
  it('grants the real LDAP membership on approval and removes it (verified) on expiry', async () => {
    const alice = s.userDn('alice');
    expect(await s.ldapMembers('engineering')).not.toContain(alice);

    const req = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 4, ticketRef: 'CHG-1001' });
    expect(req.workflowId).toBe(`access-request/${req.id}`);
    await pendingFor(tok.bob, req.id);

    const d = await decide(tok.bob, req.id, 'approve', 'fine for the rotation');
    expect(d.status).toBe(200);
    expect(d.body.status).toBe('granting');

    const active = await s.waitForStatus(req.id, ['active']);
    expect(active.grant.grantVerifiedAt).toBeTruthy();
    expect(await s.ldapMembers('engineering')).toContain(alice);
    const access = await s.call('GET', `/v1/identities/${ids.alice}/access`, tok.alice);
    expect(access.status).toBe(200);
    expect(access.body.grants).toHaveLength(1);
    expect(access.body.grants[0].provenance).toMatchObject({ source: 'request', requestId: req.id, ticketRef: 'CHG-1001', approvals: [{ approverId: ids.bob }] });

    const done = await s.waitForStatus(req.id, ['revoked'], 20_000);
    expect(await s.ldapMembers('engineering')).not.toContain(alice);
    expect(done.grant.revokeReason).toBe('expired');
    expect(done.removalVerifiedAt).toBeTruthy();
    expect(Date.parse(done.removalVerifiedAt)).toBeGreaterThanOrEqual(Date.parse(done.expiresAt));
    expect(done.timeline.map((t: { action: string }) => t.action)).toEqual([
      'request.submitted',
      'approval.stage_opened',
      'request.approved',
      'grant.applied',
      'grant.verified',
      'grant.revoke_requested',
      'grant.removal_verified',
    ]);
    expect(await verifyChain(s.tdb.db)).toMatchObject({ ok: true });

    // What an operator sees in the Temporal UI: opaque ids, typed search attributes, a summary.
    const desc = await s.rt.temporal.workflow.getHandle(req.workflowId).describe();
    const sa = desc.typedSearchAttributes;
    expect(sa.getAll().map((p) => p.key.name).sort()).toEqual(
      expect.arrayContaining(['AccessExpiresAt', 'AccessState', 'EntitlementRef', 'IdentityRef', 'RiskTier', 'SystemRef', 'TicketRef']),
    );
    expect(JSON.stringify(sa.getAll())).not.toMatch(/alice|@example/i);
    expect(await desc.staticSummary()).toContain('Engineering group');
  });

  it('records a rejection and never touches the directory', async () => {
    const req = await request(tok.alice, { entitlementId: ent['prod-admins'], durationSeconds: 600 });
    await pendingFor(tok.bob, req.id);
    const d = await decide(tok.bob, req.id, 'reject', 'use the break-glass process');
    expect(d.body.status).toBe('rejected');
    const done = await s.waitForStatus(req.id, ['rejected']);
    expect(done.grant).toBeNull();
    expect(done.stages).toMatchObject([{ approverId: ids.bob, status: 'rejected', comment: 'use the break-glass process' }]);
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('alice'));
    // A decision on a closed request is a conflict.
    const again = await decide(tok.bob, req.id, 'approve');
    expect(again.status).toBe(409);
    expect(again.body.error.code).toBe('not_pending');
  });

  it('expires an unanswered approval and refuses a late approval', async () => {
    const shortFuse = (systemId: string) =>
      s.call('POST', '/v1/entitlements', tok.operator, {
        systemId,
        name: 'Short-fuse group',
        resource: 'cn=finance-readers,ou=groups,dc=accessloop,dc=test',
        ownerId: ids.bob,
        riskTier: 'low',
        defaultDurationSeconds: 60,
        maxDurationSeconds: 120,
        approvalPolicy: { approvalTimeoutSeconds: 2 },
      });
    // One catalog item per resource per system: the seeded one already covers this group.
    const dup = await shortFuse(s.catalog.systemId!);
    expect(dup.status).toBe(409);
    const sys = await s.call('POST', '/v1/systems', tok.operator, {
      name: 'short-fuse-directory',
      kind: 'ldap',
      config: (await s.tdb.db.query.systems.findFirst())!.config,
      secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' },
      ownerId: ids.carol,
    });
    expect(sys.status, JSON.stringify(sys.body)).toBe(201);
    const e = await shortFuse(sys.body.id);
    expect(e.status, JSON.stringify(e.body)).toBe(201);

    const req = await request(tok.alice, { entitlementId: e.body.id });
    const done = await s.waitForStatus(req.id, ['expired_unapproved'], 20_000);
    expect(done.stages).toMatchObject([{ approverId: ids.bob, status: 'expired' }]);
    const late = await decide(tok.bob, req.id, 'approve');
    expect(late.status).toBe(409);
    expect((await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items.map((i: { requestId: string }) => i.requestId)).not.toContain(req.id);
    expect(await s.ldapMembers('finance-readers')).not.toContain(s.userDn('alice'));
  });

  it('revokes early on the subject’s request and verifies removal', async () => {
    const req = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 3600 });
    await pendingFor(tok.bob, req.id);
    await decide(tok.bob, req.id, 'approve');
    await s.waitForStatus(req.id, ['active']);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    const r = await s.call('POST', `/v1/access-requests/${req.id}/revoke`, tok.alice, { reason: 'manual', comment: 'done early' });
    expect(r.status).toBe(202);
    const done = await s.waitForStatus(req.id, ['revoked']);
    expect(done.grant.revokeReason).toBe('manual');
    expect(done.removalVerifiedAt).toBeTruthy();
    expect(Date.parse(done.expiresAt)).toBeGreaterThan(Date.parse(done.removalVerifiedAt) + 3000 * 1000);
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    // Revoking a closed request is a conflict, not a second revocation.
    expect((await s.call('POST', `/v1/access-requests/${req.id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(409);
  });

  it('extends an active lease within policy and refuses one beyond it', async () => {
    const req = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 3 });
    await pendingFor(tok.bob, req.id);
    await decide(tok.bob, req.id, 'approve');
    const active = await s.waitForStatus(req.id, ['active']);
    const originalExpiry = Date.parse(active.expiresAt);

    const tooLong = await s.call('POST', `/v1/access-requests/${req.id}/extend`, tok.alice, { durationSeconds: 9 * 3600, justification: 'the incident is still open' });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error.code).toBe('outside_policy');

    const ext = await s.call('POST', `/v1/access-requests/${req.id}/extend`, tok.alice, { durationSeconds: 3600, justification: 'the incident is still open' });
    expect(ext.status, JSON.stringify(ext.body)).toBe(200);
    expect(Date.parse(ext.body.expiresAt)).toBeGreaterThan(originalExpiry + 3000 * 1000);

    // Absence of an event over time cannot be awaited as a condition: wait past the old expiry.
    await new Promise((r) => setTimeout(r, Math.max(0, originalExpiry - Date.now()) + 1500));
    const still = await s.call('GET', `/v1/access-requests/${req.id}`, tok.alice);
    expect(still.body.status).toBe('active');
    expect(Date.parse(still.body.expiresAt)).toBe(Date.parse(ext.body.expiresAt));
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    await s.call('POST', `/v1/access-requests/${req.id}/revoke`, tok.operator, { reason: 'review' });
    const done = await s.waitForStatus(req.id, ['revoked']);
    expect(done.grant.revokeReason).toBe('review');
    expect(done.timeline.map((t: { action: string }) => t.action)).toContain('grant.extended');
  });

  it('refuses self-approval (403, nothing in history) and routes the owner’s own request to their manager', async () => {
    // bob owns finance-readers; four eyes sends his own request to his manager, carol.
    const req = await request(tok.bob, { entitlementId: ent['finance-readers'], durationSeconds: 60 });
    await pendingFor(tok.carol, req.id);
    const before = await historyEventTypes(req.workflowId);

    const self = await decide(tok.bob, req.id, 'approve');
    expect(self.status).toBe(403);
    expect(self.body.error.code).toBe('self_approval');

    // Bypass the API: the workflow's own validator refuses too, and a rejected update leaves no event.
    const handle = s.rt.temporal.workflow.getHandle(req.workflowId);
    const err = await handle.executeUpdate(decideUpdate, { args: [{ approverId: ids.bob, decision: 'approve' }] }).catch((e) => e);
    expect(err).toBeInstanceOf(WorkflowUpdateFailedError);
    expect((err as WorkflowUpdateFailedError).cause).toMatchObject({ type: 'SelfApproval' });
    // Nothing of either attempt reached history: no update events, no decision recorded.
    const after = await historyEventTypes(req.workflowId);
    expect(after.filter((t) => /UPDATE/.test(t))).toEqual([]);
    expect(before.filter((t) => /UPDATE/.test(t))).toEqual([]);
    expect(await scheduledActivities(req.workflowId)).not.toContain('recordDecision');

    const ok = await decide(tok.carol, req.id, 'approve');
    expect(ok.status).toBe(200);
    await s.waitForStatus(req.id, ['active']);
    await s.call('POST', `/v1/access-requests/${req.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.id, ['revoked']);
  });

  it('refuses an approver who is not assigned to the request', async () => {
    const req = await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 60 });
    await pendingFor(tok.bob, req.id);
    const r = await decide(tok.carol, req.id, 'approve');
    expect(r.status).toBe(403);
    expect(r.body.error.code).toBe('not_eligible');
    const handle = s.rt.temporal.workflow.getHandle(req.workflowId);
    const err = await handle.executeUpdate(decideUpdate, { args: [{ approverId: ids.carol, decision: 'approve' }] }).catch((e) => e);
    expect((err as WorkflowUpdateFailedError).cause).toMatchObject({ type: 'NotEligible' });
    expect((await s.call('GET', `/v1/access-requests/${req.id}`, tok.alice)).body.status).toBe('pending_approval');
    // A second open request for the same subject and entitlement is refused.
    const dup = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: ent['finance-readers'], justification: 'asking twice by mistake' });
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('duplicate_request');
    // Withdrawn before a decision: the workflow closes as cancelled and the approver's task goes away.
    expect((await s.call('POST', `/v1/access-requests/${req.id}/revoke`, tok.alice, { reason: 'manual' })).status).toBe(202);
    await s.waitForStatus(req.id, ['cancelled']);
    expect((await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items.map((i: { requestId: string }) => i.requestId)).not.toContain(req.id);
  });

  it('holds an approved request as scheduled until its start time, then grants', async () => {
    const startAt = new Date(Date.now() + 4000).toISOString();
    const req = await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 600, startAt });
    await pendingFor(tok.bob, req.id);
    const ok = await decide(tok.bob, req.id, 'approve');
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const scheduled = await s.waitForStatus(req.id, ['scheduled']);
    expect(scheduled.startAt).toBe(startAt);
    expect(await s.ldapMembers('finance-readers')).not.toContain(s.userDn('alice'));
    const active = await s.waitForStatus(req.id, ['active'], 20_000);
    expect(Date.parse(active.grant.grantedAt)).toBeGreaterThanOrEqual(Date.parse(startAt));
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('alice'));

    // An operator's `revoke` signal from the Temporal UI (no actor, bare payload) ends it the same way,
    // recorded as what it is: an unauthenticated Temporal-side action, not an identity.
    await s.rt.temporal.workflow.getHandle(req.workflowId).signal(revokeSignal, { reason: 'manual' });
    const done = await s.waitForStatus(req.id, ['revoked']);
    expect(done.removalVerifiedAt).toBeTruthy();
    expect(done.timeline.find((t: { action: string }) => t.action === 'grant.revoke_requested')).toMatchObject({ actorType: 'temporal', actorId: 'temporal-signal' });
    expect(await s.ldapMembers('finance-readers')).not.toContain(s.userDn('alice'));
  });

  it('refuses a start time in the past', async () => {
    const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: ent.engineering, justification: 'back-dated on purpose', startAt: '2020-01-01T00:00:00Z' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_start');
  });

  it('fails a grant to a group that does not exist, and closes it only after confirming nothing is left', async () => {
    const e = await s.call('POST', '/v1/entitlements', tok.operator, {
      systemId: s.catalog.systemId,
      name: 'Group deleted from the directory',
      resource: 'cn=deleted-group,ou=groups,dc=accessloop,dc=test',
      ownerId: ids.bob,
      defaultDurationSeconds: 600,
      maxDurationSeconds: 600,
    });
    expect(e.status).toBe(201);
    const req = await request(tok.alice, { entitlementId: e.body.id });
    await pendingFor(tok.bob, req.id);
    await decide(tok.bob, req.id, 'approve');
    const done = await s.waitForStatus(req.id, ['failed']);
    expect(done.failureReason).toMatch(/^NoSuchResource/);
    expect(done.grant.status).toBe('failed');
    expect(done.timeline.map((t: { action: string }) => t.action).at(-1)).toBe('request.failed');
  });
});

