/**
 * A private PostgreSQL cluster (initdb in a temp dir) on a free 127.0.0.1 port, for tests that
 * need real password authentication: the machine's shared cluster trusts every local login, so
 * a wrong or rotated password would still get in there.
 *
 * TCP logins use scram-sha-256; the unix socket (in the data dir, never the system's) trusts
 * the superuser so the fixture can always clean up. `log_statement = all` goes to the captured
 * log, so tests can prove a secret never reached the server in clear.
 * PostgreSQL refuses to run as root: when we are root, initdb and postgres run as the
 * `postgres` system user (spawn uid/gid).
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chmod, chown, mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../temporal/dev-server.js';
import { loginUrl, psqlRaw } from './postgres.js';

export interface PgCluster {
  port: number;
  /** Superuser `postgres` with its password over TCP (scram-sha-256). */
  adminPassword: string;
  /** postgres://user:password@127.0.0.1:port/postgres */
  url(user: string, password?: string, database?: string): string;
  /** Everything the server logged so far (statements included). */
  log(): string;
  stop(): Promise<void>;
}

function binDir(): string {
  try {
    return execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('PostgreSQL server binaries not found (pg_config): apt-get install -y postgresql');
  }
}

function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const uid = Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim());
  const gid = Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim());
  return { uid, gid };
}

export async function startPgCluster(adminPassword: string): Promise<PgCluster> {
  const bin = binDir();
  const user = runAs();
  const root = await mkdtemp(path.join(os.tmpdir(), 'accessloop-pg-'));
  const dataDir = path.join(root, 'data');
  const pwFile = path.join(root, 'pw');
  await writeFile(pwFile, `${adminPassword}\n`, { mode: 0o600 });
  if (user) {
    await chown(root, user.uid, user.gid);
    await chown(pwFile, user.uid, user.gid);
  }
  await chmod(root, 0o700);
  execFileSync(
    path.join(bin, 'initdb'),
    ['-D', dataDir, '-U', 'postgres', '--auth-local=trust', '--auth-host=scram-sha-256', `--pwfile=${pwFile}`, '-E', 'UTF8', '--no-instructions'],
    { stdio: 'pipe', ...(user ?? {}) },
  );
  await rm(pwFile);
  const port = await freePort();
  let logText = '';
  const child: ChildProcess = spawn(
    path.join(bin, 'postgres'),
    [
      '-D', dataDir,
      '-p', String(port),
      '-c', 'listen_addresses=127.0.0.1',
      '-c', `unix_socket_directories=${root}`,
      '-c', 'password_encryption=scram-sha-256',
      '-c', 'log_statement=all',
      '-c', 'logging_collector=off',
      '-c', 'fsync=off',
      '-c', 'max_connections=40',
    ],
    { stdio: ['ignore', 'pipe', 'pipe'], ...(user ?? {}) },
  );
  child.stdout!.setEncoding('utf8').on('data', (d: string) => (logText += d));
  child.stderr!.setEncoding('utf8').on('data', (d: string) => (logText += d));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const url = (u: string, password?: string, database = 'postgres') => loginUrl(`postgres://127.0.0.1:${port}/postgres`, u, database, password);

  const deadline = Date.now() + 30_000;
  for (;;) {
    if (child.exitCode !== null) throw new Error(`private PostgreSQL exited during start:\n${logText}`);
    const r = await psqlRaw(url('postgres', adminPassword), 'select 1;\n', {}, 5000);
    if (r.code === 0) break;
    if (Date.now() > deadline) {
      child.kill('SIGKILL');
      throw new Error(`private PostgreSQL did not accept logins within 30 s: ${r.stderr}\n${logText}`);
    }
    await new Promise((res) => setTimeout(res, 100));
  }

  return {
    port,
    adminPassword,
    url,
    log: () => logText,
    async stop() {
      if (child.exitCode === null) {
        child.kill('SIGINT'); // fast shutdown
        const killer = setTimeout(() => child.kill('SIGKILL'), 10_000);
        await exited;
        clearTimeout(killer);
      }
      await rm(root, { recursive: true, force: true });
    },
  };
}
