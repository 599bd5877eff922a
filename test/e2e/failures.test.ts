import { spawn, type ChildProcess } from 'node:child_process';
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { eq } from 'drizzle-orm';
import { grants, hrEvents } from '../../db/schema.js';
import { fileURLToPath } from 'node:url';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { demoGroupDn, DEMO_SUFFIX } from '../../activities/connectors/ldap/seed.js';
import { countMemberModifications } from '../helpers/ldap.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

// The worker runs as a child process here, so it can be SIGKILLed like a crashed pod.
const hrKey = randomBytes(24);
const HR_SECRET = `whsec_${hrKey.toString('base64')}`;
let s: Stack;
let tok: Record<string, string>;
const children = new Set<ChildProcess>();
const root = fileURLToPath(new URL('../..', import.meta.url));

function startWorkerProcess(): Promise<ChildProcess> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'temporal/worker-main.ts'], {
    cwd: root,
    env: { ...process.env, ...s.workerEnv, LOG_LEVEL: 'error' },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`worker did not become ready: ${out}`)), 60_000);
    child.stdout!.on('data', (d) => {
      out += d;
      if (out.includes('accessloop-worker-ready')) {
        clearTimeout(t);
        resolve(child);
      }
    });
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`worker exited early (${code}): ${out}`)));
  });
}

async function kill(child: ChildProcess, signal: NodeJS.Signals) {
  const exited = new Promise((r) => child.once('exit', r));
  child.kill(signal);
  await exited;
}

beforeAll(async () => {
  s = await startStack({ worker: false, env: { ACCESSLOOP_HR_WEBHOOK_SECRETS: HR_SECRET } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
});
afterEach(async () => {
  for (const c of [...children]) await kill(c, 'SIGKILL');
});
afterAll(async () => {
  await s?.stop();
});

async function activeLease(group: 'engineering' | 'prod-admins', durationSeconds: number) {
  const req = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements[group], durationSeconds, justification: 'failure drill lease' });
  expect(req.status).toBe(202);
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === req.body.id), 'approval task');
  expect((await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'approve' })).status).toBe(200);
  const active = await s.waitForStatus(req.body.id, ['active']);
  return { id: req.body.id as string, expiresAt: active.expiresAt as string };
}

describe('failure drills', () => {
  it('keeps a revocation open while the directory is down and verifies it once slapd is back', async () => {
    await startWorkerProcess();
    const lease = await activeLease('prod-admins', 3600);
    expect(await s.ldapMembers('prod-admins')).toContain(s.userDn('alice'));

    await s.slapd.stop();
    expect((await s.call('POST', `/v1/access-requests/${lease.id}/revoke`, tok.operator, { reason: 'manual', comment: 'drill' })).status).toBe(202);

    const seen = new Set<string>();
    await waitFor(
      async () => {
        const r = await s.call('GET', `/v1/access-requests/${lease.id}`, tok.operator);
        seen.add(r.body.status);
        return r.body.status === 'revocation_unverified';
      },
      'revocation_unverified',
      30_000,
      50,
    );
    expect(seen).toContain('revoking');
    const flagged = await s.call('GET', `/v1/access-requests/${lease.id}`, tok.operator);
    expect(flagged.body.removalVerifiedAt).toBeNull();
    expect(flagged.body.grant.status).toBe('revocation_unverified');
    // Still unverified while the directory stays down: never closed as revoked.
    const state = await s.rt.temporal.workflow.getHandle(`access-request/${lease.id}`).query('state');
    expect(state).toMatchObject({ status: 'revocation_unverified' });

    await s.slapd.start();
    const done = await s.waitForStatus(lease.id, ['revoked'], 30_000);
    expect(done.removalVerifiedAt).toBeTruthy();
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('alice'));
    const actions = done.timeline.map((t: { action: string }) => t.action);
    expect(actions.indexOf('grant.revocation_unverified')).toBeGreaterThan(actions.indexOf('grant.revoke_requested'));
    expect(actions.indexOf('grant.removal_verified')).toBeGreaterThan(actions.indexOf('grant.revocation_unverified'));
  });

  it('revokes on time after the worker is SIGKILLed mid-lease, with exactly one change each way', async () => {
    const group = demoGroupDn(DEMO_SUFFIX, 'engineering');
    const before = countMemberModifications(s.slapd.logLines(), group);
    const first = await startWorkerProcess();
    const lease = await activeLease('engineering', 8);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    await kill(first, 'SIGKILL');
    await startWorkerProcess();

    const done = await s.waitForStatus(lease.id, ['revoked'], 60_000);
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    const lateness = Date.parse(done.removalVerifiedAt) - Date.parse(lease.expiresAt);
    expect(lateness).toBeGreaterThanOrEqual(0);
    // On time: the durable timer fires at expiry whether or not the original worker lives.
    expect(lateness).toBeLessThan(5_000);
    // slapd's own operation log: one successful add and one successful delete on the group.
    await waitFor(async () => countMemberModifications(s.slapd.logLines(), group) - before >= 2, 'slapd log to show the delete', 5_000);
    expect(countMemberModifications(s.slapd.logLines(), group) - before).toBe(2);
    const grantEvents = done.timeline.filter((t: { action: string }) => t.action === 'grant.applied' || t.action === 'grant.removal_verified');
    expect(grantEvents.map((t: { data: { changed: boolean } }) => t.data.changed)).toEqual([true, true]);
  });

  it('finishes a leaver after the worker is SIGKILLed mid-revocation, leaving nothing behind', async () => {
    const ent = s.catalog.entitlements;
    await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify({
      apiVersion: 'accessloop/v1',
      birthright: [{ name: 'ops', when: 'subject.department == "ops"', entitlementIds: [ent.engineering, ent['finance-readers'], ent['prod-admins']] }],
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }],
    }), { 'content-type': 'application/json' });
    const hrToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: 'client:hr', roles: ['hr_system'] })).body.token;
    const send = (body: object) => {
      const raw = JSON.stringify(body);
      const id = `msg_${randomUUID()}`;
      const ts = Math.floor(Date.now() / 1000);
      const sig = createHmac('sha256', hrKey).update(`${id}.${ts}.${raw}`).digest('base64');
      return s.call('POST', '/v1/hr/events', hrToken, raw, { 'content-type': 'application/json', 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${sig}` });
    };
    const groups = ['engineering', 'finance-readers', 'prod-admins'] as const;
    const first = await startWorkerProcess();
    const joiner = await send({ type: 'joiner', sequence: 1, worker: { id: 'HR-CAROL', department: 'ops' } });
    expect(joiner.status, JSON.stringify(joiner.body)).toBe(202);
    for (const g of groups) await waitFor(async () => (await s.ldapMembers(g)).includes(s.userDn('carol')), `carol in ${g}`);
    const before = Object.fromEntries(groups.map((g) => [g, countMemberModifications(s.slapd.logLines(), demoGroupDn(DEMO_SUFFIX, g))]));

    // Directory down, leaver in: removals start and cannot finish while this worker lives.
    await s.slapd.stop();
    const leaver = await send({ type: 'leaver', sequence: 2, worker: { id: 'HR-CAROL' } });
    expect(leaver.status).toBe(202);
    await waitFor(async () => (await s.tdb.db.select().from(grants).where(eq(grants.identityId, joiner.body.identityId))).every((g) => g.status === 'revoking' || g.status === 'revocation_unverified'), 'removals in flight');
    await kill(first, 'SIGKILL');
    await s.slapd.start();
    await startWorkerProcess();

    const completed = await waitFor(async () => (await s.tdb.db.select().from(hrEvents).where(eq(hrEvents.id, leaver.body.eventId)))[0]?.completedAt, 'leaver completed after restart', 60_000);
    expect(completed).toBeInstanceOf(Date);
    for (const g of groups) expect(await s.ldapMembers(g)).not.toContain(s.userDn('carol'));
    const rows = await s.tdb.db.select().from(grants).where(eq(grants.identityId, joiner.body.identityId));
    expect(rows.map((g) => [g.status, g.revokeReason, g.removalVerifiedAt !== null])).toEqual(groups.map(() => ['revoked', 'leaver', true]));
    // Exactly one delete per group in slapd's own log, despite the crash and the retries.
    await waitFor(async () => groups.every((g) => countMemberModifications(s.slapd.logLines(), demoGroupDn(DEMO_SUFFIX, g)) - before[g]! >= 1), 'deletes logged', 5_000);
    for (const g of groups) expect(countMemberModifications(s.slapd.logLines(), demoGroupDn(DEMO_SUFFIX, g)) - before[g]!).toBe(1);
  });
});

