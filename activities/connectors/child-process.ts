import { spawn, type ChildProcess } from 'node:child_process';
import { readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';

/** Every server process we started (slapd, sshd in tests, …); killed when this process exits. */
const liveChildren = new Map<ChildProcess, (() => number | undefined) | undefined>();
let exitHookInstalled = false;

export interface SupervisedChild {
  /** Resolves once the process has exited (or failed to spawn). */
  exited: Promise<void>;
  /** `code=… signal=…` or the spawn error, once it has ended. */
  exitInfo(): string | undefined;
  /** SIGTERM, SIGKILL after `graceMs`, and resolves once it has exited (at once if it already has). */
  terminate(graceMs: number): Promise<void>;
}

/**
 * Registers a long-running child so that a test run or a demo that dies early does not leave it
 * listening, and reports how it ended.
 */
export function superviseChild(proc: ChildProcess, serverPid?: () => number | undefined): SupervisedChild {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const [child, pidOf] of liveChildren) {
        try {
          // A watched server's pid is signalled directly: killing its watchdog would orphan it.
          const pid = pidOf?.();
          if (pid !== undefined) process.kill(pid, 'SIGKILL');
          child.kill('SIGKILL');
        } catch {
          // already gone
        }
      }
    });
  }
  liveChildren.set(proc, serverPid);
  let info: string | undefined;
  const exited = new Promise<void>((resolve) => {
    proc.once('exit', (code, signal) => {
      info = `code=${code ?? 'null'} signal=${signal ?? 'null'}`;
      liveChildren.delete(proc);
      resolve();
    });
    proc.once('error', (err) => {
      info = `spawn error: ${err.message}`;
      liveChildren.delete(proc);
      resolve();
    });
  });
  const running = () => proc.exitCode === null && proc.signalCode === null;
  const terminate = async (graceMs: number) => {
    if (running()) {
      proc.kill('SIGTERM');
      const timer = setTimeout(() => running() && proc.kill('SIGKILL'), graceMs);
      try {
        await exited;
      } finally {
        clearTimeout(timer);
      }
    }
    await exited;
  };
  return { exited, exitInfo: () => info, terminate };
}

/** Whether something accepts TCP connections on 127.0.0.1:port (a started server is listening). */
/**
 * Splits a child's output into lines for a server's bounded in-memory log (`onLine`), and tees
 * the raw text to its log file (`tee()`, read per chunk: the file may be opened after this).
 */
export function readLines(stream: NodeJS.ReadableStream | null, onLine: (line: string) => void, tee?: () => { write(chunk: string): unknown } | undefined): void {
  if (!stream) return;
  let partial = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    tee?.()?.write(chunk);
    partial += chunk;
    const parts = partial.split('\n');
    partial = parts.pop() ?? '';
    for (const p of parts) onLine(p);
  });
  stream.on('end', () => {
    if (partial) onLine(partial);
    partial = '';
  });
}

export function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const sock = net.connect({ port, host: '127.0.0.1' });
    const done = (ok: boolean) => {
      sock.removeAllListeners();
      sock.on('error', () => undefined);
      sock.destroy();
      resolve(ok);
    };
    sock.setTimeout(1000, () => done(false));
    sock.once('connect', () => done(true));
    sock.once('error', () => done(false));
  });
}

/**
 * The watchdog every embedded server runs under (`sh -c`): Node has no parent-death signal, so a
 * shell sits between us and the server and holds the read end of a pipe whose only write end is
 * ours. When our process ends in any way (SIGKILL, power loss of the terminal, a crash), the
 * kernel closes that write end, `cat` sees EOF and the server gets SIGTERM. A clean stop closes
 * the same pipe, so there is one way a server is asked to end. The server's own pid is written to
 * the pid file for the next start to check (docs/architecture.md#3-runtime-pieces). The watchdog
 * exits with the server, so while it lives the server's pid cannot be reused.
 */
const WATCHDOG = [
  'pidfile=$1; shift',
  'exec 3<&0',
  '"$@" </dev/null 3<&- &',
  'c=$!',
  'printf "%s\\n" "$c" > "$pidfile"',
  // Only while the watchdog lives: then "$c" is still its child, never a reused pid.
  '{ cat <&3 >/dev/null 2>&1; kill -0 "$$" 2>/dev/null && kill -TERM "$c" 2>/dev/null; } &',
  'exec 3<&-',
  'wait "$c"; rc=$?',
  'exit $rc',
].join('\n');
/** argv[1] of the watchdog shell: how an orphan scan tells our watchdog from any other shell. */
export const WATCHDOG_NAME = 'accessloop-watchdog';

export interface WatchedChild extends SupervisedChild {
  /** The server's own pid (not the watchdog's), once the watchdog has written it. */
  serverPid(): Promise<number>;
  /** The server's pid once known (undefined before the watchdog wrote it). */
  pid(): number | undefined;
  /** The watchdog shell (its stdout/stderr are the server's). */
  proc: ChildProcess;
}

/**
 * Spawns `binary args` under the watchdog. `stdout`/`stderr` are passed through to the server
 * (a log file descriptor or 'pipe'). `terminate()` closes the pipe (the watchdog sends SIGTERM)
 * and SIGKILLs the server after the grace period.
 */
export function spawnWatched(binary: string, args: string[], opts: { pidFile: string; stdout: number | 'pipe' | 'ignore'; stderr: number | 'pipe' | 'ignore'; env?: NodeJS.ProcessEnv }): WatchedChild {
  const proc = spawn('/bin/sh', ['-c', WATCHDOG, WATCHDOG_NAME, opts.pidFile, binary, ...args], {
    stdio: ['pipe', opts.stdout, opts.stderr],
    ...(opts.env ? { env: opts.env } : {}),
  });
  // The pipe is the lifeline: nothing is written to it, and an EPIPE after the watchdog ended is expected.
  proc.stdin!.on('error', () => undefined);
  let pid: number | undefined;
  const supervised = superviseChild(proc, () => pid);
  // A server that ended on its own: release the watchdog's `cat`.
  void supervised.exited.then(() => proc.stdin!.destroy());
  const serverPid = async (): Promise<number> => {
    for (let i = 0; pid === undefined; i++) {
      if (supervised.exitInfo() !== undefined) throw new Error(`${path.basename(binary)} exited at once (${supervised.exitInfo()})`);
      const text = await readFile(opts.pidFile, 'utf8').catch(() => '');
      const n = Number.parseInt(text, 10);
      // The watchdog writes the file right after forking; an older file names another process.
      if (n > 0 && (await parentPid(n)) === proc.pid) pid = n;
      else await new Promise((r) => setTimeout(r, Math.min(5 * (i + 1), 50)));
    }
    return pid;
  };
  const running = () => proc.exitCode === null && proc.signalCode === null;
  const terminate = async (graceMs: number) => {
    if (running()) {
      proc.stdin!.end();
      const timer = setTimeout(() => {
        // The watchdog is alive, so the pid is still its child's: safe to signal.
        if (running() && pid !== undefined) killQuietly(pid, 'SIGKILL');
      }, graceMs);
      try {
        await supervised.exited;
      } finally {
        clearTimeout(timer);
      }
    }
    await supervised.exited;
    await rm(opts.pidFile, { force: true });
  };
  return { ...supervised, terminate, serverPid, pid: () => pid, proc };
}

function killQuietly(pid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(pid, signal);
  } catch {
    // already gone
  }
}

/** argv of a live process from /proc (empty when it does not exist or is not readable). */
export async function processArgv(pid: number): Promise<string[]> {
  const raw = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return raw.split('\0').filter((x, i, all) => x !== '' || i < all.length - 1);
}

async function parentPid(pid: number): Promise<number | undefined> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  // Field 4 of /proc/<pid>/stat, after the parenthesised command name (which may hold spaces).
  const m = stat ? /\)\s+\S+\s+(\d+)/.exec(stat) : null;
  return m ? Number(m[1]) : undefined;
}

export interface EmbeddedServerProcess {
  pid: number;
  /** Whether a live run still owns it: its parent is our watchdog and the watchdog's parent is alive and not init. */
  owned: boolean;
}

/**
 * The processes that run the server a data directory belongs to: the pid file's process when its
 * command line still matches (a pid reused by something else is never touched), and any other
 * process whose command line matches (servers from runs before pid files existed). `matches`
 * decides on the full argv, so a server of another data dir is not ours.
 */
export async function findServerProcesses(pidFile: string, matches: (argv: string[]) => boolean): Promise<EmbeddedServerProcess[]> {
  const candidates = new Set<number>();
  const fromFile = Number.parseInt(await readFile(pidFile, 'utf8').catch(() => ''), 10);
  if (fromFile > 0) candidates.add(fromFile);
  for (const entry of await readdir('/proc').catch(() => [] as string[])) if (/^\d+$/.test(entry)) candidates.add(Number(entry));
  const found: EmbeddedServerProcess[] = [];
  for (const pid of candidates) {
    if (pid === process.pid) continue;
    const argv = await processArgv(pid);
    // The watchdog shells carry the server's argv too; they end with it.
    if (argv.length === 0 || argv.includes(WATCHDOG_NAME) || !matches(argv)) continue;
    const parent = await parentPid(pid);
    const parentArgv = parent ? await processArgv(parent) : [];
    const grandparent = parent ? await parentPid(parent) : undefined;
    const owned = parentArgv.includes(WATCHDOG_NAME) && grandparent !== undefined && grandparent > 1 && (await processArgv(grandparent)).length > 0;
    found.push({ pid, owned });
  }
  if (found.length === 0) await rm(pidFile, { force: true });
  return found;
}

/**
 * Ends a server a previous run left behind (SIGTERM, SIGKILL after `graceMs`). Refuses when a
 * live run still owns it: two runs on one data directory would share (and corrupt) its state.
 */
export async function endOrphanedServers(what: string, dir: string, pidFile: string, matches: (argv: string[]) => boolean, say: (m: string) => void, graceMs = 10_000): Promise<void> {
  const found = await findServerProcesses(pidFile, matches);
  const owned = found.filter((p) => p.owned);
  if (owned.length > 0) {
    throw new Error(`${what} for ${dir} is already running under another live accessloop process (pid ${owned.map((p) => p.pid).join(', ')}): stop that one first, or use another ACCESSLOOP_DATA_DIR`);
  }
  for (const { pid } of found) {
    say(`found ${what} (pid ${pid}) left running by a previous run on ${dir}; ending it before starting a new one`);
    killQuietly(pid, 'SIGTERM');
    const until = Date.now() + graceMs;
    while ((await processArgv(pid)).length > 0 && !(await isZombie(pid))) {
      if (Date.now() > until) {
        killQuietly(pid, 'SIGKILL');
        break;
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  await rm(pidFile, { force: true });
}

async function isZombie(pid: number): Promise<boolean> {
  const stat = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => undefined);
  return stat === undefined || /\)\s+Z\s/.test(stat);
}
