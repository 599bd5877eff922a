/**
 * CPU time per process group, read from /proc (Linux): what each server on the shared cores
 * spent during a phase. A profile to read next to a latency, never a pass/fail figure.
 */
import { readFile, readdir } from 'node:fs/promises';
import os from 'node:os';

const TICK_MS = 10; // USER_HZ is 100 on Linux

/** Process groups by command name; the bench's own process (API, worker, client) by pid. */
export type CpuGroups = Record<string, (comm: string, pid: number) => boolean>;

export const defaultGroups = (selfPid = process.pid): CpuGroups => ({
  'bench process (API + worker + client)': (_c, pid) => pid === selfPid,
  'Temporal server': (c) => c === 'temporal' || c === 'server',
  Postgres: (c) => c === 'postgres',
  slapd: (c) => c === 'slapd',
});

async function ticks(groups: CpuGroups): Promise<Record<string, number>> {
  const out: Record<string, number> = Object.fromEntries(Object.keys(groups).map((k) => [k, 0]));
  for (const entry of await readdir('/proc')) {
    const pid = Number(entry);
    if (!Number.isInteger(pid)) continue;
    let stat: string;
    try {
      stat = await readFile(`/proc/${pid}/stat`, 'utf8');
    } catch {
      continue; // exited meanwhile
    }
    // comm is in parentheses and may hold spaces; the fields after it are fixed.
    const close = stat.lastIndexOf(')');
    const comm = stat.slice(stat.indexOf('(') + 1, close);
    const fields = stat.slice(close + 2).split(' ');
    const used = Number(fields[11]) + Number(fields[12]); // utime, stime
    for (const [name, match] of Object.entries(groups)) if (match(comm, pid)) out[name]! += used;
  }
  return out;
}

/** Starts a sample; `stop()` returns CPU ms per group and the wall time between. */
export async function cpuSample(groups: CpuGroups = defaultGroups()) {
  const before = await ticks(groups);
  const t0 = performance.now();
  return {
    async stop() {
      const after = await ticks(groups);
      const wallMs = performance.now() - t0;
      const cpuMs = Object.fromEntries(Object.keys(groups).map((k) => [k, (after[k]! - before[k]!) * TICK_MS]));
      return { wallMs, cpuMs, cores: os.cpus().length };
    },
  };
}

/** A markdown table: CPU ms per group, and its share of the machine's capacity over the phase. */
export function cpuTable(s: { wallMs: number; cpuMs: Record<string, number>; cores: number }, perItem?: { n: number; unit: string }): string {
  const cap = s.wallMs * s.cores;
  const rows = Object.entries(s.cpuMs)
    .sort((a, b) => b[1] - a[1])
    .map(([k, ms]) => `| ${k} | ${Math.round(ms)} ms | ${((100 * ms) / cap).toFixed(0)} % |${perItem ? ` ${(ms / perItem.n).toFixed(1)} ms |` : ''}`);
  const total = Object.values(s.cpuMs).reduce((a, b) => a + b, 0);
  return [
    `| process | CPU | share of ${s.cores} cores |${perItem ? ` per ${perItem.unit} |` : ''}`,
    `|---|---:|---:|${perItem ? '---:|' : ''}`,
    ...rows,
    `| all of the above | ${Math.round(total)} ms | ${((100 * total) / cap).toFixed(0)} % |${perItem ? ` ${(total / perItem.n).toFixed(1)} ms |` : ''}`,
  ].join('\n');
}

export type CpuSpent = Awaited<ReturnType<Awaited<ReturnType<typeof cpuSample>>['stop']>>;

/** Two samples' sum: blocks of one side measured apart. */
export function addCpu(a: CpuSpent | undefined, b: CpuSpent): CpuSpent {
  if (!a) return b;
  return { wallMs: a.wallMs + b.wallMs, cores: b.cores, cpuMs: Object.fromEntries(Object.keys(b.cpuMs).map((k) => [k, (a.cpuMs[k] ?? 0) + b.cpuMs[k]!])) };
}
