import { sql } from 'drizzle-orm';
import { Router } from 'express';
import { z } from 'zod';
import type { Db } from '../../db/client.js';
import { requireRole } from '../auth.js';
import { valid, validate } from '../validate.js';

const kpiQuery = z.strictObject({ windowDays: z.coerce.number().int().min(1).max(366).default(30) });

type Row = Record<string, string | number | null>;
const num = (v: unknown) => (v === null || v === undefined ? null : Math.round(Number(v)));

/**
 * GET /v1/metrics/kpis — the governance measures (DESIGN §8) over a window: approval latency
 * (human wait and system part), time to revoke per grant and per leaver, the share of removals
 * that were automated and verified, open exceptions, and orphaned access.
 */
export function kpiRoutes(db: Db): Router {
  const r = Router();
  r.get('/kpis', requireRole('operator', 'auditor'), validate({ query: kpiQuery }), async (_req, res) => {
    const { query } = valid(res, { query: kpiQuery });
    const sinceDate = new Date(Date.now() - query.windowDays * 86400_000);
    // Bound as text with a cast: raw sql templates do not serialise Date parameters.
    const since = sql`${sinceDate.toISOString()}::timestamptz`;
    const pct = (expr: ReturnType<typeof sql>) => sql`count(*)::int as n,
      percentile_cont(0.5) within group (order by ${expr}) as p50,
      percentile_cont(0.95) within group (order by ${expr}) as p95,
      max(${expr}) as max`;
    const ms = (a: string, b: string) => sql.raw(`extract(epoch from (${b} - ${a})) * 1000`);
    const one = async (q: ReturnType<typeof sql>) => ((await db.execute(q)) as unknown as Row[])[0] ?? {};
    const [approval, systemPart, revoke, leavers, removals, exceptions, orphaned] = await Promise.all([
      one(sql`select ${pct(ms('created_at', 'decided_at'))} from access_request where decided_at >= ${since} and status not in ('cancelled','expired_unapproved')`),
      one(sql`select ${pct(ms('a.decided_at', 'g.grant_verified_at'))} from approval a join "grant" g on g.request_id = a.request_id
              where a.status = 'approved' and a.decided_at >= ${since} and g.grant_verified_at is not null`),
      one(sql`select ${pct(ms('revoke_requested_at', 'removal_verified_at'))} from "grant" where removal_verified_at >= ${since}`),
      one(sql`select ${pct(ms('received_at', 'completed_at'))} from hr_event where type = 'leaver' and completed_at >= ${since}`),
      one(sql`select count(*)::int as total,
                count(*) filter (where revoke_reason in ('expired','leaver','mover','reconciliation'))::int as automated,
                count(*) filter (where removal_verified_at is not null)::int as verified
              from "grant" where status = 'revoked' and revoked_at >= ${since}`),
      one(sql`select (select count(*)::int from "grant" where status = 'revocation_unverified') as unverified,
                (select count(*)::int from approval where stage_name like 'sod-%' and status = 'approved' and decided_at >= ${since}) as sod_exceptions`),
      one(sql`select count(*)::int as n from "grant" g join identity i on i.id = g.identity_id where g.status in ('granting','active') and i.status <> 'active'`),
    ]);
    const dist = (x: Row) => ({ n: Number(x.n ?? 0), p50Ms: num(x.p50), p95Ms: num(x.p95), maxMs: num(x.max) });
    const total = Number(removals.total ?? 0);
    res.json({
      window: { from: sinceDate.toISOString(), to: new Date().toISOString(), days: query.windowDays },
      approvalLatency: { requestToDecision: dist(approval), decisionToGrantVerified: dist(systemPart) },
      timeToRevoke: { perGrant: dist(revoke), perLeaver: dist(leavers) },
      removals: {
        total,
        automated: Number(removals.automated ?? 0),
        verified: Number(removals.verified ?? 0),
        automatedShare: total ? Number(removals.automated) / total : null,
        verifiedShare: total ? Number(removals.verified) / total : null,
      },
      exceptions: { revocationsUnverifiedOpen: Number(exceptions.unverified ?? 0), sodExceptionsApproved: Number(exceptions.sod_exceptions ?? 0) },
      orphanedAccess: { activeGrantsOfInactiveIdentities: Number(orphaned.n ?? 0) },
    });
  });
  return r;
}
