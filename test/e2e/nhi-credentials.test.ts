/**
 * A service account's PostgreSQL login, end to end through the API: its owner requests it, the
 * entitlement owner approves, the workflow issues a login with a generated password, the owner
 * reads the password once, rotates it, and the revoke kills the session and the login.
 * The target is a private cluster with real password checks; every effect is read with psql.
 */
import { spawn } from 'node:child_process';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { psql, psqlCanLogin, psqlCreateRole, psqlRoleMembers } from '../helpers/postgres.js';
import { createLogger } from '../../temporal/logger.js';
import { decodedHistoryText } from '../helpers/history.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const PG_SECRET = 'ACCESSLOOP_SECRET_NHI_PG';
const hrKey = randomBytes(24);
/** Everything the product logged during this file, at debug level. */
let logged = '';
let s: Stack;
let pg: PgCluster;
let adminUrl: string;
let tok: Record<string, string>;
let entitlementId: string;
let serviceAccountId: string;

beforeAll(async () => {
  pg = await startPgCluster(`admin-${randomUUID()}`);
  adminUrl = pg.url('postgres', pg.adminPassword);
  await psqlCreateRole(adminUrl, 'reporting_read');
  const log = createLogger('debug', { write: (line: string) => void (logged += line) });
  s = await startStack({ log, secrets: { [PG_SECRET]: pg.adminPassword }, env: { ACCESSLOOP_HR_WEBHOOK_SECRETS: `whsec_${hrKey.toString('base64')}` } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  const sys = await s.call('POST', '/v1/systems', tok.operator, {
    name: 'reporting-db',
    kind: 'postgres',
    config: { host: '127.0.0.1', port: pg.port, database: 'postgres', user: 'postgres', accountTemplate: 'svc_{username}' },
    secretRefs: { password: PG_SECRET },
    ownerId: s.catalog.identities.carol,
  });
  expect(sys.status, JSON.stringify(sys.body)).toBe(201);
  const e = await s.call('POST', '/v1/entitlements', tok.operator, {
    systemId: sys.body.id,
    name: 'Reporting database login (service accounts)',
    resource: 'reporting_read',
    ownerId: s.catalog.identities.bob,
    riskTier: 'high',
    defaultDurationSeconds: 3600,
    maxDurationSeconds: 7200,
    attributes: { credential: 'password' },
  });
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  entitlementId = e.body.id;
  const sa = await s.call('POST', '/v1/identities', tok.operator, {
    kind: 'service_account',
    username: 'billing',
    displayName: 'Billing exporter',
    ownerId: s.catalog.identities.alice,
  });
  expect(sa.status, JSON.stringify(sa.body)).toBe(201);
  serviceAccountId = sa.body.id;
}, 120_000);

afterAll(async () => {
  await s?.stop();
  await pg?.stop();
});

async function sessionsOf(role: string): Promise<number> {
  return Number((await psql(adminUrl, `select count(*) from pg_catalog.pg_stat_activity where usename = :'role';\n`, { role })).trim());
}

/**
 * The workflow's history with every payload decrypted and decoded (through our codec, as the
 * worker reads it), so a secret the workflow carried would show up in clear in the text.
 */
async function historyText(workflowId: string): Promise<string> {
  const history = await s.rt.temporal.workflow.getHandle(workflowId).fetchHistory();
  return decodedHistoryText(history, s.rt.temporal.options.loadedDataConverter.payloadCodecs);
}

describe('a service account credential on PostgreSQL', () => {
  it('is issued on approval, delivered once to the owner, rotated, and revoked with its session killed', async () => {
    const created = await s.call('POST', '/v1/access-requests', tok.alice, {
      subjectId: serviceAccountId,
      entitlementId,
      durationSeconds: 3600,
      justification: 'nightly billing export reads the reporting views',
    });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id = created.body.id as string;
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    const active = await s.waitForStatus(id, ['active']);
    expect(await psqlRoleMembers(adminUrl, 'reporting_read')).toEqual(['svc_billing']);

    // Only the owner may read it; nobody else learns it exists.
    for (const who of ['bob', 'operator', 'carol']) {
      const r = await s.call('GET', `/v1/access-requests/${id}/credential`, tok[who]);
      expect(r.status, who).toBe(404);
    }
    const first = await s.call('GET', `/v1/access-requests/${id}/credential`, tok.alice);
    expect(first.status, JSON.stringify(first.body)).toBe(200);
    expect(first.body).toMatchObject({ kind: 'password', username: 'svc_billing' });
    expect(Date.parse(first.body.notAfter)).toBeGreaterThan(Date.now() + 3500_000);
    expect(Math.abs(Date.parse(first.body.notAfter) - Date.parse(active.expiresAt))).toBeLessThan(30_000);
    const password1 = first.body.password as string;
    const again = await s.call('GET', `/v1/access-requests/${id}/credential`, tok.alice);
    expect(again.status).toBe(410);
    expect(again.body.error.code).toBe('already_delivered');
    expect((await psql(pg.url('svc_billing', password1), 'select current_user;\n')).trim()).toBe('svc_billing');

    // Rotation: the old password stops working, the new one (read once again) works.
    expect((await s.call('POST', `/v1/access-requests/${id}/credential/rotate`, tok.bob)).status).toBe(403);
    const rotated = await s.call('POST', `/v1/access-requests/${id}/credential/rotate`, tok.alice);
    expect(rotated.status, JSON.stringify(rotated.body)).toBe(200);
    expect(rotated.body.credential).toMatchObject({ kind: 'password' });
    expect(JSON.stringify(rotated.body)).not.toContain(password1);
    expect(await psqlCanLogin(pg.url('svc_billing', password1))).toBe(false);
    const second = await s.call('GET', `/v1/access-requests/${id}/credential`, tok.alice);
    expect(second.status).toBe(200);
    const password2 = second.body.password as string;
    expect(password2).not.toBe(password1);
    expect(await psqlCanLogin(pg.url('svc_billing', password2))).toBe(true);

    // An extension moves the login's VALID UNTIL with the lease, keeping the password. (90 min from
    // now stays within the entitlement's 2 h maximum counted from the grant.)
    const ext = await s.call('POST', `/v1/access-requests/${id}/extend`, tok.alice, { durationSeconds: 5400, justification: 'export runs late this quarter' });
    expect(ext.status, JSON.stringify(ext.body)).toBe(200);
    const until = (await psql(adminUrl, `select extract(epoch from rolvaliduntil) from pg_catalog.pg_roles where rolname = 'svc_billing';\n`)).trim();
    expect(Math.abs(Number(until) * 1000 - Date.parse(ext.body.expiresAt))).toBeLessThan(1000);
    expect(await psqlCanLogin(pg.url('svc_billing', password2))).toBe(true);

    // Neither secret is in the workflow history, in the database after delivery, or in the target's statement log.
    const history = await historyText(active.workflowId);
    // the decoding works: the credential reference and the subject id are readable
    expect(history.includes('"kind":"password"') && history.includes(serviceAccountId)).toBe(true);
    expect(history.includes(password1), 'first password in history').toBe(false);
    expect(history.includes(password2), 'second password in history').toBe(false);
    const rows = await s.rt.db.execute<{ sealed: string | null }>(sql`select sealed from credential`);
    expect([...rows].every((r) => r.sealed === null)).toBe(true);
    expect(pg.log()).not.toContain(password1);
    expect(pg.log()).not.toContain(password2);
    // …nor in our own logs, captured at debug level (which did log the activities)
    expect(logged).toContain('grantAccess');
    expect(logged.includes(password1) || logged.includes(password2)).toBe(false);

    // Revoke: the open session is terminated and the login refused, verified before the lease closes.
    const session = spawn('psql', [pg.url('svc_billing', password2), '-X', '-c', 'select pg_sleep(120)'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    session.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const ended = new Promise<number | null>((resolve) => session.on('close', resolve));
    try {
      await waitFor(async () => (await sessionsOf('svc_billing')) === 1, 'the service account session');
      const rv = await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual', comment: 'rotation drill over' });
      expect(rv.status).toBe(202);
      const done = await s.waitForStatus(id, ['revoked']);
      expect(done.removalVerifiedAt).toBeTruthy();
      expect(await ended).not.toBe(0);
      expect(stderr).toMatch(/terminating connection due to administrator command|server closed the connection/);
    } finally {
      session.kill('SIGKILL');
    }
    expect(await sessionsOf('svc_billing')).toBe(0);
    expect(await psqlCanLogin(pg.url('svc_billing', password2))).toBe(false);
    expect(await psqlRoleMembers(adminUrl, 'reporting_read')).toEqual([]);
    const after = await s.call('GET', `/v1/access-requests/${id}/credential`, tok.alice);
    expect(after.status).toBe(410);

    const timeline = (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.timeline.map((t: { action: string }) => t.action);
    expect(timeline).toEqual(expect.arrayContaining(['grant.applied', 'credential.delivered', 'credential.rotated', 'grant.removal_verified']));
  });

  it('refuses a rotation of a lease without a credential (409), and requests for someone else\'s service account (403)', async () => {
    const other = await s.call('POST', '/v1/access-requests', tok.bob, { subjectId: serviceAccountId, entitlementId, justification: 'not mine to ask for' });
    expect(other.status).toBe(403);
    const plain = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements.engineering, durationSeconds: 600, justification: 'a directory group, no credential' });
    expect(plain.status, JSON.stringify(plain.body)).toBe(202);
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${plain.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    await s.waitForStatus(plain.body.id, ['active']);
    const r = await s.call('POST', `/v1/access-requests/${plain.body.id}/credential/rotate`, tok.alice);
    expect(r.status).toBe(409);
    expect(r.body.error.code).toBe('no_credential');
    expect((await s.call('GET', `/v1/access-requests/${plain.body.id}/credential`, tok.alice)).status).toBe(404);
  });

  it('follows the service account to the manager when its owner leaves: the manager reads the credential, the login keeps working', async () => {
    const owen = await s.call('POST', '/v1/identities', tok.operator, {
      kind: 'employee',
      username: 'owen',
      displayName: 'Owen Owner',
      externalId: 'HR-OWEN',
      managerId: s.catalog.identities.carol,
    });
    expect(owen.status).toBe(201);
    const owenToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: owen.body.id, roles: ['requester'] })).body.token as string;
    const etl = await s.call('POST', '/v1/identities', tok.operator, { kind: 'service_account', username: 'etl', displayName: 'ETL job', ownerId: owen.body.id });
    expect(etl.status).toBe(201);
    const req = await s.call('POST', '/v1/access-requests', owenToken, { subjectId: etl.body.id, entitlementId, durationSeconds: 3600, justification: 'etl loads the reporting views' });
    expect(req.status, JSON.stringify(req.body)).toBe(202);
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    await s.waitForStatus(req.body.id, ['active']);
    // Owen has not collected it yet; the manager cannot either while Owen owns it.
    expect((await s.call('GET', `/v1/access-requests/${req.body.id}/credential`, tok.carol)).status).toBe(404);

    const body = JSON.stringify({ type: 'leaver', sequence: 1, worker: { id: 'HR-OWEN' } });
    const msgId = `msg_${randomUUID()}`;
    const ts = Math.floor(Date.now() / 1000);
    const sig = createHmac('sha256', hrKey).update(`${msgId}.${ts}.${body}`).digest('base64');
    const hrToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: 'client:hr', roles: ['hr_system'] })).body.token as string;
    const sent = await s.call('POST', '/v1/hr/events', hrToken, body, { 'webhook-id': msgId, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${sig}`, 'content-type': 'application/json' });
    expect(sent.status, JSON.stringify(sent.body)).toBe(202);
    await waitFor(async () => (await s.call('GET', `/v1/identities/${etl.body.id}`, tok.operator)).body.ownerId === s.catalog.identities.carol, 'ownership handed to the manager');

    const got = await s.call('GET', `/v1/access-requests/${req.body.id}/credential`, tok.carol);
    expect(got.status, JSON.stringify(got.body)).toBe(200);
    expect(got.body.username).toBe('svc_etl');
    expect(await psqlCanLogin(pg.url('svc_etl', got.body.password))).toBe(true);
    expect((await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.operator)).body.status).toBe('active');
  });
});
