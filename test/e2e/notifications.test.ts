import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';
import { startWebhookReceiver, type WebhookDelivery, type WebhookReceiver, signatureValid as verifySignature } from '../helpers/webhook-receiver.js';

type Delivery = WebhookDelivery<{ type: string; data: { requestId: string; stage: number; recipients: Array<{ identityId: string; actionUrl?: string }> } }>;

const secretBytes = randomBytes(24);
const WEBHOOK_SECRET = `whsec_${secretBytes.toString('base64')}`;
const LINK_TTL = 4;
let receiver: WebhookReceiver | undefined;
const deliveries: Delivery[] = [];
let s: Stack;
let tok: Record<string, string>;
let ids: Record<string, string>;
let ent: Record<string, string>;

const signatureValid = (d: Delivery) => verifySignature(d, secretBytes);

const forRequest = (id: string, type?: string) => deliveries.filter((d) => d.json.data.requestId === id && (!type || d.json.type === type));
const tokenOf = (url: string) => url.slice(url.lastIndexOf('/') + 1);
async function linkFor(requestId: string, approverId: string, type = 'approval.requested') {
  const d = await waitFor(async () => forRequest(requestId, type).find((x) => x.json.data.recipients.some((r) => r.identityId === approverId)), `${type} for ${approverId}`);
  return tokenOf(d.json.data.recipients.find((r) => r.identityId === approverId)!.actionUrl!);
}
async function publish(doc: unknown) {
  const r = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(doc), { 'content-type': 'application/json' });
  expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
}
const request = (body: Record<string, unknown>) => s.call('POST', '/v1/access-requests', tok.alice, { justification: 'notification routing check', ...body });
const act = (token: string, body: unknown, bearer?: string) => s.call('POST', `/v1/approvals/actions/${token}`, bearer, body);

beforeAll(async () => {
  receiver = await startWebhookReceiver(deliveries);
  const url = receiver.url;
  s = await startStack({ env: { ACCESSLOOP_NOTIFY_WEBHOOK_URL: url, ACCESSLOOP_NOTIFY_WEBHOOK_SECRET: WEBHOOK_SECRET, ACCESSLOOP_ACTION_LINK_TTL_SECONDS: String(LINK_TTL) } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = { ...s.catalog.identities };
  ent = { ...s.catalog.entitlements };
});
afterAll(async () => {
  await s?.stop();
  await receiver?.close();
});

describe('approval notifications and action links', () => {
  it('reminds, escalates to the approver’s manager, then expires the request', async () => {
    await publish({
      apiVersion: 'accessloop/v1',
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'], reminderAfterSeconds: 1, escalateAfterSeconds: 2, timeoutSeconds: 4 }] }],
    });
    const req = await request({ entitlementId: ent.engineering, durationSeconds: 600 });
    expect(req.status).toBe(202);
    const done = await s.waitForStatus(req.body.id, ['expired_unapproved'], 20_000);
    const kinds = forRequest(req.body.id).map((d) => [d.json.type, d.json.data.recipients.map((r) => r.identityId)]);
    expect(kinds).toEqual([
      ['approval.requested', [ids.bob]],
      ['approval.reminder', [ids.bob]],
      ['approval.escalated', [ids.carol]], // bob's manager
    ]);
    for (const d of forRequest(req.body.id)) expect(signatureValid(d)).toBe(true);
    expect(done.stages.map((x: { approverId: string; status: string }) => [x.approverId, x.status])).toEqual([
      [ids.bob, 'expired'],
      [ids.carol, 'expired'],
    ]);
    expect(done.timeline.map((t: { action: string }) => t.action)).toEqual(['request.submitted', 'approval.stage_opened', 'approval.escalated', 'request.expired_unapproved']);
  });

  it('lets the escalated approver decide before the final timeout', async () => {
    const req = await request({ entitlementId: ent['finance-readers'], durationSeconds: 600 });
    const link = await linkFor(req.body.id, ids.carol!, 'approval.escalated');
    const r = await act(link, { decision: 'approve', comment: 'covering for bob' });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const active = await s.waitForStatus(req.body.id, ['active']);
    expect(active.stages.find((x: { approverId: string }) => x.approverId === ids.carol)).toMatchObject({ status: 'approved', comment: 'covering for bob' });
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('alice'));
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.body.id, ['revoked']);
  });

  it('accepts a signed link once, and refuses replay, tampering, another approver and expiry', async () => {
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }] });
    const req = await request({ entitlementId: ent['prod-admins'], durationSeconds: 600 });
    const link = await linkFor(req.body.id, ids.bob!);

    // Tampered: the payload says carol, the MAC was for bob.
    const [v, payload, mac] = link.split('.');
    const claims = JSON.parse(Buffer.from(payload!, 'base64url').toString());
    const forged = `${v}.${Buffer.from(JSON.stringify({ ...claims, ap: ids.carol })).toString('base64url')}.${mac}`;
    expect((await act(forged, { decision: 'approve' })).body.error.code).toBe('invalid_link');
    expect((await act(`${link}x`, { decision: 'approve' })).status).toBe(401);
    // Presented by someone else's session.
    const other = await act(link, { decision: 'approve' }, tok.carol);
    expect(other.status).toBe(403);
    expect(other.body.error.code).toBe('link_not_yours');
    expect((await act(link, { decision: 'maybe' })).status).toBe(400);

    const ok = await act(link, { decision: 'approve' }, tok.bob);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    const replay = await act(link, { decision: 'approve' });
    expect(replay.status).toBe(409);
    expect(replay.body.error.code).toBe('link_used');
    await s.waitForStatus(req.body.id, ['active']);
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.body.id, ['revoked']);

    // Expired: minted for a fresh request, used after its TTL.
    const late = await request({ entitlementId: ent['prod-admins'], durationSeconds: 600 });
    expect(late.status).toBe(202);
    const stale = await linkFor(late.body.id, ids.bob!);
    const exp = JSON.parse(Buffer.from(stale.split('.')[1]!, 'base64url').toString()).exp * 1000;
    await new Promise((r) => setTimeout(r, Math.max(0, exp - Date.now()) + 200)); // time must pass; nothing to await
    const expired = await act(stale, { decision: 'approve' });
    expect(expired.status).toBe(410);
    expect((await s.call('GET', `/v1/access-requests/${late.body.id}`, tok.alice)).body.status).toBe('pending_approval');
    await s.call('POST', `/v1/access-requests/${late.body.id}/revoke`, tok.operator, { reason: 'manual' });
  });

  it('binds a link to its stage: a stage-1 link cannot decide stage 2', async () => {
    const g = await s.call('POST', '/v1/groups', tok.operator, { name: 'stage-two', memberIds: [ids.bob, ids.carol] });
    await publish({
      apiVersion: 'accessloop/v1',
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }, { name: 'second', approvers: [g.body.ref], quorum: 1 }] }],
    });
    const req = await request({ entitlementId: ent.engineering, durationSeconds: 600 });
    const first = await linkFor(req.body.id, ids.bob!);
    const copy = `${first}`;
    expect((await act(first, { decision: 'approve' })).status).toBe(200);
    // carol's stage-2 link works; the stage-1 link (already used) cannot be used again for stage 2.
    expect((await act(copy, { decision: 'approve' })).body.error.code).toBe('link_used');
    const second = await waitFor(async () => forRequest(req.body.id, 'approval.requested').find((d) => d.json.data.stage === 2), 'stage 2 notification');
    expect(second.json.data.recipients.map((r) => r.identityId)).toEqual([ids.carol]); // bob approved stage 1: four eyes
    expect((await act(tokenOf(second.json.data.recipients[0]!.actionUrl!), { decision: 'approve' })).status).toBe(200);
    await s.waitForStatus(req.body.id, ['active']);
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.body.id, ['revoked']);
  });

  it('sends an extension back for approval when policy says so, and moves the expiry only once approved', async () => {
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], extendRequiresApproval: true }] });
    const req = await request({ entitlementId: ent.engineering, durationSeconds: 600 });
    expect((await act(await linkFor(req.body.id, ids.bob!), { decision: 'approve' })).status).toBe(200);
    const active = await s.waitForStatus(req.body.id, ['active']);

    const ext = await s.call('POST', `/v1/access-requests/${req.body.id}/extend`, tok.alice, { durationSeconds: 3600, justification: 'migration overran' });
    expect(ext.status).toBe(202);
    expect(ext.body).toMatchObject({ status: 'extension_pending_approval', expiresAt: active.expiresAt });
    // A second extension while one waits is refused.
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/extend`, tok.alice, { durationSeconds: 1800, justification: 'asking again meanwhile' })).status).toBe(409);
    await waitFor(async () => forRequest(req.body.id, 'approval.requested').length === 2, 'extension approval request');
    const reject = await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'reject', comment: 'ask for a new lease' });
    expect(reject.status).toBe(200);
    await waitFor(async () => (await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.alice)).body.timeline.some((t: { action: string }) => t.action === 'extension.refused'), 'extension refused');
    const after = await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.alice);
    expect(after.body.status).toBe('active');
    expect(after.body.expiresAt).toBe(active.expiresAt);

    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/extend`, tok.alice, { durationSeconds: 3600, justification: 'migration overran, really' })).status).toBe(202);
    await waitFor(async () => forRequest(req.body.id, 'approval.requested').length === 3, 'second extension approval request');
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'approve' })).status).toBe(200);
    const extended = await waitFor(async () => {
      const r = await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.alice);
      return Date.parse(r.body.expiresAt) > Date.parse(active.expiresAt) + 2000 * 1000 ? r.body : undefined;
    }, 'expiry to move');
    expect(extended.status).toBe('active');
    expect(extended.timeline.map((t: { action: string }) => t.action)).toContain('grant.extended');
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.body.id, ['revoked']);
  });
});
