import { spawn, execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import { access, mkdir, open } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { endOrphanedServers, spawnWatched, type WatchedChild } from '../activities/connectors/child-process.js';
import { allSearchAttributeKeys } from '../workflows/search-attributes.js';

const execFileAsync = promisify(execFile);

/** The last `go install`-able CLI tag: later tags carry a replace directive go install refuses. */
export const TEMPORAL_CLI_MODULE = 'github.com/temporalio/cli/cmd/temporal@v1.5.1';

// One level up from temporal/dev-server.ts, two from the compiled dist/temporal/dev-server.js.
const projectRoot = fileURLToPath(new URL(import.meta.url.endsWith('.js') ? '../..' : '..', import.meta.url));
export const projectCacheBin = path.join(projectRoot, '.cache', 'bin');

type Say = (msg: string) => void;

async function isExecutable(file: string): Promise<boolean> {
  try {
    await access(file, fsConstants.X_OK);
    return true;
  } catch {
    return false;
  }
}

async function onPath(name: string): Promise<string | undefined> {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (dir && (await isExecutable(path.join(dir, name)))) return path.join(dir, name);
  }
  return undefined;
}

/**
 * Finds the `temporal` CLI (docs/architecture.md#3-runtime-pieces): TEMPORAL_CLI_PATH → PATH → project cache →
 * `go install` into the project cache when Go exists. The SDK's own server download needs
 * the internet, which this deployment target does not have, so we fail with instructions.
 */
export async function resolveTemporalBinary(opts: { cliPath?: string | undefined; say?: Say } = {}): Promise<string> {
  const say = opts.say ?? (() => {});
  if (opts.cliPath) {
    if (await isExecutable(opts.cliPath)) return opts.cliPath;
    throw new Error(`TEMPORAL_CLI_PATH=${opts.cliPath} is not an executable file`);
  }
  const found = await onPath('temporal');
  if (found) return found;
  const cached = path.join(projectCacheBin, 'temporal');
  if (await isExecutable(cached)) return cached;

  const go = await onPath('go');
  if (!go) {
    throw new Error(
      'the Temporal CLI was not found (TEMPORAL_CLI_PATH, PATH, .cache/bin) and Go is not installed to build it. ' +
        `Install Go and run: go install ${TEMPORAL_CLI_MODULE}, or set TEMPORAL_CLI_PATH, or point TEMPORAL_ADDRESS at a running server.`,
    );
  }
  // A binary a previous `go install` left in GOBIN/GOPATH is as good as a fresh build.
  try {
    const { stdout } = await execFileAsync(go, ['env', 'GOBIN', 'GOPATH']);
    const [gobin, gopath] = stdout.split('\n');
    for (const dir of [gobin, gopath ? path.join(gopath, 'bin') : undefined]) {
      if (dir && (await isExecutable(path.join(dir, 'temporal')))) return path.join(dir, 'temporal');
    }
  } catch {
    /* fall through to building */
  }
  say(`building the Temporal CLI with: go install ${TEMPORAL_CLI_MODULE} (first run only; takes a few minutes)…`);
  await mkdir(projectCacheBin, { recursive: true });
  const started = Date.now();
  await new Promise<void>((resolve, reject) => {
    const child = spawn(go, ['install', TEMPORAL_CLI_MODULE], {
      env: { ...process.env, GOBIN: projectCacheBin },
      stdio: ['ignore', 'inherit', 'inherit'],
    });
    child.on('error', reject);
    child.on('exit', (code) => (code === 0 ? resolve() : reject(new Error(`go install ${TEMPORAL_CLI_MODULE} exited with ${code}`))));
  });
  say(`built ${cached} in ${Math.round((Date.now() - started) / 1000)} s`);
  return cached;
}

/** A port nothing listens on right now (bound to port 0, then released). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise<boolean>((resolve) => {
    const s = net.connect({ host: '127.0.0.1', port }, () => {
      s.end();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

async function waitForPort(port: number, deadlineMs: number, child: WatchedChild, logFile: string): Promise<void> {
  const until = Date.now() + deadlineMs;
  while (Date.now() < until) {
    if (child.exitInfo() !== undefined) throw new Error(`temporal dev server exited (${child.exitInfo()}); see ${logFile}`);
    if (await canConnect(port)) return;
    await new Promise((r) => setTimeout(r, 200));
  }
  throw new Error(`temporal dev server did not listen on 127.0.0.1:${port} within ${deadlineMs} ms; see ${logFile}`);
}

export interface DevServer {
  address: string;
  port: number;
  uiUrl: string | undefined;
  stop(): Promise<void>;
}

export interface DevServerOptions {
  binary: string;
  /**
   * SQLite file for durable state; omitted → in-memory (tests). With a file, `temporal.pid` beside
   * it names the server, and a server a killed run left on that file is ended before starting.
   */
  dbFile?: string;
  port?: number;
  /** undefined → headless (no Web UI). */
  uiPort?: number;
  logDir: string;
  namespace?: string;
  /** Our codec endpoint (`<API>/codec`): the Web UI decrypts payloads through it in the browser. */
  codecEndpoint?: string;
  /** Progress lines (an orphan found and ended). */
  say?: Say;
}

/**
 * Starts `temporal server start-dev` on 127.0.0.1 with our search attributes registered, under
 * the watchdog (activities/connectors/child-process.ts), so it ends when this process does.
 */
export async function startDevServer(opts: DevServerOptions): Promise<DevServer> {
  const say = opts.say ?? (() => {});
  const pidFile = opts.dbFile ? path.join(path.dirname(opts.dbFile), 'temporal.pid') : undefined;
  if (opts.dbFile && pidFile) {
    const dbFile = path.resolve(opts.dbFile);
    // Never two servers on one SQLite file: a previous run killed hard may have left one behind.
    await endOrphanedServers('a Temporal dev server', dbFile, pidFile, (argv) => argv.includes('start-dev') && argv[argv.indexOf('--db-filename') + 1] === dbFile, say);
  }
  const port = opts.port || (await freePort());
  // A fixed port already taken is someone else's server: using it would run our workflows there.
  if (opts.port && (await canConnect(port))) {
    throw new Error(`port ${port} (TEMPORAL_DEV_PORT) on 127.0.0.1 is already in use by another process, not by a dev server of this data dir: stop it, set TEMPORAL_DEV_PORT to a free port, or point TEMPORAL_ADDRESS at that server`);
  }
  await mkdir(opts.logDir, { recursive: true });
  const logFile = path.join(opts.logDir, `temporal-${port}.log`);
  const log = await open(logFile, 'a');
  const args = [
    'server',
    'start-dev',
    '--ip',
    '127.0.0.1',
    '--port',
    String(port),
    '--http-port',
    String(await freePort()),
    '--metrics-port',
    String(await freePort()),
    '--log-level',
    'warn',
  ];
  if (opts.namespace && opts.namespace !== 'default') args.push('--namespace', opts.namespace);
  if (opts.dbFile) {
    await mkdir(path.dirname(opts.dbFile), { recursive: true });
    args.push('--db-filename', path.resolve(opts.dbFile));
  }
  if (opts.uiPort === undefined) args.push('--headless');
  else args.push('--ui-ip', '127.0.0.1', '--ui-port', String(opts.uiPort));
  if (opts.uiPort !== undefined && opts.codecEndpoint) args.push('--ui-codec-endpoint', opts.codecEndpoint);
  for (const k of allSearchAttributeKeys) args.push('--search-attribute', `${k.name}=${saTypeFlag(k.type)}`);

  const child = spawnWatched(opts.binary, args, { pidFile: pidFile ?? path.join(opts.logDir, `temporal-${port}.pid`), stdout: log.fd, stderr: log.fd });
  try {
    await child.serverPid();
    await waitForPort(port, 60_000, child, logFile);
  } catch (e) {
    await child.terminate(0);
    await log.close();
    throw e;
  }
  return {
    address: `127.0.0.1:${port}`,
    port,
    uiUrl: opts.uiPort === undefined ? undefined : `http://localhost:${opts.uiPort}`,
    async stop() {
      await child.terminate(10_000);
      await log.close().catch(() => undefined);
    },
  };
}

function saTypeFlag(t: string): string {
  return { KEYWORD: 'Keyword', DATETIME: 'Datetime', TEXT: 'Text', INT: 'Int', DOUBLE: 'Double', BOOL: 'Bool', KEYWORD_LIST: 'KeywordList' }[t] ?? t;
}
