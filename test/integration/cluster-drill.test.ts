/**
 * accessloop scaled out on the real multi-process Temporal cluster (issue 14 §3), and its
 * failover drill: three worker processes and two API replicas on one task queue, behind a
 * round-robin, while an expiry wave and a burst of leavers run. During the wave one history
 * node, one worker and one API replica are SIGKILLed; afterwards nothing may be missing:
 * - every lease is `revoked` with its removal verified (GET through the balancer, and the grant
 *   rows), and its workflow has completed;
 * - every leaver event is processed and completed, and the leaver holds nothing;
 * - slapd (ldapsearch) shows none of the drill's members, and slapd's own stats log shows
 *   exactly one member modify per membership removed (no removal lost, none repeated);
 * - no revocation was flagged unverified, no process the drill did not kill died, and no request
 *   through the balancer hung (each has a deadline).
 * A smaller wave before it, with nothing killed, gives the lateness to compare against; both are
 * printed (expiry → verified removal, p50 and max).
 *
 * The schema, demo catalog, slapd and tokens come from the test stack (test/helpers/stack-core.ts)
 * with no worker of its own: its in-process runtime only prepares the database and schedules; its
 * API is not behind the balancer and takes no traffic. Every product process the drill relies on
 * is a child process configured the production way (ACCESSLOOP_MULTI_PROCESS=true with shared
 * keys, ACCESSLOOP_MIGRATE=skip), spread over both frontends.
 *
 * The sentinel and reconciliation schedules are set far out: either could repair a lost removal
 * and hide exactly what this drill looks for.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { and, eq, inArray, isNotNull } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, expect, inject, it } from 'vitest';
import { normalizeDn } from '../../activities/connectors/ldap/dn.js';
import { DEMO_SUFFIX, demoGroupDn } from '../../activities/connectors/ldap/seed.js';
import { auditEvents, grants, hrEvents, identities } from '../../db/schema.js';
import { accessRequestWorkflowId } from '../../workflows/ids.js';
import { shortenUpdate } from '../../workflows/messages.js';
import { pool, summary } from '../bench/stats.js';
import { repoRoot } from '../helpers/cli.js';
import { clusterProcesses, startCluster, type Cluster } from '../helpers/cluster.js';
import { countMemberModifications } from '../helpers/ldap.js';
import { startRoundRobin, type RoundRobin } from '../helpers/round-robin.js';
import { sharedKeysEnv, startScaleOut, type ScaleOut } from '../helpers/scale-out.js';
import { startStackAt, waitFor, type ApiResponse, type Stack } from '../helpers/stack-core.js';

type Group = 'engineering' | 'finance-readers' | 'prod-admins';
const GROUPS: Group[] = ['engineering', 'finance-readers', 'prod-admins'];
/**
 * Sizes: bounded for `npm test` (tens of leases, a handful of leavers); `npm run bench` runs the
 * same drill at full size through DRILL_LEASES / DRILL_BASELINE_LEASES / DRILL_LEAVERS and reads
 * the figures it writes to DRILL_REPORT (test/bench/cluster-drill.ts).
 */
function size(name: string, fallback: number): number {
  const raw = process.env[name];
  const n = raw === undefined ? fallback : Number(raw);
  if (!Number.isInteger(n) || n < 1) throw new Error(`${name}=${raw}: a positive integer`);
  return n;
}
/** Leases in the wave the faults hit. */
const LEASES = size('DRILL_LEASES', 36);
/** Leases in a wave before it with nothing killed, for the lateness to compare against. */
const BASELINE_LEASES = size('DRILL_BASELINE_LEASES', 12);
const LEAVERS = size('DRILL_LEAVERS', 5);
/** Leavers sent at the wave's instant; the rest go right after the kills, through the balancer with one replica gone. */
const LEAVERS_AT_WAVE = Math.ceil(LEAVERS / 2);
/** Requests in flight at once while setting up and polling. */
const POOL = LEASES > 100 ? 20 : 6;
const BASELINE_LEAD_MS = 8_000 + BASELINE_LEASES * 40;
/** Time to move every lease onto the wave's second (one update each) before it comes. */
const WAVE_LEAD_MS = 20_000 + LEASES * 40;
/** No request through the balancer may take longer: a hang is a finding, not a wait. */
const REQUEST_TIMEOUT_MS = 30_000;
/** How long a client keeps retrying a request the balancer answered 502 (a replica gone mid-request). */
const RETRY_WINDOW_MS = 30_000;
/** Kill → everything verified: shards move in 4-8 s, a dead worker's activities are retried after their 10 s heartbeat timeout. */
const RECOVERY_DEADLINE_MS = 120_000 + (LEASES + LEAVERS * GROUPS.length) * 100;
/** The whole drill after start-up: the leases are created (about 8 per second on the cluster here), two waves, the checks. */
const DRILL_TIMEOUT_MS = 240_000 + (BASELINE_LEASES + LEASES + LEAVERS) * 600 + RECOVERY_DEADLINE_MS;

const suffix = randomUUID().slice(0, 8);
const hrKey = randomBytes(24);
let dir: string | undefined;
let cluster: Cluster | undefined;
let s: Stack | undefined;
let scale: ScaleOut | undefined;
let rr: RoundRobin | undefined;
const client = { retries: 0, brokenResponses: 0 };

const say = (m: string) => console.log(`[cluster-drill] ${m}`);
const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

/**
 * A request through the balancer. `retry`: the request is safe to repeat (a GET, or a POST the API
 * deduplicates), so a 502 or a response broken by a dying replica is sent again. A timeout never is.
 */
async function call<T = any>(method: string, p: string, token: string, body?: unknown, headers: Record<string, string> = {}, retry = false): Promise<ApiResponse<T>> {
  const until = Date.now() + RETRY_WINDOW_MS;
  for (;;) {
    try {
      const res = await fetch(`${rr!.url}${p}`, {
        method,
        headers: { authorization: `Bearer ${token}`, ...(body !== undefined ? { 'content-type': 'application/json' } : {}), ...headers },
        ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* non-JSON body */
      }
      if (res.status === 502 && retry && Date.now() < until) {
        client.retries++;
        await pause(100);
        continue;
      }
      return { status: res.status, body: parsed as T };
    } catch (e) {
      if ((e as Error).name === 'TimeoutError' || !retry || Date.now() >= until) throw new Error(`${method} ${p} through the balancer failed: ${(e as Error).message}`, { cause: e });
      client.brokenResponses++;
      await pause(100);
    }
  }
}

/** Modify operations slapd received on `groupDn` (its stats log's `MOD dn=` lines), answered or not. */
function modifyRequests(lines: readonly string[], groupDn: string): number {
  const wanted = normalizeDn(groupDn);
  return lines.filter((line) => {
    const mod = /\bconn=\d+ op=\d+ MOD dn="(.*)"\s*$/.exec(line);
    return mod !== null && normalizeDn(mod[1] ?? '') === wanted;
  }).length;
}

let hrToken: string;
/** One signed HR delivery (Standard Webhooks, signed with node:crypto); repeats keep its webhook-id, so the inbox deduplicates them. */
async function sendHr(type: 'joiner' | 'leaver', sequence: number, worker: Record<string, string>) {
  const body = JSON.stringify({ type, sequence, worker });
  const id = `msg_${randomUUID()}`;
  const ts = Math.floor(Date.now() / 1000);
  const sig = createHmac('sha256', hrKey).update(`${id}.${ts}.${body}`).digest('base64');
  const r = await call<{ eventId: string; identityId: string }>('POST', '/v1/hr/events', hrToken, body, { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${sig}` }, true);
  if (r.status !== 202) throw new Error(`HR ${type} ${worker.id}: ${r.status} ${JSON.stringify(r.body)}`);
  return r.body;
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-cluster-drill-'));
  cluster = await startCluster({
    dir,
    db: `accessloop_temporal_drill_${suffix}`,
    visibilityDb: `accessloop_temporal_visibility_drill_${suffix}`,
    reset: true,
    temporalCli: inject('temporalCli'),
  });
  const [frontend1, frontend2] = cluster.frontends;
  s = await startStackAt({
    temporalAddress: frontend1,
    worker: false,
    env: {
      ...sharedKeysEnv(hrKey),
      // Six processes next to the cluster's 42 connections, inside the server's max_connections of 100.
      ACCESSLOOP_DB_POOL_SIZE: '4',
      // Production-like: a removal delayed by the faults must still land inside the deadline, so any flag is a finding.
      ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS: '120',
      ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS: '2',
      ACCESSLOOP_SENTINEL_INTERVAL_SECONDS: String(24 * 3600),
      ACCESSLOOP_RECONCILE_INTERVAL_MINUTES: String(7 * 24 * 60),
    },
  });
  // worker-1 and api-2 are the ones killed: one on each frontend, so both paths lose a process.
  const frontendOf: Record<string, string> = { 'worker-1': frontend1, 'worker-2': frontend2, 'worker-3': frontend1, 'api-1': frontend1, 'api-2': frontend2 };
  const workerEnv = s.workerEnv;
  const t0 = Date.now();
  scale = await startScaleOut({ workers: 3, apis: 2, env: (name) => ({ ...workerEnv, ACCESSLOOP_MIGRATE: 'skip', TEMPORAL_ADDRESS: frontendOf[name] }) });
  say(`3 workers and 2 API replicas ready in ${Date.now() - t0} ms`);
  rr = await startRoundRobin(scale.apiUrls);
  // Long enough for the first `up` on a machine, which builds the server (temporal/cluster/provision.sh).
}, 16 * 60_000);

let failed = false;
afterEach((ctx) => {
  if (ctx.task.result?.state === 'fail') failed = true;
});

afterAll(async () => {
  await scale?.stop();
  await rr?.stop();
  await s?.stop();
  await cluster?.stop();
  if (!dir) return;
  if (failed) {
    // The servers' logs outlive a failed drill (the run dir is a temp dir): .data is git-ignored.
    const keep = path.join(repoRoot, '.data', `cluster-drill-${new Date().toISOString().replace(/[:.]/g, '-')}`);
    await cp(dir, keep, { recursive: true, filter: (src) => !src.endsWith('.pid') });
    say(`drill failed: the cluster's logs are kept in ${keep}`);
  }
  await rm(dir, { recursive: true, force: true });
}, 120_000);

it('loses nothing when a history node, a worker and an API replica are SIGKILLed during an expiry wave and a leaver burst', async () => {
  const stack = s!;
  const db = stack.tdb.db;
  const tok = Object.fromEntries(Object.entries(stack.catalog.tokens).map(([k, v]) => [k, v.token])) as Record<string, string>;
  const ent = stack.catalog.entitlements as Record<Group, string>;
  const groupOf = new Map(GROUPS.map((g) => [ent[g], g]));

  // ---- setup through the balancer: an HR client, and the leavers' birthright (all three groups)
  const hr = await call('POST', '/v1/tokens', tok.operator!, { principalId: 'client:drill-hr', roles: ['hr_system'] });
  expect(hr.status, JSON.stringify(hr.body)).toBe(201);
  hrToken = hr.body.token;
  const policy = await call(
    'PUT',
    '/v1/policies',
    tok.operator!,
    JSON.stringify({
      apiVersion: 'accessloop/v1',
      birthright: [{ name: 'drill-leavers', when: 'subject.department == "drill-leavers"', entitlementIds: GROUPS.map((g) => ent[g]) }],
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }],
    }),
  );
  expect(policy.status, JSON.stringify(policy.body)).toBeLessThan(300);

  const joined = await Promise.all(Array.from({ length: LEAVERS }, (_, i) => sendHr('joiner', 1, { id: `DRILL-LEAVER-${i}`, username: `drill-leaver-${i}`, department: 'drill-leavers' })));
  const leaverIds = joined.map((j) => j.identityId);
  await waitFor(async () => (await db.$count(grants, and(inArray(grants.identityId, leaverIds), eq(grants.status, 'active')))) === LEAVERS * GROUPS.length, 'the leavers’ birthright grants', 60_000, 200);

  // ---- leases: alice requests for her reports, bob (the entitlement owner) approves, all through the balancer
  const subjects = await db
    .insert(identities)
    .values(Array.from({ length: BASELINE_LEASES + LEASES }, (_, i) => ({ kind: 'employee' as const, username: `drill${String(i).padStart(4, '0')}`, displayName: `Drill ${i}`, managerId: stack.catalog.identities.alice })))
    .returning({ id: identities.id });
  const requestIds: string[] = [];
  await pool(subjects, POOL, async (sub, i) => {
    // Not retried: a repeated create would be a second request (nothing is killed yet).
    const r = await call('POST', '/v1/access-requests', tok.alice!, { subjectId: sub.id, entitlementId: ent[GROUPS[i % GROUPS.length]!], durationSeconds: 3600, justification: 'cluster failover drill' });
    if (r.status !== 202) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
    const id = r.body.id as string;
    await waitFor(
      async () => {
        const d = await call('POST', `/v1/access-requests/${id}/decision`, tok.bob!, { decision: 'approve' }, {}, true);
        // not_pending: a repeat of a decision that landed (its response lost to a 502).
        if (d.status === 200 || d.body?.error?.code === 'not_pending') return true;
        if (d.body?.error?.code !== 'stage_not_open') throw new Error(`decision: ${d.status} ${JSON.stringify(d.body)}`);
        return false;
      },
      `request ${id}: the approval stage to open`,
      60_000,
      100,
    );
    await waitFor(async () => (await call('GET', `/v1/access-requests/${id}`, tok.operator!, undefined, {}, true)).body?.status === 'active', `lease ${id} active`, 60_000, 100);
    requestIds[i] = id;
  });
  // The first BASELINE_LEASES (spread over the groups by i % 3) form the baseline wave, the rest the fault wave.
  const baselineIds = requestIds.slice(0, BASELINE_LEASES);
  const leaseIds = requestIds.slice(BASELINE_LEASES);

  const drillGrants = await db
    .select({ id: grants.id, entitlementId: grants.entitlementId, requestId: grants.requestId })
    .from(grants)
    .where(and(eq(grants.status, 'active'), inArray(grants.identityId, [...leaverIds, ...subjects.map((x) => x.id)])));
  expect(drillGrants).toHaveLength(BASELINE_LEASES + LEASES + LEAVERS * GROUPS.length);
  const baselineSet = new Set(baselineIds);
  const waveGrantIds = drillGrants.filter((g) => !g.requestId || !baselineSet.has(g.requestId)).map((g) => g.id);
  const drillMember = /^uid=drill(\d{4}|-leaver-\d+),/;
  // Lease i went to group i % 3; every leaver is in all three.
  const leasesIn = (k: number) => Array.from({ length: BASELINE_LEASES + LEASES }, (_, i) => i % GROUPS.length).filter((x) => x === k).length;
  for (const [k, g] of GROUPS.entries()) expect((await stack.ldapMembers(g)).filter((m) => drillMember.test(m))).toHaveLength(leasesIn(k) + LEAVERS);
  // From here on the only membership changes are the removals: the stats log after this line is both waves'.
  const logMark = stack.slapd.logLines().length;

  /** Shortens every lease onto one second (the lease's own update, as a review's earlier end date does). */
  async function shortenOnto(ids: string[], leadMs: number): Promise<number> {
    const at = Math.ceil((Date.now() + leadMs) / 1000) * 1000;
    await pool(ids, POOL, async (id) => {
      await stack.rt.temporal.workflow
        .getHandle(accessRequestWorkflowId(id))
        .executeUpdate(shortenUpdate, { args: [{ actorId: stack.catalog.identities.alice, expiresAt: new Date(at).toISOString(), justification: 'cluster failover drill: expiry wave' }] });
    });
    await waitFor(async () => (await db.$count(grants, and(inArray(grants.requestId, ids), eq(grants.expiresAt, new Date(at))))) === ids.length, 'every lease to expire at the wave', 10_000 + ids.length * 20);
    expect(Date.now(), 'shortening the leases overran the wave').toBeLessThan(at - 2_000);
    return at;
  }
  const lateness = async (ids: string[]) =>
    (await db.select({ e: grants.expiresAt, v: grants.removalVerifiedAt }).from(grants).where(and(inArray(grants.requestId, ids), isNotNull(grants.removalVerifiedAt)))).map((g) => ({
      verifiedAt: g.v!.getTime(),
      ms: g.v!.getTime() - g.e!.getTime(),
    }));
  const fmt = (xs: number[]) => {
    const t = summary(xs);
    return t.n ? `n=${t.n} p50 ${t.p50} ms max ${t.max} ms` : 'n=0';
  };

  // ---- a baseline wave with nothing killed: the same cluster and processes, for comparison
  await shortenOnto(baselineIds, BASELINE_LEAD_MS);
  const baseline = await waitFor(async () => {
    const l = await lateness(baselineIds);
    return l.length === BASELINE_LEASES ? l : undefined;
  }, 'the baseline wave verified', 60_000 + BASELINE_LEASES * 100, 250);
  say(`baseline wave, nothing killed: lease expiry → verified removal ${fmt(baseline.map((l) => l.ms))}`);

  // ---- the expiry wave the faults hit
  const waveAt = await shortenOnto(leaseIds, WAVE_LEAD_MS);
  say(`${LEASES} leases expire at ${new Date(waveAt).toISOString()}; ${LEAVERS} leavers hold ${LEAVERS * GROUPS.length} grants`);

  const verifiedCount = () => db.$count(grants, and(inArray(grants.id, waveGrantIds), isNotNull(grants.removalVerifiedAt)));
  // The instant itself, not a condition: the leavers must arrive while the timers fire.
  await pause(waveAt - Date.now());
  const leaving = Array.from({ length: LEAVERS_AT_WAVE }, (_, i) => sendHr('leaver', 2, { id: `DRILL-LEAVER-${i}` }));
  // Awaited after the kills; a failure before then is reported there, not as an unhandled rejection.
  for (const l of leaving) l.catch(() => undefined);
  // Once the first removal is verified the wave is under way: the faults land inside it.
  await waitFor(async () => (await verifiedCount()) > 0, 'the first verified removal of the wave', 30_000, 25);
  const killAt = Date.now();
  const doneAtKill = await verifiedCount();
  // All three at once, so that each of them lands inside the wave.
  await Promise.all([cluster!.kill('history-1'), scale!.kill('worker-1'), scale!.kill('api-2')]);
  const doneAfterKills = await verifiedCount();
  say(`SIGKILLed history-1, worker-1 and api-2 at wave+${killAt - waveAt} ms (${Date.now() - killAt} ms): ${doneAtKill} → ${doneAfterKills} of ${waveGrantIds.length} removals verified`);
  expect(doneAfterKills, 'the faults must land while removals are still outstanding').toBeLessThan(waveGrantIds.length);
  expect(await cluster!.running()).not.toContain('history-1');
  expect(scale!.running()).toEqual(['worker-2', 'worker-3', 'api-1']);

  // ---- keep driving through the balancer: the rest of the leavers, and every lease polled
  leaving.push(...Array.from({ length: LEAVERS - LEAVERS_AT_WAVE }, (_, i) => sendHr('leaver', 2, { id: `DRILL-LEAVER-${LEAVERS_AT_WAVE + i}` })));
  const leavers = await Promise.all(leaving);
  const revoked = new Map<string, any>();
  const lastSeen = new Map<string, string>();
  await waitFor(
    async () => {
      await pool(
        requestIds.filter((id) => !revoked.has(id)),
        POOL,
        async (id) => {
          const r = await call('GET', `/v1/access-requests/${id}`, tok.operator!, undefined, {}, true);
          lastSeen.set(id, `${r.status} ${r.body?.status}`);
          if (r.body?.status === 'revoked' && r.body.removalVerifiedAt) revoked.set(id, r.body);
        },
      );
      return revoked.size === requestIds.length;
    },
    'every lease revoked and verified through the balancer',
    RECOVERY_DEADLINE_MS,
    250,
  ).catch((e: Error) => {
    const outstanding = requestIds.filter((id) => !revoked.has(id)).map((id) => `${id}: ${lastSeen.get(id)}`);
    throw new Error(`${e.message}; still outstanding: ${outstanding.join('; ')}`, { cause: e });
  });
  const leaverEvents = await waitFor(
    async () => {
      const done = await db.select().from(hrEvents).where(and(inArray(hrEvents.id, leavers.map((l) => l.eventId)), isNotNull(hrEvents.completedAt)));
      return done.length === LEAVERS ? done : undefined;
    },
    'every leaver event completed',
    RECOVERY_DEADLINE_MS,
    250,
  );
  const recoveredAt = Date.now();

  // ---- lateness: expiry → verified removal, split at the kill (printed before the checks, so a failing run still shows it)
  const rows = await db.select().from(grants).where(inArray(grants.id, drillGrants.map((g) => g.id)));
  const lag = await lateness(leaseIds);
  say(`fault wave: lease expiry → verified removal, all: ${fmt(lag.map((l) => l.ms))} (baseline: ${fmt(baseline.map((l) => l.ms))})`);
  say(`  verified before the kill: ${fmt(lag.filter((l) => l.verifiedAt < killAt).map((l) => l.ms))}`);
  say(`  verified after the kill:  ${fmt(lag.filter((l) => l.verifiedAt >= killAt).map((l) => l.ms))}`);
  say(`leaver received → completed: ${fmt(leaverEvents.map((e) => e.completedAt!.getTime() - e.receivedAt.getTime()))}`);
  say(`kill → everything verified: ${recoveredAt - killAt} ms`);
  say(`balancer: ${JSON.stringify(rr!.stats)}; client retries after 502: ${client.retries}, broken responses retried: ${client.brokenResponses}`);
  if (process.env.DRILL_REPORT) {
    const ms = (xs: number[]) => summary(xs);
    await writeFile(
      process.env.DRILL_REPORT,
      JSON.stringify({
        leases: LEASES,
        baselineLeases: BASELINE_LEASES,
        leavers: LEAVERS,
        leaverGrants: LEAVERS * GROUPS.length,
        killAtWaveMs: killAt - waveAt,
        verifiedAtKill: doneAtKill,
        removals: waveGrantIds.length,
        baseline: ms(baseline.map((l) => l.ms)),
        fault: ms(lag.map((l) => l.ms)),
        beforeKill: ms(lag.filter((l) => l.verifiedAt < killAt).map((l) => l.ms)),
        afterKill: ms(lag.filter((l) => l.verifiedAt >= killAt).map((l) => l.ms)),
        leaverLatency: ms(leaverEvents.map((e) => e.completedAt!.getTime() - e.receivedAt.getTime())),
        killToVerifiedMs: recoveredAt - killAt,
        baselineSeconds: (Math.max(...baseline.map((l) => l.verifiedAt)) - Math.min(...baseline.map((l) => l.verifiedAt - l.ms))) / 1000,
        faultSeconds: (recoveredAt - waveAt) / 1000,
        balancer: rr!.stats,
        clientRetries: client.retries,
      }),
    );
  }

  // ---- nothing lost: the grant rows, the inbox, the workflows
  for (const lease of revoked.values()) expect(lease.grant).toMatchObject({ status: 'revoked', revokeReason: 'expired' });
  for (const g of rows) {
    expect(g.status, `grant ${g.id}`).toBe('revoked');
    expect(g.removalVerifiedAt, `grant ${g.id}`).toBeInstanceOf(Date);
    expect(g.revokeReason, `grant ${g.id}`).toBe(g.requestId ? 'expired' : 'leaver');
  }
  for (const e of leaverEvents) expect(e).toMatchObject({ type: 'leaver', outcome: 'applied' });
  const joinerEvents = await db.select().from(hrEvents).where(and(inArray(hrEvents.identityId, leaverIds), eq(hrEvents.type, 'joiner')));
  expect(joinerEvents.map((e) => e.outcome)).toEqual(Array(LEAVERS).fill('applied'));
  const people = await db.select({ status: identities.status }).from(identities).where(inArray(identities.id, leaverIds));
  expect(people.map((p) => p.status)).toEqual(Array(LEAVERS).fill('terminated'));
  expect(await db.$count(grants, and(inArray(grants.identityId, leaverIds), inArray(grants.status, ['granting', 'active', 'revoking', 'revocation_unverified'])))).toBe(0);
  expect(await db.$count(auditEvents, eq(auditEvents.action, 'grant.revocation_unverified')), 'revocations flagged unverified').toBe(0);
  await waitFor(
    async () => {
      const closed = await Promise.all(requestIds.map(async (id) => (await stack.rt.temporal.workflow.getHandle(accessRequestWorkflowId(id)).describe()).status.name));
      return closed.every((st) => st === 'COMPLETED');
    },
    'every lease workflow completed',
    30_000,
    500,
  );

  // ---- the directory: nobody of the drill is left, and each membership was removed exactly once
  for (const g of GROUPS) expect((await stack.ldapMembers(g)).filter((m) => drillMember.test(m)), `${g} members left`).toEqual([]);
  const waves = stack.slapd.logLines().slice(logMark);
  for (const g of GROUPS) {
    const expected = drillGrants.filter((w) => groupOf.get(w.entitlementId) === g).length;
    const groupDn = demoGroupDn(DEMO_SUFFIX, g);
    // Attempts, not successes: slapd logs no RESULT for a modify it applied when the worker that
    // sent it was killed before the answer, and the retry then finds the member gone.
    expect(modifyRequests(waves, groupDn), `member modifies slapd received on ${g} during both waves`).toBe(expected);
    expect(countMemberModifications(waves, groupDn), `successful member modifies of ${g}`).toBeLessThanOrEqual(expected);
  }

  scale!.assertAlive();

  // ---- history-1 rejoins
  const notes = await cluster!.restart('history-1');
  // A first start that exited is retried once by cluster.sh (as a supervisor would); its log tail is printed here, not hidden.
  if (notes) say(`history-1 restart reported:\n${notes}`);
  expect(await cluster!.running()).toEqual([...clusterProcesses]);
}, DRILL_TIMEOUT_MS);
