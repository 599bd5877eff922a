/**
 * What the random sequences did, counted while they run, and written as JSON to MODEL_REPORT at
 * the end (test/bench/model.ts turns it into the randomized-runs section of BENCHMARKS.md).
 */
import { writeFile } from 'node:fs/promises';
import type fc from 'fast-check';
import type { Model, Real } from './commands.js';
import { INVARIANTS, type InvariantName, type Violation } from './invariants.js';

export interface ModelReport {
  seed: number;
  path: string | null;
  runsRequested: number;
  maxOps: number;
  /** Survey mode: every sequence ran to the end, nothing was shrunk. */
  collect: boolean;
  /** Sequences run on the stack (shrink replays included), and how many of them fast-check counted as runs. */
  sequences: number;
  fastCheckRuns: number;
  shrinks: number;
  operations: { total: number; skipped: number; byKind: Record<string, number> };
  restarts: { workerCrash: number; workerGraceful: number; slapd: number };
  /** Stop or SIGKILL → new worker process ready, per restart. */
  workerBackMs: { crash: number[]; graceful: number[] };
  hrEvents: number;
  /** Tasks the server timed out (read from the raw histories): what a SIGKILLed worker held. */
  timeouts: { activities: Record<string, number>; workflowTasks: Record<string, number> };
  /** The longest wait for a sequence to go quiet, and what `quiesce` gave up on. */
  quiesceMaxMs: number;
  quiesceGaveUp: number;
  violations: Record<InvariantName, number>;
  sequencesWithViolations: number;
  /** The first violations seen, with the sequence that produced them. */
  examples: Array<{ invariant: InvariantName; detail: string; sequence: string }>;
  unexpectedWorkerExits: number;
  failed: boolean;
  interrupted: boolean;
  durationMs: number;
  /** Seeds that found bugs fixed on the way, from the regression list (seeds do not survive generator changes). */
  foundBugs: Array<{ seeds: number[]; invariant: InvariantName; bug: string; fix: string }>;
}

type Cmd = fc.AsyncCommand<Model, Real>;
/** A command's kind is its name without arguments: `request`, `decide.api`, `crash.worker`, `hr.leaver`, … */
const kindOf = (c: Cmd) => String(c).replace(/\(.*$/s, '');

export class ModelTally {
  private readonly started = Date.now();
  private readonly r: Omit<ModelReport, 'restarts' | 'hrEvents' | 'fastCheckRuns' | 'shrinks' | 'failed' | 'interrupted' | 'durationMs' | 'foundBugs'>;

  constructor(opts: { seed: number; path: string | null; runsRequested: number; maxOps: number; collect: boolean }) {
    this.r = {
      ...opts,
      sequences: 0,
      operations: { total: 0, skipped: 0, byKind: {} },
      workerBackMs: { crash: [], graceful: [] },
      timeouts: { activities: {}, workflowTasks: {} },
      quiesceMaxMs: 0,
      quiesceGaveUp: 0,
      violations: Object.fromEntries(Object.keys(INVARIANTS).map((k) => [k, 0])) as Record<InvariantName, number>,
      sequencesWithViolations: 0,
      examples: [],
      unexpectedWorkerExits: 0,
    };
  }

  /** The same commands, counting each one that runs (and each one skipped for want of a target). */
  counted(cmds: Iterable<Cmd>): Cmd[] {
    const ops = this.r.operations;
    return [...cmds].map((c) => ({
      check: (m: Readonly<Model>) => {
        const ok = c.check(m);
        if (!ok) ops.skipped++;
        return ok;
      },
      run: (m: Model, real: Real) => {
        const kind = kindOf(c);
        ops.total++;
        ops.byKind[kind] = (ops.byKind[kind] ?? 0) + 1;
        return c.run(m, real);
      },
      toString: () => String(c),
    }));
  }

  sequence(real: Real, cmds: Cmd[], quiesceMs: number, violations: Violation[], unexpectedExits: number): void {
    const r = this.r;
    r.sequences++;
    r.unexpectedWorkerExits += unexpectedExits;
    r.quiesceMaxMs = Math.max(r.quiesceMaxMs, quiesceMs);
    if (real.trace.some((t) => t.startsWith('quiesce: gave up'))) r.quiesceGaveUp++;
    for (const o of real.outages) (o.abandonedMs > 0 ? r.workerBackMs.crash : r.workerBackMs.graceful).push(o.up - o.down);
    for (const kind of ['activities', 'workflowTasks'] as const) {
      for (const [name, n] of Object.entries(real.timeouts?.[kind] ?? {})) r.timeouts[kind][name] = (r.timeouts[kind][name] ?? 0) + n;
    }
    if (violations.length > 0) r.sequencesWithViolations++;
    for (const v of violations) {
      r.violations[v.invariant]++;
      if (r.examples.length < 10) r.examples.push({ ...v, sequence: cmds.map(String).join(', ') });
    }
  }

  /** One line for the log: what ran. */
  summary(): string {
    const r = this.r;
    const kinds = Object.entries(r.operations.byKind).sort(([a], [b]) => a.localeCompare(b)).map(([k, n]) => `${k} ${n}`).join(', ');
    const back = [...r.workerBackMs.crash, ...r.workerBackMs.graceful];
    const violations = Object.values(r.violations).reduce((a, b) => a + b, 0);
    const list = (o: Record<string, number>) => Object.entries(o).map(([k, n]) => `${k} ×${n}`).join(', ') || 'none';
    return (
      `${r.sequences} sequences, ${r.operations.total} operations (${kinds}; ${r.operations.skipped} skipped), ` +
      `worker back after ${back.length ? `${Math.min(...back)}–${Math.max(...back)} ms` : '-'}, timed out: activities ${list(r.timeouts.activities)}, workflow tasks ${list(r.timeouts.workflowTasks)}; ` +
      `quiesce max ${r.quiesceMaxMs} ms, ${violations} violation(s), ${Math.round((Date.now() - this.started) / 1000)} s`
    );
  }

  async write(file: string | undefined, end: Pick<ModelReport, 'fastCheckRuns' | 'shrinks' | 'failed' | 'interrupted' | 'foundBugs'>): Promise<void> {
    if (!file) return;
    const n = (kind: string) => this.r.operations.byKind[kind] ?? 0;
    const report: ModelReport = {
      ...this.r,
      restarts: { workerCrash: n('crash.worker'), workerGraceful: n('restart.worker'), slapd: n('restart.slapd') },
      hrEvents: n('hr.joiner') + n('hr.mover') + n('hr.leaver'),
      ...end,
      durationMs: Date.now() - this.started,
    };
    await writeFile(file, `${JSON.stringify(report, null, 2)}\n`);
  }
}
