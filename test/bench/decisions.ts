/**
 * Decision callbacks at a fixed rate (issue 14), run by `npm run bench`: N requests wait for
 * their owner's approval; autocannon (a maintained HTTP load generator) sends the owner's
 * `POST /v1/access-requests/:id/decision` for each, one per request, at RATE per second across
 * many connections, so the rate holds while answers are slower than 1/RATE (open loop, bounded
 * by the connection count). Then every request must be active and every member in slapd.
 */
import autocannon from 'autocannon';
import { and, eq, inArray } from 'drizzle-orm';
import { approvals, grants, identities } from '../../db/schema.js';
import type { Stack } from '../helpers/stack-core.js';
import { waitFor } from '../helpers/stack-core.js';
import { cpuSample, cpuTable } from './cpu.js';
import { pool } from './stats.js';

const RATE = Number(process.env.BENCH_DECISION_RATE ?? 100);
const SECONDS = Number(process.env.BENCH_DECISION_SECONDS ?? 10);
const CONNECTIONS = 100;
const GROUPS = ['engineering', 'finance-readers', 'prod-admins'] as const;

/** `lifecyclesPerSecond`: the throughput section's accessloop rate in the same run, to compare the released grants with. */
export async function benchDecisions(s: Stack, say: (m: string) => void, lifecyclesPerSecond: number): Promise<{ section: string; summary: string }> {
  const n = RATE * SECONDS;
  const tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as Record<string, string>;
  const people = await s.rt.db
    .insert(identities)
    .values(Array.from({ length: Math.ceil(n / GROUPS.length) }, (_, i) => ({ kind: 'employee' as const, username: `benchdec${String(i).padStart(4, '0')}`, displayName: `Bench decision ${i}`, managerId: s.catalog.identities.alice })))
    .returning({ id: identities.id });
  say(`decision callbacks: ${n} requests waiting for approval`);
  const ids: string[] = [];
  await pool([...Array(n).keys()], 20, async (i) => {
    const r = await s.call('POST', '/v1/access-requests', s.catalog.tokens.alice!.token, {
      subjectId: people[Math.floor(i / GROUPS.length)]!.id,
      entitlementId: s.catalog.entitlements[GROUPS[i % GROUPS.length]!]!,
      durationSeconds: 3600,
      justification: 'benchmark decision callback',
    });
    if (r.status !== 202) throw new Error(`create: ${r.status} ${JSON.stringify(r.body)}`);
    ids.push(r.body.id as string);
  });
  await waitFor(async () => (await s.rt.db.$count(approvals, and(inArray(approvals.requestId, ids), eq(approvals.status, 'pending')))) >= n, 'every approval stage open', 300_000, 250);

  say(`decision callbacks: ${n} at ${RATE}/s over ${CONNECTIONS} connections`);
  let next = 0;
  const url = new URL(s.rt.apiUrl!);
  const cpu = await cpuSample();
  const result = await autocannon({
    url: url.origin,
    connections: CONNECTIONS,
    overallRate: RATE,
    amount: n,
    timeout: 30,
    requests: [
      {
        method: 'POST',
        setupRequest: (req) => ({
          ...req,
          path: `/v1/access-requests/${ids[next++ % n]}/decision`,
          headers: { authorization: `Bearer ${tok.bob}`, 'content-type': 'application/json' },
          body: JSON.stringify({ decision: 'approve' }),
        }),
      },
    ],
  });
  const spent = await cpu.stop();
  const ok = result['2xx'];
  say(`decision callbacks: ${ok} 2xx, ${result.non2xx} other, ${result.errors} errors, p50 ${result.latency.p50} ms p99 ${result.latency.p99} ms`);

  // Each approval took effect: the lease is active, read back from slapd.
  const active = await waitFor(async () => {
    const c = await s.rt.db.$count(grants, and(inArray(grants.requestId, ids), eq(grants.status, 'active')));
    return c === n ? c : undefined;
  }, 'every decided request active', 600_000, 500);
  let inDirectory = 0;
  for (const g of GROUPS) inDirectory += (await s.ldapMembers(g)).filter((m) => /^uid=benchdec\d{4},/.test(m)).length;

  const section = `
## Decision callbacks at ${RATE} per second

${n} requests wait for their entitlement owner's approval. [autocannon](https://github.com/mcollina/autocannon)
sends the owner's \`POST /v1/access-requests/:id/decision\` for each of them, one decision per
request, at **${RATE} per second** over ${CONNECTIONS} connections for ${SECONDS} s. With that many
connections the rate holds as long as an answer takes less than ${Math.round((CONNECTIONS / RATE) * 1000)} ms, so a slow answer does
not slow the sender (open loop within that bound). A decision answers once the workflow accepted
the update and recorded it; the grant and its read-back follow, so every decision adds a grant
to the load.

| requests | sent at | answered 2xx | other status | errors | latency p50 | p90 | p99 | max |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${n} | ${(n / result.duration).toFixed(0)}/s | ${ok} | ${result.non2xx} | ${result.errors} | ${result.latency.p50} ms | ${result.latency.p90} ms | ${result.latency.p99} ms | ${result.latency.max} ms |

${n / result.duration < 0.95 * RATE ? `The answers were slower than that, so the connections held the sender to ${(n / result.duration).toFixed(0)}/s: these figures are for that rate, not for ${RATE}/s.\n\n` : ''}Afterwards all ${active} requests are \`active\` and \`ldapsearch\` finds ${inDirectory} of their members in
the three groups. Issue 14's target is p99 ≤ 100 ms with no errors. CPU while the decisions were
sent:

${cpuTable(spent, { n, unit: 'decision' })}

The decisions and the grants they release share the two cores with the dev server and Postgres.
They release ${RATE} grants per second; the throughput section measured ${lifecyclesPerSecond.toFixed(1)} whole lifecycles per
second on this machine${RATE > lifecyclesPerSecond ? ', so the backlog of grants grows while the decisions arrive, and each decision\'s workflow task waits behind grant work in the same worker and server' : ''}.
`;
  return { section, summary: `decisions at ${RATE}/s: p99 ${result.latency.p99} ms, ${result.non2xx} non-2xx, ${result.errors} errors` };
}
