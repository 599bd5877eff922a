/**
 * The embedded stack after a hard crash: `npm start` (tsx api/server.ts, its own dev server,
 * slapd and worker) is SIGKILLed mid-lease and started again on the same data dir. Checked in
 * /proc, not through our code: the killed run's servers end with it (the watchdog), a server left
 * by an older run is found and ended, there is exactly one dev server and one slapd per data dir,
 * and the lease still ends with its removal verified (API status and ldapsearch).
 */
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { demoGroupDn, DEMO_SUFFIX } from '../../activities/connectors/ldap/seed.js';
import { findExecutable } from '../../activities/connectors/ldap/slapd.js';
import { freePort, startDevServer } from '../../temporal/dev-server.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';
import { ldapsearchMembers } from '../helpers/ldap.js';
import { waitFor } from '../helpers/stack.js';

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
let dataDir: string;
let tdb: TestDatabase;
let env: NodeJS.ProcessEnv;
const running = new Set<ChildProcess>();

interface Started {
  child: ChildProcess;
  output: () => string;
  api: string;
  ldapUrl: string;
}

/** `npm start` as a child process; resolves once it prints that it is running. */
function start(): Promise<Started> {
  const child = spawn(process.execPath, ['--import', 'tsx', 'api/server.ts'], { cwd: root, env, stdio: ['ignore', 'pipe', 'pipe'] });
  running.add(child);
  child.on('exit', () => running.delete(child));
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`npm start did not come up: ${out}`)), 90_000);
    const onData = (d: Buffer) => {
      out += d;
      const api = /API\s+(http:\/\/\S+)/.exec(out)?.[1];
      const ldapUrl = /demo LDAP\s+(ldap:\/\/\S+)/.exec(out)?.[1];
      if (out.includes('accessloop is running') && api && ldapUrl && out.includes('demo ids')) {
        clearTimeout(t);
        resolve({ child, output: () => out, api, ldapUrl });
      }
    };
    child.stdout!.on('data', onData);
    child.stderr!.on('data', (d) => (out += d));
    child.on('exit', (code) => reject(new Error(`npm start exited early (${code}): ${out}`)));
  });
}

async function argvOf(pid: number): Promise<string[]> {
  return (await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '')).split('\0').filter(Boolean);
}

/** Live (non-zombie) processes of this data dir's servers, read from /proc. */
async function serversOfDataDir(): Promise<{ temporal: number[]; slapd: number[] }> {
  const out = { temporal: [] as number[], slapd: [] as number[] };
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => '');
    if (!stat || /\)\s+Z\s/.test(stat)) continue;
    const argv = await argvOf(Number(entry));
    // Our watchdog shells carry the server's argv as their own arguments: not servers.
    if (argv.includes('accessloop-watchdog')) continue;
    if (argv.includes('start-dev') && argv.includes(path.join(dataDir, 'temporal.sqlite'))) out.temporal.push(Number(entry));
    if (path.basename(argv[0] ?? '') === 'slapd' && argv.includes(path.join(dataDir, 'slapd', 'slapd.conf'))) out.slapd.push(Number(entry));
  }
  return out;
}

async function call(api: string, method: string, p: string, token: string, body?: unknown) {
  const r = await fetch(`${api}${p}`, { method, headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' }, ...(body ? { body: JSON.stringify(body) } : {}) });
  return { status: r.status, body: (await r.json().catch(() => undefined)) as any };
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-crash-'));
  tdb = await createTestDatabase();
  env = { ...process.env, ACCESSLOOP_DATA_DIR: dataDir, DATABASE_URL: tdb.url, PORT: String(await freePort()), TEMPORAL_UI_PORT: String(await freePort()), TEMPORAL_DEV_PORT: String(await freePort()), TEMPORAL_CLI_PATH: inject('temporalCli'), LOG_LEVEL: 'error' };
  delete env.TEMPORAL_ADDRESS;
});

afterAll(async () => {
  for (const c of [...running]) {
    const exited = new Promise((r) => c.once('exit', r));
    c.kill('SIGTERM');
    await exited;
  }
  // Whatever a failed assertion left on this data dir (the daemonised stand-in slapd above all).
  if (dataDir) {
    const left = await serversOfDataDir();
    for (const pid of [...left.temporal, ...left.slapd]) process.kill(pid, 'SIGKILL');
  }
  await tdb?.drop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('npm start killed hard mid-lease', () => {
  it('leaves no servers behind, ends an older orphan on restart, runs one of each, and the lease ends verified', async () => {
    const first = await start();
    const before = await serversOfDataDir();
    expect(before.temporal).toHaveLength(1);
    expect(before.slapd).toHaveLength(1);

    const tokens = JSON.parse(await readFile(path.join(dataDir, 'demo-tokens.json'), 'utf8')) as { tokens: Record<string, { token: string }>; ldapPassword: string };
    const tok = Object.fromEntries(Object.entries(tokens.tokens).map(([k, v]) => [k, v.token]));
    const engineering = /export ENGINEERING_ENT=(\S+)/.exec(first.output())![1];
    const created = await call(first.api, 'POST', '/v1/access-requests', tok.alice!, { entitlementId: engineering, durationSeconds: 20, justification: 'crash drill' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id = created.body.id as string;
    await waitFor(async () => (await call(first.api, 'POST', `/v1/access-requests/${id}/decision`, tok.bob!, { decision: 'approve' })).status === 200, 'approval');
    await waitFor(async () => (await call(first.api, 'GET', `/v1/access-requests/${id}`, tok.operator!)).body?.status === 'active', 'the lease active', 30_000);
    const group = demoGroupDn(DEMO_SUFFIX, 'engineering');
    const alice = `uid=alice,ou=people,${DEMO_SUFFIX}`;
    const admin = (url: string) => ({ url, rootDn: `cn=admin,${DEMO_SUFFIX}`, rootPassword: tokens.ldapPassword });
    expect(await ldapsearchMembers(admin(first.ldapUrl), group)).toContain(alice);

    // The crash: no handler runs. The watchdogs see their pipe close and end both servers.
    const exited = new Promise((r) => first.child.once('exit', r));
    first.child.kill('SIGKILL');
    await exited;
    await waitFor(async () => {
      const s = await serversOfDataDir();
      return s.temporal.length === 0 && s.slapd.length === 0;
    }, 'the killed run\'s dev server and slapd to end with it', 15_000);

    // A dev server a run from before the watchdog left behind (its parent is not our watchdog):
    // the next start must find it on the SQLite file and end it, never share the file with it.
    const orphan = spawn(inject('temporalCli'), ['server', 'start-dev', '--headless', '--ip', '127.0.0.1', '--port', String(await freePort()), '--http-port', String(await freePort()), '--metrics-port', String(await freePort()), '--db-filename', path.join(dataDir, 'temporal.sqlite')], { stdio: 'ignore' });
    running.add(orphan);
    orphan.on('exit', () => running.delete(orphan));
    await waitFor(async () => (await serversOfDataDir()).temporal.includes(orphan.pid!), 'the stand-in orphan');

    // And a slapd on the directory's database, daemonised (its parent is init), as a killed run
    // without the watchdog left it: slapd writes its own pid into slapd.pid.
    const slapdBin = findExecutable('slapd')!;
    const slapdConf = path.join(dataDir, 'slapd', 'slapd.conf');
    await execFileAsync(slapdBin, ['-f', slapdConf, '-h', `ldap://127.0.0.1:${await freePort()}/`]);
    const [strayLdap] = await waitFor(async () => {
      const s = (await serversOfDataDir()).slapd;
      return s.length === 1 ? s : undefined;
    }, 'the stand-in slapd orphan');

    const second = await start();
    expect(second.output()).toMatch(new RegExp(`found a Temporal dev server \\(pid ${orphan.pid}\\) left running by a previous run`));
    expect(second.output()).toMatch(new RegExp(`found a slapd \\(pid ${strayLdap}\\) left running by a previous run`));
    expect(orphan.exitCode !== null || orphan.signalCode !== null).toBe(true);
    const after = await serversOfDataDir();
    expect(after.temporal).toHaveLength(1);
    expect(after.slapd).toHaveLength(1);
    expect(after.slapd).not.toContain(strayLdap);

    // The lease's timer outlived the crash: it expires, and the removal is verified.
    const done = await waitFor(async () => {
      const r = await call(second.api, 'GET', `/v1/access-requests/${id}`, tok.operator!);
      return r.body?.status === 'revoked' ? r.body : undefined;
    }, 'the lease revoked after the restart', 60_000, 250);
    expect(done.grant.status).toBe('revoked');
    expect(await ldapsearchMembers(admin(second.ldapUrl), group)).not.toContain(alice);
  });

  it('refuses a dev-server port another process holds, naming the port', async () => {
    const holder = net.createServer();
    await new Promise<void>((r) => holder.listen(0, '127.0.0.1', () => r()));
    const { port } = holder.address() as net.AddressInfo;
    const logDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-port-'));
    try {
      await expect(startDevServer({ binary: inject('temporalCli'), logDir, port, dbFile: path.join(logDir, 'temporal.sqlite') })).rejects.toThrow(new RegExp(`port ${port} \\(TEMPORAL_DEV_PORT\\).*already in use`));
    } finally {
      holder.close();
      await rm(logDir, { recursive: true, force: true });
    }
  });
});
