import { sql, type SQL } from 'drizzle-orm';
import { Router } from 'express';
import { Gauge, type Registry } from 'prom-client';
import type { Db } from '../../db/client.js';
import { breakGlassKpis } from '../../activities/domain/break-glass.js';
import { reviewKpis } from '../../activities/domain/reviews/kpis.js';
import type { Logger } from '../../temporal/logger.js';
import { requireRole } from '../auth.js';
import { UNIT_MS, kpiQuery } from '../schemas.js';
import { valid, validate } from '../validate.js';

type Row = Record<string, string | number | null>;
const num = (v: unknown) => (v === null || v === undefined ? null : Math.round(Number(v)));
const int = (v: unknown) => Number(v ?? 0);

/** Requests still in flight (the ticket is not closed): their age is a measure of its own. */
const OPEN_STATES = ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified'];
const AGE_BUCKETS = [
  { key: 'under1h', maxMs: UNIT_MS.h },
  { key: 'h1to24', maxMs: UNIT_MS.d },
  { key: 'd1to7', maxMs: 7 * UNIT_MS.d },
  { key: 'over7d', maxMs: Infinity },
] as const;

/**
 * The governance measures (docs/architecture.md#12-measures) over a window: approval latency split into the human
 * wait (request → final decision) and the system part (decision → grant verified on the
 * target), time to revoke per grant and per leaver, the share of removals that were automated
 * and verified, exceptions that need a human, orphaned access, open requests by age, and the
 * same loop seen from each service desk's queue. Every figure is computed from the database, so it matches the audit trail.
 */
export async function computeKpis(db: Db, windowMs: number, now = new Date()) {
  const sinceDate = new Date(now.getTime() - windowMs);
  // Bound as text with a cast: raw sql templates do not serialise Date parameters.
  const since = sql`${sinceDate.toISOString()}::timestamptz`;
  const pct = (expr: SQL) => sql`count(*)::int as n,
    percentile_cont(0.5) within group (order by ${expr}) as p50,
    percentile_cont(0.95) within group (order by ${expr}) as p95,
    max(${expr}) as max`;
  const ms = (a: string, b: string) => sql.raw(`extract(epoch from (${b} - ${a})) * 1000`);
  const one = async (q: SQL) => ((await db.execute(q)) as unknown as Row[])[0] ?? {};
  const all = async (q: SQL) => (await db.execute(q)) as unknown as Row[];
  const [humanWait, systemPart, revoke, leavers, removals, exceptions, orphaned, findings, open, desks] = await Promise.all([
    one(sql`select ${pct(ms('created_at', 'decided_at'))} from access_request
            where decided_at >= ${since} and status not in ('cancelled','expired_unapproved','rejected')`),
    // from the last approval of a request to its grant verified on the target
    one(sql`select ${pct(ms('a.last_decided', 'g.grant_verified_at'))}
              from (select request_id, max(decided_at) as last_decided from approval where status = 'approved' group by request_id) a
              join "grant" g on g.request_id = a.request_id
             where g.grant_verified_at >= ${since}`),
    one(sql`select ${pct(ms('revoke_requested_at', 'removal_verified_at'))} from "grant" where removal_verified_at >= ${since}`),
    one(sql`select ${pct(ms('received_at', 'completed_at'))} from hr_event where type = 'leaver' and completed_at >= ${since}`),
    one(sql`select count(*)::int as total,
              count(*) filter (where revoke_reason in ('expired','leaver','mover','reconciliation','ticket'))::int as automated,
              count(*) filter (where removal_verified_at is not null)::int as verified
            from "grant" where status = 'revoked' and revoked_at >= ${since}`),
    one(sql`select (select count(*)::int from "grant" where status = 'revocation_unverified') as unverified_open,
              (select count(*)::int from audit_event where action = 'grant.revocation_unverified' and at >= ${since}) as unverified_raised,
              (select count(*)::int from audit_event where action = 'approval.escalated' and at >= ${since}) as escalations,
              (select count(*)::int from approval where stage_name like 'sod-%' and status = 'approved' and decided_at >= ${since}) as sod_exceptions`),
    one(sql`select count(*)::int as n from "grant" g join identity i on i.id = g.identity_id where g.status in ('granting','active') and i.status <> 'active'`),
    all(sql`select kind::text as kind, count(*)::int as n from reconciliation_finding where status = 'open' group by kind`),
    all(sql`select status::text as status, extract(epoch from (${now.toISOString()}::timestamptz - created_at)) * 1000 as age_ms
              from access_request where status in (${sql.join(OPEN_STATES.map((s) => sql`${s}`), sql`, `)})`),
    deskKpis(db, since, pct, ms),
  ]);
  const dist = (x: Row) => ({ n: int(x.n), p50Ms: num(x.p50), p95Ms: num(x.p95), maxMs: num(x.max) });
  const total = int(removals.total);
  const findingCounts = Object.fromEntries(['orphaned_account', 'unauthorized_access', 'failed_revocation', 'missing_grant'].map((k) => [k, int(findings.find((f) => f.kind === k)?.n)]));
  const byAge: Record<(typeof AGE_BUCKETS)[number]['key'], number> = { under1h: 0, h1to24: 0, d1to7: 0, over7d: 0 };
  const byStatus: Record<string, number> = {};
  for (const r of open) {
    byAge[AGE_BUCKETS.find((b) => Number(r.age_ms) < b.maxMs)!.key]++;
    byStatus[String(r.status)] = (byStatus[String(r.status)] ?? 0) + 1;
  }
  return {
    window: { from: sinceDate.toISOString(), to: now.toISOString(), ms: windowMs },
    approvalLatency: { humanWait: dist(humanWait), systemPart: dist(systemPart) },
    timeToRevoke: { perGrant: dist(revoke), perLeaver: dist(leavers) },
    removals: {
      total,
      automated: int(removals.automated),
      verified: int(removals.verified),
      automatedShare: total ? int(removals.automated) / total : null,
      verifiedShare: total ? int(removals.verified) / total : null,
    },
    exceptions: {
      revocationsUnverifiedOpen: int(exceptions.unverified_open),
      revocationsUnverifiedRaised: int(exceptions.unverified_raised),
      escalations: int(exceptions.escalations),
      sodExceptionsApproved: int(exceptions.sod_exceptions),
    },
    orphanedAccess: {
      activeGrantsOfInactiveIdentities: int(orphaned.n),
      openFindings: findingCounts,
    },
    openRequests: { total: open.length, byAge, byStatus },
    breakGlass: await breakGlassKpis(db, sinceDate, now),
    reviews: await reviewKpis(db, sinceDate, now),
    serviceDesks: desks.desks.map((d) => {
      const of = (rows: Row[]) => rows.find((r) => r.desk_id === d.desk_id) ?? {};
      const t = of(desks.tickets);
      return {
        deskId: String(d.desk_id),
        name: String(d.name),
        queue: d.queue === null ? null : String(d.queue),
        tickets: int(t.tickets),
        refused: int(t.refused),
        ticketToAccessVerified: dist(of(desks.toAccess)),
        accessEndedToTicketResolved: dist(of(desks.toResolved)),
        pendingWriteBacks: int(of(desks.pending).n),
      };
    }),
  };
}

/**
 * Per service desk (issue 12), over the same window: tickets taken in and refused; ticket opened
 * → access verified on the target (the grant's `grant_verified_at`); access ended (removal
 * verified) → the post that resolved the ticket delivered; and write-backs still undelivered
 * (now, like the open-request counts). Each duration is windowed by its end, as above.
 */
async function deskKpis(db: Db, since: SQL, pct: (expr: SQL) => SQL, ms: (a: string, b: string) => SQL) {
  const all = async (q: SQL) => (await db.execute(q)) as unknown as Row[];
  const [desks, tickets, toAccess, toResolved, pending] = await Promise.all([
    all(sql`select id::text as desk_id, name, config->>'queue' as queue from service_desk order by name`),
    all(sql`select desk_id::text as desk_id, count(*)::int as tickets, count(*) filter (where state = 'refused')::int as refused
              from ticket_link where created_at >= ${since} group by desk_id`),
    all(sql`select l.desk_id::text as desk_id, ${pct(ms('l.ticket_created_at', 'g.grant_verified_at'))}
              from ticket_link l join "grant" g on g.request_id = l.request_id
             where g.grant_verified_at >= ${since} and l.ticket_created_at is not null group by l.desk_id`),
    all(sql`select l.desk_id::text as desk_id, ${pct(ms('g.removal_verified_at', 'l.closed_at'))}
              from ticket_link l join "grant" g on g.request_id = l.request_id
             where l.final_state = 'resolved' and l.closed_at >= ${since} and g.removal_verified_at is not null group by l.desk_id`),
    all(sql`select l.desk_id::text as desk_id, count(*)::int as n
              from desk_outbox o join ticket_link l on l.id = o.link_id where o.delivered_at is null group by l.desk_id`),
  ]);
  return { desks, tickets, toAccess, toResolved, pending };
}

/** GET /v1/metrics/kpis?window=24h — operators and auditors. */
export function kpiRoutes(db: Db): Router {
  const r = Router();
  r.get('/kpis', requireRole('operator', 'auditor'), validate({ query: kpiQuery }), async (_req, res) => {
    const { query } = valid(res, { query: kpiQuery });
    const k = await computeKpis(db, query.ms);
    res.json({ ...k, window: { ...k.window, label: query.label } });
  });
  return r;
}

export type Kpis = Awaited<ReturnType<typeof computeKpis>>;

export interface KpiGaugeOptions {
  /** Computes a snapshot (the aggregates over the last day). */
  compute: () => Promise<Kpis>;
  /** How old a snapshot may get before a scrape starts a refresh. */
  maxAgeMs: number;
  log: Pick<Logger, 'warn'>;
  now?: () => number;
}

/**
 * The state-like measures as Prometheus gauges: open requests by age, orphaned access, open
 * findings, revocations still unverified (the event-like ones are counters and histograms in
 * metrics.ts). /metrics may be unauthenticated, so a scrape never runs the aggregates itself: it
 * is served from the last snapshot, and one older than `maxAgeMs` starts a single refresh in the
 * background (at most one per `maxAgeMs`, successful or not), which the next scrape shows. No
 * timer runs, so an app nobody scrapes costs nothing and there is nothing to stop on shutdown.
 * `accessloop_kpi_snapshot_timestamp_seconds` says how old the figures are (0: none yet).
 */
export function registerKpiGauges(registry: Registry, opts: KpiGaugeOptions) {
  const now = opts.now ?? Date.now;
  let snapshot: { at: number; kpis: Kpis } | undefined;
  let attemptedAt = -Infinity;
  let inFlight: Promise<void> | undefined;

  const refresh = (): Promise<void> =>
    (inFlight ??= (async () => {
      attemptedAt = now();
      try {
        snapshot = { at: now(), kpis: await opts.compute() };
      } catch (err) {
        // the last snapshot stays (its timestamp shows its age); the next due scrape tries again
        opts.log.warn({ err }, 'KPI gauge refresh failed');
      } finally {
        inFlight = undefined;
      }
    })());
  const current = () => {
    if (now() - attemptedAt >= opts.maxAgeMs) void refresh();
    return snapshot;
  };

  /** A gauge set from the snapshot; until the first one, labelled gauges show no series (unlabelled ones read 0: see the timestamp). */
  const gauge = (name: string, help: string, labelNames: string[], set: (g: Gauge, k: Kpis) => void) =>
    new Gauge({
      name,
      help,
      labelNames,
      registers: [registry],
      collect() {
        const s = current();
        this.reset();
        if (s) set(this, s.kpis);
      },
    });
  gauge('accessloop_open_requests', 'Requests not yet closed, by age since they were made', ['age'], (g, k) => {
    for (const [age, n] of Object.entries(k.openRequests.byAge)) g.set({ age }, n);
  });
  gauge('accessloop_orphaned_access', 'Active grants held by identities that are no longer active', [], (g, k) => g.set(k.orphanedAccess.activeGrantsOfInactiveIdentities));
  gauge('accessloop_reconciliation_findings_open', 'Open reconciliation findings by kind', ['kind'], (g, k) => {
    for (const [kind, n] of Object.entries(k.orphanedAccess.openFindings)) g.set({ kind }, n);
  });
  gauge('accessloop_revocations_unverified_open', 'Grants whose removal is still not verified (an operator must look)', [], (g, k) => g.set(k.exceptions.revocationsUnverifiedOpen));
  new Gauge({
    name: 'accessloop_kpi_snapshot_timestamp_seconds',
    help: 'When the KPI gauges were last computed (unix seconds; 0: not yet)',
    registers: [registry],
    collect() {
      this.set(snapshot ? snapshot.at / 1000 : 0);
    },
  });
  return {
    /** Computes a snapshot now (the refresh a due scrape starts); resolves when it is in place. */
    refresh,
  };
}
