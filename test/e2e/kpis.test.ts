/**
 * KPIs against a scripted scenario with known timings: one request approved after a deliberate
 * wait and revoked by hand, one approved and left to expire, one rejected, one left pending.
 * The figures are checked against the rows (read independently with psql) and against the
 * Prometheus exposition.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { psql } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<string, string>;
const HUMAN_WAIT_MS = 1500;
const ids: Record<'manual' | 'expired' | 'rejected' | 'pending', string> = { manual: '', expired: '', rejected: '', pending: '' };
let scenarioDoneAt = 0;

async function request(token: string | undefined, entitlement: string, durationSeconds: number, justification: string): Promise<{ id: string; at: number }> {
  const r = await s.call('POST', '/v1/access-requests', token, { entitlementId: s.catalog.entitlements[entitlement], durationSeconds, justification });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  return { id: r.body.id, at: Date.now() };
}

async function decide(id: string, decision: 'approve' | 'reject'): Promise<void> {
  await waitFor(async () => (await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision })).status === 200, `${decision} ${id}`);
}

beforeAll(async () => {
  // a short snapshot age, so the gauges catch up with the scenario within the test's wait
  s = await startStack({ env: { ACCESSLOOP_METRICS_REFRESH_SECONDS: '1' } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));

  // 1. approved after a deliberate human wait, then revoked by hand
  const manual = await request(tok.alice, 'engineering', 600, 'kpi scenario: manual revoke');
  ids.manual = manual.id;
  // the wait is the scenario itself (a human taking their time), not a synchronisation
  await waitFor(async () => Date.now() - manual.at >= HUMAN_WAIT_MS, 'the scripted human wait', 5_000, 20);
  await decide(manual.id, 'approve');
  await s.waitForStatus(manual.id, ['active']);
  expect((await s.call('POST', `/v1/access-requests/${manual.id}/revoke`, tok.alice, { reason: 'manual' })).status).toBe(202);
  await s.waitForStatus(manual.id, ['revoked']);

  // 2. approved at once, left to expire (an automated removal)
  const expired = await request(tok.alice, 'finance-readers', 2, 'kpi scenario: expiry');
  ids.expired = expired.id;
  await decide(expired.id, 'approve');
  await s.waitForStatus(expired.id, ['revoked']);

  // 3. rejected; 4. left pending
  ids.rejected = (await request(tok.alice, 'prod-admins', 600, 'kpi scenario: rejected')).id;
  await decide(ids.rejected, 'reject');
  await s.waitForStatus(ids.rejected, ['rejected']);
  ids.pending = (await request(tok.carol, 'engineering', 600, 'kpi scenario: still pending')).id;
  scenarioDoneAt = Date.now();
}, 120_000);

afterAll(async () => {
  await s?.stop();
});

/** ms between two timestamptz columns of a row, computed by Postgres itself. */
async function msBetween(table: string, a: string, b: string, where: string, vars: Record<string, string>): Promise<number[]> {
  const out = await psql(s.tdb.url, `select round(extract(epoch from (${b} - ${a})) * 1000) from ${table} where ${where} order by 1;\n`, vars);
  return out.trim().split('\n').filter(Boolean).map(Number);
}

describe('governance KPIs', () => {
  it('match the scripted scenario and the rows behind it', async () => {
    const k = await s.call('GET', '/v1/metrics/kpis?window=1h', tok.carol);
    expect(k.status, JSON.stringify(k.body)).toBe(200);
    expect(k.body.window.label).toBe('1h');

    const waits = await msBetween('access_request', 'created_at', 'decided_at', `id in (:'a', :'b')`, { a: ids.manual, b: ids.expired });
    expect(k.body.approvalLatency.humanWait.n).toBe(2); // approved requests only; the rejection is not a wait for access
    expect(k.body.approvalLatency.humanWait.maxMs).toBe(Math.max(...waits));
    expect(k.body.approvalLatency.humanWait.maxMs).toBeGreaterThanOrEqual(HUMAN_WAIT_MS);

    const system = await msBetween(
      `"grant" g join (select request_id, max(decided_at) d from approval where status = 'approved' group by request_id) a on a.request_id = g.request_id`,
      'a.d', 'g.grant_verified_at', `g.request_id in (:'a', :'b')`, { a: ids.manual, b: ids.expired },
    );
    expect(k.body.approvalLatency.systemPart.n).toBe(2);
    expect(k.body.approvalLatency.systemPart.maxMs).toBe(Math.max(...system));

    const revokes = await msBetween('"grant"', 'revoke_requested_at', 'removal_verified_at', `request_id in (:'a', :'b')`, { a: ids.manual, b: ids.expired });
    expect(k.body.timeToRevoke.perGrant.n).toBe(2);
    expect(k.body.timeToRevoke.perGrant.maxMs).toBe(Math.max(...revokes));

    expect(k.body.removals).toEqual({ total: 2, automated: 1, verified: 2, automatedShare: 0.5, verifiedShare: 1 });
    expect(k.body.exceptions).toEqual({ revocationsUnverifiedOpen: 0, revocationsUnverifiedRaised: 0, escalations: 0, sodExceptionsApproved: 0 });
    expect(k.body.orphanedAccess).toEqual({
      activeGrantsOfInactiveIdentities: 0,
      openFindings: { orphaned_account: 0, unauthorized_access: 0, failed_revocation: 0, missing_grant: 0 },
    });
    expect(k.body.openRequests).toEqual({ total: 1, byAge: { under1h: 1, h1to24: 0, d1to7: 0, over7d: 0 }, byStatus: { pending_approval: 1 } });
  });

  it('exposes the same as Prometheus histograms, counters and gauges, with HTTP and activity metrics', async () => {
    // The KPI gauges come from a cached snapshot: a scrape finding it stale starts a refresh, a later one shows it.
    const text = await waitFor(async () => {
      const t = await (await fetch(`${s.rt.apiUrl}/metrics`)).text();
      const at = /^accessloop_kpi_snapshot_timestamp_seconds (\S+)$/m.exec(t);
      return at && Number(at[1]) * 1000 >= scenarioDoneAt ? t : undefined;
    }, 'a KPI snapshot taken after the scenario');
    const value = (series: string) => {
      const line = text.split('\n').find((l) => l.startsWith(`${series} `));
      return line === undefined ? undefined : Number(line.slice(series.length + 1));
    };
    expect(value('accessloop_approval_human_wait_seconds_count{outcome="approved"}')).toBe(2);
    expect(value('accessloop_approval_human_wait_seconds_count{outcome="rejected"}')).toBe(1);
    expect(value('accessloop_approval_system_seconds_count')).toBe(2);
    expect(value('accessloop_removals_total{reason="manual",automated="false",verified="true"}')).toBe(1);
    expect(value('accessloop_removals_total{reason="expired",automated="true",verified="true"}')).toBe(1);
    expect(value('accessloop_time_to_revoke_seconds_count{reason="expired"}')).toBe(1);
    expect(value('accessloop_open_requests{age="under1h"}')).toBe(1);
    expect(value('accessloop_orphaned_access')).toBe(0);
    expect(value('accessloop_revocations_unverified_open')).toBe(0);
    expect(value('accessloop_reconciliation_findings_open{kind="unauthorized_access"}')).toBe(0);
    // HTTP by route pattern (never a concrete id), activities by type
    expect(text).toMatch(/accessloop_http_request_duration_seconds_count\{method="POST",route="\/v1\/access-requests\/:id\/decision",status="200"\} [1-9]/);
    expect(text).not.toContain(ids.manual);
    expect(value('accessloop_activity_duration_seconds_count{activity="grantAccess",outcome="ok"}')).toBe(2);
    expect(value('accessloop_activity_duration_seconds_count{activity="removeAndVerify",outcome="ok"}')).toBe(2);
  });

  it('validates the window and keeps KPIs to operators and auditors', async () => {
    expect((await s.call('GET', '/v1/metrics/kpis', tok.alice)).status).toBe(403);
    for (const q of ['window=0h', 'window=5y', 'window=400d', 'window=2h&windowDays=1', 'windowDays=0', 'since=yesterday']) {
      const r = await s.call('GET', `/v1/metrics/kpis?${q}`, tok.operator);
      expect(r.status, q).toBe(400);
      expect(r.body.error.code).toBe('invalid_request');
    }
    const days = await s.call('GET', '/v1/metrics/kpis?windowDays=7', tok.operator);
    expect(days.status).toBe(200);
    expect(days.body.window.label).toBe('7d');
  });
});
