/**
 * Access reviews at size (issue 13): a campaign of BENCH_REVIEW_ITEMS (default 10,000) items
 * opened, decided in bulk and closed, with the worker in its own process so its memory is its
 * own. Most items are grants seeded as rows (what a migration of existing access looks like: an
 * active request and grant per holder, no lease workflow, so they are only ever kept); a few
 * are real leases, granted through the API and revoked by the review, so the close waits on real
 * removals read back from slapd.
 */
import { readFile } from 'node:fs/promises';
import { randomUUID } from 'node:crypto';
import { and, eq, inArray, isNotNull } from 'drizzle-orm';
import { accessRequests, grants, identities } from '../../db/schema.js';
import { startStackAt, waitFor, type Stack } from '../helpers/stack-core.js';
import { workerProcess } from '../helpers/worker-process.js';
import { pool, summary } from './stats.js';

const ITEMS = Number(process.env.BENCH_REVIEW_ITEMS ?? 10_000);
const REVOKES = Number(process.env.BENCH_REVIEW_REVOKES ?? 20);
const REVIEWERS = 10;
const BULK = 500;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Resident set size of a process, in MiB, from /proc (Linux). */
async function rssMiB(pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? NaN);
  return kb / 1024;
}

async function realLease(s: Stack, tok: Record<string, string>, subjectId: string, entitlementId: string): Promise<string> {
  const r = await s.call('POST', '/v1/access-requests', tok.alice, { subjectId, entitlementId, durationSeconds: 28_800, justification: 'review benchmark lease' });
  if (r.status !== 202) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
  const id = r.body.id as string;
  const openBy = Date.now() + 60_000;
  for (;;) {
    const d = await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' });
    if (d.status === 200) break;
    if (d.body?.error?.code !== 'stage_not_open' || Date.now() > openBy) throw new Error(`decision: ${d.status} ${JSON.stringify(d.body)}`);
    await sleep(50);
  }
  await s.waitForStatus(id, ['active'], 60_000);
  return id;
}

export async function benchReviews(temporalAddress: string, say: (m: string) => void): Promise<{ section: string; summary: string }> {
  say(`reviews: a campaign of ${ITEMS} items (${REVOKES} real leases revoked), ${REVIEWERS} reviewers, bulk keep ${BULK} at a time`);
  // The sentinel would report every seeded request as a lease without a workflow: it is not what is measured.
  const s = await startStackAt({ temporalAddress, worker: false, env: { ACCESSLOOP_SENTINEL_INTERVAL_SECONDS: String(24 * 3600) } });
  const worker = workerProcess(() => s.workerEnv);
  try {
    await worker.start();
    const tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as Record<string, string>;
    const ent = s.catalog.entitlements;
    const db = s.rt.db;

    // ---- reviewers: managers with tokens; holders report to them
    const managers = await db
      .insert(identities)
      .values(Array.from({ length: REVIEWERS }, (_, i) => ({ kind: 'employee' as const, username: `rvmgr${i}`, displayName: `Review manager ${i}` })))
      .returning({ id: identities.id });
    const reviewerTok = new Map<string, string>();
    for (const m of managers) {
      const t = await s.call('POST', '/v1/tokens', tok.operator, { principalId: m.id, roles: ['approver'] });
      if (t.status !== 201) throw new Error(`token: ${t.status} ${JSON.stringify(t.body)}`);
      reviewerTok.set(m.id, t.body.token);
    }
    reviewerTok.set(s.catalog.identities.alice, tok.alice!);

    // ---- the seeded part: ITEMS - REVOKES holders, one active request + grant each
    const seeded = ITEMS - REVOKES;
    const groups = [ent.engineering!, ent['finance-readers']!];
    for (let i = 0; i < seeded; i += 1000) {
      const n = Math.min(1000, seeded - i);
      const people = await db
        .insert(identities)
        .values(Array.from({ length: n }, (_, j) => ({ kind: 'employee' as const, username: `rv${i + j}`, displayName: `Reviewed ${i + j}`, managerId: managers[(i + j) % REVIEWERS]!.id })))
        .returning({ id: identities.id });
      const reqs = await db
        .insert(accessRequests)
        .values(
          people.map((p, j) => ({
            requesterId: s.catalog.identities.alice,
            subjectId: p.id,
            entitlementId: groups[(i + j) % groups.length]!,
            justification: 'migrated access',
            requestedDurationSeconds: 365 * 86_400,
            status: 'active' as const,
            workflowId: `bench-migrated/${randomUUID()}`,
          })),
        )
        .returning({ id: accessRequests.id, subjectId: accessRequests.subjectId, entitlementId: accessRequests.entitlementId });
      await db.insert(grants).values(
        reqs.map((r) => ({ identityId: r.subjectId, entitlementId: r.entitlementId, requestId: r.id, source: 'request' as const, status: 'active' as const, grantedAt: new Date(Date.now() - 40 * 86_400_000), grantVerifiedAt: new Date(), expiresAt: new Date(Date.now() + 300 * 86_400_000) })),
      );
    }

    // ---- the real part: REVOKES leases through the API, reviewed by alice (their manager)
    say(`reviews: granting ${REVOKES} real leases`);
    const subjects = await db
      .insert(identities)
      .values(Array.from({ length: REVOKES }, (_, i) => ({ kind: 'employee' as const, username: `rvreal${i}`, displayName: `Reviewed real ${i}`, managerId: s.catalog.identities.alice })))
      .returning({ id: identities.id });
    const leaseIds: string[] = [];
    await pool(subjects, 5, async (p) => void leaseIds.push(await realLease(s, tok, p.id, ent.engineering!)));
    const realGrantIds = (await db.select({ id: grants.id }).from(grants).where(inArray(grants.requestId, leaseIds))).map((g) => g.id);

    // ---- memory: the worker process, sampled every 250 ms from before the campaign to its close
    const pid = worker.pid;
    if (!pid) throw new Error('reviews bench: the worker has no pid');
    const rssBefore = await rssMiB(pid);
    let rssPeak = rssBefore;
    let sampling = true;
    const sampler = (async () => {
      while (sampling) {
        rssPeak = Math.max(rssPeak, await rssMiB(pid).catch(() => 0));
        await sleep(250);
      }
    })();

    // ---- open
    let t = performance.now();
    const created = await s.call('POST', '/v1/review-campaigns', tok.operator, {
      name: 'bench recertification',
      scope: { entitlementIds: groups },
      dueAt: new Date(Date.now() + 7 * 86_400_000).toISOString(),
      reviewers: { rule: 'manager', fallbackReviewerId: s.catalog.identities.carol },
    });
    if (created.status !== 201) throw new Error(`open: ${created.status} ${JSON.stringify(created.body).slice(0, 500)}`);
    const openSeconds = (performance.now() - t) / 1000;
    const campaignId = created.body.id as string;
    const total = created.body.progress?.items as number;
    if (total !== ITEMS) throw new Error(`open: ${total} items, expected ${ITEMS}`);

    // ---- decide: alice revokes her REVOKES real leases; every reviewer bulk-keeps the rest
    t = performance.now();
    const revokeItems = (await s.call('GET', `/v1/reviews/pending?campaignId=${campaignId}&limit=1000`, tok.alice)).body.items as Array<{ itemId: string; grantId: string }>;
    if (revokeItems.length !== REVOKES || revokeItems.some((i) => !realGrantIds.includes(i.grantId))) throw new Error(`alice sees ${revokeItems.length} items, expected her ${REVOKES} reports`);
    await pool(revokeItems, 5, async (item) => {
      const d = await s.call('POST', `/v1/review-items/${item.itemId}/decision`, tok.alice, { decision: 'revoke', comment: 'no longer needed (bench)' });
      if (d.status !== 200) throw new Error(`revoke: ${d.status} ${JSON.stringify(d.body)}`);
    });
    const bulkLatency: number[] = [];
    await pool(managers, REVIEWERS, async (m) => {
      const token = reviewerTok.get(m.id)!;
      for (;;) {
        const mine = (await s.call('GET', `/v1/reviews/pending?campaignId=${campaignId}&limit=${BULK}`, token)).body.items as Array<{ itemId: string }>;
        if (!mine.length) break;
        const b0 = performance.now();
        const d = await s.call('POST', '/v1/review-items/decisions', token, { itemIds: mine.map((i) => i.itemId), decision: 'keep' });
        bulkLatency.push(performance.now() - b0);
        if (d.status !== 200 || d.body.decided !== mine.length) throw new Error(`bulk keep: ${d.status} ${JSON.stringify(d.body).slice(0, 500)}`);
      }
    });
    const decideSeconds = (performance.now() - t) / 1000;

    // ---- close: every revoke read back from slapd, then the campaign closes
    t = performance.now();
    const closed = await waitFor(
      async () => {
        const c = await s.call('GET', `/v1/review-campaigns/${campaignId}`, tok.operator);
        return c.body.status === 'closed' ? c.body : undefined;
      },
      'the campaign to close',
      10 * 60_000,
      250,
    );
    const closeSeconds = (performance.now() - t) / 1000;
    sampling = false;
    await sampler;
    const rssAfter = await rssMiB(pid);

    const verified = await db.$count(grants, and(inArray(grants.id, realGrantIds), isNotNull(grants.removalVerifiedAt), eq(grants.revokeReason, 'review')));
    if (verified !== REVOKES) throw new Error(`reviews bench: ${verified}/${REVOKES} review revocations verified`);
    const members = await s.ldapMembers('engineering');
    if (subjects.some((_, i) => members.includes(s.userDn(`rvreal${i}`)))) throw new Error('reviews bench: a revoked member is still in slapd');
    const kept = closed.progress?.kept as number;
    if (kept !== ITEMS - REVOKES) throw new Error(`reviews bench: ${kept} kept, expected ${ITEMS - REVOKES}`);
    const bulk = summary(bulkLatency);
    const f = (v: number, d = 1) => v.toFixed(d);
    return {
      summary: `reviews: ${ITEMS} items open ${f(openSeconds)} s, decided ${f(decideSeconds)} s (bulk ${BULK} p50 ${f(bulk.p50, 0)} ms), closed ${f(closeSeconds)} s after; worker RSS ${f(rssBefore, 0)} → peak ${f(rssPeak, 0)} MiB`,
      section: `
## Access review at size: a ${ITEMS.toLocaleString('en')}-item campaign

One campaign over two LDAP groups, reviewers by rule \`manager\` (${REVIEWERS} managers with about
${Math.round(ITEMS / REVIEWERS)} items each, and alice with ${REVOKES}). ${(ITEMS - REVOKES).toLocaleString('en')} grants are seeded as rows, as a
migration of existing access would bring them (an active request and grant per holder, no lease
workflow, so they can only be kept); ${REVOKES} are real leases granted through the API and slapd.
The worker runs in its own process (\`temporal/worker-main.ts\`), so its memory is its own.

1. **open**: \`POST /v1/review-campaigns\` resolves a reviewer for every grant and writes the
   campaign, its ${ITEMS.toLocaleString('en')} item rows and the opening audit event in one transaction, then starts the
   campaign workflow (items are rows, never workflow history).
2. **decide**: alice revokes her ${REVOKES} items one by one (comment required); each manager reads
   \`GET /v1/reviews/pending\` and keeps ${BULK} items per \`POST /v1/review-items/decisions\` until
   nothing is left. Every decision is its own audit event in the hash chain.
3. **close**: the campaign workflow signals each revoked lease (reason \`review\`, at most 20 in
   flight); the campaign closes only once every one of those removals is read back from slapd.

| items | open | decide (all) | bulk keep of ${BULK}, p50 | p99 | last decision → closed | worker RSS before | peak | after |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${ITEMS} | ${f(openSeconds)} s | ${f(decideSeconds)} s | ${f(bulk.p50, 0)} ms | ${f(bulk.p99, 0)} ms | ${f(closeSeconds)} s | ${f(rssBefore, 0)} MiB | ${f(rssPeak, 0)} MiB | ${f(rssAfter, 0)} MiB |

Checked after the close: ${REVOKES}/${REVOKES} grants revoked with reason \`review\` and removal
verified; \`ldapsearch\` shows none of those members left in the group; ${kept.toLocaleString('en')} items kept.
Every decision is one transaction with one hash-chained event in the campaign's own audit
stream (docs/audit.md), so decisions queue on that stream's head row and on nothing global.
`,
    };
  } finally {
    await worker.stop().catch(() => {});
    await s.stop();
  }
}
