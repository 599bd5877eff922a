/**
 * A private PostgreSQL cluster that can be stopped and started again on the same port and data
 * directory, for fault drills: the machine's shared server (other test files use it) must never
 * go down. Trust auth (the drill is about outages, not logins; pg-cluster.ts covers passwords).
 * PostgreSQL refuses to run as root: when we are root, initdb and postgres run as `postgres`.
 */
import { execFileSync, spawn, type ChildProcess } from 'node:child_process';
import { chown, mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { freePort } from '../../temporal/dev-server.js';
import { psqlRaw } from './postgres.js';

export interface RestartablePg {
  port: number;
  /** postgres://postgres@127.0.0.1:port/<database> */
  url(database?: string): string;
  /** Fast shutdown (SIGINT), waiting for the postmaster to exit; the data stays. */
  stop(): Promise<void>;
  /** Starts again on the same port and data; resolves once it accepts logins. */
  start(): Promise<void>;
  /** Stops and deletes the data. */
  destroy(): Promise<void>;
}

function runAs(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  return {
    uid: Number(execFileSync('id', ['-u', 'postgres'], { encoding: 'utf8' }).trim()),
    gid: Number(execFileSync('id', ['-g', 'postgres'], { encoding: 'utf8' }).trim()),
  };
}

export async function startRestartablePg(): Promise<RestartablePg> {
  const bin = execFileSync('pg_config', ['--bindir'], { encoding: 'utf8' }).trim();
  const user = runAs();
  const root = await mkdtemp(path.join(os.tmpdir(), 'accessloop-pgdrill-'));
  if (user) await chown(root, user.uid, user.gid);
  const dataDir = path.join(root, 'data');
  execFileSync(path.join(bin, 'initdb'), ['-D', dataDir, '-U', 'postgres', '--auth=trust', '-E', 'UTF8', '--no-instructions'], { stdio: 'pipe', ...(user ?? {}) });
  const port = await freePort();
  const url = (database = 'postgres') => `postgres://postgres@127.0.0.1:${port}/${database}`;
  let child: ChildProcess | undefined;
  let exited: Promise<void> = Promise.resolve();
  let logText = '';

  const start = async () => {
    if (child && child.exitCode === null) return;
    const c = spawn(
      path.join(bin, 'postgres'),
      ['-D', dataDir, '-p', String(port), '-c', 'listen_addresses=127.0.0.1', '-c', `unix_socket_directories=${root}`, '-c', 'fsync=off', '-c', 'max_connections=60'],
      { stdio: ['ignore', 'pipe', 'pipe'], ...(user ?? {}) },
    );
    child = c;
    c.stdout!.setEncoding('utf8').on('data', (d: string) => (logText += d));
    c.stderr!.setEncoding('utf8').on('data', (d: string) => (logText += d));
    exited = new Promise<void>((resolve) => c.once('exit', () => resolve()));
    const deadline = Date.now() + 30_000;
    for (;;) {
      if (c.exitCode !== null) throw new Error(`drill PostgreSQL exited during start:\n${logText.slice(-2000)}`);
      if ((await psqlRaw(url(), 'select 1;\n', {}, 5000)).code === 0) return;
      if (Date.now() > deadline) throw new Error(`drill PostgreSQL did not accept logins within 30 s:\n${logText.slice(-2000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  };
  const stop = async () => {
    if (!child || child.exitCode !== null) return;
    const c = child;
    c.kill('SIGINT');
    const killer = setTimeout(() => c.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(killer);
  };
  await start();
  return {
    port,
    url,
    stop,
    start,
    async destroy() {
      await stop();
      await rm(root, { recursive: true, force: true });
    },
  };
}
