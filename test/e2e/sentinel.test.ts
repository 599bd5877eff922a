import { spawn } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { and, eq, inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_SUFFIX, demoGroupDn } from '../../activities/connectors/ldap/seed.js';
import { createNotifier } from '../../activities/domain/notifier.js';
import { createSentinelActivities } from '../../activities/sentinel.js';
import { accessRequests, auditEvents, credentials, grants, identities, sentinelFindings } from '../../db/schema.js';
import { createLogger } from '../../temporal/logger.js';
import { sentinelScheduleId } from '../../workflows/ids.js';
import { ldapModify } from '../helpers/ldap.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { psql, psqlCanLogin, psqlCreateRole, psqlRoleMembers } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';
import { startWebhookReceiver, type WebhookDelivery, type WebhookReceiver, signatureValid as verifySignature } from '../helpers/webhook-receiver.js';

// The sentinel runs on its own Schedule every 5 s with 1 s of grace, as an operator would
// configure it tightly; each test wedges something behind the lease workflows' back and waits
// for the schedule, not for a manual run, so the measured times are the real ones.
const INTERVAL_S = 5;
const GRACE_S = 1;
const PG_SECRET = 'ACCESSLOOP_SECRET_SENTINEL_PG';
/** The service account's login role on the private cluster (accountTemplate svc_{username}). */
const PG_ROLE = 'svc_sentinel_export';

type Delivery = WebhookDelivery<{ type: string; data: { findingId: string; kind: string; grantId: string | null; requestId: string | null; removed: boolean; recipients: Array<{ identityId: string }> } }>;
const secretBytes = randomBytes(24);
const deliveries: Delivery[] = [];
let receiver: WebhookReceiver | undefined;
let s: Stack;
let tok: Record<'operator' | 'alice' | 'bob' | 'carol', string>;
let ids: Stack['catalog']['identities'];
let ent: Record<string, string>;
let pg: PgCluster;
let pgAdminUrl: string;
/** A PostgreSQL entitlement whose grants issue a login credential, and the service account that holds it. */
let pgEntitlementId: string;
let serviceAccountId: string;

const signatureValid = (d: Delivery) => verifySignature(d, secretBytes);
const alertsFor = (kind: string, pred: (d: Delivery) => boolean) => deliveries.filter((d) => d.json.type === 'sentinel.alert' && d.json.data.kind === kind && pred(d));
const auditAlerts = (grantId: string) =>
  s.tdb.db.select().from(auditEvents).where(and(eq(auditEvents.grantId, grantId), eq(auditEvents.action, 'sentinel.alert')));
const grantOf = async (requestId: string) => (await s.tdb.db.select().from(grants).where(eq(grants.requestId, requestId)))[0]!;
const admin = () => ({ url: s.slapd.url, rootDn: s.slapd.rootDn, rootPassword: s.slapd.rootPassword });

async function lease(group: 'engineering' | 'finance-readers', token: string) {
  const r = await s.call('POST', '/v1/access-requests', token, { entitlementId: ent[group], durationSeconds: 3600, justification: 'sentinel fixture' });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  await waitFor(async () => (await s.call('POST', `/v1/access-requests/${r.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
  await s.waitForStatus(r.body.id, ['active']);
  return { requestId: r.body.id as string, workflowId: r.body.workflowId as string };
}

/** Waits until the sentinel's schedule has started `n` more runs and the last of them finished. */
async function sentinelRuns(n: number) {
  const handle = s.rt.temporal.schedule.getHandle(sentinelScheduleId(s.config.TEMPORAL_TASK_QUEUE));
  const before = (await handle.describe()).info.numActionsTaken;
  await waitFor(async () => (await handle.describe()).info.numActionsTaken >= before + n, `${n} sentinel runs`, (n + 2) * INTERVAL_S * 1000);
  const last = (await handle.describe()).info.recentActions.at(-1)!;
  await s.rt.temporal.workflow.getHandle(last.action.workflow.workflowId, last.action.workflow.firstExecutionRunId).result();
}

beforeAll(async () => {
  receiver = await startWebhookReceiver(deliveries);
  // A private cluster with real password checks: the machine's shared one trusts every local login.
  pg = await startPgCluster(`admin-${randomUUID()}`);
  pgAdminUrl = pg.url('postgres', pg.adminPassword);
  await psqlCreateRole(pgAdminUrl, 'reporting_read');
  s = await startStack({
    secrets: { [PG_SECRET]: pg.adminPassword },
    env: {
      ACCESSLOOP_NOTIFY_WEBHOOK_URL: receiver.url,
      ACCESSLOOP_NOTIFY_WEBHOOK_SECRET: `whsec_${secretBytes.toString('base64')}`,
      ACCESSLOOP_SENTINEL_INTERVAL_SECONDS: String(INTERVAL_S),
      ACCESSLOOP_SENTINEL_GRACE_SECONDS: String(GRACE_S),
    },
  });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as typeof tok;
  ids = s.catalog.identities;
  ent = { ...s.catalog.entitlements };
  const sys = await s.call('POST', '/v1/systems', tok.operator, {
    name: 'sentinel-reporting-db',
    kind: 'postgres',
    config: { host: '127.0.0.1', port: pg.port, database: 'postgres', user: 'postgres', accountTemplate: 'svc_{username}' },
    secretRefs: { password: PG_SECRET },
    ownerId: ids.carol,
  });
  expect(sys.status, JSON.stringify(sys.body)).toBe(201);
  const e = await s.call('POST', '/v1/entitlements', tok.operator, {
    systemId: sys.body.id,
    name: 'Reporting database login (service accounts)',
    resource: 'reporting_read',
    ownerId: ids.bob,
    riskTier: 'high',
    defaultDurationSeconds: 3600,
    maxDurationSeconds: 7200,
    attributes: { credential: 'password' },
  });
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  pgEntitlementId = e.body.id;
  const sa = await s.call('POST', '/v1/identities', tok.operator, { kind: 'service_account', username: 'sentinel_export', displayName: 'Sentinel export job', ownerId: ids.alice });
  expect(sa.status, JSON.stringify(sa.body)).toBe(201);
  serviceAccountId = sa.body.id;
}, 180_000);
afterAll(async () => {
  await s?.stop();
  await pg?.stop();
  await receiver?.close();
});

async function pgSessionsOf(role: string): Promise<number> {
  return Number((await psql(pgAdminUrl, `select count(*) from pg_catalog.pg_stat_activity where usename = :'role';\n`, { role })).trim());
}

/** The real Temporal client, recording the workflow id of every describe made through it. */
function countingDescribes(): { client: Pick<Client, 'workflow'>; described: string[] } {
  const described: string[] = [];
  const real = s.rt.temporal.workflow;
  const workflow = Object.assign(Object.create(real) as Client['workflow'], {
    getHandle: (...args: Parameters<Client['workflow']['getHandle']>) => {
      const handle = real.getHandle(...args);
      return Object.assign(Object.create(handle) as typeof handle, {
        describe: () => {
          described.push(args[0]);
          return handle.describe();
        },
      });
    },
  });
  return { client: { workflow }, described };
}

/** The sentinel's activities on this stack's real parts, outside the schedule, with the given client. */
function directSentinel(temporal: Pick<Client, 'workflow'>) {
  const log = createLogger('error');
  const notifier = createNotifier({ webhookUrl: receiver!.url, webhookSecret: `whsec_${secretBytes.toString('base64')}`, publicUrl: s.rt.apiUrl!, linkSecret: randomBytes(32), linkTtlSeconds: 600 }, s.rt.db, log);
  return createSentinelActivities({ db: s.rt.db, connectors: s.rt.connectors, policies: s.rt.policies, metrics: s.rt.metrics, notifier, log, temporal });
}

/** Workflow ids visibility lists as running lease workflows (read through the client, not the sentinel). */
async function listedRunning(): Promise<Set<string>> {
  const out = new Set<string>();
  for await (const w of s.rt.temporal.workflow.list({ query: "WorkflowType = 'accessRequestWorkflow' AND ExecutionStatus = 'Running'" })) out.add(w.workflowId);
  return out;
}

describe('the sentinel, independent of the lease workflows', () => {
  it('ends wedged leases past expiry + grace: alert once, member gone from slapd, grant revoked as sentinel', async () => {
    // Three leases whose workflows are terminated, so nothing but the sentinel can end them.
    const wedged = [
      { group: 'engineering' as const, uid: 'alice', ...(await lease('engineering', tok.alice)) },
      { group: 'finance-readers' as const, uid: 'alice', ...(await lease('finance-readers', tok.alice)) },
      { group: 'engineering' as const, uid: 'carol', ...(await lease('engineering', tok.carol)) },
    ];
    const expiries: Date[] = [];
    for (const [i, w] of wedged.entries()) {
      expect(await s.ldapMembers(w.group)).toContain(s.userDn(w.uid));
      await s.rt.temporal.workflow.getHandle(w.workflowId).terminate('wedged on purpose by the sentinel test');
      // Staggered expiries, so the samples fall at different points of the schedule's interval.
      const expiresAt = new Date(Date.now() + 1000 + i * 1700);
      await s.tdb.db.update(grants).set({ expiresAt }).where(eq(grants.requestId, w.requestId));
      expiries.push(expiresAt);
    }

    const toAlert: number[] = [];
    const toRemoval: number[] = [];
    for (const [i, w] of wedged.entries()) {
      const g = await waitFor(async () => {
        const row = await grantOf(w.requestId);
        return row.status === 'revoked' ? row : undefined;
      }, `sentinel to revoke ${w.requestId}`, 30_000);
      expect(g.revokeReason).toBe('sentinel');
      expect(g.removalVerifiedAt).toBeInstanceOf(Date);
      expect((await s.call('GET', `/v1/access-requests/${w.requestId}`, tok.operator)).body.status).toBe('revoked');
      // The alert follows the removal, so the grant can read revoked a moment before it is written.
      const [alert] = await waitFor(async () => {
        const a = await auditAlerts(g.id);
        return a.length > 0 ? a : undefined;
      }, `sentinel alert for ${g.id}`);
      toAlert.push(alert!.at.getTime() - expiries[i]!.getTime());
      toRemoval.push(g.removalVerifiedAt!.getTime() - expiries[i]!.getTime());
    }
    // Read back through ldapsearch, not our connector.
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('carol'));
    expect(await s.ldapMembers('finance-readers')).not.toContain(s.userDn('alice'));

    // More runs change nothing: one audit alert and one signed webhook per finding.
    await sentinelRuns(2);
    for (const w of wedged) {
      const g = await grantOf(w.requestId);
      const audit = await auditAlerts(g.id);
      expect(audit.map((a) => a.reason)).toEqual(['expired_not_revoked']);
      const hooks = alertsFor('expired_not_revoked', (d) => d.json.data.grantId === g.id);
      expect(hooks).toHaveLength(1);
      expect(signatureValid(hooks[0]!)).toBe(true);
      expect(hooks[0]!.json.data).toMatchObject({ requestId: w.requestId, removed: true });
      // The entitlement owner is told (the demo's operator is a client principal, no identity).
      expect(hooks[0]!.json.data.recipients.map((r) => r.identityId)).toContain(ids.bob);
      // Opaque ids only: no directory account in the webhook.
      expect(hooks[0]!.body).not.toContain('uid=');
    }
    const metrics = await fetch(`${s.rt.apiUrl}/metrics`, { headers: { authorization: `Bearer ${tok.operator}` } }).then((r) => r.text());
    expect(metrics).toMatch(/accessloop_sentinel_findings_total\{kind="expired_not_revoked"\} 3/);

    // For the lead (issue 11, measured): expiry → alert and expiry → verified removal.
    console.log(`sentinel (interval ${INTERVAL_S}s, grace ${GRACE_S}s): expiry→alert ms ${JSON.stringify(toAlert)}, expiry→verified removal ms ${JSON.stringify(toRemoval)}`);
    for (const t of [...toAlert, ...toRemoval]) expect(t).toBeLessThan((GRACE_S + 2 * INTERVAL_S) * 1000);
  });

  it('ends a wedged lease’s PostgreSQL login credential with it: login refused, session killed, role NOLOGIN (psql)', async () => {
    const created = await s.call('POST', '/v1/access-requests', tok.alice, { subjectId: serviceAccountId, entitlementId: pgEntitlementId, durationSeconds: 3600, justification: 'sentinel fixture: a service account login' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const requestId = created.body.id as string;
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${requestId}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    const active = await s.waitForStatus(requestId, ['active']);
    const credential = await s.call('GET', `/v1/access-requests/${requestId}/credential`, tok.alice);
    expect(credential.status, JSON.stringify(credential.body)).toBe(200);
    expect(credential.body.username).toBe(PG_ROLE);
    const login = pg.url(PG_ROLE, credential.body.password as string);
    expect(await psqlCanLogin(login)).toBe(true);
    expect(await psqlRoleMembers(pgAdminUrl, 'reporting_read')).toEqual([PG_ROLE]);

    // An open session on the credential, then the lease is wedged: only the sentinel can end it.
    const session = spawn('psql', [login, '-X', '-c', 'select pg_sleep(300)'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    session.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const sessionEnded = new Promise<number | null>((resolve) => session.on('close', resolve));
    try {
      await waitFor(async () => (await pgSessionsOf(PG_ROLE)) === 1, 'the service account session');
      await s.rt.temporal.workflow.getHandle(active.workflowId).terminate('wedged on purpose by the sentinel test');
      await s.tdb.db.update(grants).set({ expiresAt: new Date(Date.now() + 1000) }).where(eq(grants.requestId, requestId));

      const g = await waitFor(async () => {
        const row = await grantOf(requestId);
        return row.status === 'revoked' ? row : undefined;
      }, `sentinel to revoke ${requestId}`, 30_000);
      expect(g.revokeReason).toBe('sentinel');
      expect(g.removalVerifiedAt).toBeInstanceOf(Date);
      await waitFor(async () => (await pgSessionsOf(PG_ROLE)) === 0, 'the service account session to be terminated', 15_000);
      expect(await sessionEnded).not.toBe(0);
      expect(stderr).toMatch(/terminating connection due to administrator command|server closed the connection/);
    } finally {
      session.kill('SIGKILL');
    }
    // Read back with psql, not through our connector: the login is refused and the role is closed.
    expect(await psqlCanLogin(login)).toBe(false);
    expect(await pgSessionsOf(PG_ROLE)).toBe(0);
    const role = (await psql(pgAdminUrl, `select rolcanlogin, rolvaliduntil is not null and rolvaliduntil <= now() from pg_catalog.pg_roles where rolname = :'role';\n`, { role: PG_ROLE })).trim();
    expect(role).toBe('f|t');
    expect(await psqlRoleMembers(pgAdminUrl, 'reporting_read')).toEqual([]);
    const rows = await s.tdb.db.select({ status: credentials.status, sealed: credentials.sealed }).from(credentials).where(eq(credentials.grantId, (await grantOf(requestId)).id));
    expect(rows).toEqual([{ status: 'revoked', sealed: null }]);
    // The alert follows the removal (a webhook that is down cannot hold the removal up).
    await waitFor(async () => alertsFor('expired_not_revoked', (d) => d.json.data.requestId === requestId).length === 1, 'the expired_not_revoked webhook');
  });

  it('finds lease workflows that ended under an open request, or whose workflow task keeps failing, without describing every open request', async () => {
    // Healthy leases beside the broken ones: the check must not describe each of them every run.
    const healthy = [await lease('engineering', tok.alice), await lease('finance-readers', tok.alice), await lease('engineering', tok.carol)];
    const ended = await lease('finance-readers', tok.carol);
    await s.rt.temporal.workflow.getHandle(ended.workflowId).terminate('ended on purpose by the sentinel test');
    // A workflow task that can never succeed: a request whose workflow is of a type no worker knows.
    const requestId = randomUUID();
    const workflowId = `access-request/${requestId}`;
    await s.tdb.db.insert(accessRequests).values({ id: requestId, requesterId: ids.dave, subjectId: ids.dave, entitlementId: ent['prod-admins']!, justification: 'wedged workflow fixture', requestedDurationSeconds: 600, status: 'active', workflowId });
    await s.rt.temporal.workflow.start('noSuchWorkflowType', { taskQueue: s.config.TEMPORAL_TASK_QUEUE, workflowId, args: [] });

    try {
      const alerted = (kind: 'workflow_ended' | 'workflow_task_failed', key: string) =>
        waitFor(async () => (await s.tdb.db.select().from(sentinelFindings).where(and(eq(sentinelFindings.kind, kind), eq(sentinelFindings.subjectKey, key))))[0]?.alertedAt, `${kind} alert for ${key}`, 30_000);
      await alerted('workflow_ended', ended.workflowId);
      await alerted('workflow_task_failed', workflowId);
      await sentinelRuns(1);
      expect(alertsFor('workflow_ended', (d) => d.json.data.requestId === ended.requestId)).toHaveLength(1);
      expect(alertsFor('workflow_task_failed', (d) => d.json.data.requestId === requestId)).toHaveLength(1);
      // Alerts only: the ended lease's access is still within its expiry, so it stays.
      expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('carol'));

      // The same check, run directly with a client that counts describes: visibility lists the
      // running lease workflows, and only the two that are not listed (or already flagged) plus a
      // rotating batch of one are described, not every open request.
      await waitFor(async () => {
        const listed = await listedRunning();
        return healthy.every((h) => listed.has(h.workflowId)) && !listed.has(ended.workflowId);
      }, 'visibility to list the healthy leases as running and the ended one not');
      const open = await s.tdb.db.select({ workflowId: accessRequests.workflowId }).from(accessRequests).where(inArray(accessRequests.status, ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified']));
      expect(open.map((r) => r.workflowId).sort()).toEqual([...healthy.map((h) => h.workflowId), ended.workflowId, workflowId].sort());
      const { client, described } = countingDescribes();
      const sentinel = directSentinel(client);
      const healthyIds = new Set(healthy.map((h) => h.workflowId));
      const rotated: string[] = [];
      for (let run = 0; run < healthy.length; run++) {
        described.length = 0;
        const counts = await sentinel.sentinelCheckWorkflows({ runId: `focused-${run}`, graceSeconds: GRACE_S, revokeDeadlineSeconds: 3, workflowDescribeBatch: 1 });
        expect(counts).toMatchObject({ findings: 2, alerted: 0, removed: 0 });
        expect(described).toHaveLength(3);
        expect(described).toEqual(expect.arrayContaining([ended.workflowId, workflowId]));
        rotated.push(...described.filter((id) => healthyIds.has(id)));
      }
      // Least recently described first: three runs of one cover each healthy lease once.
      expect(rotated.sort()).toEqual([...healthyIds].sort());
      // Still one alert each: the direct runs found the same unresolved findings.
      expect(alertsFor('workflow_ended', (d) => d.json.data.requestId === ended.requestId)).toHaveLength(1);
      expect(alertsFor('workflow_task_failed', (d) => d.json.data.requestId === requestId)).toHaveLength(1);
    } finally {
      // The fixtures end either way, so the next test can lease the same memberships.
      await s.rt.temporal.workflow.getHandle(workflowId).terminate('fixture done');
      for (const h of healthy) expect((await s.call('POST', `/v1/access-requests/${h.requestId}/revoke`, tok.operator, { reason: 'manual', comment: 'fixture done' })).status).toBe(202);
      for (const h of healthy) await s.waitForStatus(h.requestId, ['revoked']);
    }
  });

  it('finds a terminated identity with a live grant and a member no grant explains; removes them only when the policy says all', async () => {
    const held = await lease('engineering', tok.alice);
    const g = await grantOf(held.requestId);
    // An HR leaver the identity workflow never processed: terminated in the database only.
    await s.tdb.db.update(identities).set({ status: 'terminated', terminatedAt: new Date(Date.now() - 10_000) }).where(eq(identities.id, ids.alice));
    // A member added behind our back.
    await ldapModify(admin(), `dn: ${demoGroupDn(DEMO_SUFFIX, 'finance-readers')}\nchangetype: modify\nadd: member\nmember: ${s.userDn('dave')}\n`);

    const finding = (kind: 'terminated_with_grant' | 'unjustified_member') =>
      waitFor(async () => (await s.tdb.db.select().from(sentinelFindings).where(eq(sentinelFindings.kind, kind))).find((f) => f.alertedAt), `${kind} alert`, 30_000);
    const leaver = await finding('terminated_with_grant');
    expect(leaver.grantId).toBe(g.id);
    const stray = await finding('unjustified_member');
    expect(stray.identityId).toBe(ids.dave);
    await sentinelRuns(1);
    // Default policy (`expired`): alerted once each, nothing removed.
    expect(alertsFor('terminated_with_grant', (d) => d.json.data.grantId === g.id)).toHaveLength(1);
    expect(alertsFor('unjustified_member', (d) => d.json.data.findingId === stray.id)).toHaveLength(1);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('dave'));

    const doc = { apiVersion: 'accessloop/v1', sentinel: { remove: 'all' }, policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }] };
    const pub = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(doc), { 'content-type': 'application/json' });
    expect(pub.status, JSON.stringify(pub.body)).toBeLessThan(300);
    const ended = await waitFor(async () => {
      const row = await grantOf(held.requestId);
      return row.status === 'revoked' ? row : undefined;
    }, 'sentinel to end the leaver’s grant', 30_000);
    expect(ended).toMatchObject({ revokeReason: 'sentinel' });
    expect(ended.removalVerifiedAt).toBeInstanceOf(Date);
    await waitFor(async () => !(await s.ldapMembers('finance-readers')).includes(s.userDn('dave')), 'stray member removed', 30_000);
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    // Removing is not a second alert.
    expect(alertsFor('terminated_with_grant', (d) => d.json.data.grantId === g.id)).toHaveLength(1);
    expect(await auditAlerts(g.id)).toHaveLength(1);
  });
});
