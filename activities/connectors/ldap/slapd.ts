/**
 * Starts a private OpenLDAP slapd (old-style slapd.conf, back_mdb) on 127.0.0.1 for the
 * demo and the integration tests. slapd runs in the foreground with `-d 256` (stats),
 * so every operation is logged; the log is kept in memory and appended to
 * `<dataDir>/slapd.log`.
 *
 * Account locking (leavers) uses the ppolicy overlay: `pwdAccountLockedTime: 000001010000Z`
 * on an entry makes every bind as that entry fail with invalidCredentials until the
 * attribute is removed. In OpenLDAP 2.5 the overlay only honours the lock when a password
 * policy with `pwdLockout: TRUE` applies to the entry, so the database gets a default policy
 * entry (`passwordPolicyDn(suffix)`, added offline with slapadd when missing). That policy
 * sets nothing else: no ageing, no quality checks, no automatic lockout after failed binds
 * (pwdMaxFailure 0). The root DN has no entry and is never subject to the policy.
 */
import { execFile } from 'node:child_process';
import { createWriteStream, existsSync, type WriteStream } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import net from 'node:net';
import path from 'node:path';
import { promisify } from 'node:util';
import { canConnect, endOrphanedServers, readLines, spawnWatched, type WatchedChild } from '../child-process.js';

const execFileAsync = promisify(execFile);

export interface StartSlapdOptions {
  dataDir: string;
  /** Port on 127.0.0.1; a free one is picked when omitted. */
  port?: number;
  suffix: string;
  rootDn: string;
  rootPassword: string;
  /** LDIF loaded with slapadd on first start (no db dir yet); should create the suffix entry. */
  seedLdif?: string;
  /** Progress lines (a slapd a killed run left on this directory, found and ended). */
  say?: (msg: string) => void;
}

export interface SlapdHandle {
  url: string;
  port: number;
  suffix: string;
  rootDn: string;
  rootPassword: string;
  dataDir: string;
  /** The default password policy entry (ppolicy_default); only missing when the directory has no suffix entry. */
  passwordPolicyDn: string;
  /** Every slapd output line so far (stats log), oldest first. */
  logLines(): string[];
  /** SIGTERM, wait for exit, SIGKILL after 5 s. */
  stop(): Promise<void>;
  /** Restarts on the same port with the same data (no re-seed). No-op when running. */
  start(): Promise<void>;
  pid(): number | undefined;
}

export const SLAPD_NOT_INSTALLED = 'slapd is not installed: apt-get install -y slapd ldap-utils';

const START_DEADLINE_MS = 15_000;
const STOP_GRACE_MS = 5_000;
const MAX_LOG_LINES = 200_000;
const SCHEMA_DIR = '/etc/ldap/schema';
const SCHEMAS = ['core.schema', 'cosine.schema', 'inetorgperson.schema', 'nis.schema'];
/**
 * The ppolicy overlay module (/usr/lib/ldap/ppolicy.so). Since OpenLDAP 2.5 the overlay
 * carries its own schema (pwdPolicy, pwdAccountLockedTime, ...); there is no
 * ppolicy.schema to include (including a 2.4 copy would clash with the built-in one).
 */
const PPOLICY_MODULE = 'ppolicy';
const POLICY_CN = 'password-policy';

/** The permanent-lock value of pwdAccountLockedTime: locked by an administrator until removed. */
export const PERMANENT_LOCK_TIME = '000001010000Z';

/** DN of the default password policy entry the generated slapd.conf points ppolicy_default at. */
export function passwordPolicyDn(suffix: string): string {
  return `cn=${POLICY_CN},${suffix}`;
}

/** Finds an executable in /usr/sbin, /usr/bin, /usr/local/sbin or PATH. */
export function findExecutable(name: string): string | undefined {
  const dirs = ['/usr/sbin', '/usr/local/sbin', '/sbin', ...(process.env.PATH ?? '').split(path.delimiter), '/usr/bin'];
  for (const dir of dirs) {
    if (!dir) continue;
    const candidate = path.join(dir, name);
    if (existsSync(candidate)) return candidate;
  }
  return undefined;
}

export async function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      if (addr && typeof addr === 'object') {
        const { port } = addr;
        srv.close(() => resolve(port));
      } else {
        srv.close(() => reject(new Error('could not determine a free port')));
      }
    });
  });
}

/** Quotes a slapd.conf argument. */
function confArg(value: string): string {
  if (/[\s"\\#]/.test(value) || value === '') return `"${value.replace(/\\/g, '\\\\').replace(/"/g, '\\"')}"`;
  return value;
}

async function hashPassword(password: string): Promise<string> {
  const slappasswd = findExecutable('slappasswd');
  if (!slappasswd) return password;
  try {
    const { stdout } = await execFileAsync(slappasswd, ['-s', password]);
    const hash = stdout.trim();
    return hash.startsWith('{') ? hash : password;
  } catch {
    return password;
  }
}

function renderConf(o: { dataDir: string; suffix: string; rootDn: string; rootPw: string; policyDn: string }): string {
  const lines = [
    '# generated by activities/connectors/ldap/slapd.ts',
    ...SCHEMAS.map((s) => `include ${confArg(path.join(SCHEMA_DIR, s))}`),
    'modulepath /usr/lib/ldap',
    'moduleload back_mdb',
    `moduleload ${PPOLICY_MODULE}`,
    `pidfile ${confArg(path.join(o.dataDir, 'slapd.pid'))}`,
    `argsfile ${confArg(path.join(o.dataDir, 'slapd.args'))}`,
    '',
    'database mdb',
    'maxsize 268435456',
    `suffix ${confArg(o.suffix)}`,
    `rootdn ${confArg(o.rootDn)}`,
    `rootpw ${confArg(o.rootPw)}`,
    `directory ${confArg(path.join(o.dataDir, 'db'))}`,
    'index objectClass eq',
    'index member eq',
    // pwdLastSuccess on every successful bind: the account's last use, shown on access reviews
    'lastbind on',
    // after the database directives: the overlay applies to this database only
    'overlay ppolicy',
    `ppolicy_default ${confArg(o.policyDn)}`,
    // userPassword values sent in cleartext over LDAP (add/modify) are stored hashed
    'ppolicy_hash_cleartext',
    '',
  ];
  return lines.join('\n');
}

/** One entry read offline with slapcat (base scope); undefined when it does not exist. */
async function slapcatEntry(slapcat: string, confPath: string, dn: string): Promise<string | undefined> {
  const { stdout } = await execFileAsync(slapcat, ['-f', confPath, '-H', `ldap:///${encodeURIComponent(dn)}??base`]);
  return /^dn:/m.test(stdout) ? stdout : undefined;
}

/**
 * Adds the default password policy entry (offline, before slapd runs) when it is missing:
 * on first start after the seed, and once for data dirs created before locking existed.
 * Skipped when the suffix entry does not exist (nothing to hang the policy off), including
 * an empty database that slapd has not created yet (slapcat cannot open it).
 */
async function ensurePasswordPolicy(confPath: string, dataDir: string, suffix: string, policyDn: string): Promise<void> {
  if (!existsSync(path.join(dataDir, 'db', 'data.mdb'))) return;
  const slapcat = findExecutable('slapcat');
  const slapadd = findExecutable('slapadd');
  if (!slapcat || !slapadd) throw new Error(SLAPD_NOT_INSTALLED);
  try {
    if ((await slapcatEntry(slapcat, confPath, policyDn)) !== undefined) return;
    if ((await slapcatEntry(slapcat, confPath, suffix)) === undefined) return;
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`slapcat failed reading the directory: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
  const ldif = [
    `dn: ${policyDn}`,
    'objectClass: top',
    'objectClass: device',
    'objectClass: pwdPolicy',
    `cn: ${POLICY_CN}`,
    'description: default password policy: honours pwdAccountLockedTime (account disable), nothing else',
    'pwdAttribute: userPassword',
    'pwdLockout: TRUE',
    'pwdMaxFailure: 0',
    '',
  ].join('\n');
  const ldifPath = path.join(dataDir, 'password-policy.ldif');
  await writeFile(ldifPath, ldif);
  try {
    await execFileAsync(slapadd, ['-f', confPath, '-l', ldifPath]);
  } catch (err) {
    const e = err as { stderr?: string; message: string };
    throw new Error(`slapadd failed adding the password policy entry: ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

export async function startSlapd(opts: StartSlapdOptions): Promise<SlapdHandle> {
  const slapd = findExecutable('slapd');
  if (!slapd) throw new Error(SLAPD_NOT_INSTALLED);

  const dataDir = path.resolve(opts.dataDir);
  await mkdir(dataDir, { recursive: true });
  const confPath = path.join(dataDir, 'slapd.conf');
  const dbDir = path.join(dataDir, 'db');
  const logPath = path.join(dataDir, 'slapd.log');

  // Never two slapds on one database: a run killed hard may have left one on this directory
  // (its pid in slapd.pid, which both slapd and our watchdog write).
  const pidFile = path.join(dataDir, 'slapd.pid');
  await endOrphanedServers('a slapd', dataDir, pidFile, (argv) => path.basename(argv[0] ?? '') === 'slapd' && argv[argv.indexOf('-f') + 1] === confPath, opts.say ?? (() => {}));

  const rootPw = await hashPassword(opts.rootPassword);
  const policyDn = passwordPolicyDn(opts.suffix);
  await writeFile(confPath, renderConf({ dataDir, suffix: opts.suffix, rootDn: opts.rootDn, rootPw, policyDn }), { mode: 0o600 });

  if (!existsSync(dbDir)) {
    await mkdir(dbDir, { recursive: true, mode: 0o700 });
    if (opts.seedLdif !== undefined) {
      const slapadd = findExecutable('slapadd');
      if (!slapadd) throw new Error(SLAPD_NOT_INSTALLED);
      const seedPath = path.join(dataDir, 'seed.ldif');
      await writeFile(seedPath, opts.seedLdif);
      try {
        await execFileAsync(slapadd, ['-f', confPath, '-l', seedPath]);
      } catch (err) {
        const e = err as { stderr?: string; message: string };
        throw new Error(`slapadd failed loading the seed LDIF: ${(e.stderr ?? e.message).trim()}`, { cause: err });
      }
    }
  }

  await ensurePasswordPolicy(confPath, dataDir, opts.suffix, policyDn);

  const port = opts.port ?? (await findFreePort());
  const url = `ldap://127.0.0.1:${port}`;
  const lines: string[] = [];
  let logStream: WriteStream | undefined;
  let child: WatchedChild | undefined;
  let exited: Promise<void> = Promise.resolve();


  let sawStarting = false;
  const pushLine = (line: string) => {
    if (line.includes('slapd starting')) sawStarting = true;
    lines.push(line);
    if (lines.length > MAX_LOG_LINES) lines.splice(0, lines.length - MAX_LOG_LINES);
  };

  const attachOutput = (stream: NodeJS.ReadableStream | null) => readLines(stream, pushLine, () => logStream);

  const lastLines = (n = 20) => lines.slice(-n).join('\n');

  const start = async (): Promise<void> => {
    if (child && child.exitInfo() === undefined) return;
    if (!logStream) {
      logStream = createWriteStream(logPath, { flags: 'a' });
      logStream.on('error', () => undefined);
    }
    sawStarting = false;
    // Under the watchdog: slapd ends when this process does, even on SIGKILL.
    const supervised = spawnWatched(slapd, ['-d', '256', '-f', confPath, '-h', `ldap://127.0.0.1:${port}/`], { pidFile, stdout: 'pipe', stderr: 'pipe' });
    child = supervised;
    attachOutput(supervised.proc.stdout);
    attachOutput(supervised.proc.stderr);
    exited = supervised.exited;
    await supervised.serverPid().catch(() => undefined);

    const deadline = Date.now() + START_DEADLINE_MS;
    for (;;) {
      if (supervised.exitInfo() !== undefined) {
        throw new Error(`slapd exited during start-up (${supervised.exitInfo()}); last log lines:\n${lastLines()}`);
      }
      // "slapd starting" is logged once the listener is bound; checking it as well as the
      // port makes sure we are not talking to some other process that holds the port.
      if (sawStarting && (await canConnect(port))) return;
      if (Date.now() > deadline) {
        await supervised.terminate(0);
        throw new Error(
          `slapd did not accept connections on 127.0.0.1:${port} within ${START_DEADLINE_MS / 1000} s; last log lines:\n${lastLines()}`,
        );
      }
      await new Promise((r) => setTimeout(r, 50));
    }
  };

  const stop = async (): Promise<void> => {
    await (child?.terminate(STOP_GRACE_MS) ?? exited);
  };

  await start();

  return {
    url,
    port,
    suffix: opts.suffix,
    rootDn: opts.rootDn,
    rootPassword: opts.rootPassword,
    dataDir,
    passwordPolicyDn: policyDn,
    logLines: () => lines.slice(),
    stop,
    start,
    pid: () => (child && child.exitInfo() === undefined ? child.pid() : undefined),
  };
}
