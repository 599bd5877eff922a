/**
 * Break-glass end to end through the API (docs/break-glass.md), against the real stack: the
 * settings, the two-step invoke → confirm, every refusal, the grant and its expiry read back with
 * ldapsearch, the signed notices checked by a separate receiver, the post-use review that blocks the
 * next use while overdue, and the forced rotation of a PostgreSQL login checked with psql.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { psql, psqlCanLogin, psqlCreateRole, psqlRoleMembers } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';
import { signatureValid, startWebhookReceiver, type WebhookDelivery, type WebhookReceiver } from '../helpers/webhook-receiver.js';

type Delivery = WebhookDelivery<{ type: string; data: { requestId: string | null; grantId?: string; details?: Record<string, unknown>; recipients: Array<{ identityId: string }> } }>;

const PG_SECRET = 'ACCESSLOOP_SECRET_BG_PG';
const hookKey = randomBytes(24);
const deliveries: Delivery[] = [];
let receiver: WebhookReceiver;
let s: Stack;
let pg: PgCluster;
let tok: Record<string, string>;
let ids: Record<string, string>;
let ent: Record<string, string>;
let invokers: string;
let security: string;

async function person(username: string) {
  const r = await s.call('POST', '/v1/identities', tok.operator, { kind: 'employee', username, displayName: username, location: 'LON' });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const t = await s.call('POST', '/v1/tokens', tok.operator, { principalId: r.body.id, roles: ['requester', 'approver'] });
  ids[username] = r.body.id;
  tok[username] = t.body.token;
}
async function group(name: string, memberIds: string[]) {
  const g = await s.call('POST', '/v1/groups', tok.operator, { name, memberIds });
  expect(g.status, JSON.stringify(g.body)).toBe(201);
  return g.body.ref as string;
}
const configure = (entitlementId: string, body: unknown, token = tok.operator) => s.call('PUT', `/v1/entitlements/${entitlementId}/break-glass`, token, body);
const invoke = (token: string, body: Record<string, unknown>) => s.call('POST', '/v1/break-glass', token, { incidentRef: 'INC-4711', justification: 'production outage, on-call needs root', ...body });
const confirm = (token: string, id: string, confirmation: string) => s.call('POST', `/v1/break-glass/${id}/confirm`, token, { confirmation });
const auditActions = async (requestId: string) => (await psql(s.tdb.url, `select action from audit_event where request_id = :'id' order by seq;\n`, { id: requestId })).trim().split('\n');

beforeAll(async () => {
  receiver = await startWebhookReceiver(deliveries);
  pg = await startPgCluster(`admin-${randomUUID()}`);
  const adminUrl = pg.url('postgres', pg.adminPassword);
  await psqlCreateRole(adminUrl, 'reporting_read');
  await psqlCreateRole(adminUrl, 'reporting_admin');
  s = await startStack({
    secrets: { [PG_SECRET]: pg.adminPassword },
    env: { ACCESSLOOP_NOTIFY_WEBHOOK_URL: receiver.url, ACCESSLOOP_NOTIFY_WEBHOOK_SECRET: `whsec_${hookKey.toString('base64')}` },
  });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = { ...s.catalog.identities };
  ent = { ...s.catalog.entitlements };
  await person('grace');
  await person('ivan');
  invokers = await group('on-call', [ids.alice!, ids.carol!]);
  security = await group('bg-security', [ids.grace!]);
  // Privileged access normally needs the subject's manager and then the owner: both must hear of a break-glass.
  const policy = {
    apiVersion: 'accessloop/v1',
    policies: [
      { name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] },
      { name: 'privileged', appliesTo: { riskTiers: ['privileged'] }, stages: [{ name: 'manager', approvers: ['manager'] }, { name: 'owner', approvers: ['entitlement_owner'] }] },
    ],
  };
  const published = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(policy), { 'content-type': 'application/json' });
  expect(published.status, JSON.stringify(published.body)).toBeLessThan(300);
}, 180_000);

afterAll(async () => {
  await s?.stop();
  await pg?.stop();
  await receiver?.close();
});

describe('break-glass settings', () => {
  it('are validated, operator-only and audited', async () => {
    const good = { allowed: true, invokers, maxDurationSeconds: 600, cooldownSeconds: 3600, postUseReviewHours: 24, reviewer: security, notify: security };
    expect((await configure(ent['prod-admins']!, good, tok.bob)).status).toBe(403);
    const unknownGroup = await configure(ent['prod-admins']!, { ...good, notify: `group:${randomUUID()}` });
    expect([unknownGroup.status, unknownGroup.body.error.code]).toEqual([400, 'unknown_reference']);
    const overEntitlement = await configure(ent['prod-admins']!, { ...good, maxDurationSeconds: 7200 });
    expect([overEntitlement.status, overEntitlement.body.error.code]).toEqual([400, 'invalid_settings']);
    expect((await configure(ent['prod-admins']!, { ...good, invokers: 'everyone' })).status).toBe(400);
    expect((await configure(ent['prod-admins']!, { allowed: true })).status).toBe(400);
    const ok = await configure(ent['prod-admins']!, good);
    expect(ok.status, JSON.stringify(ok.body)).toBe(200);
    expect(ok.body).toMatchObject({ allowed: true, settings: { invokers, maxDurationSeconds: 600, reviewer: security } });
    const events = await psql(s.tdb.url, `select count(*) from audit_event where action = 'break_glass.configured' and data->>'entitlementId' = :'id';\n`, { id: ent['prod-admins']! });
    expect(Number(events.trim())).toBe(1);
  });
});

describe('break-glass on a directory group', () => {
  it('refuses with clear 4xx codes and writes nothing', async () => {
    const notAllowed = await invoke(tok.alice!, { entitlementId: ent['finance-readers'], durationSeconds: 60 });
    expect([notAllowed.status, notAllowed.body.error.code]).toEqual([403, 'break_glass_not_allowed']);
    const notInvoker = await invoke(tok.bob!, { entitlementId: ent['prod-admins'], durationSeconds: 60 });
    expect([notInvoker.status, notInvoker.body.error.code]).toEqual([403, 'not_an_invoker']);
    const overCap = await invoke(tok.alice!, { entitlementId: ent['prod-admins'], durationSeconds: 601 });
    expect([overCap.status, overCap.body.error.code, overCap.body.error.details]).toEqual([422, 'over_break_glass_cap', { maxDurationSeconds: 600 }]);
    for (const missing of ['incidentRef', 'justification']) {
      const body: Record<string, unknown> = { entitlementId: ent['prod-admins'], durationSeconds: 60, incidentRef: 'INC-1', justification: 'production outage, on-call needs root' };
      delete body[missing];
      const r = await s.call('POST', '/v1/break-glass', tok.alice, body);
      expect([r.status, r.body.error.code], missing).toEqual([400, 'invalid_request']);
    }
    const challenges = await psql(s.tdb.url, 'select count(*) from break_glass_challenge;\n');
    expect(Number(challenges.trim())).toBe(0);
  });

  it('grants at once on confirm, tells everyone with signed webhooks, expires and is removed (ldapsearch), then cools down', async () => {
    const inv = await invoke(tok.alice!, { entitlementId: ent['prod-admins'], durationSeconds: 5 });
    expect(inv.status, JSON.stringify(inv.body)).toBe(201);
    expect(inv.body).toMatchObject({ willDo: { approvals: 'skipped', grant: { entitlementId: ent['prod-admins'], subjectId: ids.alice, durationSeconds: 5 }, postUseReview: { reviewerId: ids.grace } } });
    // Only the hash is kept.
    const stored = await psql(s.tdb.url, `select secret_hash from break_glass_challenge where id = :'id';\n`, { id: inv.body.id });
    expect(stored.trim()).toMatch(/^[0-9a-f]{64}$/);
    expect(stored).not.toContain(inv.body.confirmation);
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('alice'));

    // Someone else's challenge is not found; a wrong confirmation is refused.
    expect((await confirm(tok.carol!, inv.body.id, inv.body.confirmation)).status).toBe(404);
    const wrong = await confirm(tok.alice!, inv.body.id, `bg_${randomBytes(24).toString('base64url')}`);
    expect([wrong.status, wrong.body.error.code]).toEqual([403, 'invalid_confirmation']);

    const started = Date.now();
    const ok = await confirm(tok.alice!, inv.body.id, inv.body.confirmation);
    expect(ok.status, JSON.stringify(ok.body)).toBe(202);
    expect(ok.body).toMatchObject({ breakGlass: true, status: 'pending_approval' });
    const requestId = ok.body.id as string;
    const active = await s.waitForStatus(requestId, ['active'], 20_000);
    expect(await s.ldapMembers('prod-admins')).toContain(s.userDn('alice'));
    expect(Date.now() - started).toBeLessThan(10_000);
    expect(active.breakGlass).toBe(true);
    expect(active.stages).toEqual([]);
    expect(active.ticketRef).toBe('INC-4711');

    // One open request per subject and entitlement: a second break-glass for alice (by her manager) is refused up front.
    const dup = await invoke(tok.carol!, { entitlementId: ent['prod-admins'], subjectId: ids.alice, durationSeconds: 5 });
    expect([dup.status, dup.body.error.code]).toEqual([409, 'duplicate_request']);

    // Single use.
    const again = await confirm(tok.alice!, inv.body.id, inv.body.confirmation);
    expect([again.status, again.body.error.code]).toEqual([409, 'confirmation_used']);

    // Visible to operators in Temporal: the BreakGlass search attribute.
    const described = await s.rt.temporal.workflow.getHandle(active.workflowId).describe();
    expect(described.typedSearchAttributes.getAll().find((p) => p.key.name === 'BreakGlass')?.value).toBe(true);

    // Everyone the normal path would have asked (manager carol, owner bob), and the security group; never the invoker.
    const notice = await waitFor(async () => deliveries.find((d) => d.json.type === 'break_glass.used' && d.json.data.requestId === requestId), 'break_glass.used webhook');
    expect(signatureValid(notice, hookKey)).toBe(true);
    expect(notice.json.data.recipients.map((r) => r.identityId).sort()).toEqual([ids.bob, ids.carol, ids.grace].sort());
    expect(notice.json.data.details).toMatchObject({ invokerId: ids.alice, incidentRef: 'INC-4711' });

    // The post-use review: a micro-review with trigger break_glass, reviewed by the security group, not the invoker.
    const review = await waitFor(
      async () =>
        (await psql(s.tdb.url, `select i.reviewer_id || '|' || c.trigger || '|' || c.kind from review_item i join review_campaign c on c.id = i.campaign_id join "grant" g on g.id = i.grant_id where g.request_id = :'id';\n`, { id: requestId })).trim(),
      'post-use review item',
    );
    expect(review).toBe(`${ids.grace}|break_glass|micro`);

    // The lease is the usual one: expiry, removal read back from slapd.
    const done = await s.waitForStatus(requestId, ['revoked'], 30_000);
    expect(done.grant).toMatchObject({ revokeReason: 'expired' });
    expect(done.removalVerifiedAt).toBeTruthy();
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('alice'));
    const grantSource = await psql(s.tdb.url, `select source from "grant" where request_id = :'id';\n`, { id: requestId });
    expect(grantSource.trim()).toBe('break_glass');
    expect(await auditActions(requestId)).toEqual(expect.arrayContaining(['request.submitted', 'break_glass.confirmed', 'break_glass.approvals_skipped', 'grant.verified', 'break_glass.used', 'grant.removal_verified']));
    const invoked = await psql(s.tdb.url, `select count(*) from audit_event where action = 'break_glass.invoked' and data->>'challengeId' = :'id';\n`, { id: inv.body.id });
    expect(Number(invoked.trim())).toBe(1);

    // The post-use review is about the use, so it outlives the lease: still pending after the
    // expiry (not skipped as moot), and the reviewer can still decide it.
    const after = await waitFor(async () => {
      const items = (await s.call('GET', '/v1/reviews/pending', tok.grace)).body.items as Array<{ itemId: string; grantId: string; kind: string }>;
      return items.find((i) => i.kind === 'micro');
    }, 'the post-use review among grace’s pending items after the lease ended');
    // A mandatory control: an operator cannot make it go away by cancelling it.
    const campaignId = (await psql(s.tdb.url, `select campaign_id from review_item where id = :'id';\n`, { id: after.itemId })).trim();
    const cancelled = await s.call('POST', `/v1/review-campaigns/${campaignId}/cancel`, tok.operator, { reason: 'noise' });
    expect([cancelled.status, cancelled.body.error?.code]).toEqual([409, 'mandatory_review']);
    const ruled = await s.call('POST', `/v1/review-items/${after.itemId}/decision`, tok.grace, { decision: 'keep', comment: 'INC-4711: the use was justified' });
    expect(ruled.status, JSON.stringify(ruled.body)).toBe(200);
    expect(ruled.body.status).toBe('kept');

    // Cooldown per person: alice again is refused; carol (another invoker) is not.
    const cooling = await invoke(tok.alice!, { entitlementId: ent['prod-admins'], durationSeconds: 5 });
    expect([cooling.status, cooling.body.error.code]).toEqual([429, 'break_glass_cooldown']);
    expect(cooling.body.error.details.retryAfterSeconds).toBeGreaterThan(3500);
    const other = await invoke(tok.carol!, { entitlementId: ent['prod-admins'], durationSeconds: 5 });
    expect(other.status, JSON.stringify(other.body)).toBe(201);
  });

  it('lets a confirmation expire', async () => {
    await configure(ent.engineering!, { allowed: true, invokers, maxDurationSeconds: 600, cooldownSeconds: 0, postUseReviewHours: 1 / 3600, reviewer: 'entitlement_owner', notify: security });
    const inv = await invoke(tok.carol!, { entitlementId: ent.engineering, durationSeconds: 5 });
    expect(inv.status, JSON.stringify(inv.body)).toBe(201);
    expect(Date.parse(inv.body.expiresAt) - Date.now()).toBeLessThanOrEqual(5 * 60_000);
    // Five minutes pass (the row's own clock, moved back).
    await psql(s.tdb.url, `update break_glass_challenge set expires_at = now() - interval '1 second' where id = :'id';\n`, { id: inv.body.id });
    const late = await confirm(tok.carol!, inv.body.id, inv.body.confirmation);
    expect([late.status, late.body.error.code]).toEqual([410, 'confirmation_expired']);
  });

  it('blocks the next use while the post-use review is overdue, and counts it in the KPIs', async () => {
    const inv = await invoke(tok.carol!, { entitlementId: ent.engineering, durationSeconds: 30 });
    expect(inv.status, JSON.stringify(inv.body)).toBe(201);
    const ok = await confirm(tok.carol!, inv.body.id, inv.body.confirmation);
    expect(ok.status, JSON.stringify(ok.body)).toBe(202);
    await s.waitForStatus(ok.body.id, ['active'], 20_000);
    // Due one second after the verified grant, reviewed by the owner (bob).
    const reviewer = await waitFor(
      async () => (await psql(s.tdb.url, `select i.reviewer_id from review_item i join "grant" g on g.id = i.grant_id where g.request_id = :'id' and i.status = 'pending';\n`, { id: ok.body.id })).trim(),
      'post-use review item',
    );
    expect(reviewer).toBe(ids.bob);
    const blocked = await waitFor(async () => {
      const r = await invoke(tok.carol!, { entitlementId: ent.engineering, durationSeconds: 5 });
      return r.body.error?.code === 'post_use_review_overdue' ? r : undefined;
    }, 'overdue review to block the next use', 30_000, 500);
    expect(blocked.body.error.code).toBe('post_use_review_overdue');
    // Blocked on every entitlement, not only this one.
    const elsewhere = await invoke(tok.carol!, { entitlementId: ent['prod-admins'], durationSeconds: 5 });
    expect([elsewhere.status, elsewhere.body.error.code]).toEqual([409, 'post_use_review_overdue']);
    const kpis = await s.call('GET', '/v1/metrics/kpis', tok.operator);
    expect(kpis.status).toBe(200);
    expect(kpis.body.breakGlass.uses).toBeGreaterThanOrEqual(2);
    expect(kpis.body.breakGlass.postUseReviewsOverdue).toBeGreaterThanOrEqual(1);

    // Overdue → escalated by the review campaign to the fallback reviewer (the security group's grace), still pending.
    const escalated = await waitFor(
      async () => (await psql(s.tdb.url, `select i.id || '|' || i.reviewer_id from review_item i join "grant" g on g.id = i.grant_id where g.request_id = :'id' and i.escalated_at is not null and i.status = 'pending';\n`, { id: ok.body.id })).trim(),
      'escalation of the overdue post-use review',
    );
    const [itemId, current] = escalated.split('|');
    expect(current).toBe(ids.grace);
    // Cleared by the reviewer who holds it now: carol may break glass again.
    const kept = await s.call('POST', `/v1/review-items/${itemId}/decision`, tok.grace, { decision: 'keep', comment: 'incident INC-4711 reviewed, use was justified' });
    expect(kept.status, JSON.stringify(kept.body)).toBe(200);
    const cleared = await invoke(tok.carol!, { entitlementId: ent['prod-admins'], durationSeconds: 5 });
    expect(cleared.status, JSON.stringify(cleared.body)).toBe(201);
    await s.call('POST', `/v1/access-requests/${ok.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(ok.body.id, ['revoked'], 30_000);
  });
});

describe('break-glass on a PostgreSQL login', () => {
  it('rotates the password the invoker saw when the lease ends: old refused, new accepted (psql)', async () => {
    const adminUrl = pg.url('postgres', pg.adminPassword);
    const sys = await s.call('POST', '/v1/systems', tok.operator, {
      name: 'bg-reporting-db',
      kind: 'postgres',
      config: { host: '127.0.0.1', port: pg.port, database: 'postgres', user: 'postgres', accountTemplate: 'svc_{username}' },
      secretRefs: { password: PG_SECRET },
      ownerId: ids.carol,
    });
    expect(sys.status, JSON.stringify(sys.body)).toBe(201);
    const entitlement = async (resource: string) => {
      const e = await s.call('POST', '/v1/entitlements', tok.operator, { systemId: sys.body.id, name: resource, resource, ownerId: ids.bob, riskTier: 'high', defaultDurationSeconds: 3600, maxDurationSeconds: 7200, attributes: { credential: 'password' } });
      expect(e.status, JSON.stringify(e.body)).toBe(201);
      return e.body.id as string;
    };
    const read = await entitlement('reporting_read');
    const admin = await entitlement('reporting_admin');
    expect((await configure(admin, { allowed: true, invokers, maxDurationSeconds: 600, cooldownSeconds: 0, reviewer: security })).status).toBe(200);
    const sa = await s.call('POST', '/v1/identities', tok.operator, { kind: 'service_account', username: 'billing', displayName: 'Billing exporter', ownerId: ids.alice });
    expect(sa.status, JSON.stringify(sa.body)).toBe(201);

    // The service account's standing login (a normal request, approved by the owner).
    const standing = await s.call('POST', '/v1/access-requests', tok.alice, { subjectId: sa.body.id, entitlementId: read, durationSeconds: 3600, justification: 'nightly billing export' });
    expect(standing.status, JSON.stringify(standing.body)).toBe(202);
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${standing.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    await s.waitForStatus(standing.body.id, ['active']);

    // Alice breaks glass onto the same login's admin role and reads the password.
    const inv = await invoke(tok.alice!, { entitlementId: admin, subjectId: sa.body.id, durationSeconds: 6 });
    expect(inv.status, JSON.stringify(inv.body)).toBe(201);
    expect(inv.body.willDo.credentialRotation).toMatch(/rotated when the lease ends/);
    const ok = await confirm(tok.alice!, inv.body.id, inv.body.confirmation);
    expect(ok.status, JSON.stringify(ok.body)).toBe(202);
    await s.waitForStatus(ok.body.id, ['active'], 20_000);
    const seen = await s.call('GET', `/v1/access-requests/${ok.body.id}/credential`, tok.alice);
    expect(seen.status, JSON.stringify(seen.body)).toBe(200);
    const oldPassword = seen.body.password as string;
    expect(await psqlCanLogin(pg.url('svc_billing', oldPassword))).toBe(true);
    expect((await psqlRoleMembers(adminUrl, 'reporting_admin'))).toEqual(['svc_billing']);

    // The lease ends: the admin membership goes, and the password alice saw is replaced.
    await s.waitForStatus(ok.body.id, ['revoked'], 30_000);
    expect(await psqlRoleMembers(adminUrl, 'reporting_admin')).toEqual([]);
    expect(await psqlRoleMembers(adminUrl, 'reporting_read')).toEqual(['svc_billing']);
    await waitFor(
      async () => Number((await psql(s.tdb.url, `select count(*) from audit_event where action = 'credential.rotated' and reason = 'break_glass' and request_id = :'id';\n`, { id: standing.body.id })).trim()) === 1,
      'forced rotation',
    );
    expect(await psqlCanLogin(pg.url('svc_billing', oldPassword))).toBe(false);
    const fresh = await s.call('GET', `/v1/access-requests/${standing.body.id}/credential`, tok.alice);
    expect(fresh.status, JSON.stringify(fresh.body)).toBe(200);
    expect(fresh.body.password).not.toBe(oldPassword);
    expect(await psqlCanLogin(pg.url('svc_billing', fresh.body.password))).toBe(true);
  });
});
