/**
 * Randomized runs (issue 11): a bounded survey of the model-based test (test/model) on a fresh
 * seed, every sequence run to the end without shrinking (MODEL_COLLECT), read back from the JSON
 * report the test writes (MODEL_REPORT, test/model/report.ts). vitest runs it in a child process
 * with its own Temporal dev server and stack, as `npx vitest run test/model` would.
 */
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { stripVTControlCharacters } from 'node:util';
import type { ModelReport } from '../model/report.js';
import { ABANDONED_ACTIVITY_MS } from '../model/restarts.js';
import { summary } from './stats.js';

const root = fileURLToPath(new URL('../..', import.meta.url));
const RUNS = Number(process.env.BENCH_MODEL_RUNS ?? 16);
const OPS = Number(process.env.BENCH_MODEL_OPS ?? 25);
const TIME_LIMIT_S = Number(process.env.BENCH_MODEL_TIME_LIMIT_SECONDS ?? 1800);
// Restarts three times as often as in CI, so that a bounded survey reliably draws worker crashes.
const RESTART_WEIGHT = Number(process.env.BENCH_MODEL_RESTART_WEIGHT ?? 3);

export async function benchModel(say: (m: string) => void): Promise<{ section: string; summary: string; violations: number }> {
  const seed = process.env.BENCH_MODEL_SEED ? Number(process.env.BENCH_MODEL_SEED) : Math.floor(Math.random() * 0x7fffffff);
  say(`randomized runs: ${RUNS} sequences × ≤${OPS} operations, seed ${seed} (replay with MODEL_SEED=${seed} MODEL_RUNS=${RUNS} MODEL_OPS=${OPS} MODEL_RESTART_WEIGHT=${RESTART_WEIGHT} MODEL_COLLECT=1)`);
  const dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-bench-model-'));
  const reportFile = path.join(dir, 'model-report.json');
  try {
    const args = [path.join(root, 'node_modules/vitest/vitest.mjs'), 'run', '--project', 'integration', 'test/model', '-t', 'holds every invariant'];
    const env = {
      ...process.env,
      MODEL_RUNS: String(RUNS),
      MODEL_OPS: String(OPS),
      MODEL_SEED: String(seed),
      MODEL_COLLECT: '1',
      MODEL_TIME_LIMIT_SECONDS: String(TIME_LIMIT_S),
      MODEL_RESTART_WEIGHT: String(RESTART_WEIGHT),
      MODEL_REPORT: reportFile,
    };
    const child = spawn(process.execPath, args, { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let tail = '';
    let partial = '';
    child.stdout.on('data', (d: Buffer) => {
      tail = (tail + d).slice(-20_000);
      const lines = (partial + d).split('\n');
      partial = lines.pop() ?? '';
      // The test's own progress lines; the rest is vitest's, kept for a failure report.
      for (const line of lines.map((l) => stripVTControlCharacters(l))) if (line.startsWith('[model] ') && !line.startsWith('[model] sequence:')) say(line.slice(0, 400));
    });
    child.stderr.on('data', (d: Buffer) => (tail = (tail + d).slice(-20_000)));
    const t0 = performance.now();
    const code = await new Promise<number | null>((resolve, reject) => {
      child.once('error', reject);
      child.once('exit', resolve);
    });
    const wallSeconds = (performance.now() - t0) / 1000;
    // A survey with violations exits non-zero and still writes its report: the section states them.
    const report = JSON.parse(await readFile(reportFile, 'utf8').catch(() => {
      throw new Error(`the model survey wrote no report (vitest exit ${code}):\n${tail}`);
    })) as ModelReport;
    return render(report, wallSeconds);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function render(r: ModelReport, wallSeconds: number): { section: string; summary: string; violations: number } {
  const violations = Object.values(r.violations).reduce((a, b) => a + b, 0);
  const minutes = (s: number) => `${(s / 60).toFixed(1)} min`;
  const kinds = Object.entries(r.operations.byKind).sort(([, a], [, b]) => b - a);
  const backAfter = (what: string, ms: number[]) => {
    const s = summary(ms);
    return ms.length ? `${what} → new worker ready p50 ${s.p50} ms, max ${s.max} ms (n ${s.n})` : `no ${what} drawn`;
  };
  const list = (o: Record<string, number>) => Object.entries(o).map(([k, n]) => `${k} ×${n}`).join(', ') || 'none';
  const stopped = r.interrupted ? ` It stopped at its time limit after ${r.fastCheckRuns} of ${r.runsRequested} sequences.` : '';
  const section = `
## Randomized runs (model-based, against the real stack)

\`test/model\` draws random sequences with fast-check. Each sequence has up to ${r.maxOps} operations:

- requests and decisions by any principal, through the API and straight to the workflow;
- extensions, and revokes through the API and as raw Temporal signals (valid and invalid);
- HR joiners, movers and leavers through the signed webhook;
- worker restarts and slapd restarts, here ${RESTART_WEIGHT}× as often as in CI. A worker restart is the
  worker process SIGKILLed (or, one time in four, stopped with SIGTERM) and a new one started.

After each sequence the stack is left to go quiet. Then the ${Object.keys(r.violations).length} invariants are read from
slapd (\`ldapsearch\`), Postgres (SQL) and the raw history (the Temporal CLI, without our codec).
This survey ran every sequence to the end without shrinking. It took ${minutes(r.durationMs / 1000)}
(${minutes(wallSeconds)} with the test's own servers).${stopped}
Replay it with \`MODEL_SEED=${r.seed} MODEL_RUNS=${r.runsRequested} MODEL_OPS=${r.maxOps} MODEL_RESTART_WEIGHT=${RESTART_WEIGHT} MODEL_COLLECT=1 npx vitest run --project integration test/model -t "holds every"\`.

| seed | sequences | operations executed | skipped (no target yet) | worker crashes (SIGKILL) | graceful worker restarts | slapd restarts | HR events | invariant violations |
|---:|---:|---:|---:|---:|---:|---:|---:|---:|
| ${r.seed} | ${r.sequences} | ${r.operations.total} | ${r.operations.skipped} | ${r.restarts.workerCrash} | ${r.restarts.workerGraceful} | ${r.restarts.slapd} | ${r.hrEvents} | **${violations}** |

Operations by kind: ${kinds.map(([k, n]) => `\`${k}\` ${n}`).join(', ')}.

| invariant | violations |
|---|---:|
${Object.entries(r.violations).map(([inv, n]) => `| ${inv} | ${n} |`).join('\n')}
${r.examples.length ? `\nFirst violations:\n\n${r.examples.map((e) => `- ${e.invariant}: ${e.detail}\n  in \`[${e.sequence}]\``).join('\n')}\n` : ''}
Worker restarts: ${backAfter('SIGKILL', r.workerBackMs.crash)}; ${backAfter('SIGTERM', r.workerBackMs.graceful)}.
A new worker process bundles the workflow code at every start, because a source run never loads
a prebuilt bundle.

Tasks the server timed out, read from the raw histories: activities ${list(r.timeouts.activities)};
workflow tasks ${list(r.timeouts.workflowTasks)}. These are what a SIGKILLed worker held. The
lease path's activities heartbeat with a ${ABANDONED_ACTIVITY_MS / 1000} s timeout, so one in flight is retried
elsewhere that long after the crash. The invariants' grace starts again from then.

Longest wait for a sequence to go quiet: ${(r.quiesceMaxMs / 1000).toFixed(1)} s. Sequences where it gave up: ${r.quiesceGaveUp}.
Worker exits nobody caused: ${r.unexpectedWorkerExits}.

### Seeds that found bugs fixed on the way

A seed replays only with the generators of its day. Once a bug is understood, its shape is kept
as a regression sequence in \`test/model/model.test.ts\` and replayed on every run.

| seeds | invariant | what it found | fix |
|---|---|---|---|
${r.foundBugs.map((b) => `| ${b.seeds.join(', ')} | ${b.invariant} | ${b.bug} | ${b.fix} |`).join('\n')}
`;
  return {
    section,
    violations,
    summary: `randomized runs: seed ${r.seed}, ${r.sequences} sequences, ${r.operations.total} operations (${r.restarts.workerCrash} worker crashes, ${r.restarts.workerGraceful} graceful, ${r.restarts.slapd} slapd restarts, ${r.hrEvents} HR events), ${violations} invariant violations, ${minutes(r.durationMs / 1000)}`,
  };
}
