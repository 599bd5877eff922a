/**
 * A private Request Tracker 5 on 127.0.0.1 for the demo (`npm start`) and the tests
 * (docs/rt.md): its own site config, its own SQLite file and its own port, under the same
 * watchdog as slapd, so a process that dies leaves no RT behind. The system RT the package
 * installed (/etc/request-tracker5, its dbconfig database) is never read: RT_SITE_CONFIG and
 * RT_SITE_CONFIG_DIR point at the data dir.
 *
 * Start-up is a file copy plus one Perl process: the database comes from a template (RT's
 * schema and initial data, plus the queue, custom fields, users, groups and rights of
 * `rt-instance.pl setup`) built once per RT build and setup script, and `rt-instance.pl serve`
 * mints the API tokens in the process that then serves. A data dir that already has a database
 * is served as it is, so the demo's tickets survive a restart.
 */
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { copyFile, mkdir, mkdtemp, readdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { z } from 'zod';
import { canConnect, endOrphanedServers, readLines, spawnWatched, type WatchedChild } from '../child-process.js';
import { findFreePort } from '../ldap/slapd.js';
import { createDeskHttp } from './http.js';

const execFileAsync = promisify(execFile);

export const RT_SERVER = '/usr/share/request-tracker5/libexec/rt-server';
const RT_GENERATED = '/usr/share/request-tracker5/lib/RT/Generated.pm';
const RT_SETUP_DATABASE = '/usr/sbin/rt-setup-database';
const PERL = '/usr/bin/perl';
/** Next to this file, in the source tree and in dist/ alike. */
const INSTANCE_SCRIPT = fileURLToPath(new URL('./rt-instance.pl', import.meta.url));
// Three levels up from activities/connectors/service-desk/rt-server.ts, four from the compiled
// dist/activities/connectors/service-desk/rt-server.js.
const projectRoot = fileURLToPath(new URL(import.meta.url.endsWith('.js') ? '../../../..' : '../../..', import.meta.url));
/** Where template databases are kept unless `templateDir` says otherwise. */
export const DEFAULT_RT_TEMPLATE_DIR = path.join(projectRoot, '.cache', 'rt');
export const RT_NOT_INSTALLED = 'Request Tracker 5 is not installed: bash temporal/provision.sh --for test (apt-get install request-tracker5 rt5-db-sqlite rt5-standalone w3m)';

const START_DEADLINE_MS = 90_000;
const STOP_GRACE_MS = 10_000;
const MAX_LOG_LINES = 20_000;

export const RT_FIELDS = ['Entitlement', 'Subject', 'Duration', 'Justification'] as const;
export type RtFieldName = (typeof RT_FIELDS)[number];

/** Whether the Debian packages this server runs from are installed. */
export function rtInstalled(): boolean {
  return existsSync(RT_SERVER) && existsSync(RT_SETUP_DATABASE) && existsSync(PERL);
}

const namedId = z.object({ id: z.number().int().positive(), name: z.string() });
const fixtureSchema = z.object({
  queue: namedId,
  customFields: z.object({ Entitlement: z.number().int(), Subject: z.number().int(), Duration: z.number().int(), Justification: z.number().int() }),
  users: z.object({ integration: namedId, requester: namedId }),
  requestersGroup: namedId,
  approversGroup: namedId,
  rights: z.object({ integration: z.array(z.string()), requesters: z.array(z.string()), approvers: z.array(z.string()), requestorRole: z.array(z.string()) }),
});
/** What `rt-instance.pl setup` made: ids of the queue, its custom fields, the users and groups, and the rights granted. */
export type RtFixture = z.infer<typeof fixtureSchema>;

const tokensSchema = z.object({ integration: z.string().min(1), requester: z.string().min(1), admin: z.string().min(1), rootPassword: z.string().min(1).optional() });
/** API secrets (`Authorization: token …`), minted once per data dir. */
export type RtTokens = Omit<z.infer<typeof tokensSchema>, 'rootPassword'>;

export interface StartRtServerOptions {
  /** Holds the site config, rt.sqlite, tokens, logs. Reused as is when it already has a database. */
  dataDir: string;
  /** Port on 127.0.0.1. Without it: `preferredPort` when free, else a free one. */
  port?: number;
  /** Taken when nothing listens on it (checked after ending an RT a killed run left on the data dir). */
  preferredPort?: number;
  /** Where template databases are built and kept; DEFAULT_RT_TEMPLATE_DIR when omitted. */
  templateDir?: string;
  /** Progress lines (building the template, an RT a killed run left on this directory). */
  say?: (msg: string) => void;
}

export interface RtServer {
  /** http://127.0.0.1:<port> (RT's WebPath is empty, so the UI is at the root). */
  url: string;
  /** `${url}/REST/2.0` */
  restUrl: string;
  port: number;
  dataDir: string;
  /**
   * `integration`: `accessloop`, the least-privilege integration user; `requester`: a member of
   * "Access requesters"; `admin`: RT's `root` (SuperUser), for arranging things, never what the
   * product holds.
   */
  tokens: RtTokens;
  /** root's web and basic-auth password, random per data dir (absent on a data dir made before it was). */
  rootPassword: string | undefined;
  fixture: RtFixture;
  /** Every line RT wrote to stdout/stderr (LogToSTDERR at warning), oldest first; also appended to `<dataDir>/rt.log`. */
  logLines(): string[];
  /** SIGTERM, SIGKILL after 10 s; resolves once it has exited. */
  stop(): Promise<void>;
  /** Starts again on the same port, database and tokens. No-op when running. */
  start(): Promise<void>;
  pid(): number | undefined;
  /** A new API token for an existing RT user, minted with RT's Perl API in a child process (safe while serving). */
  mintToken(userName: string, description: string): Promise<string>;
  /** Sets an existing RT user's web and basic-auth password with RT's Perl API (REST 2.0 can not); safe while serving. */
  setPassword(userName: string, password: string): Promise<void>;
}

/** A Perl single-quoted string literal. */
function perlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

interface SiteConfigPaths {
  database: string;
  varDir: string;
  masonDir: string;
  sessionDir: string;
  port: number;
}

function renderSiteConfig(p: SiteConfigPaths): string {
  const base = `http://127.0.0.1:${p.port}`;
  return [
    '# generated by activities/connectors/service-desk/rt-server.ts: a private RT on 127.0.0.1 (docs/rt.md)',
    // Organization is part of every ticket URI RT stores (fsck.com-rt://<Organization>/ticket/N):
    // the template and every instance copied from it must agree on it.
    "Set($rtname, 'accessloop-test');",
    "Set($Organization, 'accessloop.test');",
    "Set($CorrespondAddress, 'rt@accessloop.test');",
    "Set($CommentAddress, 'rt-comment@accessloop.test');",
    "Set($Timezone, 'UTC');",
    "Set($DatabaseType, 'SQLite');",
    `Set($DatabaseName, ${perlString(p.database)});`,
    "Set($WebDomain, '127.0.0.1');",
    `Set($WebPort, ${p.port});`,
    "Set($WebPath, '');",
    `Set($WebBaseURL, ${perlString(base)});`,
    "Set($LogToSTDERR, 'warning');",
    'Set($LogToSyslog, undef);',
    'Set($LogToFile, undef);',
    // Outgoing mail (autoreplies to requesters, notifications) lands in <var>/<start time>.mbox,
    // never in the machine's MTA.
    "Set($MailCommand, 'mbox');",
    // RT checks a token with bcrypt on every request; at cost 12 (the default) that is about
    // 0.3 s of CPU per call on this machine (1 ms at 4), for no gain in a local instance.
    'Set($BcryptCost, 4);',
    // Paths RT otherwise takes from the package (/var/lib, /var/cache), kept per instance.
    `$RT::VarPath = ${perlString(p.varDir)};`,
    `$RT::MasonDataDir = ${perlString(p.masonDir)};`,
    `$RT::MasonSessionDir = ${perlString(p.sessionDir)};`,
    '1;',
    '',
  ].join('\n');
}

interface InstanceLayout extends SiteConfigPaths {
  dir: string;
  configPath: string;
  configDir: string;
  tokensPath: string;
  fixturePath: string;
  pidFile: string;
  logPath: string;
}

function layout(dir: string, port: number): InstanceLayout {
  return {
    dir,
    port,
    database: path.join(dir, 'rt.sqlite'),
    varDir: path.join(dir, 'var'),
    masonDir: path.join(dir, 'mason'),
    sessionDir: path.join(dir, 'sessions'),
    configPath: path.join(dir, 'RT_SiteConfig.pm'),
    // Empty on purpose: RT reads every *.pm here, and without it would read /etc/request-tracker5/RT_SiteConfig.d.
    configDir: path.join(dir, 'RT_SiteConfig.d'),
    tokensPath: path.join(dir, 'tokens.json'),
    fixturePath: path.join(dir, 'fixture.json'),
    pidFile: path.join(dir, 'rt.pid'),
    logPath: path.join(dir, 'rt.log'),
  };
}

async function writeInstanceConfig(l: InstanceLayout): Promise<NodeJS.ProcessEnv> {
  for (const d of [l.dir, l.varDir, l.masonDir, l.sessionDir, l.configDir]) await mkdir(d, { recursive: true, mode: 0o700 });
  await writeFile(l.configPath, renderSiteConfig(l), { mode: 0o600 });
  return instanceEnv(l);
}

function instanceEnv(l: InstanceLayout): NodeJS.ProcessEnv {
  return { ...process.env, RT_SITE_CONFIG: l.configPath, RT_SITE_CONFIG_DIR: l.configDir };
}

function commandError(what: string, err: unknown): Error {
  const e = err as { stderr?: string; stdout?: string; message: string };
  return new Error(`${what} failed: ${(e.stderr || e.stdout || e.message).trim()}`, { cause: err });
}

/**
 * The template database and what it holds, built when missing. Keyed by RT's build (its
 * Generated.pm), the setup script and the site config, so a changed one builds a new template.
 * Two processes building at once both finish; each file is renamed into place whole.
 */
async function ensureTemplate(templateDir: string, say: (m: string) => void): Promise<{ database: string; fixture: RtFixture }> {
  const key = createHash('sha256')
    .update(await readFile(RT_GENERATED))
    .update(await readFile(INSTANCE_SCRIPT))
    .update(renderSiteConfig({ database: '', varDir: '', masonDir: '', sessionDir: '', port: 0 }))
    .digest('hex')
    .slice(0, 16);
  const database = path.join(templateDir, `template-${key}.sqlite`);
  const fixturePath = path.join(templateDir, `template-${key}.json`);
  if (existsSync(database) && existsSync(fixturePath)) return { database, fixture: fixtureSchema.parse(JSON.parse(await readFile(fixturePath, 'utf8'))) };

  await mkdir(templateDir, { recursive: true });
  const started = Date.now();
  say(`building the RT template database ${database}`);
  const build = await mkdtemp(path.join(templateDir, 'build-'));
  try {
    const l = layout(build, 0);
    const env = await writeInstanceConfig(l);
    await execFileAsync(RT_SETUP_DATABASE, ['--action', 'init'], { env, timeout: 300_000, maxBuffer: 16 * 1024 * 1024 }).catch((err: unknown) => {
      throw commandError('rt-setup-database --action init', err);
    });
    const { stdout } = await execFileAsync(PERL, [INSTANCE_SCRIPT, 'setup'], { env, timeout: 300_000 }).catch((err: unknown) => {
      throw commandError('rt-instance.pl setup', err);
    });
    const fixture = fixtureSchema.parse(JSON.parse(stdout.trim().split('\n').pop() ?? ''));
    await writeFile(`${fixturePath}.${process.pid}`, JSON.stringify(fixture));
    await rename(`${fixturePath}.${process.pid}`, fixturePath);
    await rename(l.database, database);
    // Templates of an older RT or setup script are never used again.
    for (const f of await readdir(templateDir)) {
      if (/^template-[0-9a-f]+\.(sqlite|json)$/.test(f) && !f.startsWith(`template-${key}.`)) await rm(path.join(templateDir, f), { force: true });
    }
    say(`RT template built in ${((Date.now() - started) / 1000).toFixed(1)} s`);
    return { database, fixture };
  } finally {
    await rm(build, { recursive: true, force: true });
  }
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => resolve(false));
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)));
  });
}

/** Our RT, not merely something on the port: a token minted into this database is accepted. */
export async function answersAsOurs(restUrl: string, port: number, adminToken: string): Promise<boolean> {
  if (!(await canConnect(port))) return false;
  try {
    const res = await fetch(`${restUrl}/rt`, { headers: { Authorization: `token ${adminToken}` }, signal: AbortSignal.timeout(10_000) });
    return res.ok && typeof ((await res.json()) as { Version?: unknown }).Version === 'string';
  } catch {
    return false;
  }
}

export async function startRtServer(opts: StartRtServerOptions): Promise<RtServer> {
  if (!rtInstalled()) throw new Error(RT_NOT_INSTALLED);
  const say = opts.say ?? (() => {});
  const dir = path.resolve(opts.dataDir);
  const pidFile = path.join(dir, 'rt.pid');
  const tokensPath = path.join(dir, 'tokens.json');
  await mkdir(dir, { recursive: true, mode: 0o700 });

  // Never two RTs on one SQLite file: a process killed hard may have left one on this directory.
  await endOrphanedServers('an RT server', dir, pidFile, (argv) => argv.includes(INSTANCE_SCRIPT) && argv[argv.indexOf('--tokens') + 1] === tokensPath, say);

  const port = opts.port ?? (opts.preferredPort !== undefined && (await portIsFree(opts.preferredPort)) ? opts.preferredPort : await findFreePort());
  const l = layout(dir, port);
  if (!existsSync(l.database)) {
    const template = await ensureTemplate(path.resolve(opts.templateDir ?? DEFAULT_RT_TEMPLATE_DIR), say);
    await copyFile(template.database, l.database);
    await writeFile(l.fixturePath, JSON.stringify(template.fixture));
  }
  const fixture = fixtureSchema.parse(JSON.parse(await readFile(l.fixturePath, 'utf8')));
  const env = await writeInstanceConfig(l);

  const url = `http://127.0.0.1:${port}`;
  const restUrl = `${url}/REST/2.0`;
  const lines: string[] = [];
  let logStream: WriteStream | undefined;
  let child: WatchedChild | undefined;
  let tokens: z.infer<typeof tokensSchema> | undefined;

  const pushLine = (line: string) => {
    lines.push(line);
    if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES);
  };
  const attachOutput = (stream: NodeJS.ReadableStream | null) => readLines(stream, pushLine, () => logStream);
  const lastLines = (n = 30) => lines.slice(-n).join('\n');

  const ready = async (): Promise<boolean> => {
    if (!tokens) {
      // Written by the serving process once it has minted them (first start on this data dir).
      if (!existsSync(l.tokensPath)) return false;
      tokens = tokensSchema.parse(JSON.parse(await readFile(l.tokensPath, 'utf8')));
    }
    return answersAsOurs(restUrl, port, tokens.admin);
  };

  const start = async (): Promise<void> => {
    if (child && child.exitInfo() === undefined) return;
    if (!logStream) {
      logStream = createWriteStream(l.logPath, { flags: 'a' });
      logStream.on('error', () => undefined);
    }
    const supervised = spawnWatched(PERL, [INSTANCE_SCRIPT, 'serve', '--host', '127.0.0.1', '--port', String(port), '--tokens', l.tokensPath], {
      pidFile: l.pidFile,
      stdout: 'pipe',
      stderr: 'pipe',
      env,
    });
    child = supervised;
    attachOutput(supervised.proc.stdout);
    attachOutput(supervised.proc.stderr);
    await supervised.serverPid().catch(() => undefined);
    const deadline = Date.now() + START_DEADLINE_MS;
    for (;;) {
      if (supervised.exitInfo() !== undefined) throw new Error(`RT exited during start-up (${supervised.exitInfo()}); last log lines:\n${lastLines()}`);
      if (await ready()) return;
      if (Date.now() > deadline) {
        await supervised.terminate(0);
        throw new Error(`RT did not answer on ${restUrl} within ${START_DEADLINE_MS / 1000} s; last log lines:\n${lastLines()}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
  };

  const stop = async (): Promise<void> => {
    await child?.terminate(STOP_GRACE_MS);
  };

  const mintToken = async (userName: string, description: string): Promise<string> => {
    const { stdout } = await execFileAsync(PERL, [INSTANCE_SCRIPT, 'token', '--user', userName, '--description', description], { env: instanceEnv(l), timeout: 120_000 }).catch(
      (err: unknown) => {
        throw commandError('rt-instance.pl token', err);
      },
    );
    const secret = stdout.trim().split('\n').pop() ?? '';
    // RT's secret format, 1-<user id>-<32 hex>; anything else is not a token and must not be used.
    if (!/^\d+-\d+-[0-9a-f]{32}$/.test(secret)) throw new Error('rt-instance.pl token printed no token');
    return secret;
  };

  const setPassword = async (userName: string, password: string): Promise<void> => {
    const run = execFileAsync(PERL, [INSTANCE_SCRIPT, 'password', '--user', userName], { env: instanceEnv(l), timeout: 120_000 });
    run.child.stdin?.end(password);
    await run.catch((err: unknown) => {
      throw commandError('rt-instance.pl password', err);
    });
  };

  await start();
  if (!tokens) throw new Error(`RT started without writing ${l.tokensPath}`);
  return {
    url,
    restUrl,
    port,
    dataDir: dir,
    tokens: { integration: tokens.integration, requester: tokens.requester, admin: tokens.admin },
    rootPassword: tokens.rootPassword,
    fixture,
    logLines: () => lines.slice(),
    stop,
    start,
    pid: () => (child && child.exitInfo() === undefined ? child.pid() : undefined),
    mintToken,
    setPassword,
  };
}

/** The fixture's user-defined groups: "Access requesters" and "Access approvers". */
export type RtGroupKey = 'requesters' | 'approvers';

export interface EnsureRtUserOptions {
  /** Fixture groups the user must be in; memberships are added, never removed. */
  groups: readonly RtGroupKey[];
  /** Web and basic-auth password: given on creation, and set again when the user does not sign in with it. */
  password?: string;
}

const userSchema = z.object({ id: z.union([z.number(), z.string()]), Privileged: z.union([z.number(), z.string()]).optional(), Disabled: z.union([z.number(), z.string()]).optional() });
const userGroupsSchema = z.object({ items: z.array(z.object({ id: z.union([z.number(), z.string()]) })) });

/**
 * A privileged, enabled RT user on this server, in `groups` and signing in with `password`, as
 * root arranges it over REST 2.0; idempotent, so it runs on every start. Unlike a token, a
 * person's password is checked by signing in, so a changed password is put back.
 */
export async function ensureRtUser(server: RtServer, username: string, opts: EnsureRtUserOptions): Promise<{ id: number; created: boolean }> {
  const secrets = [server.tokens.admin, ...(opts.password === undefined ? [] : [opts.password])];
  const asRoot = createDeskHttp({ baseUrl: server.restUrl, desk: 'RT', headers: { Authorization: `token ${server.tokens.admin}` }, timeoutMs: 30_000, secrets });
  const name = encodeURIComponent(username);

  let id: number;
  let created = false;
  const found = await asRoot.call('GET', `/user/${name}`, { what: 'look up a user', accept: [404] });
  if (found.status === 404) {
    const made = await asRoot.call('POST', '/user', {
      what: 'create a user',
      body: { Name: username, EmailAddress: `${username}@accessloop.test`, Privileged: 1, ...(opts.password === undefined ? {} : { Password: opts.password }) },
    });
    // The body's `id` is the user's name; the numeric id (also its principal id) is in Location.
    id = Number(/\/user\/(\d+)$/.exec(made.location ?? '')?.[1]);
    if (!Number.isInteger(id)) throw new Error(`RT created a user without naming it in Location (${made.location})`);
    created = true;
  } else {
    const user = userSchema.parse(found.body);
    id = Number(user.id);
    if (Number(user.Privileged ?? 0) !== 1 || Number(user.Disabled ?? 0) !== 0) {
      await asRoot.call('PUT', `/user/${id}`, { what: 'enable a user as privileged', body: { Privileged: 1, Disabled: 0 } });
    }
  }

  const groupIds = opts.groups.map((g) => (g === 'requesters' ? server.fixture.requestersGroup.id : server.fixture.approversGroup.id));
  const memberOf = async () => new Set(userGroupsSchema.parse((await asRoot.call('GET', `/user/${id}/groups?per_page=100`, { what: 'list the groups of a user' })).body).items.map((g) => Number(g.id)));
  const missing = (have: Set<number>) => groupIds.filter((g) => !have.has(g));
  const toJoin = missing(await memberOf());
  if (toJoin.length > 0) {
    await asRoot.call('PUT', `/user/${id}/groups`, { what: 'add a user to groups', body: toJoin });
    // 200 with one message per group, a refusal among them: only the read-back tells.
    const still = missing(await memberOf());
    if (still.length > 0) throw new Error(`RT user ${id} is not in groups ${still.join(', ')} after being added to them`);
  }

  const { password } = opts;
  if (password !== undefined) {
    const asUser = createDeskHttp({ baseUrl: server.restUrl, desk: 'RT', headers: { Authorization: `Basic ${Buffer.from(`${username}:${password}`).toString('base64')}` }, timeoutMs: 30_000, secrets });
    const signsIn = async () => (await asUser.call('GET', '/rt', { what: 'sign in as a user', accept: [401] })).status === 200;
    if (!(await signsIn())) {
      await server.setPassword(username, password);
      if (!(await signsIn())) throw new Error(`RT user ${id} does not sign in with the password just set`);
    }
  }
  return { id, created };
}
