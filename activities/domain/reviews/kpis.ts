import { sql } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';

type Row = Record<string, unknown>;
const int = (v: unknown) => Number(v ?? 0);
const num = (v: unknown) => (v === null || v === undefined ? null : Number(v));

/**
 * The access-review measures of GET /v1/metrics/kpis: how complete the reviews open in (or
 * closed during) the window are, what is overdue now, how many revocations reviews caused, and
 * how long from a revoke decision to its verified removal on the target.
 */
export async function reviewKpis(db: Pick<Db, 'execute'>, since: Date, now: Date) {
  const from = sql`${since.toISOString()}::timestamptz`;
  const at = sql`${now.toISOString()}::timestamptz`;
  const one = async (q: ReturnType<typeof sql>) => ((await db.execute(q)) as unknown as Row[])[0] ?? {};
  const [items, overdue, removal, campaigns] = await Promise.all([
    one(sql`select count(*)::int as total, count(*) filter (where i.status <> 'pending')::int as decided,
              count(*) filter (where i.status = 'revoked' and i.decided_at >= ${from})::int as revoked,
              count(*) filter (where i.flagged)::int as flagged
              from review_item i join review_campaign c on c.id = i.campaign_id
             where c.status <> 'cancelled' and (c.status in ('open','closing') or c.closed_at >= ${from})`),
    one(sql`select count(*)::int as n from review_item i join review_campaign c on c.id = i.campaign_id
             where i.status = 'pending' and c.status = 'open' and c.due_at < ${at}`),
    one(sql`select count(*)::int as n,
              percentile_cont(0.5) within group (order by extract(epoch from (removal_verified_at - decided_at)) * 1000) as p50,
              percentile_cont(0.95) within group (order by extract(epoch from (removal_verified_at - decided_at)) * 1000) as p95
              from review_item where status = 'revoked' and removal_verified_at >= ${from}`),
    one(sql`select count(*) filter (where status = 'open')::int as open, count(*) filter (where status = 'closing')::int as closing,
              count(*) filter (where status = 'closed' and closed_at >= ${from})::int as closed from review_campaign`),
  ]);
  const total = int(items.total);
  return {
    campaigns: { open: int(campaigns.open), closing: int(campaigns.closing), closedInWindow: int(campaigns.closed) },
    items: total,
    completionPercent: total ? Math.round((int(items.decided) / total) * 1000) / 10 : null,
    overdueItems: int(overdue.n),
    flaggedItems: int(items.flagged),
    revocations: int(items.revoked),
    decisionToVerifiedRemoval: { n: int(removal.n), p50Ms: num(removal.p50), p95Ms: num(removal.p95) },
  };
}
