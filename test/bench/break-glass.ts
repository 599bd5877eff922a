/**
 * Break-glass (issue 13): invoke → confirm → access verified in slapd, per use, p50/p99. Each use
 * is a different on-call engineer (the cooldown is per person), all in the entitlement's invoker
 * group; the uses run BENCH_BREAK_GLASS_CONCURRENCY at a time. The time runs from the invoke
 * call to the request being `active`, which means the membership was written to slapd and read
 * back; the post-use review and notifications are opened on the way, as in production.
 */
import type { Stack } from '../helpers/stack-core.js';
import { waitFor } from '../helpers/stack-core.js';
import { identities } from '../../db/schema.js';
import { pool, summary } from './stats.js';

const USES = Number(process.env.BENCH_BREAK_GLASS_USES ?? 40);
const CONCURRENCY = Number(process.env.BENCH_BREAK_GLASS_CONCURRENCY ?? 4);

export async function benchBreakGlass(s: Stack, say: (m: string) => void): Promise<{ section: string; summary: string }> {
  say(`break-glass: ${USES} uses, ${CONCURRENCY} at a time`);
  const tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as Record<string, string>;
  const entitlementId = s.catalog.entitlements['prod-admins']!;
  const oncall = await s.rt.db
    .insert(identities)
    .values(Array.from({ length: USES }, (_, i) => ({ kind: 'employee' as const, username: `oncall${i}`, displayName: `On-call ${i}`, managerId: s.catalog.identities.alice })))
    .returning({ id: identities.id });
  const tokens: string[] = [];
  for (const p of oncall) {
    const t = await s.call('POST', '/v1/tokens', tok.operator, { principalId: p.id, roles: ['requester'] });
    if (t.status !== 201) throw new Error(`token: ${t.status} ${JSON.stringify(t.body)}`);
    tokens.push(t.body.token);
  }
  const g = await s.call('POST', '/v1/groups', tok.operator, { name: 'bench-oncall', memberIds: oncall.map((p) => p.id) });
  if (g.status !== 201) throw new Error(`group: ${g.status} ${JSON.stringify(g.body)}`);
  const cfg = await s.call('PUT', `/v1/entitlements/${entitlementId}/break-glass`, tok.operator, { allowed: true, invokers: g.body.ref, maxDurationSeconds: 900, cooldownSeconds: 3600, postUseReviewHours: 24 });
  if (cfg.status !== 200) throw new Error(`configure: ${cfg.status} ${JSON.stringify(cfg.body)}`);

  const invokeMs: number[] = [];
  const confirmToActiveMs: number[] = [];
  const totalMs: number[] = [];
  const requestIds: string[] = [];
  const t0 = performance.now();
  await pool(oncall, CONCURRENCY, async (_p, i) => {
    const a = performance.now();
    const inv = await s.call('POST', '/v1/break-glass', tokens[i], { entitlementId, durationSeconds: 600, incidentRef: `INC-${1000 + i}`, justification: 'benchmark: production outage, paged on-call' });
    if (inv.status !== 201 && inv.status !== 200) throw new Error(`invoke: ${inv.status} ${JSON.stringify(inv.body)}`);
    const b = performance.now();
    const conf = await s.call('POST', `/v1/break-glass/${inv.body.id}/confirm`, tokens[i], { confirmation: inv.body.confirmation });
    if (conf.status !== 202) throw new Error(`confirm: ${conf.status} ${JSON.stringify(conf.body)}`);
    await waitFor(async () => (await s.call('GET', `/v1/access-requests/${conf.body.id}`, tok.operator)).body.status === 'active', `break-glass ${conf.body.id} active`, 60_000, 25);
    const c = performance.now();
    invokeMs.push(b - a);
    confirmToActiveMs.push(c - b);
    totalMs.push(c - a);
    requestIds.push(conf.body.id);
  });
  const wall = (performance.now() - t0) / 1000;
  const members = await s.ldapMembers('prod-admins');
  const missing = oncall.filter((_, i) => !members.includes(s.userDn(`oncall${i}`))).length;
  if (missing) throw new Error(`break-glass bench: ${missing} members not in slapd`);
  // End the leases, so the rest of the run does not carry them.
  await pool(requestIds, 10, async (id) => void (await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' })));
  await pool(requestIds, 10, async (id) => void (await s.waitForStatus(id, ['revoked'], 120_000)));
  const inv = summary(invokeMs);
  const act = summary(confirmToActiveMs);
  const tot = summary(totalMs);
  const f = (v: number) => v.toFixed(0);
  return {
    summary: `break-glass: ${USES} uses, invoke → access verified p50 ${f(tot.p50)} ms p99 ${f(tot.p99)} ms`,
    section: `
## Break-glass: invoke → access verified

${USES} on-call engineers each break glass once on \`prod-admins\` (an LDAP group), ${CONCURRENCY} at a time:
\`POST /v1/break-glass\` (checks the invoker group, cap, cooldown and overdue post-use reviews,
returns the plan and a single-use confirmation), then \`POST …/confirm\` (the request is recorded
and its lease workflow started with approvals skipped), then \`GET\` every 25 ms until the request is
\`active\`: the membership written to slapd and read back. Afterwards \`ldapsearch\` finds all ${USES} members.

| uses | invoke p50 | p99 | confirm → verified p50 | p99 | invoke → verified p50 | p99 | max | wall |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${USES} | ${f(inv.p50)} ms | ${f(inv.p99)} ms | ${f(act.p50)} ms | ${f(act.p99)} ms | ${f(tot.p50)} ms | ${f(tot.p99)} ms | ${f(tot.max)} ms | ${wall.toFixed(1)} s |
`,
  };
}
