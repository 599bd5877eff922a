import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { and, eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grants, hrEvents, identities } from '../../db/schema.js';
import { DEMO_USER_PASSWORD } from '../../activities/connectors/ldap/seed.js';
import { ldapBindWorks } from '../helpers/ldap.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const oldKey = randomBytes(24);
const newKey = randomBytes(24);
const OLD_SECRET = `whsec_${oldKey.toString('base64')}`;
const NEW_SECRET = `whsec_${newKey.toString('base64')}`;

let s: Stack;
let tok: Record<string, string>;
let hrToken: string;
let ent: Record<string, string>;
let policyDoc: Record<string, unknown>;

/** Signs per the Standard Webhooks spec with node:crypto (independently of the product's verifier). */
function signed(body: string, key = newKey, opts: { id?: string; ts?: number } = {}) {
  const id = opts.id ?? `msg_${randomUUID()}`;
  const ts = opts.ts ?? Math.floor(Date.now() / 1000);
  const sig = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${sig}`, 'content-type': 'application/json' };
}
let seq = 0;
async function send(type: string, worker: Record<string, unknown>, extra: Record<string, unknown> = {}, headers?: Record<string, string>) {
  const body = JSON.stringify({ type, sequence: extra.sequence ?? ++seq, worker, ...extra });
  const r = await s.call('POST', '/v1/hr/events', hrToken, body, headers ?? signed(body));
  return r;
}
const hrRows = () => s.tdb.db.$count(hrEvents);
const identityByWorker = async (workerId: string) => (await s.tdb.db.select().from(identities).where(eq(identities.externalId, workerId)))[0];
const userDn = (u: string) => s.userDn(u);
const processed = (eventId: string) => waitFor(async () => (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, eventId)))[0]?.processedAt != null && (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, eventId)))[0], `event ${eventId} processed`);

beforeAll(async () => {
  s = await startStack({ env: { ACCESSLOOP_HR_WEBHOOK_SECRETS: `${OLD_SECRET},${NEW_SECRET}` } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ent = { ...s.catalog.entitlements };
  hrToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: 'client:workday', roles: ['hr_system'] })).body.token;
  policyDoc = {
    apiVersion: 'accessloop/v1',
    moverGraceSeconds: 2,
    birthright: [
      { name: 'engineering-dept', when: 'subject.department == "engineering"', entitlementIds: [ent.engineering] },
      { name: 'finance-dept', when: 'subject.department == "finance"', entitlementIds: [ent['finance-readers']] },
    ],
    policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }],
  };
  const r = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(policyDoc), { 'content-type': 'application/json' });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
});
afterAll(async () => {
  await s?.stop();
});

describe('HR joiner-mover-leaver', () => {
  it('refuses unsigned, mis-signed, stale and re-serialised events with 401 and stores nothing', async () => {
    const before = { events: await hrRows(), people: await s.tdb.db.$count(identities) };
    const body = JSON.stringify({ type: 'joiner', sequence: 1, worker: { id: 'HR-MALLORY', department: 'engineering' } });
    const cases: Array<Record<string, string>> = [
      { 'content-type': 'application/json' },
      signed(body, randomBytes(24)),
      signed(body, newKey, { ts: Math.floor(Date.now() / 1000) - 600 }),
      { ...signed(body), 'webhook-id': 'msg_other' },
    ];
    for (const h of cases) expect((await s.call('POST', '/v1/hr/events', hrToken, body, h)).status).toBe(401);
    // Same JSON, re-serialised with different whitespace: the signature is over the bytes.
    const h = signed(body);
    expect((await s.call('POST', '/v1/hr/events', hrToken, JSON.stringify(JSON.parse(body), null, 2), h)).status).toBe(401);
    // An operator token is not an HR system.
    expect((await s.call('POST', '/v1/hr/events', tok.operator, body, signed(body))).status).toBe(403);
    expect({ events: await hrRows(), people: await s.tdb.db.$count(identities) }).toEqual(before);
  });

  it('gives a joiner birthright access in the directory (old and new signing keys both accepted)', async () => {
    const r = await send('joiner', { id: 'HR-ERIN', username: 'erin', displayName: 'Erin Engineer', department: 'engineering', location: 'LON' }, {}, undefined);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body.workflowId).toBe(`identity/${r.body.identityId}`);
    await waitFor(async () => (await s.ldapMembers('engineering')).includes(userDn('erin')), 'erin in engineering');
    const erin = await identityByWorker('HR-ERIN');
    expect(erin).toMatchObject({ status: 'active', department: 'engineering', username: 'erin' });
    const body = JSON.stringify({ type: 'update', sequence: ++seq, worker: { id: 'HR-ERIN', location: 'NYC' } });
    const rotated = await s.call('POST', '/v1/hr/events', hrToken, body, signed(body, oldKey));
    expect(rotated.status).toBe(202);
    await processed(rotated.body.eventId);
    expect((await identityByWorker('HR-ERIN'))!.location).toBe('NYC');
  });

  it('moves a mover: new birthright at once, the old one removed after the grace period', async () => {
    const r = await send('mover', { id: 'HR-ERIN', department: 'finance' });
    expect(r.status).toBe(202);
    await waitFor(async () => (await s.ldapMembers('finance-readers')).includes(userDn('erin')), 'erin in finance-readers');
    // Still in engineering during the grace period.
    expect(await s.ldapMembers('engineering')).toContain(userDn('erin'));
    await waitFor(async () => !(await s.ldapMembers('engineering')).includes(userDn('erin')), 'engineering removed after grace', 15_000);
    const erin = await identityByWorker('HR-ERIN');
    // The directory changes first; the lease closes once the read-back is recorded.
    const closed = await waitFor(async () => {
      const rows = await s.tdb.db.select().from(grants).where(and(eq(grants.identityId, erin!.id), eq(grants.revokeReason, 'mover')));
      return rows.length === 1 && rows[0]!.removalVerifiedAt ? rows : undefined;
    }, 'mover grant closed as verified');
    expect(closed[0]).toMatchObject({ source: 'birthright', status: 'revoked' });
  });

  it('removes everything a leaver holds across systems, verifies it, and measures time to revoke', async () => {
    const erin = (await identityByWorker('HR-ERIN'))!;
    // A requested grant on a second system, on top of the finance birthright.
    const sys = await s.call('POST', '/v1/systems', tok.operator, { name: 'second-directory', kind: 'ldap', config: (await s.tdb.db.query.systems.findFirst())!.config, secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' }, ownerId: s.catalog.identities.carol });
    const e2 = await s.call('POST', '/v1/entitlements', tok.operator, { systemId: sys.body.id, name: 'Prod admins (second system)', resource: 'cn=prod-admins,ou=groups,dc=accessloop,dc=test', ownerId: s.catalog.identities.bob, defaultDurationSeconds: 3600, maxDurationSeconds: 7200 });
    const erinToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: erin.id, roles: ['requester'] })).body.token;
    const req = await s.call('POST', '/v1/access-requests', erinToken, { entitlementId: e2.body.id, justification: 'on-call before leaving' });
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    await s.waitForStatus(req.body.id, ['active']);
    expect(await s.ldapMembers('prod-admins')).toContain(userDn('erin'));

    const leaver = await send('leaver', { id: 'HR-ERIN' });
    expect(leaver.status).toBe(202);
    const done = await waitFor(async () => (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, leaver.body.eventId)))[0]?.completedAt, 'leaver completed', 30_000);
    expect(done).toBeInstanceOf(Date);
    expect(await s.ldapMembers('prod-admins')).not.toContain(userDn('erin'));
    expect(await s.ldapMembers('finance-readers')).not.toContain(userDn('erin'));
    const request = (await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.operator)).body;
    expect(request).toMatchObject({ status: 'revoked', grant: { revokeReason: 'leaver' } });
    expect(request.removalVerifiedAt).toBeTruthy();
    expect((await identityByWorker('HR-ERIN'))!.status).toBe('terminated');
    // The leaver's own token dies with the identity.
    expect((await s.call('GET', '/v1/approvals/pending', erinToken)).status).toBe(401);
    const audit = await s.call('GET', `/v1/identities/${erin.id}/access`, tok.operator);
    expect(audit.body.grants).toEqual([]);

    // A duplicate delivery (same webhook-id) is accepted and ignored; a new id with an old sequence is stale.
    const body = JSON.stringify({ type: 'leaver', sequence: seq, worker: { id: 'HR-ERIN' } });
    const h = signed(body);
    expect((await s.call('POST', '/v1/hr/events', hrToken, body, h)).body.duplicate).toBe(false);
    const again = await s.call('POST', '/v1/hr/events', hrToken, body, h);
    expect(again.status).toBe(202);
    expect(again.body.duplicate).toBe(true);
    const stale = await processed(again.body.eventId);
    expect(stale.outcome).toBe('stale');
    // The same id reused for a different (validly signed) event is refused, and nothing is stored.
    const before = await hrRows();
    const other = JSON.stringify({ type: 'rehire', sequence: seq + 5, worker: { id: 'HR-ERIN' } });
    const reused = await s.call('POST', '/v1/hr/events', hrToken, other, signed(other, newKey, { id: h['webhook-id'] }));
    expect(reused.status).toBe(409);
    expect(reused.body.error.code).toBe('webhook_id_reused');
    expect(await hrRows()).toBe(before);
    expect((await identityByWorker('HR-ERIN'))!.status).toBe('terminated');
  });

  it('keeps a leaver that arrives before its joiner, and ignores a mover after a leaver', async () => {
    const l = await send('leaver', { id: 'HR-FRED', username: 'fred' }, { sequence: 5 });
    await processed(l.body.eventId);
    const j = await send('joiner', { id: 'HR-FRED', username: 'fred', department: 'engineering' }, { sequence: 1 });
    expect((await processed(j.body.eventId)).outcome).toBe('stale');
    expect((await identityByWorker('HR-FRED'))!.status).toBe('terminated');

    const g1 = await send('joiner', { id: 'HR-GINA', username: 'gina', department: 'finance' }, { sequence: 1 });
    await processed(g1.body.eventId);
    await waitFor(async () => (await s.ldapMembers('finance-readers')).includes(userDn('gina')), 'gina in finance');
    const g2 = await send('leaver', { id: 'HR-GINA' }, { sequence: 2 });
    await waitFor(async () => (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, g2.body.eventId)))[0]?.completedAt, 'gina leaver done');
    const g3 = await send('mover', { id: 'HR-GINA', department: 'engineering' }, { sequence: 3 });
    expect((await processed(g3.body.eventId)).outcome).toBe('ignored');
    expect(await s.ldapMembers('engineering')).not.toContain(userDn('fred'));
    expect(await s.ldapMembers('engineering')).not.toContain(userDn('gina'));
    expect(await s.ldapMembers('finance-readers')).not.toContain(userDn('gina'));
  });

  it('applies a leaver at its future effective time, and treats a contract end date as a leaver', async () => {
    const j = await send('joiner', { id: 'HR-HAL', username: 'hal', department: 'engineering' }, { sequence: 1 });
    await processed(j.body.eventId);
    await waitFor(async () => (await s.ldapMembers('engineering')).includes(userDn('hal')), 'hal in engineering');
    const effectiveAt = new Date(Date.now() + 3000).toISOString();
    const l = await send('leaver', { id: 'HR-HAL' }, { sequence: 2, effectiveAt });
    expect(l.status).toBe(202);
    expect(await s.ldapMembers('engineering')).toContain(userDn('hal')); // not yet
    await waitFor(async () => !(await s.ldapMembers('engineering')).includes(userDn('hal')), 'hal removed at effective time', 20_000);
    expect(Date.now()).toBeGreaterThanOrEqual(Date.parse(effectiveAt));

    const endDate = new Date(Date.now() + 3000).toISOString();
    const c = await send('joiner', { id: 'HR-IVY', username: 'ivy', kind: 'contractor', employmentType: 'contractor', department: 'finance', endDate }, { sequence: 1 });
    await processed(c.body.eventId);
    await waitFor(async () => (await s.ldapMembers('finance-readers')).includes(userDn('ivy')), 'ivy in finance');
    await waitFor(async () => !(await s.ldapMembers('finance-readers')).includes(userDn('ivy')), 'ivy removed at contract end', 20_000);
    const ivy = (await identityByWorker('HR-IVY'))!;
    expect(ivy.status).toBe('terminated');
    const [synthetic] = await s.tdb.db.select().from(hrEvents).where(and(eq(hrEvents.identityId, ivy.id), eq(hrEvents.type, 'leaver')));
    expect(synthetic!.sourceClient).toBe('accessloop:contract-end');
  });

  it('disables the leaver’s directory account (bind refused) and re-enables it on rehire', async () => {
    const url = s.slapd.url;
    const dave = s.userDn('dave');
    expect(await ldapBindWorks(url, dave, DEMO_USER_PASSWORD)).toBe(true);
    const l = await send('leaver', { id: 'HR-DAVE' }, { sequence: 10 });
    await waitFor(async () => (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, l.body.eventId)))[0]?.completedAt, 'dave leaver done');
    expect(await ldapBindWorks(url, dave, DEMO_USER_PASSWORD)).toBe(false);
    const r = await send('rehire', { id: 'HR-DAVE', department: 'finance' }, { sequence: 11 });
    await processed(r.body.eventId);
    await waitFor(async () => (await s.ldapMembers('finance-readers')).includes(dave), 'dave birthright after rehire');
    expect(await ldapBindWorks(url, dave, DEMO_USER_PASSWORD)).toBe(true);
    expect((await identityByWorker('HR-DAVE'))!.status).toBe('active');
  });

  it('reports time to revoke per leaver and the share of automated, verified removals', async () => {
    expect((await s.call('GET', '/v1/metrics/kpis', tok.alice)).status).toBe(403);
    const k = await s.call('GET', '/v1/metrics/kpis?windowDays=1', tok.operator);
    expect(k.status).toBe(200);
    const leavers = await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.type, 'leaver'));
    const done = leavers.filter((l) => l.completedAt);
    expect(k.body.timeToRevoke.perLeaver.n).toBe(done.length);
    const worst = Math.max(...done.map((l) => l.completedAt!.getTime() - l.receivedAt.getTime()));
    expect(Math.abs(k.body.timeToRevoke.perLeaver.maxMs - worst)).toBeLessThanOrEqual(1);
    const revoked = await s.tdb.db.select().from(grants).where(eq(grants.status, 'revoked'));
    expect(k.body.removals.total).toBe(revoked.length);
    expect(k.body.removals.automated).toBe(revoked.filter((g) => ['expired', 'leaver', 'mover', 'reconciliation'].includes(g.revokeReason ?? '')).length);
    expect(k.body.removals.verifiedShare).toBe(revoked.filter((g) => g.removalVerifiedAt).length / revoked.length);
    expect(k.body.orphanedAccess.activeGrantsOfInactiveIdentities).toBe(0);
    expect((await s.call('GET', '/v1/metrics/kpis?windowDays=0', tok.operator)).status).toBe(400);
  });

  it('sends a mover’s requested access to the new manager as micro-reviews: kept stays, the undecided one is revoked at the deadline', async () => {
    // A grace the new manager can act within on a busy machine (the review is due when it ends).
    const p = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify({ ...policyDoc, moverGraceSeconds: 6 }), { 'content-type': 'application/json' });
    expect(p.status, JSON.stringify(p.body)).toBe(201);
    const leases: Array<{ requestId: string; grantId: string }> = [];
    for (const e of [ent.engineering, ent['prod-admins']]) {
      const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: e, durationSeconds: 3600, justification: 'held before the move' });
      await waitFor(async () => (await s.call('POST', `/v1/access-requests/${r.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
      await s.waitForStatus(r.body.id, ['active']);
      const [g] = await s.tdb.db.select({ id: grants.id }).from(grants).where(eq(grants.requestId, r.body.id));
      leases.push({ requestId: r.body.id, grantId: g!.id });
    }
    const m = await send('mover', { id: 'HR-ALICE', department: 'finance', managerId: 'HR-BOB' }, { sequence: 1 });
    await processed(m.body.eventId);
    // One micro-review per requested grant reaches the new manager (not the old one, carol) while both leases stay active.
    const items = await waitFor(async () => {
      const mine = ((await s.call('GET', '/v1/reviews/pending', tok.bob)).body.items as Array<{ itemId: string; grantId: string; kind: string }>).filter((i) => leases.some((l) => l.grantId === i.grantId));
      return mine.length === 2 ? mine : undefined;
    }, 'micro-reviews for bob');
    expect(items.map((i) => i.kind)).toEqual(['micro', 'micro']);
    const itemOf = (n: number) => items.find((i) => i.grantId === leases[n]!.grantId)!.itemId;
    expect((await s.call('POST', `/v1/review-items/${itemOf(1)}/decision`, tok.carol, { decision: 'keep', comment: 'no longer mine' })).status).toBe(403);
    expect((await s.call('POST', `/v1/review-items/${itemOf(0)}/decision`, tok.bob, { decision: 'keep' })).status).toBe(200);
    const revoked = await s.waitForStatus(leases[1]!.requestId, ['revoked'], 30_000);
    // Revoked by the campaign's deadline rule, through the lease's own removal; a mover's review revokes as `mover`.
    expect(revoked.grant.revokeReason).toBe('mover');
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('alice'));
    const kept = (await s.call('GET', `/v1/access-requests/${leases[0]!.requestId}`, tok.operator)).body;
    expect(kept.status).toBe('active');
    expect(kept.timeline.map((t: { action: string }) => t.action)).not.toContain('review.stage_opened');
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));
    await s.call('POST', `/v1/access-requests/${leases[0]!.requestId}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(leases[0]!.requestId, ['revoked']);
  });

  it('keeps a membership two grants justify until the last ends; a leaver ends them all', async () => {
    const j = await send('joiner', { id: 'HR-JUNO', username: 'juno', department: 'engineering' }, { sequence: 1 });
    await processed(j.body.eventId);
    await waitFor(async () => (await s.ldapMembers('engineering')).includes(userDn('juno')), 'juno birthright');
    const junoToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: j.body.identityId, roles: ['requester'] })).body.token;
    const req = await s.call('POST', '/v1/access-requests', junoToken, { entitlementId: ent.engineering, durationSeconds: 600, justification: 'same group, requested as well' });
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    await s.waitForStatus(req.body.id, ['active']);
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, junoToken, { reason: 'manual' });
    const ended = await s.waitForStatus(req.body.id, ['revoked']);
    // The request's lease ended, but birthright still justifies the membership: it stays.
    expect(ended.timeline.at(-1).action).toBe('grant.ended_membership_retained');
    expect(await s.ldapMembers('engineering')).toContain(userDn('juno'));
    const l = await send('leaver', { id: 'HR-JUNO' }, { sequence: 2 });
    await waitFor(async () => (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, l.body.eventId)))[0]?.completedAt, 'juno leaver done');
    expect(await s.ldapMembers('engineering')).not.toContain(userDn('juno'));
  });
});

