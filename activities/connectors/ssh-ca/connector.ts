/**
 * SSH certificate-authority connector: privileged just-in-time server access through
 * short-lived OpenSSH user certificates, ended early by a KRL (key revocation list).
 *
 * Model. `resource` is an SSH principal (e.g. `prod-root`); servers map principals to local
 * logins with `AuthorizedPrincipalsFile` and trust the CA with `TrustedUserCAKeys`. An SSH CA
 * has no catalog of its own, so the config lists the principals this CA may issue
 * (`principals`); anything else is NoSuchResource. `account` is the person's account name: it
 * goes into the certificate's key id (`accessloop:<account>:<serial>`), which sshd logs on every
 * login, so a login is attributable to the person even when everyone logs in as `root`.
 *
 * grant signs the caller's public key (`GrantOptions.publicKey`) with
 * `ssh-keygen -s <ca> -I <key id> -n <resource> -V <from>:<notAfter> -z <serial>`. The
 * certificate is valid from a few minutes before now (clock skew between us and the servers)
 * until the lease end, which must be in the future and at most `maxValiditySeconds` away; so
 * access ends on its own even when every revoke fails. Extensions: `-O clear` and then only the
 * configured ones (default: permit-pty, which an interactive login needs; no agent, port or X11
 * forwarding, no ~/.ssh/rc).
 *
 * State. `stateDir` holds a ledger (`ledger.json`) of every certificate issued and the
 * certificates themselves (`certs/<serial>-cert.pub`). The ledger and the KRL are written to a
 * temp file and renamed into place, so a reader (us, or sshd reading the KRL) never sees half a
 * file; serials are monotonic (ledger.lastSerial + 1). Mutations are serialised in-process per
 * stateDir and per KRL path, including across connector instances (the registry replaces a
 * connector when its config changes, while the old one may still be running), and across
 * worker processes by a lock directory next to each (`ledger.json.lock`, `<krl>.lock`,
 * proper-lockfile: mkdir is atomic on local and network file systems, and a lock whose holder
 * died goes stale after LOCK_STALE_MS instead of blocking the CA for good). The in-process
 * queue stays in front, so a process never polls against itself. Keep stateDir: serials
 * restart at 1 without it, and the KRL would then revoke new certificates that reuse old serials.
 *
 * Truth. The KRL file is what the servers read (`RevokedKeys`), so `check` and `list` ask
 * `ssh-keygen -Q -f <krl>` about every unexpired certificate of the pair rather than trusting
 * the ledger's `revokedAt`; a KRL restored from an old backup therefore shows the membership as
 * present again, and `revoke` puts it back. A revoke adds the certificates themselves
 * (`ssh-keygen -k -u`), which revokes them by serial under the CA that signed them (so a CA key
 * rotation keeps old revocations right) and keeps whatever else an operator put in the KRL.
 * sshd fails closed when the KRL is missing or unreadable (every public key login is refused),
 * so the connector creates the KRL on first use; should it disappear later it is rebuilt from
 * the ledger's revoked certificates, never recreated empty (that would un-revoke them).
 *
 * Idempotency. A grant for (account, resource, public key) that already holds an unrevoked,
 * unexpired certificate returns that same certificate with changed=false, so a retried activity
 * can still deliver it. Its validity is not extended: a longer lease is revoke + grant.
 *
 * Secret. The CA private key (`caPrivateKey`, OpenSSH format, unencrypted) lives for the
 * connector's lifetime in a 0600 file inside a private 0700 mkdtemp dir, because `ssh-keygen -s`
 * reads keys from files; close() removes it. It is never put into argv, logs or error messages.
 *
 * Every ssh-keygen call runs without a shell, with stdin closed, and is killed after
 * `timeoutMs` (Timeout, retryable).
 */
import { spawn } from 'node:child_process';
import { createHash, randomUUID } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import { link, mkdir, mkdtemp, open, readFile, rename, rm, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import lockfile from 'proper-lockfile';
import { z } from 'zod';
import {
  ConnectorError,
  type ChangeResult,
  type CheckResult,
  type Connector,
  type ConnectorErrorType,
  type GrantOptions,
  type GrantResult,
  type IssuedCredential,
  type Membership,
} from '../types.js';
import { redact } from '../redact.js';

/** Longest account or principal name accepted. */
export const MAX_SSH_NAME_LENGTH = 64;

/** Certificates start this long before "now": servers whose clocks run behind still accept them. */
export const VALIDITY_BACKDATE_SECONDS = 300;

/** Ledger records of certificates that expired longer ago than this are dropped (with their files). */
const LEDGER_RETENTION_MS = 24 * 3600 * 1000;

/** Certificate files per ssh-keygen invocation (argv stays far below ARG_MAX). */
const KEYGEN_BATCH = 500;

const MAX_OUTPUT_BYTES = 4 * 1024 * 1024;
const MAX_PUBLIC_KEY_LENGTH = 16 * 1024;
const MIN_RSA_BITS = 2048;

const KEY_ID_PREFIX = 'accessloop';

/** Extensions OpenSSH defines for user certificates (ssh-keygen -O). */
export const SSH_CERT_EXTENSIONS = [
  'permit-pty',
  'permit-agent-forwarding',
  'permit-port-forwarding',
  'permit-X11-forwarding',
  'permit-user-rc',
] as const;

/** Public key algorithms accepted for the certified key (ssh-dss is disabled in OpenSSH). */
const PUBLIC_KEY_TYPES: ReadonlySet<string> = new Set([
  'ssh-ed25519',
  'ssh-rsa',
  'ecdsa-sha2-nistp256',
  'ecdsa-sha2-nistp384',
  'ecdsa-sha2-nistp521',
  'sk-ssh-ed25519@openssh.com',
  'sk-ecdsa-sha2-nistp256@openssh.com',
]);

// ---------------------------------------------------------------------------------------
// Names

const LONE_SURROGATE = /\p{Cs}/u;
/** Whitespace, control and format characters (bidi overrides would spoof sshd's log lines). */
const FORBIDDEN_CHARS = /[\s\p{Cc}\p{Cf},]/u;

function nameProblem(name: unknown): string | undefined {
  if (typeof name !== 'string' || name.length === 0) return 'must be a non-empty string';
  if (name.length > MAX_SSH_NAME_LENGTH) return `is longer than ${MAX_SSH_NAME_LENGTH} characters`;
  if (name.includes('\0')) return 'contains a NUL byte';
  if (LONE_SURROGATE.test(name)) return 'is not valid Unicode';
  // commas separate principals in `ssh-keygen -n`; whitespace would split the key id in logs
  if (FORBIDDEN_CHARS.test(name)) return 'contains whitespace, a comma or a control character';
  if (name.startsWith('-')) return 'starts with "-"';
  return undefined;
}

/** Validates an account or principal name: 1..64 characters, none of NUL, whitespace, comma, controls; no leading "-". */
export function validateSshName(kind: 'account' | 'resource', name: unknown): string {
  const problem = nameProblem(name);
  if (problem) throw new ConnectorError('InvalidInput', `${kind} ${problem}`);
  return name as string;
}

const TEMPLATE_PLACEHOLDER = /\{([^{}]*)\}/g;

export const sshCaSystemConfigSchema = z.object({
  /** Absolute directory for the issued-certificate ledger and the certificates (created 0700). */
  stateDir: z.string().refine((p) => path.isAbsolute(p) && !p.includes('\0'), 'stateDir must be an absolute path'),
  /** Absolute path of the KRL the servers read through `RevokedKeys` (created on first use). */
  krlPath: z.string().refine((p) => path.isAbsolute(p) && !p.includes('\0'), 'krlPath must be an absolute path'),
  /** The principals this CA may issue: the resources of this system. */
  principals: z
    .array(z.string().refine((p) => nameProblem(p) === undefined, 'principal must be 1..64 characters without whitespace, commas, controls or a leading "-"'))
    .min(1)
    .refine((ps) => new Set(ps).size === ps.length, 'principals must be unique'),
  /** Account name (the key id's person) for an identity; only `{username}` is known. */
  accountTemplate: z
    .string()
    .min(1)
    .refine((t) => [...t.matchAll(TEMPLATE_PLACEHOLDER)].every((m) => m[1] === 'username'), 'accountTemplate may only use {username}')
    .default('{username}'),
  /** Longest certificate the CA issues: a lease ending later is refused (InvalidInput). */
  maxValiditySeconds: z.number().int().min(60).max(31 * 24 * 3600).default(24 * 3600),
  /** Certificate extensions after `-O clear`. */
  extensions: z
    .array(z.enum(SSH_CERT_EXTENSIONS))
    .default(['permit-pty'])
    .transform((xs) => [...new Set(xs)]),
  /** Bound on every ssh-keygen call. */
  timeoutMs: z.number().int().min(100).max(60_000).default(5000),
});

/** A parsed config (defaults filled in). */
export type SshCaSystemConfig = z.infer<typeof sshCaSystemConfigSchema>;
/** What createSshCaConnector accepts: defaulted fields may be omitted. */
export type SshCaSystemConfigInput = z.input<typeof sshCaSystemConfigSchema>;

export interface SshCaSecrets {
  /** The CA private key, OpenSSH format, unencrypted. */
  caPrivateKey: string;
}

/**
 * The account (key id person) for an identity: `{username}` in the template replaced by the
 * username. An identity without a username has no account here (NoSuchAccount).
 */
export function sshCaAccountFor(config: Pick<SshCaSystemConfigInput, 'accountTemplate'>, identity: { username: string | null }): string {
  const username = identity.username;
  if (typeof username !== 'string' || username.length === 0) {
    throw new ConnectorError('NoSuchAccount', 'identity has no username to render the SSH certificate account from');
  }
  const template = config.accountTemplate ?? '{username}';
  const name = template.replace(TEMPLATE_PLACEHOLDER, (_match, key: string) => {
    if (key !== 'username') throw new ConnectorError('InvalidInput', `account template uses unknown placeholder {${key}}`);
    return username;
  });
  return validateSshName('account', name);
}

/** The certificate key id: sshd logs it with every login made with the certificate. */
export function sshCaKeyId(account: string, serial: number): string {
  return `${KEY_ID_PREFIX}:${account}:${serial}`;
}

// ---------------------------------------------------------------------------------------
// Public keys and lease

export interface ParsedPublicKey {
  type: string;
  /** base64 of the wire-format key blob */
  blob: string;
  /** `type blob`: the key without its comment, the identity used for idempotency. */
  normalized: string;
}

/**
 * Syntactic check of an OpenSSH public key line (`type base64 [comment]`): one line, a known
 * key type, a base64 blob whose embedded type name matches. ssh-keygen parses it later too.
 */
export function parseSshPublicKey(input: unknown): ParsedPublicKey {
  const bad = (why: string) => new ConnectorError('InvalidInput', `publicKey ${why}`);
  if (typeof input !== 'string' || input.trim() === '') throw bad('is required (an OpenSSH public key line)');
  if (input.length > MAX_PUBLIC_KEY_LENGTH) throw bad(`is longer than ${MAX_PUBLIC_KEY_LENGTH} characters`);
  const line = input.trim();
  if (/[\r\n\0]/.test(line)) throw bad('must be a single line');
  const [type = '', blob = ''] = line.split(/[ \t]+/);
  if (!PUBLIC_KEY_TYPES.has(type)) throw bad('has an unsupported or unknown key type');
  if (!/^[A-Za-z0-9+/]+={0,2}$/.test(blob) || blob.length % 4 !== 0) throw bad('is not base64');
  const raw = Buffer.from(blob, 'base64');
  const nameLength = raw.length >= 4 ? raw.readUInt32BE(0) : -1;
  if (nameLength < 0 || raw.length < 4 + nameLength || raw.subarray(4, 4 + nameLength).toString('latin1') !== type) {
    throw bad('blob does not match its key type');
  }
  return { type, blob, normalized: `${type} ${blob}` };
}

/** Lease end as whole seconds (certificates have second granularity; rounded down, never past the lease). */
function leaseEndSeconds(notAfter: unknown): number {
  const date = notAfter instanceof Date ? notAfter : typeof notAfter === 'string' ? new Date(notAfter) : undefined;
  if (!date || Number.isNaN(date.getTime())) throw new ConnectorError('InvalidInput', 'notAfter (the lease end) is required');
  return Math.floor(date.getTime() / 1000);
}

/** `YYYYMMDDHHMMSSZ`: an absolute UTC time for `ssh-keygen -V`. */
function keygenTime(epochSeconds: number): string {
  return `${new Date(epochSeconds * 1000).toISOString().replace(/[-:T]/g, '').slice(0, 14)}Z`;
}

// ---------------------------------------------------------------------------------------
// Ledger

const ledgerRecordSchema = z.object({
  serial: z.number().int().positive(),
  keyId: z.string(),
  account: z.string(),
  resource: z.string(),
  /** `type base64` of the certified key */
  publicKey: z.string(),
  /** SHA256 fingerprint of the signing CA key */
  caFingerprint: z.string(),
  issuedAt: z.string(),
  validAfter: z.string(),
  validBefore: z.string(),
  /** Set when we revoked it (or found it revoked in the KRL); null while active. */
  revokedAt: z.string().nullable(),
});

const ledgerSchema = z.object({
  version: z.literal(1),
  lastSerial: z.number().int().min(0),
  certificates: z.array(ledgerRecordSchema),
});

type LedgerRecord = z.infer<typeof ledgerRecordSchema>;
type Ledger = z.infer<typeof ledgerSchema>;

/** A fresh empty ledger (callers mutate the records they read). */
const emptyLedger = (): Ledger => ({ version: 1, lastSerial: 0, certificates: [] });

/** Name of a certificate file in `<stateDir>/certs`. */
export function sshCaCertFileName(serial: number): string {
  return `${serial}-cert.pub`;
}

// ---------------------------------------------------------------------------------------
// Locks

/**
 * A cross-process lock whose holder stopped refreshing it (crashed, killed) is taken over
 * after this long; the holder refreshes it every half of it while it works.
 */
const LOCK_STALE_MS = 10_000;

/**
 * Longest wait for another process's lock: then a retryable Timeout, well inside the 15 s
 * target-write activity timeout, so Temporal retries rather than the activity timing out.
 */
const LOCK_WAIT_MS = 10_000;
const LOCK_POLL_MAX_MS = 100;

/** Tail of each lock's queue; keyed by absolute path so connector instances share them. */
const lockTails = new Map<string, Promise<void>>();

/**
 * Runs fn holding the lock on `file`: first this process's queue for it, then the
 * cross-process lock directory `<file>.lock` (whose parent directory must exist).
 */
async function withLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  const previous = lockTails.get(file) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((resolve) => {
    release = resolve;
  });
  const tail = previous.then(() => mine);
  lockTails.set(file, tail);
  await previous;
  try {
    return await withProcessLock(file, fn);
  } finally {
    release();
    if (lockTails.get(file) === tail) lockTails.delete(file);
  }
}

async function withProcessLock<T>(file: string, fn: () => Promise<T>): Promise<T> {
  let compromised: Error | undefined;
  let unlock: () => Promise<void>;
  try {
    unlock = await lockfile.lock(file, {
      realpath: false, // the ledger and the KRL need not exist yet
      stale: LOCK_STALE_MS,
      retries: { retries: Math.ceil(LOCK_WAIT_MS / LOCK_POLL_MAX_MS), minTimeout: 5, maxTimeout: LOCK_POLL_MAX_MS, factor: 1.5, randomize: true },
      // the default throws from a timer, which would end the worker process
      onCompromised: (err) => {
        compromised = err;
      },
    });
  } catch (err) {
    if ((err as { code?: unknown }).code === 'ELOCKED') {
      throw new ConnectorError('Timeout', `SSH CA: ${file} stayed locked by another process for ${LOCK_WAIT_MS} ms`, { cause: err });
    }
    throw classifyFsError(err, `SSH CA: locking ${file}`);
  }
  let result: T;
  try {
    result = await fn();
  } finally {
    await unlock().catch(() => undefined); // a compromised lock is no longer ours to remove
  }
  // another process may have taken the lock over mid-way and interleaved its writes: the
  // retry re-reads the ledger and the KRL, and grant and revoke are idempotent
  if (compromised) throw new ConnectorError('TargetUnavailable', `SSH CA: lost the lock on ${file}: ${compromised.message}`, { cause: compromised });
  return result;
}

// ---------------------------------------------------------------------------------------
// Errors

/** File system failure → ConnectorError (permission problems are not retryable, disk trouble is). */
function classifyFsError(err: unknown, what: string): ConnectorError {
  if (err instanceof ConnectorError) return err;
  const code = (err as { code?: unknown } | null)?.code;
  const detail = err instanceof Error ? err.message : String(err);
  let type: ConnectorErrorType = 'TargetUnavailable';
  if (code === 'EACCES' || code === 'EPERM' || code === 'EROFS') type = 'PermissionDenied';
  else if (code === 'ENOTDIR' || code === 'EISDIR' || code === 'ELOOP' || code === 'ENAMETOOLONG') type = 'InvalidConfig';
  return new ConnectorError(type, `${what}: ${detail}`, { cause: err });
}

async function fsStep<T>(what: string, op: () => Promise<T>): Promise<T> {
  try {
    return await op();
  } catch (err) {
    throw classifyFsError(err, what);
  }
}

// ---------------------------------------------------------------------------------------

interface KeygenRun {
  code: number;
  stdout: string;
  stderr: string;
}

/** Writes `data` to a temp file next to `target`, fsyncs it and renames it over `target`. */
async function writeFileAtomic(target: string, data: string | Buffer, mode: number): Promise<void> {
  const tmp = path.join(path.dirname(target), `.${path.basename(target)}.tmp-${randomUUID()}`);
  try {
    const fh = await open(tmp, 'wx', mode);
    try {
      await fh.writeFile(data);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, target);
  } catch (err) {
    await rm(tmp, { force: true }).catch(() => undefined);
    throw err;
  }
}

/** SHA256 fingerprint (as ssh-keygen -l prints it) of a `type base64 ...` public key line. */
function fingerprint(publicKeyLine: string): string {
  const blob = publicKeyLine.trim().split(/\s+/)[1] ?? '';
  return `SHA256:${createHash('sha256').update(Buffer.from(blob, 'base64')).digest('base64').replace(/=+$/, '')}`;
}

export function createSshCaConnector(config: SshCaSystemConfigInput, secrets: SshCaSecrets): Connector {
  const parsed = sshCaSystemConfigSchema.safeParse(config);
  if (!parsed.success) {
    throw new ConnectorError('InvalidConfig', `invalid SSH CA system config: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  }
  const cfg: SshCaSystemConfig = parsed.data;
  const stateDir = path.resolve(cfg.stateDir);
  const certDir = path.join(stateDir, 'certs');
  const ledgerPath = path.join(stateDir, 'ledger.json');
  const krlPath = path.resolve(cfg.krlPath);
  const principals: ReadonlySet<string> = new Set(cfg.principals);
  // the lock files' names: `<name>.lock` directories
  const ledgerLock = ledgerPath;
  const krlLock = krlPath;

  // Environment variables may carry a PEM-ish key with literal "\n" sequences.
  let caKeyText = typeof secrets?.caPrivateKey === 'string' ? secrets.caPrivateKey : '';
  if (!caKeyText.includes('\n') && caKeyText.includes('\\n')) caKeyText = caKeyText.replace(/\\n/g, '\n');
  caKeyText = `${caKeyText.replace(/\r\n/g, '\n').trim()}\n`;
  /** Every substantial piece of the key, for scrubbing error text. */
  const secretLines = [caKeyText.trim(), ...caKeyText.split('\n').map((l) => l.trim())].filter((l) => l.length >= 8);

  let closed = false;
  const inflight = new Set<Promise<unknown>>();
  let ready: Promise<{ keyDir: string; caKeyPath: string; caFingerprint: string }> | undefined;

  const keygen = (what: string, args: string[], okCodes: readonly number[] = [0]): Promise<KeygenRun> =>
    new Promise((resolve, reject) => {
      const child = spawn('ssh-keygen', args, {
        stdio: ['ignore', 'pipe', 'pipe'],
        // no SSH_ASKPASS/DISPLAY/agent: nothing may prompt; TZ only matters for printed times
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C', TZ: 'UTC' },
      });
      let stdout = '';
      let stderr = '';
      let timedOut = false;
      child.stdout.setEncoding('utf8').on('data', (d: string) => {
        if (stdout.length < MAX_OUTPUT_BYTES) stdout += d;
      });
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        if (stderr.length < MAX_OUTPUT_BYTES) stderr += d;
      });
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, cfg.timeoutMs);
      child.once('error', (err: NodeJS.ErrnoException) => {
        clearTimeout(timer);
        const type: ConnectorErrorType = err.code === 'ENOENT' ? 'InvalidConfig' : 'TargetUnavailable';
        reject(new ConnectorError(type, `${what}: cannot run ssh-keygen: ${err.message}`, { cause: err }));
      });
      child.once('close', (code, signal) => {
        clearTimeout(timer);
        if (timedOut) {
          reject(new ConnectorError('Timeout', `${what}: ssh-keygen did not finish within ${cfg.timeoutMs} ms`));
          return;
        }
        if (code === null || !okCodes.includes(code)) {
          const detail = redact(stderr.trim().split('\n').slice(-3).join('; ') || `exit ${code ?? signal}`, secretLines);
          reject(new ConnectorError('TargetUnavailable', `${what}: ssh-keygen failed (${code ?? signal}): ${detail}`));
          return;
        }
        resolve({ code, stdout, stderr });
      });
    });

  /** Writes the CA key to its private file and derives the public key (proves it is usable). */
  const init = () => {
    if (closed) throw new ConnectorError('InvalidConfig', 'SSH CA connector is closed');
    ready ??= (async () => {
      const keyDir = await fsStep('SSH CA: creating the private key directory', () => mkdtemp(path.join(os.tmpdir(), 'accessloop-ssh-ca-')));
      try {
        const caKeyPath = path.join(keyDir, 'ca');
        await fsStep('SSH CA: writing the CA key file', () => writeFile(caKeyPath, caKeyText, { mode: 0o600, flag: 'wx' }));
        let pub: KeygenRun;
        try {
          // -P '': an encrypted key fails here instead of prompting at every signature
          pub = await keygen('SSH CA: reading the CA key', ['-y', '-P', '', '-f', caKeyPath]);
        } catch (err) {
          if (err instanceof ConnectorError && err.type === 'TargetUnavailable') {
            throw new ConnectorError('InvalidConfig', 'SSH CA: caPrivateKey is not an unencrypted OpenSSH private key', { cause: err });
          }
          throw err;
        }
        return { keyDir, caKeyPath, caFingerprint: fingerprint(pub.stdout) };
      } catch (err) {
        await rm(keyDir, { recursive: true, force: true }).catch(() => undefined);
        throw err;
      }
    })();
    const attempt = ready;
    // a failed start (bad key, full disk) is not cached: the next call tries again
    attempt.catch(() => {
      if (ready === attempt) ready = undefined;
    });
    return attempt;
  };

  /** Runs an operation; close() waits for it before deleting the key. */
  const track = <T>(op: () => Promise<T>): Promise<T> => {
    if (closed) return Promise.reject(new ConnectorError('InvalidConfig', 'SSH CA connector is closed'));
    const p = op();
    inflight.add(p);
    const forget = () => inflight.delete(p);
    p.then(forget, forget);
    return p;
  };

  const readLedger = async (): Promise<Ledger> => {
    let text: string;
    try {
      text = await readFile(ledgerPath, 'utf8');
    } catch (err) {
      if ((err as { code?: unknown }).code === 'ENOENT') return emptyLedger();
      throw classifyFsError(err, `SSH CA: reading ${ledgerPath}`);
    }
    let data: unknown;
    try {
      data = JSON.parse(text);
    } catch (err) {
      throw new ConnectorError('InvalidConfig', `SSH CA: ${ledgerPath} is not valid JSON`, { cause: err });
    }
    const result = ledgerSchema.safeParse(data);
    if (!result.success) throw new ConnectorError('InvalidConfig', `SSH CA: ${ledgerPath} is not a certificate ledger`, { cause: result.error });
    return result.data;
  };

  /** The ledger's lock directory goes inside stateDir, so stateDir must exist before locking. */
  const ensureStateDir = () => fsStep(`SSH CA: creating ${stateDir}`, () => mkdir(stateDir, { recursive: true, mode: 0o700 }));

  const writeLedger = (ledger: Ledger) =>
    fsStep(`SSH CA: writing ${ledgerPath}`, () => writeFileAtomic(ledgerPath, `${JSON.stringify(ledger, null, 1)}\n`, 0o600));

  const certPath = (serial: number) => path.join(certDir, sshCaCertFileName(serial));

  const live = (r: LedgerRecord, nowMs: number) => Date.parse(r.validAfter) <= nowMs && Date.parse(r.validBefore) > nowMs;

  /**
   * Whether the KRL revokes each certificate, asked of `ssh-keygen -Q` (the same check sshd
   * makes). Output is one `<path> (<comment>): ok|REVOKED` line per file, in order.
   */
  const revokedByKrl = async (records: readonly LedgerRecord[]): Promise<boolean[]> => {
    const out: boolean[] = [];
    for (let i = 0; i < records.length; i += KEYGEN_BATCH) {
      const batch = records.slice(i, i + KEYGEN_BATCH);
      const files = batch.map((r) => certPath(r.serial));
      // exit 1 = at least one is revoked
      const run = await keygen(`SSH CA: KRL query of ${krlPath}`, ['-Q', '-f', krlPath, ...files], [0, 1]);
      const lines = run.stdout.split('\n').filter((l) => l.length > 0);
      if (lines.length !== files.length) {
        throw new ConnectorError('TargetUnavailable', `SSH CA: KRL query answered ${lines.length} lines for ${files.length} certificates`);
      }
      files.forEach((file, j) => {
        const line = lines[j] ?? '';
        // the status is the last token; the comment inside the parentheses is our key id
        const status = /: (ok|REVOKED)$/.exec(line)?.[1];
        if (!line.startsWith(`${file} `) || !status) {
          throw new ConnectorError('TargetUnavailable', `SSH CA: unexpected KRL query output for ${sshCaCertFileName(batch[j]?.serial ?? 0)}`);
        }
        out.push(status === 'REVOKED');
      });
    }
    return out;
  };

  /**
   * Makes sure the KRL exists (sshd refuses every key without it). A missing KRL is rebuilt
   * from the ledger's revoked, unexpired certificates, and put in place with link(), which
   * unlike rename never replaces a KRL someone else created meanwhile.
   */
  const ensureKrl = async (): Promise<void> => {
    try {
      await stat(krlPath); // stat, not open: opening a FIFO or a hung mount would block the thread pool
      return;
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ENOENT') throw classifyFsError(err, `SSH CA: reading ${krlPath}`);
    }
    // before the lock: its lock directory goes next to the KRL
    await fsStep(`SSH CA: creating the directory of ${krlPath}`, () => mkdir(path.dirname(krlPath), { recursive: true }));
    await withLock(krlLock, async () => {
      try {
        await stat(krlPath);
        return;
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'ENOENT') throw classifyFsError(err, `SSH CA: reading ${krlPath}`);
      }
      const nowMs = Date.now();
      const revoked = (await readLedger()).certificates.filter((r) => r.revokedAt !== null && Date.parse(r.validBefore) > nowMs);
      const tmp = path.join(path.dirname(krlPath), `.${path.basename(krlPath)}.tmp-${randomUUID()}`);
      try {
        await keygen(`SSH CA: creating ${krlPath}`, ['-k', '-f', tmp, ...revoked.map((r) => certPath(r.serial))]);
        await fsStep(`SSH CA: creating ${krlPath}`, async () => {
          const fh = await open(tmp, 'r+');
          try {
            await fh.chmod(0o644); // servers read it
            await fh.sync();
          } finally {
            await fh.close();
          }
          try {
            await link(tmp, krlPath);
          } catch (err) {
            if ((err as { code?: unknown }).code !== 'EEXIST') throw err;
          }
        });
      } finally {
        await unlink(tmp).catch(() => undefined);
      }
    });
  };

  /** The current KRL bytes; refuses anything but a regular file (a FIFO would block forever). */
  const readKrl = (): Promise<Buffer> =>
    fsStep(`SSH CA: reading ${krlPath}`, async () => {
      const fh = await open(krlPath, fsConstants.O_RDONLY | fsConstants.O_NONBLOCK);
      try {
        if (!(await fh.stat()).isFile()) throw new ConnectorError('InvalidConfig', `SSH CA: ${krlPath} is not a regular file`);
        return await fh.readFile();
      } finally {
        await fh.close();
      }
    });

  /** Adds certificates to the KRL: a copy is updated with `ssh-keygen -k -u` and renamed over it. */
  const revokeInKrl = async (records: readonly LedgerRecord[]): Promise<void> => {
    const tmp = path.join(path.dirname(krlPath), `.${path.basename(krlPath)}.tmp-${randomUUID()}`);
    try {
      const current = await readKrl();
      await fsStep(`SSH CA: writing ${krlPath}`, () => writeFile(tmp, current, { mode: 0o644, flag: 'wx' }));
      for (let i = 0; i < records.length; i += KEYGEN_BATCH) {
        const files = records.slice(i, i + KEYGEN_BATCH).map((r) => certPath(r.serial));
        await keygen(`SSH CA: revoking in ${krlPath}`, ['-k', '-u', '-f', tmp, ...files]);
      }
      await fsStep(`SSH CA: writing ${krlPath}`, async () => {
        const fh = await open(tmp, 'r+');
        try {
          await fh.chmod(0o644);
          await fh.sync();
        } finally {
          await fh.close();
        }
        await rename(tmp, krlPath);
      });
    } finally {
      await unlink(tmp).catch(() => undefined);
    }
  };

  const validate = (m: Membership): Membership => {
    // resource first: with both invalid the resource is the one reported
    const resource = validateSshName('resource', m?.resource);
    const account = validateSshName('account', m?.account);
    if (!principals.has(resource)) throw new ConnectorError('NoSuchResource', `SSH principal ${resource} is not one this CA issues`);
    return { account, resource };
  };

  const validateResource = (input: unknown): string => {
    const resource = validateSshName('resource', input);
    if (!principals.has(resource)) throw new ConnectorError('NoSuchResource', `SSH principal ${resource} is not one this CA issues`);
    return resource;
  };

  /** Lease checks; returns the end in whole seconds. */
  const validateLease = (opts: GrantOptions | undefined): number => {
    const end = leaseEndSeconds(opts?.notAfter);
    const nowSec = Math.floor(Date.now() / 1000);
    if (end <= nowSec) throw new ConnectorError('InvalidInput', 'notAfter (the lease end) is not in the future');
    if (end - nowSec > cfg.maxValiditySeconds) {
      throw new ConnectorError('InvalidInput', `notAfter is more than maxValiditySeconds (${cfg.maxValiditySeconds} s) away`);
    }
    return end;
  };

  /** `ssh-keygen -l` must accept the key (catches what the syntax check cannot, e.g. a bad curve point). */
  const checkPublicKeyWithKeygen = async (keyDir: string, key: ParsedPublicKey): Promise<void> => {
    const file = path.join(keyDir, `check-${randomUUID()}.pub`);
    try {
      await fsStep('SSH CA: writing a temp file', () => writeFile(file, `${key.normalized}\n`, { mode: 0o600, flag: 'wx' }));
      let run: KeygenRun;
      try {
        run = await keygen('SSH CA: reading the public key', ['-l', '-f', file]);
      } catch (err) {
        if (err instanceof ConnectorError && err.type === 'TargetUnavailable') {
          throw new ConnectorError('InvalidInput', 'publicKey is not a valid OpenSSH public key', { cause: err });
        }
        throw err;
      }
      const bits = Number(/^(\d+) /.exec(run.stdout)?.[1]);
      if (key.type === 'ssh-rsa' && !(bits >= MIN_RSA_BITS)) {
        throw new ConnectorError('InvalidInput', `publicKey: RSA keys need at least ${MIN_RSA_BITS} bits`);
      }
    } finally {
      await rm(file, { force: true }).catch(() => undefined);
    }
  };

  const credentialOf = async (r: LedgerRecord): Promise<IssuedCredential> => ({
    kind: 'ssh_certificate',
    credentialId: String(r.serial),
    material: await fsStep(`SSH CA: reading certificate ${r.serial}`, () => readFile(certPath(r.serial), 'utf8')),
    notAfter: new Date(r.validBefore),
  });

  const grant = async (input: Membership, opts?: GrantOptions): Promise<GrantResult> => {
    const m = validate(input);
    const end = validateLease(opts);
    const key = parseSshPublicKey(opts?.publicKey);
    const { keyDir, caKeyPath, caFingerprint } = await init();
    await checkPublicKeyWithKeygen(keyDir, key);
    await ensureKrl();
    await ensureStateDir();
    return withLock(ledgerLock, async () => {
      const ledger = await readLedger();
      const nowMs = Date.now();
      const reusable = ledger.certificates.filter(
        (r) => r.account === m.account && r.resource === m.resource && r.publicKey === key.normalized && r.revokedAt === null && live(r, nowMs),
      );
      let ledgerDirty = false;
      if (reusable.length > 0) {
        const revoked = await revokedByKrl(reusable);
        const active = reusable.find((_, i) => !revoked[i]);
        // revoked in the KRL behind the ledger's back (operator, or a crash after the KRL write)
        reusable.forEach((r, i) => {
          if (revoked[i]) {
            r.revokedAt = new Date(nowMs).toISOString();
            ledgerDirty = true;
          }
        });
        if (active) {
          if (ledgerDirty) await writeLedger(ledger);
          return { changed: false, credential: await credentialOf(active) };
        }
      }

      const serial = ledger.lastSerial + 1;
      const keyId = sshCaKeyId(m.account, serial);
      const from = Math.floor(nowMs / 1000) - VALIDITY_BACKDATE_SECONDS;
      const pubFile = path.join(keyDir, `${serial}-${randomUUID()}.pub`);
      const signedFile = pubFile.replace(/\.pub$/, '-cert.pub');
      let certificate: string;
      try {
        // the comment becomes the certificate's comment: the key id, not the caller's text
        await fsStep('SSH CA: writing a temp file', () => writeFile(pubFile, `${key.normalized} ${keyId}\n`, { mode: 0o600, flag: 'wx' }));
        const args = ['-s', caKeyPath, '-I', keyId, '-n', m.resource, '-V', `${keygenTime(from)}:${keygenTime(end)}`, '-z', String(serial)];
        args.push('-O', 'clear', ...cfg.extensions.flatMap((x) => ['-O', x]), pubFile);
        await keygen(`SSH CA: signing ${keyId} for ${m.resource}`, args);
        certificate = await fsStep('SSH CA: reading the new certificate', () => readFile(signedFile, 'utf8'));
      } finally {
        await rm(pubFile, { force: true }).catch(() => undefined);
        await rm(signedFile, { force: true }).catch(() => undefined);
      }

      // the certificate file before the ledger entry: an entry always has its file
      await fsStep(`SSH CA: creating ${certDir}`, () => mkdir(certDir, { recursive: true, mode: 0o700 }));
      await fsStep(`SSH CA: writing certificate ${serial}`, () => writeFileAtomic(certPath(serial), certificate, 0o644));
      const record: LedgerRecord = {
        serial,
        keyId,
        account: m.account,
        resource: m.resource,
        publicKey: key.normalized,
        caFingerprint,
        issuedAt: new Date(nowMs).toISOString(),
        validAfter: new Date(from * 1000).toISOString(),
        validBefore: new Date(end * 1000).toISOString(),
        revokedAt: null,
      };
      const stale = new Set(ledger.certificates.filter((r) => Date.parse(r.validBefore) < nowMs - LEDGER_RETENTION_MS));
      await writeLedger({
        version: 1,
        lastSerial: serial,
        certificates: [...ledger.certificates.filter((r) => !stale.has(r)), record],
      });
      for (const r of stale) await rm(certPath(r.serial), { force: true }).catch(() => undefined);
      return { changed: true, credential: { kind: 'ssh_certificate', credentialId: String(serial), material: certificate, notAfter: new Date(end * 1000) } };
    });
  };

  const revoke = async (input: Membership): Promise<ChangeResult> => {
    const m = validate(input);
    // no init(): revocation needs only the certificates and the KRL, never the CA key, so a
    // broken or rotated-away key can never stand in the way of ending access
    await ensureKrl();
    await ensureStateDir();
    return withLock(ledgerLock, () =>
      withLock(krlLock, async () => {
        const ledger = await readLedger();
        const nowMs = Date.now();
        // the ledger's revokedAt is not trusted: the KRL is what the servers read
        const candidates = ledger.certificates.filter((r) => r.account === m.account && r.resource === m.resource && Date.parse(r.validBefore) > nowMs);
        if (candidates.length === 0) return { changed: false };
        const revoked = await revokedByKrl(candidates);
        const toRevoke = candidates.filter((_, i) => !revoked[i]);
        if (toRevoke.length > 0) await revokeInKrl(toRevoke);
        const at = new Date(nowMs).toISOString();
        const unflagged = candidates.filter((r) => r.revokedAt === null);
        for (const r of unflagged) r.revokedAt = at;
        if (unflagged.length > 0) await writeLedger(ledger);
        return { changed: toRevoke.length > 0 };
      }),
    );
  };

  /** Unexpired certificates matching `filter` that the KRL does not revoke. */
  const presentCertificates = async (filter: (r: LedgerRecord) => boolean): Promise<LedgerRecord[]> => {
    await ensureKrl();
    const nowMs = Date.now();
    const candidates = (await readLedger()).certificates.filter((r) => filter(r) && live(r, nowMs));
    if (candidates.length === 0) return [];
    const revoked = await revokedByKrl(candidates);
    return candidates.filter((_, i) => !revoked[i]);
  };

  return {
    kind: 'ssh_ca',

    grant: (m: Membership, opts?: GrantOptions) => track(() => grant(m, opts)),

    revoke: (m: Membership) => track(() => revoke(m)),

    check: (input: Membership) =>
      track(async (): Promise<CheckResult> => {
        const m = validate(input);
        const present = await presentCertificates((r) => r.account === m.account && r.resource === m.resource);
        return { present: present.length > 0 };
      }),

    list: (input: string) =>
      track(async () => {
        const resource = validateResource(input);
        const present = await presentCertificates((r) => r.resource === resource);
        return [...new Set(present.map((r) => r.account))].sort();
      }),

    async close(): Promise<void> {
      closed = true;
      await Promise.allSettled([...inflight]);
      const started = ready;
      ready = undefined;
      if (!started) return;
      const state = await started.catch(() => undefined);
      if (state) await rm(state.keyDir, { recursive: true, force: true });
    },
  };
}
