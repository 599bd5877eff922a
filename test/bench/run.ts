/**
 * `npm run bench`: measures, in one run on one private Temporal dev server, Postgres database
 * and slapd (all on 127.0.0.1), and writes BENCHMARKS.md:
 *
 *  1. end-to-end request throughput (create → approve → grant verified) through the real API,
 *     and the same client pattern against a minimal workflow of the same shape, in alternating
 *     blocks (BENCH_BLOCKS, default 8) → the ratio per pair and its spread, with CPU per process;
 *  2. an expiry wave: BENCH_WAVE leases (default 1,000) imported, moved to expire in the same
 *     second, then expiry → verified removal latency per lease (p50/p99/max), the wave's
 *     duration and its CPU; then the sections of the other issues, and two on the multi-process
 *     cluster of their own: throughput with 1 → 3 worker processes and the full-size failover drill.
 *
 * Bounded in count (BENCH_LEASES, default 200; BENCH_WAVE) and time (every wait has a deadline).
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { NativeConnection, Worker, bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { and, eq, inArray, isNotNull, sql } from 'drizzle-orm';
import { approvals, auditEvents, entitlements, grants, identities } from '../../db/schema.js';
import { resolveTemporalBinary, startDevServer } from '../../temporal/dev-server.js';
import { startStackAt, waitFor } from '../helpers/stack-core.js';
import { accessRequestWorkflowId } from '../../workflows/ids.js';
import { shortenUpdate } from '../../workflows/messages.js';
import { benchCodec } from './codec.js';
import { HR_BENCH_SECRET, benchLeavers } from './leavers.js';
import { benchModel } from './model.js';
import { benchReconciliation } from './reconcile.js';
import { benchReviews } from './reviews.js';
import { benchBreakGlass } from './break-glass.js';
import { benchDecisions } from './decisions.js';
import { benchClusterDrill } from './cluster-drill.js';
import { benchClusterScaling } from './cluster-scaling.js';
import { benchSentinel } from './sentinel.js';
import { benchServiceDesk } from './service-desk.js';
import { minimalApprove } from './minimal-workflow.js';
import { pool, summary } from './stats.js';
import { addCpu, cpuSample, cpuTable, type CpuSpent } from './cpu.js';

const LEASES = Number(process.env.BENCH_LEASES ?? 200);
/** Alternating blocks of the throughput comparison (pairs of accessloop and minimal). */
const BLOCKS = Number(process.env.BENCH_BLOCKS ?? 8);
/** Leases in the expiry wave (issue 14: 1,000 expiring within one second). */
const WAVE = Number(process.env.BENCH_WAVE ?? 1000);
const CONCURRENCY = Number(process.env.BENCH_CONCURRENCY ?? 10);
const WARMUP = 5;
const POLL_MS = 25;

const say = (m: string) => console.log(`[bench] ${m}`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

if (process.env.BENCH_ONLY === 'model') {
  // The randomized runs alone, while developing (vitest brings its own servers): printed, never written.
  const model = await benchModel(say);
  console.log(model.section);
  say(model.summary);
  process.exit(0);
}
if (process.env.BENCH_ONLY === 'cluster-drill') {
  // The full-size drill under vitest, on its own cluster: printed, never written.
  const drill = await benchClusterDrill(say);
  console.log(drill.section);
  say(drill.summary);
  process.exit(0);
}
if (process.env.BENCH_ONLY === 'cluster-scaling') {
  // On its own multi-process cluster (no dev server): printed, never written.
  const scaling = await benchClusterScaling(say);
  console.log(scaling.section);
  say(scaling.summary);
  process.exit(0);
}
const binary = await resolveTemporalBinary({ cliPath: process.env.TEMPORAL_CLI_PATH, say });
const serverVersion = (await promisify(execFile)(binary, ['--version'])).stdout.trim();
const server = await startDevServer({ binary, logDir: await mkdtemp(path.join(os.tmpdir(), 'accessloop-bench-')) });
if (process.env.BENCH_ONLY === 'sentinel') {
  try {
    const sentinel = await benchSentinel(server.address, say);
    console.log(sentinel.section);
    say(sentinel.summary);
  } finally {
    await server.stop();
  }
  process.exit(0);
}
if (process.env.BENCH_ONLY === 'desk') {
  try {
    const desk = await benchServiceDesk(server.address, say);
    console.log(desk.section);
    say(desk.summary);
  } finally {
    await server.stop();
  }
  process.exit(0);
}
if (process.env.BENCH_ONLY === 'reviews') {
  try {
    const reviews = await benchReviews(server.address, say);
    console.log(reviews.section);
    say(reviews.summary);
  } finally {
    await server.stop();
  }
  process.exit(0);
}
// The parts that need a whole stack, alone while developing: printed, never written.
const onStack: Record<string, (st: Awaited<ReturnType<typeof startStackAt>>) => Promise<{ section: string; summary: string }>> = {
  decisions: (st) => benchDecisions(st, say, Number(process.env.BENCH_LIFECYCLES_PER_SECOND ?? 11)),
  'break-glass': (st) => benchBreakGlass(st, say),
};
const alone = onStack[process.env.BENCH_ONLY ?? ''];
if (alone) {
  const st = await startStackAt({ temporalAddress: server.address });
  try {
    const part = await alone(st);
    console.log(part.section);
    say(part.summary);
  } finally {
    await st.stop();
    await server.stop();
  }
  process.exit(0);
}
if (process.env.BENCH_ONLY === 'codec') {
  // One scenario while developing: printed, never written over BENCHMARKS.md (a partial report).
  try {
    const codec = await benchCodec(server.address, say);
    console.log(codec.section);
    say(codec.summary);
  } finally {
    await server.stop();
  }
  process.exit(0);
}
// Production timing: the test stack's 3 s verification deadline would flag slow-but-fine removals under load.
const s = await startStackAt({
  temporalAddress: server.address,
  env: { ACCESSLOOP_HR_WEBHOOK_SECRETS: HR_BENCH_SECRET, ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS: '300', ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS: '60' },
});
const tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as Record<string, string>;
const ent = s.catalog.entitlements;
const groups = ['engineering', 'finance-readers', 'prod-admins'] as const;

// The minimal baseline's own worker, on its own task queue, on the same server.
const minimalConn = await NativeConnection.connect({ address: server.address });
const minimalQueue = `bench-minimal-${randomBytes(3).toString('hex')}`;
const minimalWorker = await Worker.create({
  connection: minimalConn,
  taskQueue: minimalQueue,
  workflowBundle: await bundleWorkflowCode({ workflowsPath: fileURLToPath(new URL('./minimal-workflow.ts', import.meta.url)), logger: new DefaultLogger('WARN') }),
  activities: { grant: async () => true, verify: async () => true },
  // The same codec as accessloop's client (the baseline is started through it), so the ratio
  // prices the product, not the encryption; the codec section below prices that.
  dataConverter: { payloadCodecs: s.rt.temporal.options.loadedDataConverter.payloadCodecs },
  maxConcurrentActivityTaskExecutions: 100,
  stickyQueueScheduleToStartTimeout: '2s',
});
const minimalRun = minimalWorker.run();

try {
  // ---- subjects: people reporting to alice, so alice may request for each of them; the wave's
  // subjects hold one lease in each of the three groups.
  const waveSubjects = Math.ceil(WAVE / groups.length);
  const subjects = await s.rt.db
    .insert(identities)
    .values(
      Array.from({ length: LEASES + WARMUP + waveSubjects }, (_, i) => ({
        kind: 'employee' as const,
        username: `bench${String(i).padStart(4, '0')}`,
        displayName: `Bench ${i}`,
        managerId: s.catalog.identities.alice,
      })),
    )
    .returning({ id: identities.id });

  // ---- 1. throughput: accessloop through the API vs the minimal workflow, in alternating blocks
  const approvedIds: string[] = [];
  async function accessloopLifecycle(subjectId: string, i: number, durationSeconds: number): Promise<number> {
    const t0 = performance.now();
    const entitlementId = ent[groups[i % groups.length]!]!;
    const r = await s.call('POST', '/v1/access-requests', tok.alice, { subjectId, entitlementId, durationSeconds, justification: 'benchmark lease' });
    if (r.status !== 202) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
    const id = r.body.id as string;
    // Sent at once: the API holds a decision that arrives before its stage is open (up to 5 s).
    const d = await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' });
    if (d.status !== 200) throw new Error(`decision: ${d.status} ${JSON.stringify(d.body)}`);
    // A long poll: the API answers when the request is active (or final, or after 30 s).
    const done = await s.call('GET', `/v1/access-requests/${id}?waitFor=active&waitSeconds=30`, tok.alice);
    if (done.body?.status !== 'active') throw new Error(`request ${id}: ${done.status} ${done.body?.status ?? JSON.stringify(done.body)} after the long poll`);
    approvedIds.push(id);
    return performance.now() - t0;
  }
  async function minimalLifecycle(i: number): Promise<number> {
    const t0 = performance.now();
    const h = await s.rt.temporal.workflow.start('minimalLeaseWorkflow', { taskQueue: minimalQueue, workflowId: `bench-minimal/${i}-${randomBytes(3).toString('hex')}`, args: [String(i)] });
    await h.executeUpdate(minimalApprove, { args: ['approver'] });
    // Its long poll: the workflow ends once active, so its result is the wait.
    await h.result();
    return performance.now() - t0;
  }

  say(`warm-up (${WARMUP} each)`);
  await pool([...Array(WARMUP).keys()], CONCURRENCY, async (i) => void (await minimalLifecycle(-1 - i)));
  await pool(subjects.slice(LEASES, LEASES + WARMUP), CONCURRENCY, async (sub, i) => void (await accessloopLifecycle(sub.id, i, 60)));

  // Pairs of blocks in the order minimal, accessloop, accessloop, minimal, … (ABBA): a drift in
  // the machine's speed during the run falls on both sides alike, and each pair gives a ratio.
  const pairs = Math.max(1, Math.floor(BLOCKS / 2));
  const perBlock = Math.floor(LEASES / pairs);
  const side = () => ({ lat: [] as number[], seconds: 0, cpu: undefined as CpuSpent | undefined });
  const alSide = side();
  const minSide = side();
  const pairRatios: number[] = [];
  let nextSubject = 0;
  let nextMinimal = 0;
  async function block(which: 'accessloop' | 'minimal'): Promise<number> {
    const cpu = await cpuSample();
    const t0 = performance.now();
    if (which === 'accessloop') {
      const mine = subjects.slice(nextSubject, (nextSubject += perBlock));
      // Each lease is granted for an hour: the approval latency below reads them.
      await pool(mine, CONCURRENCY, async (sub, i) => void alSide.lat.push(await accessloopLifecycle(sub.id, i, 3600)));
    } else {
      const mine = Array.from({ length: perBlock }, () => nextMinimal++);
      await pool(mine, CONCURRENCY, async (i) => void minSide.lat.push(await minimalLifecycle(i)));
    }
    const seconds = (performance.now() - t0) / 1000;
    const target = which === 'accessloop' ? alSide : minSide;
    target.seconds += seconds;
    target.cpu = addCpu(target.cpu, await cpu.stop());
    return seconds;
  }
  for (let k = 0; k < pairs; k++) {
    say(`throughput pair ${k + 1}/${pairs}: ${perBlock} lifecycles each, concurrency ${CONCURRENCY}`);
    const order = k % 2 === 0 ? (['minimal', 'accessloop'] as const) : (['accessloop', 'minimal'] as const);
    const secs: Record<string, number> = {};
    for (const which of order) secs[which] = await block(which);
    pairRatios.push(secs.minimal! / secs.accessloop!);
  }
  const accessloopLifecycles = pairs * perBlock;
  const accessloopSeconds = alSide.seconds;
  const minimalSeconds = minSide.seconds;
  const alLat = alSide.lat;
  const minLat = minSide.lat;

  // ---- 2. the expiry wave: WAVE leases brought in through the import (the migration path),
  // granted for an hour, then each shortened onto one second T through its own `shorten` update.
  say(`expiry wave: importing ${WAVE} leases`);
  const leaseIds: string[] = [];
  const importStart = performance.now();
  for (let from = 0; from < WAVE; from += 1000) {
    const items = Array.from({ length: Math.min(1000, WAVE - from) }, (_, j) => {
      const i = from + j;
      return { subjectId: subjects[LEASES + WARMUP + Math.floor(i / groups.length)]!.id, entitlementId: ent[groups[i % groups.length]!]!, expiresAt: new Date(Date.now() + 3_600_000).toISOString(), justification: 'benchmark expiry wave lease' };
    });
    const r = await s.call('POST', '/v1/access-requests/import', tok.operator, { items });
    if (r.status !== 200 || r.body.imported !== items.length) throw new Error(`import: ${r.status} ${JSON.stringify(r.body).slice(0, 500)}`);
    for (const res of r.body.results as Array<{ id: string }>) leaseIds.push(res.id);
  }
  const importAnsweredSeconds = (performance.now() - importStart) / 1000;
  await waitFor(async () => (await s.rt.db.$count(grants, and(inArray(grants.requestId, leaseIds), eq(grants.status, 'active')))) === WAVE, `${WAVE} imported leases active`, 600_000, 500);
  const importSeconds = (performance.now() - importStart) / 1000;
  const waveAt = Math.ceil((Date.now() + 10_000 + WAVE * 40) / 1000) * 1000;
  say(`moving ${leaseIds.length} leases to expire at ${new Date(waveAt).toISOString()}`);
  await pool(leaseIds, 2 * CONCURRENCY, async (id) => {
    await s.rt.temporal.workflow
      .getHandle(accessRequestWorkflowId(id))
      .executeUpdate(shortenUpdate, { args: [{ actorId: s.catalog.identities.alice, expiresAt: new Date(waveAt).toISOString(), justification: 'benchmark expiry wave' }] });
  });
  if (Date.now() > waveAt - 2_000) throw new Error('moving the leases overran the wave; lower BENCH_WAVE');
  const rows = await s.rt.db.select({ expiresAt: grants.expiresAt }).from(grants).where(inArray(grants.requestId, leaseIds));
  const expiries = rows.map((r) => r.expiresAt!.getTime());
  const spreadMs = Math.max(...expiries) - Math.min(...expiries);
  say(`expiry spread ${spreadMs} ms; waiting for the wave`);
  await sleep(Math.max(0, waveAt - Date.now()));
  const waveCpuSample = await cpuSample();

  const verified = await waitFor(
    async () => {
      const done = await s.rt.db
        .select({ expiresAt: grants.expiresAt, verifiedAt: grants.removalVerifiedAt })
        .from(grants)
        .where(and(inArray(grants.requestId, leaseIds), eq(grants.status, 'revoked'), isNotNull(grants.removalVerifiedAt)));
      return done.length === leaseIds.length ? done : undefined;
    },
    'every lease in the wave to be revoked and verified',
    Math.max(0, waveAt - Date.now()) + 300_000,
    250,
  );
  const waveCpu = await waveCpuSample.stop();
  const lag = verified.map((r) => r.verifiedAt!.getTime() - r.expiresAt!.getTime());
  const ratioSpread = summary(pairRatios);
  if (process.env.BENCH_ONLY === 'lifecycle') {
    // The throughput and the wave alone, while developing: printed, never written.
    const a = summary(alLat), m = summary(minLat), w = summary(lag);
    say(`accessloop ${(accessloopLifecycles / accessloopSeconds).toFixed(1)}/s p50 ${a.p50.toFixed(0)} p99 ${a.p99.toFixed(0)}; minimal ${(accessloopLifecycles / minimalSeconds).toFixed(1)}/s p50 ${m.p50.toFixed(0)}; ratio ${(minimalSeconds / accessloopSeconds).toFixed(2)} (pairs ${pairRatios.map((x) => x.toFixed(2)).join(' ')})`);
    say(`import ${WAVE}: answered ${importAnsweredSeconds.toFixed(1)} s, all active ${importSeconds.toFixed(1)} s; wave ${WAVE}: p50 ${w.p50} p99 ${w.p99} max ${w.max}`);
    console.log(`accessloop lifecycles\n${cpuTable(alSide.cpu!, { n: accessloopLifecycles, unit: 'lifecycle' })}\n\nminimal\n${cpuTable(minSide.cpu!, { n: accessloopLifecycles, unit: 'lifecycle' })}\n\nwave\n${cpuTable(waveCpu, { n: WAVE, unit: 'removal' })}`);
    await minimalWorker.shutdown();
    await s.stop();
    await server.stop();
    process.exit(0);
  }
  const waveEnd = Math.max(...verified.map((r) => r.verifiedAt!.getTime()));
  const waveStart = Math.min(...expiries);
  // Independent check through ldapsearch: no wave member is left in any group.
  await waitFor(
    async () => {
      for (const g of groups) {
        const left = new Set(await s.ldapMembers(g));
        for (let i = 0; i < waveSubjects; i++) if (left.has(s.userDn(`bench${String(LEASES + WARMUP + i).padStart(4, '0')}`))) return false;
      }
      return true;
    },
    'no wave members left in LDAP',
    60_000,
    500,
  );

  // ---- 3. approval latency, system part: decision received → grant verified (from the DB)
  const decided = await s.rt.db
    .select({ decidedAt: approvals.decidedAt, verifiedAt: grants.grantVerifiedAt })
    .from(approvals)
    .innerJoin(grants, eq(grants.requestId, approvals.requestId))
    .where(and(inArray(approvals.requestId, approvedIds), eq(approvals.status, 'approved')));
  const systemPart = summary(decided.map((d) => d.verifiedAt!.getTime() - d.decidedAt!.getTime()));

  // ---- 4. policy evaluation cost: 1,000 entitlements, 100 SoD rules
  say('policy evaluation: 1,000 entitlements, 100 SoD rules');
  const tiers = ['low', 'medium', 'high', 'privileged'] as const;
  const catalog = await s.rt.db
    .insert(entitlements)
    .values(
      Array.from({ length: 1000 }, (_, i) => ({
        systemId: s.catalog.systemId!,
        name: `Bench entitlement ${i}`,
        resource: `cn=bench-${i},ou=groups,dc=accessloop,dc=test`,
        ownerId: s.catalog.identities.bob,
        riskTier: tiers[i % 4]!,
        defaultDurationSeconds: 600,
        maxDurationSeconds: 3600,
        attributes: { region: i % 3 === 0 ? 'NYC' : 'LON' },
      })),
    )
    .returning({ id: entitlements.id });
  const entIds = catalog.map((c) => c.id);
  let seed = 42;
  const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), seed % n);
  const policyDoc = {
    apiVersion: 'accessloop/v1',
    policies: [
      {
        name: 'default',
        stages: [{ name: 'owner', approvers: ['entitlement_owner'] }],
        contractorMaxDurationSeconds: 1800,
        conditions: [
          { name: 'no-contractor-privileged', when: 'subject.employment_type == "contractor" && entitlement.risk_tier == "privileged"', effect: 'deny', reason: 'contractors cannot hold privileged access' },
          { name: 'cross-region', when: 'has(entitlement.attributes.region) && subject.location != entitlement.attributes.region', effect: 'add_stage', stage: { name: 'security', approvers: ['manager'] } },
          { name: 'low-self', when: 'entitlement.risk_tier == "low" && request.self_request', effect: 'auto_approve', reason: 'low risk' },
        ],
      },
      { name: 'privileged', appliesTo: { riskTiers: ['privileged'] }, stages: [{ name: 'manager', approvers: ['manager'] }, { name: 'owner', approvers: ['entitlement_owner'] }] },
      ...Array.from({ length: 100 }, (_, i) => ({ name: `specific-${i}`, appliesTo: { entitlementIds: [entIds[i * 10]!] }, stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], maxDurationSeconds: 1800 })),
    ],
    sod: Array.from({ length: 100 }, (_, i) => ({
      name: `sod-${i}`,
      entitlementIds: [entIds[rnd(1000)]!, entIds[rnd(1000)]!, entIds[rnd(1000)]!].filter((v, j, a) => a.indexOf(v) === j).concat(entIds[(i * 7) % 1000]!).slice(0, 3),
      effect: i % 2 ? 'deny' : 'exception',
      exceptionApprover: 'manager',
    })).filter((r) => new Set(r.entitlementIds).size >= 2),
  };
  const published = await s.rt.policies.publish(JSON.stringify(policyDoc), 'bench', 'bench');
  const compiled = await s.rt.policies.active();
  const held = new Set(Array.from({ length: 10 }, () => entIds[rnd(1000)]!));
  const ctxFor = (id: string, i: number) => ({
    subject: { id: 'bench-subject', kind: i % 5 ? 'employee' : 'contractor', employment_type: i % 5 ? 'full_time' : 'contractor', location: 'LON', attributes: {} },
    requester: { id: i % 3 === 1 ? 'bench-subject' : 'bench-manager' },
    entitlement: { id, risk_tier: tiers[i % 4]!, system_id: s.catalog.systemId!, max_duration_seconds: 3600, attributes: { region: i % 3 === 0 ? 'NYC' : 'LON' } },
    system: { id: s.catalog.systemId! },
    request: { duration_seconds: 600, justification: 'bench', ticket_ref: null, self_request: i % 3 === 1 },
  });
  for (let i = 0; i < 2000; i++) compiled.evaluate(ctxFor(entIds[i % 1000]!, i), { heldOrPending: held }); // warm-up
  const EVALS = 20_000;
  const evalNs: number[] = [];
  const effects: Record<string, number> = {};
  for (let i = 0; i < EVALS; i++) {
    const c = ctxFor(entIds[rnd(1000)]!, i);
    const t0 = process.hrtime.bigint();
    const d = compiled.evaluate(c, { heldOrPending: held });
    evalNs.push(Number(process.hrtime.bigint() - t0));
    effects[d.effect] = (effects[d.effect] ?? 0) + 1;
  }
  const evalS = summary(evalNs.map((n) => n / 1000));
  const evalMean = evalNs.reduce((a, b) => a + b, 0) / evalNs.length / 1000;
  const DECIDES = 300;
  const decideMs: number[] = [];
  for (let i = 0; i < DECIDES; i++) {
    const t0 = performance.now();
    await s.rt.policies.decide({ requesterId: s.catalog.identities.alice, subjectId: subjects[i % subjects.length]!.id, entitlementId: entIds[rnd(1000)]!, durationSeconds: 600, justification: 'bench' });
    decideMs.push(performance.now() - t0);
  }
  const decideS = summary(decideMs);

  // ---- 5. leavers (issue 4)
  const leaverSection = await benchLeavers(s, say);
  // ---- 6. reconciliation (issue 5)
  const reconcileSection = await benchReconciliation(s, say);
  const breakGlass = await benchBreakGlass(s, say);
  // ---- decision callbacks at a fixed rate (issue 14)
  const decisions = await benchDecisions(s, say, accessloopLifecycles / accessloopSeconds);
  // ---- 7. payload encryption overhead (issue 6)
  const codec = await benchCodec(server.address, say);
  // ---- 8. the sentinel: wedged lease expiry → alert → verified removal (issue 11)
  const sentinel = await benchSentinel(server.address, say);
  // ---- 9. the service desk: ticket → access → resolved, and a desk outage (issue 12)
  const desk = await benchServiceDesk(server.address, say);
  const reviews = await benchReviews(server.address, say);
  // ---- throughput scaling 1 → 3 workers on the multi-process cluster (issue 14)
  const scaling = await benchClusterScaling(say);
  // ---- the failover drill at full size on the cluster (issue 14)
  const fullDrill = await benchClusterDrill(say);
  // ---- 10. randomized runs (issue 11): last, so its own servers do not load the measurements above
  const model = await benchModel(say);

  const unverifiedCount = await s.rt.db.$count(auditEvents, eq(auditEvents.action, 'grant.revocation_unverified'));
  const thr = { accessloop: accessloopLifecycles / accessloopSeconds, minimal: accessloopLifecycles / minimalSeconds };
  const lagS = summary(lag);
  const alS = summary(alLat);
  const minS = summary(minLat);
  const pgRows = (await s.rt.db.execute(sql`select current_setting('server_version') as version`)) as unknown as Array<{ version: string }>;
  const pgVersion = pgRows[0]?.version ?? 'unknown';

  const fmt = (ms: number) => `${Math.round(ms)} ms`;
  const report = `# Benchmarks

Measured by \`npm run bench\` (test/bench/run.ts), which rewrites this file. Every figure below
comes from one run, on one private Temporal dev server, Postgres database and slapd, all on
127.0.0.1. Ratios compare figures from that same run.

- run: ${new Date().toISOString()}
- machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? 'cpu'}, ${Math.round(os.totalmem() / 2 ** 30)} GiB, Node ${process.version}
- Temporal: \`${serverVersion.replace(/\n/g, ' ')}\` (dev server, in-memory SQLite)
- Postgres ${pgVersion}; OpenLDAP slapd (mdb); one worker in the bench process (100 activity slots)
- production timing: verification deadline 300 s; revocations flagged unverified in this run: ${unverifiedCount}

## End-to-end request throughput (create → approve → grant verified)

Each side runs ${accessloopLifecycles} lifecycles, ${CONCURRENCY} at a time, after ${WARMUP} warm-up
lifecycles each, in ${pairs} pairs of blocks of ${perBlock} that alternate minimal, accessloop,
accessloop, minimal, … (ABBA), so a drift in the machine's speed falls on both sides alike. Each
pair gives a ratio; the spread over the pairs is the ratio's reproducibility in this run.
Each accessloop lifecycle goes through the REST API, three calls:

1. \`POST /v1/access-requests\` (alice, for one of her reports).
2. \`POST …/decision\` by the entitlement owner, sent at once: the API holds a decision that
   arrives before policy has opened the stage (up to 5 s) instead of answering 409.
3. \`GET …?waitFor=active\`, a long poll woken by Postgres \`LISTEN/NOTIFY\`: it answers when the
   request is \`active\`, which means the membership was written to slapd and read back.

The **minimal workflow** has the same shape (start → approval update → grant activity → verify
activity) with no-op activities, no database and no policy. It is driven by the same client
pattern on the same server: start, the update, then its result (it ends once active) as its wait.
Both sides seal their payloads with the default AES-256-GCM codec; the payload encryption
section below measures what that costs.

| | lifecycles/s | latency p50 | p99 | max |
|---|---:|---:|---:|---:|
| accessloop (API + Postgres + slapd) | ${thr.accessloop.toFixed(1)} | ${fmt(alS.p50)} | ${fmt(alS.p99)} | ${fmt(alS.max)} |
| minimal workflow, same shape | ${thr.minimal.toFixed(1)} | ${fmt(minS.p50)} | ${fmt(minS.p99)} | ${fmt(minS.max)} |
| **ratio accessloop ÷ minimal** | **${(thr.accessloop / thr.minimal).toFixed(2)}** | ${(alS.p50 / minS.p50).toFixed(2)}× | | |

Ratio per pair: ${pairRatios.map((r) => r.toFixed(2)).join(', ')} (min ${ratioSpread.min.toFixed(2)}, max ${ratioSpread.max.toFixed(2)}).
Issue 14's target is ≥ 0.7.

**Where the CPU goes.** CPU time per process, read from \`/proc\` over each side's blocks. The
accessloop side keeps the two cores nearly busy, so its throughput is the machine's CPU divided by
the CPU one lifecycle costs; the minimal side leaves CPU idle and is bound by its latency at
${CONCURRENCY} in flight.

accessloop:

${cpuTable(alSide.cpu!, { n: accessloopLifecycles, unit: 'lifecycle' })}

minimal workflow:

${cpuTable(minSide.cpu!, { n: accessloopLifecycles, unit: 'lifecycle' })}

What the profile showed, and what was done (issue 14):

- Every database write used to be a scheduled activity: an activity task for the server to queue
  and dispatch, and a second workflow task to hear the result. They now run as local activities in
  the workflow task that asks for them (docs/architecture.md, "Activity option profiles"). The
  Temporal server's CPU per lifecycle fell from 68 ms to the figure above.
- The client used to poll: a decision every 25 ms until the stage opened (about six tries, each a
  token lookup and two queries) and a status read every 25 ms (nine queries each): about 14 calls
  per lifecycle, now 3. In the profiling run (the lifecycles and a 200-lease wave), the queries
  the product sent fell from 34,747 to 25,552.
- What is left, by the Node CPU profile of the bench process: the workflow sandbox's activations
  (\`vm.runInContext\`), postgres.js socket writes (one per query) and drizzle's query building,
  then express and the codec. Fewer queries since (counted with a throw-away driver hook): an
  audit append is two statements instead of five (docs/audit.md; five events per lifecycle,
  so about 106 → 91), and a target step reads the subject, the entitlement and its system in
  one query, policy the people in one and the entitlement with its system in another (91 → 82).
- The next levers: policy is still evaluated twice (the API's refusal up front, the workflow's
  authoritative routing; reusing the first needs the SoD facts re-read, or concurrent requests
  could both pass), and a lifecycle has one workflow task and one activity more than the
  minimal workflow: the approver notification, which could be an outbox row written with the
  stage. Each \`patched()\` also costs a new run a \`TemporalChangeVersion\` upsert, a visibility
  write on the server, so folding two upserts behind a new patch gains nothing.

## Expiry wave: expiry → verified removal

${WAVE} leases are brought in through the import (\`POST /v1/access-requests/import\`, the
migration path: the call answered in ${importAnsweredSeconds.toFixed(1)} s and every lease was granted and read
back in ${importSeconds.toFixed(1)} s), spread across three LDAP groups, granted for an hour. Each is then
shortened through its workflow's \`shorten\` update (the real update a review's earlier end
date uses) so that they all expire at ${new Date(waveAt).toISOString()}. The expiries actually recorded span **${spreadMs} ms**.
Latency is \`removal_verified_at − expires_at\` per grant: the durable timer fires, the
membership is removed from slapd and read back, and the grant is marked revoked.

| leases | p50 | p99 | max | first expiry → last verified removal |
|---:|---:|---:|---:|---:|
| ${lagS.n} | ${fmt(lagS.p50)} | ${fmt(lagS.p99)} | ${fmt(lagS.max)} | ${fmt(waveEnd - waveStart)} |

After the wave, \`ldapsearch\` confirms that no wave member is left in any of the three groups.
Issue 14's target is p99 ≤ 10 s. CPU from the expiry to the last verified removal:

${cpuTable(waveCpu, { n: WAVE, unit: 'removal' })}

Each removal is one timer, two workflow tasks (the revocation record and the completion run
inside them as local activities) and one scheduled activity (remove from slapd and read back).
The wave is CPU-bound: the Temporal dev server's share alone, ${(waveCpu.cpuMs['Temporal server']! / WAVE).toFixed(1)} ms per removal × ${WAVE} removals
÷ ${waveCpu.cores} cores = ${(waveCpu.cpuMs['Temporal server']! / waveCpu.cores / 1000).toFixed(1)} s against the 10 s budget, before the worker runs any workflow code. On this
machine the target needs either fewer server round trips per removal (removals of one group
batched across leases, which the per-lease workflow does not do today) or more cores for the
server; a cluster on the same 2 cores only adds processes to the same CPU.

## Approval latency, system part (decision received → grant verified)

For the ${systemPart.n} approved leases above, this is \`grant.grant_verified_at − approval.decided_at\`:
the update is accepted, the decision recorded, the membership written to slapd and read back.
The human wait is excluded.

| approvals | p50 | p99 | max |
|---:|---:|---:|---:|
| ${systemPart.n} | ${fmt(systemPart.p50)} | ${fmt(systemPart.p99)} | ${fmt(systemPart.max)} |

## Policy evaluation cost

The catalog has 1,000 entitlements. The policy document (${published.version}) holds:

- ${policyDoc.policies.length} policies: a default with three CEL conditions, a privileged tier
  policy, and 100 entitlement-specific policies;
- ${policyDoc.sod.length} SoD rules of 2–3 entitlements each.

The subject holds 10 entitlements. Entitlements are drawn at random, and subjects and requesters
mix employees, contractors, self-service and on-behalf requests.

| what | n | p50 | p99 | mean |
|---|---:|---:|---:|---:|
| \`CompiledPolicy.evaluate\` (pure: select policy, CEL, SoD) | ${EVALS} | ${evalS.p50.toFixed(1)} µs | ${evalS.p99.toFixed(1)} µs | ${evalMean.toFixed(1)} µs |
| \`decide()\` at request time (plus Postgres: identities, held grants, approver resolution) | ${DECIDES} | ${decideS.p50.toFixed(2)} ms | ${decideS.p99.toFixed(2)} ms | |

Outcomes of the pure evaluations: ${Object.entries(effects).map(([k, v]) => `${k} ${v}`).join(', ')}.

${decisions.section}${scaling.section}${fullDrill.section}${leaverSection}${reconcileSection}${codec.section}${sentinel.section}${desk.section}${breakGlass.section}${reviews.section}${model.section}
## Reading the numbers

- The throughput ratio prices what a real lease adds over a bare workflow of the same shape.
  The additions are:
  - policy evaluation twice: the API's up-front check, then the workflow's authoritative one;
  - the approval stage, its task rows and a notification activity;
  - an audit event per transition, in the request's own hash-chained stream (docs/audit.md);
  - two LDAP round trips;
  - the API's own database reads.
  - the safety additions of issue 11: a per-membership advisory-lock transaction around each
    grant and removal, the attestation lookup when a revoke is recorded, input parsing at the
    workflow's message boundary, and the sentinel's Schedule running alongside. The ratio read
    0.31 on 2026-11-23 without them (on a slower day for both sides); their share is not yet
    profiled, which is the first step toward issue 14's target.
- Wave latency is bounded by how fast one worker drains ${LEASES} timers at once: ${LEASES}
  workflow tasks, then three activities per lease (the revocation record, the remove-and-verify
  against slapd, and the completion). The dev server and the worker share the same
  ${os.cpus().length} cores.
`;
  const out = fileURLToPath(new URL('../../BENCHMARKS.md', import.meta.url));
  await writeFile(out, report);
  say(`throughput ${thr.accessloop.toFixed(1)}/s vs minimal ${thr.minimal.toFixed(1)}/s (ratio ${(thr.accessloop / thr.minimal).toFixed(2)})`);
  say(`wave: ${lagS.n} leases, spread ${spreadMs} ms, expiry→verified p50 ${fmt(lagS.p50)} p99 ${fmt(lagS.p99)} max ${fmt(lagS.max)}`);
  say(`approval system part p50 ${fmt(systemPart.p50)} p99 ${fmt(systemPart.p99)}; policy evaluate p50 ${evalS.p50.toFixed(1)} µs, decide p50 ${decideS.p50.toFixed(2)} ms`);
  say(decisions.summary);
  say(codec.summary);
  say(sentinel.summary);
  say(desk.summary);
  say(breakGlass.summary);
  say(reviews.summary);
  say(scaling.summary);
  say(fullDrill.summary);
  say(model.summary);
  say(`wrote ${out}`);
} finally {
  minimalWorker.shutdown();
  await minimalRun.catch(() => {});
  await minimalConn.close();
  await s.stop();
  await server.stop();
}
