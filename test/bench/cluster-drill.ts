/**
 * The failover drill at full size (issue 14 §3), run by `npm run bench`: the same test as in
 * `npm test` (test/integration/cluster-drill.test.ts, every assertion included), with the expiry
 * wave and the leaver burst scaled up through its DRILL_* sizes. It runs under vitest, because
 * its checks are vitest assertions; the figures come from the report file it writes.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = fileURLToPath(new URL('../..', import.meta.url));
const LEASES = Number(process.env.BENCH_DRILL_LEASES ?? 1000);
const BASELINE = Number(process.env.BENCH_DRILL_BASELINE_LEASES ?? 150);
const LEAVERS = Number(process.env.BENCH_DRILL_LEAVERS ?? 100);

interface Stat {
  n: number;
  p50: number;
  p99: number;
  max: number;
}
interface DrillReport {
  leases: number;
  baselineLeases: number;
  leavers: number;
  leaverGrants: number;
  killAtWaveMs: number;
  verifiedAtKill: number;
  removals: number;
  baseline: Stat;
  fault: Stat;
  beforeKill: Stat;
  afterKill: Stat;
  leaverLatency: Stat;
  killToVerifiedMs: number;
  baselineSeconds: number;
  faultSeconds: number;
  balancer: { forwarded: number; retried: number; badGateway: number };
  clientRetries: number;
}

const s = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const row = (what: string, t: Stat) => `| ${what} | ${t.n} | ${t.n ? s(t.p50) : '–'} | ${t.n ? s(t.p99) : '–'} | ${t.n ? s(t.max) : '–'} |`;

export async function benchClusterDrill(say: (m: string) => void): Promise<{ section: string; summary: string }> {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-bench-drill-'));
  const reportFile = path.join(dir, 'report.json');
  say(`full-size failover drill: ${LEASES} leases in the wave, ${BASELINE} before it, ${LEAVERS} leavers (vitest, every assertion of the CI drill)`);
  const t0 = performance.now();
  let out = '';
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      const child = spawn(process.execPath, [path.join(root, 'node_modules/vitest/vitest.mjs'), 'run', '--project', 'integration', 'test/integration/cluster-drill.test.ts'], {
        cwd: root,
        env: { ...process.env, DRILL_LEASES: String(LEASES), DRILL_BASELINE_LEASES: String(BASELINE), DRILL_LEAVERS: String(LEAVERS), DRILL_REPORT: reportFile },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const keep = (b: Buffer) => {
        out = (out + b.toString()).slice(-20_000);
      };
      child.stdout.on('data', keep);
      child.stderr.on('data', keep);
      child.on('error', reject);
      child.on('exit', resolve);
    });
    if (code !== 0) throw new Error(`the full-size drill failed (exit ${code}):\n${out.slice(-6000)}`);
    const r = JSON.parse(await readFile(reportFile, 'utf8')) as DrillReport;
    const minutes = (performance.now() - t0) / 60_000;
    const section = `
## Failover drill at full size (cluster, 3 workers, 2 API replicas)

The drill of \`npm test\` (test/integration/cluster-drill.test.ts, with all its checks) at the
sizes of issue 14: ${r.leases} leases expiring in one second and ${r.leavers} leavers (${r.leaverGrants} birthright
grants) sent during that second and right after the kills, on the multi-process cluster with
three worker processes and two API replicas behind the round-robin. ${s(r.killAtWaveMs)} into the wave
(${r.verifiedAtKill} of ${r.removals} removals verified) history-1, worker-1 and api-2 are SIGKILLed at once. A
baseline wave of ${r.baselineLeases} leases runs before it on the same processes with nothing killed.
The test then checks that every lease ended \`revoked\` with removal verified, every leaver event
completed, nothing was flagged unverified, and slapd's own log holds exactly one member modify
per membership. The whole drill, set-up included, took ${minutes.toFixed(1)} min.

| lease expiry → verified removal | leases | p50 | p99 | max |
|---|---:|---:|---:|---:|
${row('baseline wave, nothing killed', r.baseline)}
${row('fault wave, all', r.fault)}
${row('  verified before the kill', r.beforeKill)}
${row('  verified after the kill', r.afterKill)}
${row('leaver event received → completed', r.leaverLatency)}

Kill → everything verified: ${s(r.killToVerifiedMs)}. Throughput of removals: the baseline wave drained
${r.baselineLeases} in ${r.baselineSeconds.toFixed(1)} s (${(r.baselineLeases / r.baselineSeconds).toFixed(1)}/s); the fault wave's ${r.removals} removals took ${r.faultSeconds.toFixed(1)} s from the
expiry to the last one verified (${(r.removals / r.faultSeconds).toFixed(1)}/s). Balancer: ${r.balancer.forwarded} requests forwarded, ${r.balancer.retried} GETs
replayed on the other replica, ${r.balancer.badGateway} answered 502 (the client resent ${r.clientRetries} of those it may repeat).
`;
    return { section, summary: `full drill: ${r.leases} leases + ${r.leaverGrants} leaver grants, fault wave p99 ${s(r.fault.p99)}, kill → all verified ${s(r.killToVerifiedMs)}` };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
