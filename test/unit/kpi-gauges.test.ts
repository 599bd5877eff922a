/**
 * The /metrics KPI gauges' snapshot rule, on a clock the test moves: a scrape never waits for
 * the aggregates, at most one refresh runs per snapshot age, and a failed refresh keeps the last
 * figures. (test/e2e/admin-audit.test.ts checks the same against the real database.)
 */
import { Registry } from 'prom-client';
import { describe, expect, it } from 'vitest';
import { registerKpiGauges, type Kpis } from '../../api/routes/kpis.js';

const kpis = (unverified: number) => ({ exceptions: { revocationsUnverifiedOpen: unverified }, orphanedAccess: { activeGrantsOfInactiveIdentities: 0, openFindings: {} }, openRequests: { byAge: {} } }) as unknown as Kpis;

function setup() {
  let clock = 1_000_000;
  const calls: Array<{ resolve: (k: Kpis) => void; reject: (e: Error) => void }> = [];
  const warnings: unknown[] = [];
  const registry = new Registry();
  const gauges = registerKpiGauges(registry, {
    compute: () => new Promise<Kpis>((resolve, reject) => calls.push({ resolve, reject })),
    maxAgeMs: 30_000,
    log: { warn: (o: unknown) => void warnings.push(o) },
    now: () => clock,
  });
  const value = async () => /^accessloop_revocations_unverified_open (\d+)$/m.exec(await registry.metrics())?.[1];
  const settle = () => new Promise((r) => setImmediate(r));
  return { calls, warnings, gauges, value, settle, tick: (ms: number) => (clock += ms) };
}

describe('KPI gauges', () => {
  it('compute nothing until scraped, then serve the snapshot while one refresh runs', async () => {
    const t = setup();
    expect(t.calls).toHaveLength(0);
    expect(await t.value()).toBe('0'); // answered at once, before any snapshot
    expect(await t.value()).toBe('0');
    expect(t.calls).toHaveLength(1); // two scrapes, one refresh
    t.calls[0]!.resolve(kpis(3));
    await t.settle();
    expect(await t.value()).toBe('3');
    t.tick(29_000);
    expect(await t.value()).toBe('3');
    expect(t.calls).toHaveLength(1);
    t.tick(1_000);
    expect(await t.value()).toBe('3'); // due: the old figures now, a refresh behind them
    expect(t.calls).toHaveLength(2);
    t.calls[1]!.resolve(kpis(5));
    await t.settle();
    expect(await t.value()).toBe('5');
  });

  it('keeps the last figures when a refresh fails, and tries again only when due', async () => {
    const t = setup();
    const first = t.gauges.refresh();
    expect(t.gauges.refresh()).toBe(first); // one in flight at a time
    t.calls[0]!.resolve(kpis(2));
    await first;
    expect(await t.value()).toBe('2');
    t.tick(30_000);
    await t.value();
    t.calls.at(-1)!.reject(new Error('database down'));
    await t.settle();
    expect(t.warnings).toHaveLength(1);
    expect(await t.value()).toBe('2');
    const before = t.calls.length;
    await t.value();
    expect(t.calls).toHaveLength(before);
  });
});
