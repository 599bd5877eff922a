import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminUrl } from '../helpers/db.js';

/**
 * The postinstall guard on postgres.js's deferred write (temporal/patch-deps.mjs), proven against
 * the real PostgreSQL: a session terminated while a transaction's query runs makes the driver send
 * ROLLBACK to a connection whose socket it has already dropped. Unpatched, that kills the process
 * from a setImmediate; patched, the transaction fails with CONNECTION_CLOSED and the pool recovers.
 * test/helpers/pg-closed-socket-repro.mjs has the sequence; it runs in a child process because
 * the unpatched driver ends the process it runs in.
 */

const repo = fileURLToPath(new URL('../../', import.meta.url));
const repro = path.join(repo, 'test/helpers/pg-closed-socket-repro.mjs');

interface PatchDeps {
  ORIGINAL: string;
  PATCHED: string;
  GUARDED_FILES: string[];
  postgresRoot(): string | null;
  guardsNextWrite(text: string): boolean;
}
// A computed specifier: the script is plain JavaScript and has no declarations to type-check.
const patchDeps = (await import(pathToFileURL(path.join(repo, 'temporal/patch-deps.mjs')).href)) as PatchDeps;

/** The entry point that loads each guarded file: the ESM build and the CommonJS one. */
const entryOf = (guardedFile: string) => guardedFile.replace(/connection\.js$/, 'index.js');

interface Attempt {
  attempt: number;
  terminated: boolean;
  runningError: string | null;
  transactionError: string | null;
  beforeRecovery: string[];
  fresh: number | null;
  events: string[];
}

async function runRepro(entry: string, attempts: number) {
  const child = spawn(process.execPath, [repro, entry, adminUrl, String(attempts)], {
    stdio: ['ignore', 'pipe', 'pipe'],
    // A regression that hangs instead of crashing (a write that is dropped, never settled) must
    // fail this test, not stall it.
    timeout: 15_000,
  });
  let stdout = '';
  let stderr = '';
  child.stdout.on('data', (chunk: Buffer) => (stdout += chunk.toString()));
  child.stderr.on('data', (chunk: Buffer) => (stderr += chunk.toString()));
  const [status, signal] = (await once(child, 'close')) as [number | null, NodeJS.Signals | null];
  const attemptsRun = stdout
    .split('\n')
    .filter((line) => line.trim() !== '')
    .map((line) => JSON.parse(line) as Attempt);
  return { status, signal, stderr, attemptsRun };
}

let root: string;
let unpatchedRoot: string;

beforeAll(async () => {
  const installed = patchDeps.postgresRoot();
  if (installed === null) throw new Error('postgres is not installed');
  root = installed;
  // An unpatched copy of the installed driver: the same files with the original function back.
  const scratch = await mkdtemp(path.join(os.tmpdir(), 'accessloop-pg-unpatched-'));
  unpatchedRoot = path.join(scratch, 'postgres');
  await cp(root, unpatchedRoot, { recursive: true });
  for (const rel of patchDeps.GUARDED_FILES) {
    const file = path.join(unpatchedRoot, rel);
    const text = await readFile(file, 'utf8');
    await writeFile(file, text.replace(patchDeps.PATCHED, patchDeps.ORIGINAL));
  }
});

afterAll(async () => {
  if (unpatchedRoot) await rm(path.dirname(unpatchedRoot), { recursive: true, force: true });
});

describe('postgres.js write on a closed socket', () => {
  it('the installed driver carries the guard in both builds (a failed postinstall shows here)', async () => {
    for (const rel of patchDeps.GUARDED_FILES) {
      const text = await readFile(path.join(root, rel), 'utf8');
      expect(text, rel).toContain(patchDeps.PATCHED);
      expect(text, rel).not.toContain(patchDeps.ORIGINAL);
      // The upgrade check looks inside nextWrite: connect()'s own `if (!socket)` must not pass for a guard.
      expect(patchDeps.guardsNextWrite(text), rel).toBe(true);
      expect(patchDeps.guardsNextWrite(text.replace(patchDeps.PATCHED, patchDeps.ORIGINAL)), rel).toBe(false);
      expect(text.replace(patchDeps.PATCHED, patchDeps.ORIGINAL)).toContain('if (!socket');
    }
  });

  it.each(patchDeps.GUARDED_FILES)('unpatched (%s): the deferred ROLLBACK kills the process with an uncaught TypeError', async (rel) => {
    const copy = await readFile(path.join(unpatchedRoot, rel), 'utf8');
    expect(copy).toContain(patchDeps.ORIGINAL);

    const run = await runRepro(path.join(unpatchedRoot, entryOf(rel)), 1);

    expect(run.signal).toBeNull();
    expect(run.status).toBe(1);
    expect(run.attemptsRun).toEqual([]);
    expect(run.stderr).toContain("TypeError: Cannot read properties of null (reading 'write')");
    // From the copy's nextWrite, run by the immediate queue: no caller could have caught it.
    const frame = run.stderr.split('\n').find((line) => line.trimStart().startsWith('at Immediate.nextWrite ('));
    expect(frame).toContain(`${path.join(unpatchedRoot, rel)}:`);
    expect(run.stderr).toContain('at process.processImmediate');
  });

  it.each(patchDeps.GUARDED_FILES)('patched (%s): the process survives, the transaction fails with CONNECTION_CLOSED, the pool recovers', async (rel) => {
    const attempts = 5;
    const run = await runRepro(path.join(root, entryOf(rel)), attempts);

    expect(run.stderr).toBe('');
    expect(run.signal).toBeNull();
    expect(run.status).toBe(0);
    expect(run.attemptsRun.map((a) => a.attempt)).toEqual(Array.from({ length: attempts }, (_, i) => i + 1));
    for (const a of run.attemptsRun) {
      expect(a.terminated).toBe(true);
      expect(a.runningError).toBe('CONNECTION_CLOSED');
      expect(a.transactionError).toBe('CONNECTION_CLOSED');
      // The write that crashes the unpatched driver happened: ROLLBACK, on the closed connection.
      expect(a.events.slice(a.events.indexOf('<closed>'), -1)).toEqual(['<closed>', 'rollback']);
      // At most the driver's stale 57P01 from the killed session (see the repro), then success.
      expect(a.beforeRecovery.length).toBeLessThanOrEqual(1);
      for (const code of a.beforeRecovery) expect(code).toBe('57P01');
      expect(a.fresh).toBe(1);
      expect(a.events.at(-1)).toBe('select 1 as fresh');
    }
  });
});
