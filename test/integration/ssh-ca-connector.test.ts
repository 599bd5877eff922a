/**
 * SSH CA connector against a real CA (ssh-keygen, keys in a temp dir) and, end to end, a
 * private sshd on 127.0.0.1. The truth is read from the certificate files and the KRL with
 * `ssh-keygen -L` / `ssh-keygen -Q` here in the test, never through the connector, and the
 * end-to-end tests ask sshd itself whether a login works.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, unlink, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { inspect, promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCaKeyPair, generateUserKeyPair, type SshKeyPair } from '../../activities/connectors/ssh-ca/ca.js';
import {
  createSshCaConnector,
  sshCaAccountFor,
  sshCaSystemConfigSchema,
  type SshCaSystemConfigInput,
} from '../../activities/connectors/ssh-ca/connector.js';
import { ConnectorError, type Connector, type GrantResult, type IssuedCredential, type Membership } from '../../activities/connectors/types.js';
import { describeConnectorContract, expectConnectorError } from '../helpers/connector-contract.js';
import { sshLogin, startSshd, type SshdHandle } from '../helpers/sshd.js';

const execFileAsync = promisify(execFile);

const ROOT_PRINCIPAL = 'prod-root';
const READONLY_PRINCIPAL = 'prod-readonly';
const PRINCIPALS = [ROOT_PRINCIPAL, READONLY_PRINCIPAL];
const MAX_VALIDITY_SECONDS = 3600;
const TIMEOUT_MS = 5000;
const LEASE_MS = 10 * 60_000;

let dir: string;
let ca: SshKeyPair;
let user: SshKeyPair;
const openConnectors: Connector[] = [];

/** A config with its own ledger and KRL, so tests do not see each other's certificates. */
async function freshConfig(overrides: Partial<SshCaSystemConfigInput> = {}): Promise<SshCaSystemConfigInput> {
  const base = await mkdtemp(path.join(dir, 'ca-state-'));
  return {
    stateDir: path.join(base, 'state'),
    krlPath: path.join(base, 'krl', 'revoked.krl'),
    principals: PRINCIPALS,
    maxValiditySeconds: MAX_VALIDITY_SECONDS,
    timeoutMs: TIMEOUT_MS,
    ...overrides,
  };
}

function connector(config: SshCaSystemConfigInput, caPrivateKey = ca.privateKey): Connector {
  const c = createSshCaConnector(config, { caPrivateKey });
  openConnectors.push(c);
  return c;
}

function lease(publicKey = user.publicKey, ms = LEASE_MS) {
  return { publicKey, notAfter: new Date(Date.now() + ms) };
}

let accountSeq = 0;
const freshAccount = (prefix = 'user') => `${prefix}-${++accountSeq}-${randomUUID().slice(0, 8)}`;

// ---------------------------------------------------------------------------------------
// Independent reads: ssh-keygen on the files, never the connector

interface CertificateInfo {
  keyId: string;
  serial: number;
  signingCa: string;
  principals: string[];
  extensions: string[];
  validAfter: Date;
  validBefore: Date;
}

/** `ssh-keygen -L` of a certificate file, times printed in UTC (TZ=UTC). */
async function inspectCertificate(certPath: string): Promise<CertificateInfo> {
  const { stdout } = await execFileAsync('ssh-keygen', ['-L', '-f', certPath], { env: { ...process.env, TZ: 'UTC' } });
  const field = (name: string) => {
    const m = new RegExp(`^\\s*${name}: ?(.*)$`, 'm').exec(stdout);
    if (!m) throw new Error(`no ${name} in ssh-keygen -L output:\n${stdout}`);
    return (m[1] ?? '').trim();
  };
  /** Indented lines under a heading, up to the next heading. */
  const listUnder = (name: string) => {
    const lines = stdout.split('\n');
    const start = lines.findIndex((l) => l.trim().startsWith(`${name}:`));
    const out: string[] = [];
    for (const l of lines.slice(start + 1)) {
      if (/^\s*[A-Z][A-Za-z ]+:/.test(l) || l.trim() === '') break;
      out.push(l.trim());
    }
    return out;
  };
  const valid = /^from (\S+) to (\S+)$/.exec(field('Valid'));
  if (!valid) throw new Error(`unexpected validity: ${field('Valid')}`);
  return {
    keyId: JSON.parse(field('Key ID')) as string,
    serial: Number(field('Serial')),
    signingCa: field('Signing CA'),
    principals: listUnder('Principals'),
    extensions: listUnder('Extensions'),
    validAfter: new Date(`${valid[1]}Z`),
    validBefore: new Date(`${valid[2]}Z`),
  };
}

/** `ssh-keygen -Q`: exit 0 = not revoked, 1 = revoked (anything else rejects). */
async function krlRevokes(krlPath: string, certPath: string): Promise<boolean> {
  try {
    await execFileAsync('ssh-keygen', ['-Q', '-f', krlPath, certPath]);
    return false;
  } catch (err) {
    if ((err as { code?: unknown }).code === 1) return true;
    throw err;
  }
}

async function fingerprintOf(keyPath: string): Promise<string> {
  const { stdout } = await execFileAsync('ssh-keygen', ['-l', '-f', keyPath]);
  return stdout.split(' ')[1] ?? '';
}

async function certificateFiles(config: SshCaSystemConfigInput): Promise<string[]> {
  const certDir = path.join(config.stateDir, 'certs');
  if (!existsSync(certDir)) return [];
  return (await readdir(certDir)).filter((f) => f.endsWith('-cert.pub')).map((f) => path.join(certDir, f));
}

/**
 * Whether the account could log in with the principal right now: a certificate signed by our
 * CA whose key id names the account, listing the principal, within its validity, and not
 * revoked by the KRL the servers read.
 */
async function certificateTruth(config: SshCaSystemConfigInput, m: Membership): Promise<boolean> {
  const caFingerprint = await fingerprintOf(ca.publicKeyPath);
  const now = Date.now();
  for (const file of await certificateFiles(config)) {
    const info = await inspectCertificate(file);
    const account = /^accessloop:(.*):\d+$/.exec(info.keyId)?.[1];
    if (account !== m.account || !info.principals.includes(m.resource) || !info.signingCa.includes(caFingerprint)) continue;
    if (info.validAfter.getTime() > now || info.validBefore.getTime() <= now) continue;
    if (!existsSync(config.krlPath) || (await krlRevokes(config.krlPath, file))) continue;
    return true;
  }
  return false;
}

async function writeCertificate(credential: IssuedCredential | undefined, name: string): Promise<string> {
  if (!credential) throw new Error('grant returned no credential');
  const file = path.join(dir, `${name}-${randomUUID().slice(0, 8)}-cert.pub`);
  await writeFile(file, credential.material);
  return file;
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-ssh-ca-test-'));
  ca = await generateCaKeyPair(path.join(dir, 'keys'));
  user = await generateUserKeyPair(path.join(dir, 'keys'));
});

afterAll(async () => {
  for (const c of openConnectors) await c.close().catch(() => undefined);
  if (dir) await rm(dir, { recursive: true, force: true });
});

describeConnectorContract(
  'ssh-ca',
  async () => {
    const config = await freshConfig();
    const c = connector(config);
    return {
      connector: c,
      account: () => freshAccount('contract'),
      resource: ROOT_PRINCIPAL,
      missingResource: 'no-such-principal',
      readTruth: (m) => certificateTruth(config, m),
      grantOptions: () => lease(),
      timeoutMs: TIMEOUT_MS,
      teardown: () => c.close(),
    };
  },
  // the CA is ssh-keygen on local files: there is no server to stop
  { stoppable: false },
);

describe('ssh-ca certificates', () => {
  it('the certificate carries the lease: one principal, the account in the key id, valid-before = notAfter to the second', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('alice'), resource: ROOT_PRINCIPAL };
    // milliseconds on purpose: the certificate must end at the second, never after the lease
    const notAfter = new Date(Math.floor(Date.now() / 1000) * 1000 + LEASE_MS + 789);
    const before = Date.now();
    const result = await c.grant(m, { publicKey: user.publicKey, notAfter });
    expect(result.changed).toBe(true);
    const credential = result.credential;
    expect(credential?.kind).toBe('ssh_certificate');
    expect(credential?.notAfter.getTime()).toBe(Math.floor(notAfter.getTime() / 1000) * 1000);
    const file = await writeCertificate(credential, 'lease');

    const info = await inspectCertificate(file);
    expect(info.principals).toEqual([ROOT_PRINCIPAL]);
    expect(info.keyId).toBe(`accessloop:${m.account}:${credential?.credentialId}`);
    expect(String(info.serial)).toBe(credential?.credentialId);
    expect(info.validBefore.getTime()).toBe(Math.floor(notAfter.getTime() / 1000) * 1000);
    expect(info.validAfter.getTime()).toBeLessThanOrEqual(before);
    // only what a login needs
    expect(info.extensions).toEqual(['permit-pty']);
    expect(info.signingCa).toContain(await fingerprintOf(ca.publicKeyPath));
    // it certifies the caller's key (the certificate's own fingerprint is that of the key)
    expect(await fingerprintOf(file)).toBe(await fingerprintOf(user.publicKeyPath));
    // the connector's copy is the same certificate
    expect(await certificateFiles(config)).toHaveLength(1);
    expect((await readFile((await certificateFiles(config))[0] ?? '', 'utf8')).trim()).toBe(credential?.material.trim());
    expect(await certificateTruth(config, m)).toBe(true);
  });

  it('a lease end beyond maxValiditySeconds, in the past or missing is InvalidInput and issues nothing', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('cap'), resource: ROOT_PRINCIPAL };
    const cases = [
      { publicKey: user.publicKey, notAfter: new Date(Date.now() + (MAX_VALIDITY_SECONDS + 60) * 1000) },
      { publicKey: user.publicKey, notAfter: new Date(Date.now() - 1000) },
      { publicKey: user.publicKey, notAfter: new Date(Number.NaN) },
      { publicKey: user.publicKey },
      undefined,
    ];
    for (const opts of cases) {
      const err = await expectConnectorError(c.grant(m, opts), 'InvalidInput');
      expect(err.retryable).toBe(false);
    }
    expect(await certificateFiles(config)).toEqual([]);
    expect(await certificateTruth(config, m)).toBe(false);
    // just inside the cap is fine
    const ok = await c.grant(m, { publicKey: user.publicKey, notAfter: new Date(Date.now() + (MAX_VALIDITY_SECONDS - 5) * 1000) });
    expect(ok.changed).toBe(true);
    expect(await certificateTruth(config, m)).toBe(true);
  });

  it('a malformed public key is InvalidInput and issues nothing', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('badkey'), resource: ROOT_PRINCIPAL };
    const [type = '', blob = ''] = user.publicKey.split(' ');
    // a well-formed wire blob that is no valid ed25519 key (31-byte point): only ssh-keygen can tell
    const name = Buffer.from('ssh-ed25519');
    const shortPoint = Buffer.alloc(31, 7);
    const wire = Buffer.concat([Buffer.from([0, 0, 0, name.length]), name, Buffer.from([0, 0, 0, shortPoint.length]), shortPoint]);
    const certificate = (await c.grant({ account: freshAccount('source'), resource: ROOT_PRINCIPAL }, lease())).credential?.material ?? '';
    const filesBefore = await certificateFiles(config);
    const bad = [
      '',
      'not a key',
      `${type} ${blob}\n${type} ${blob}`,
      `ssh-dss ${blob}`,
      `ssh-rsa ${blob}`, // blob says ssh-ed25519
      `${type} ${blob.slice(0, -4)}!!!!`,
      `${type} ${wire.toString('base64')}`,
      certificate.trim(), // a certificate is not a key to certify
      user.privateKey,
      `${type} ${'A'.repeat(20_000)}`,
    ];
    for (const publicKey of bad) {
      const err = await expectConnectorError(c.grant(m, { publicKey, notAfter: new Date(Date.now() + LEASE_MS) }), 'InvalidInput');
      expect(err.retryable).toBe(false);
      expect(err.message).toMatch(/publicKey/);
    }
    expect(await certificateFiles(config)).toEqual(filesBefore);
    expect(await certificateTruth(config, m)).toBe(false);
    // a comment or surrounding whitespace is fine
    expect((await c.grant(m, lease(`  ${type} ${blob} someone@laptop  \n`))).changed).toBe(true);
  });

  it('an expired certificate is not present, is not reused, and there is nothing to revoke', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('expiry'), resource: ROOT_PRINCIPAL };
    const first = await c.grant(m, lease(user.publicKey, 2500));
    const validBefore = first.credential?.notAfter.getTime() ?? 0;
    expect(await c.check(m)).toEqual({ present: true });
    expect(await certificateTruth(config, m)).toBe(true);
    // await the expiry as the connector reports it, then confirm it happened at valid-before
    await waitFor('the certificate to expire', async () => ((await c.check(m)).present ? undefined : true), 10_000);
    expect(Date.now()).toBeGreaterThanOrEqual(validBefore);
    const file = await writeCertificate(first.credential, 'expired');
    expect((await inspectCertificate(file)).validBefore.getTime()).toBeLessThanOrEqual(Date.now());
    expect(await krlRevokes(config.krlPath, file)).toBe(false); // absent by expiry, not by revocation
    expect(await certificateTruth(config, m)).toBe(false);
    expect(await c.list(ROOT_PRINCIPAL)).not.toContain(m.account);
    expect(await c.revoke(m)).toEqual({ changed: false });
    const second = await c.grant(m, lease());
    expect(second.changed).toBe(true);
    expect(second.credential?.credentialId).not.toBe(first.credential?.credentialId);
    expect(await c.check(m)).toEqual({ present: true });
  });

  it('a retried grant returns the same certificate; a different key gets its own; concurrent grants issue once', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('retry'), resource: ROOT_PRINCIPAL };
    const first = await c.grant(m, lease());
    // a retry computes its lease end again: the certificate already issued is still the answer
    const retry = await c.grant(m, lease(user.publicKey, LEASE_MS + 30_000));
    expect(first.changed).toBe(true);
    expect(retry.changed).toBe(false);
    expect(retry.credential).toEqual(first.credential);
    expect(await certificateFiles(config)).toHaveLength(1);

    const laptop = await generateUserKeyPair(path.join(dir, 'keys'), `laptop-${randomUUID().slice(0, 8)}`);
    const other = await c.grant(m, lease(laptop.publicKey));
    expect(other.changed).toBe(true);
    expect(Number(other.credential?.credentialId)).toBeGreaterThan(Number(first.credential?.credentialId));
    expect(await certificateFiles(config)).toHaveLength(2);

    // revoke ends both; then two connector instances on the same state race to grant again
    expect(await c.revoke(m)).toEqual({ changed: true });
    expect(await certificateTruth(config, m)).toBe(false);
    const twin = connector(config);
    const racing: GrantResult[] = await Promise.all([c.grant(m, lease()), twin.grant(m, lease()), c.grant(m, lease())]);
    expect(racing.map((r) => r.changed).sort()).toEqual([false, false, true]);
    expect(new Set(racing.map((r) => r.credential?.credentialId)).size).toBe(1);
    expect(await certificateTruth(config, m)).toBe(true);
    const serials = (await Promise.all((await certificateFiles(config)).map(inspectCertificate))).map((i) => i.serial).sort((a, b) => a - b);
    expect(serials).toEqual([1, 2, 3]);
  });

  it('names with commas, whitespace, controls or a leading dash are InvalidInput; an unlisted principal is NoSuchResource', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const fresh = freshAccount('names');
    const invalid: Membership[] = [
      { account: fresh, resource: `${ROOT_PRINCIPAL},${READONLY_PRINCIPAL}` },
      { account: fresh, resource: '-n' },
      { account: fresh, resource: '' },
      { account: `${fresh},x`, resource: ROOT_PRINCIPAL },
      { account: `${fresh} x`, resource: ROOT_PRINCIPAL },
      { account: `${fresh}\tx`, resource: ROOT_PRINCIPAL },
      { account: `${fresh}\nx`, resource: ROOT_PRINCIPAL },
      { account: `${fresh}\u202ex`, resource: ROOT_PRINCIPAL },
      { account: '-OProxyCommand=x', resource: ROOT_PRINCIPAL },
      { account: 'x'.repeat(65), resource: ROOT_PRINCIPAL },
    ];
    for (const m of invalid) {
      for (const call of [() => c.grant(m, lease()), () => c.revoke(m), () => c.check(m)]) {
        const err = await expectConnectorError(call(), 'InvalidInput');
        expect(err.retryable).toBe(false);
      }
    }
    await expectConnectorError(c.list(`${ROOT_PRINCIPAL},x`), 'InvalidInput');
    const err = await expectConnectorError(c.grant({ account: fresh, resource: 'root' }, lease()), 'NoSuchResource');
    expect(err.retryable).toBe(false);
    expect(await certificateFiles(config)).toEqual([]);
    // 64 characters, colons and non-ASCII letters are fine
    expect((await c.grant({ account: `ö:${'x'.repeat(62)}`, resource: ROOT_PRINCIPAL }, lease())).changed).toBe(true);
  });

  it('the KRL is created on first use and, when deleted, rebuilt with the revocations', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('krl'), resource: ROOT_PRINCIPAL };
    expect(existsSync(config.krlPath)).toBe(false);
    expect(await c.check(m)).toEqual({ present: false });
    // servers read it: it exists, is a valid KRL, and is world-readable
    expect((await stat(config.krlPath)).mode & 0o777).toBe(0o644);
    await execFileAsync('ssh-keygen', ['-Q', '-l', '-f', config.krlPath]);

    const { credential } = await c.grant(m, lease());
    const file = await writeCertificate(credential, 'krl');
    expect(await c.revoke(m)).toEqual({ changed: true });
    expect(await krlRevokes(config.krlPath, file)).toBe(true);

    await unlink(config.krlPath);
    // an empty KRL would bring the revoked certificate back to life
    expect(await c.check(m)).toEqual({ present: false });
    expect(await krlRevokes(config.krlPath, file)).toBe(true);
    expect(await certificateTruth(config, m)).toBe(false);
  });

  it('revoke keeps what an operator put in the KRL, and repairs a KRL reset behind its back', async () => {
    const config = await freshConfig();
    const c = connector(config);
    const m = { account: freshAccount('reset'), resource: ROOT_PRINCIPAL };
    const stolen = { account: freshAccount('stolen'), resource: ROOT_PRINCIPAL };
    const stolenFile = await writeCertificate((await c.grant(stolen, lease())).credential, 'stolen');
    // an operator revokes a certificate by hand, outside accessloop
    await execFileAsync('ssh-keygen', ['-k', '-u', '-f', config.krlPath, stolenFile]);
    expect(await c.check(stolen)).toEqual({ present: false });

    const file = await writeCertificate((await c.grant(m, lease())).credential, 'reset');
    expect(await c.revoke(m)).toEqual({ changed: true });
    expect(await krlRevokes(config.krlPath, file)).toBe(true);
    expect(await krlRevokes(config.krlPath, stolenFile)).toBe(true);

    // the KRL is replaced by an empty one (say, restored from an old backup): the servers
    // accept the certificate again, and check says so rather than trusting the ledger
    await unlink(config.krlPath);
    await execFileAsync('ssh-keygen', ['-k', '-f', config.krlPath]);
    expect(await c.check(m)).toEqual({ present: true });
    expect(await certificateTruth(config, m)).toBe(true);
    expect(await c.list(ROOT_PRINCIPAL)).toContain(m.account);
    expect(await c.revoke(m)).toEqual({ changed: true });
    expect(await c.check(m)).toEqual({ present: false });
    expect(await krlRevokes(config.krlPath, file)).toBe(true);
  });

  it('a KRL read that hangs is a retryable Timeout within timeoutMs', async () => {
    // a FIFO nobody writes to blocks the reader in open(), like a hung network mount
    const timeoutMs = 300;
    const config = await freshConfig({ timeoutMs });
    await mkdir(path.dirname(config.krlPath), { recursive: true });
    await execFileAsync('mkfifo', [config.krlPath]);
    const c = connector(config);
    const m = { account: freshAccount('hang'), resource: ROOT_PRINCIPAL };
    // issuing a new certificate does not read the KRL
    expect((await c.grant(m, lease())).changed).toBe(true);
    for (const call of [() => c.check(m), () => c.list(ROOT_PRINCIPAL), () => c.grant(m, lease()), () => c.revoke(m)]) {
      const started = Date.now();
      const err = await expectConnectorError(call(), 'Timeout');
      expect(err.retryable).toBe(true);
      expect(Date.now() - started).toBeLessThan(timeoutMs + 2000);
    }
  });

  it('the CA key lives in a private file until close(), and never appears in an error', async () => {
    const keyBody = ca.privateKey.split('\n').filter((l) => l.length > 0 && !l.startsWith('-----'));
    expect(keyBody.length).toBeGreaterThan(0);
    const errors: ConnectorError[] = [];
    const config = await freshConfig();

    // a damaged key (one body line altered), and an encrypted one
    const lines = ca.privateKey.split('\n');
    const damaged = lines.map((l, i) => (i === 2 ? `${l.slice(0, 10)}${l.slice(10).split('').reverse().join('')}` : l)).join('\n');
    const encrypted = await generateCaKeyPair(path.join(dir, 'keys'), `enc-${randomUUID().slice(0, 8)}`);
    await execFileAsync('ssh-keygen', ['-p', '-q', '-N', 'sekret-passphrase', '-f', encrypted.privateKeyPath]);
    const encryptedText = await readFile(encrypted.privateKeyPath, 'utf8');
    for (const key of [damaged, encryptedText, 'not a key at all']) {
      const bad = connector(config, key);
      const err = await expectConnectorError(bad.grant({ account: freshAccount('leak'), resource: ROOT_PRINCIPAL }, lease()), 'InvalidConfig');
      expect(err.retryable).toBe(false);
      errors.push(err);
    }

    const tmpBefore = new Set(await readdir(os.tmpdir()));
    const c = connector(config);
    const m = { account: freshAccount('keyfile'), resource: ROOT_PRINCIPAL };
    expect((await c.grant(m, lease())).changed).toBe(true);
    errors.push(await expectConnectorError(c.grant(m, { publicKey: 'garbage', notAfter: new Date(Date.now() + LEASE_MS) }), 'InvalidInput'));
    errors.push(await expectConnectorError(c.grant(m, lease(user.publicKey, (MAX_VALIDITY_SECONDS + 60) * 1000)), 'InvalidInput'));
    errors.push(await expectConnectorError(c.grant({ account: m.account, resource: 'nope' }, lease()), 'NoSuchResource'));

    // the key file: a new 0700 directory holding a 0600 copy of the key
    const created = (await readdir(os.tmpdir())).filter((d) => !tmpBefore.has(d) && d.startsWith('accessloop-ssh-ca-'));
    expect(created).toHaveLength(1);
    const keyDir = path.join(os.tmpdir(), created[0] ?? '');
    expect((await stat(keyDir)).mode & 0o777).toBe(0o700);
    const keyFiles = await readdir(keyDir);
    expect(keyFiles).toEqual(['ca']);
    expect((await stat(path.join(keyDir, 'ca'))).mode & 0o777).toBe(0o600);
    expect((await readFile(path.join(keyDir, 'ca'), 'utf8')).trim()).toBe(ca.privateKey.trim());
    // nothing of the key in the ledger or next to the certificates
    for (const f of await readdir(config.stateDir, { recursive: true })) {
      const p = path.join(config.stateDir, f);
      if (!(await stat(p)).isFile()) continue;
      const text = await readFile(p, 'utf8');
      for (const secret of keyBody) expect(text).not.toContain(secret);
    }

    await c.close();
    expect(existsSync(keyDir)).toBe(false);
    errors.push(await expectConnectorError(c.check(m), 'InvalidConfig'));

    const damagedBody = damaged.split('\n').filter((l) => l.length > 0 && !l.startsWith('-----'));
    const encryptedBody = encryptedText.split('\n').filter((l) => l.length > 0 && !l.startsWith('-----'));
    for (const err of errors) {
      const texts = [err.message, String(err), JSON.stringify(err), inspect(err, { depth: 10 }), String(err.stack)];
      for (const text of texts) {
        for (const secret of [...keyBody, ...damagedBody, ...encryptedBody, 'sekret-passphrase']) expect(text).not.toContain(secret);
      }
    }
  });

  it('rejects invalid configs with InvalidConfig and renders accounts from the template', () => {
    const good = { stateDir: '/var/lib/accessloop/ssh-ca', krlPath: '/etc/ssh/revoked.krl', principals: PRINCIPALS };
    expect(sshCaSystemConfigSchema.parse(good)).toMatchObject({ accountTemplate: '{username}', timeoutMs: 5000, extensions: ['permit-pty'] });
    for (const bad of [
      { ...good, stateDir: 'relative/dir' },
      { ...good, krlPath: 'revoked.krl' },
      { ...good, principals: [] },
      { ...good, principals: ['prod-root,other'] },
      { ...good, principals: ['prod-root', 'prod-root'] },
      { ...good, accountTemplate: '{email}' },
      { ...good, maxValiditySeconds: 10 },
      { ...good, extensions: ['permit-everything'] },
    ]) {
      expect(() => createSshCaConnector(bad as SshCaSystemConfigInput, { caPrivateKey: ca.privateKey })).toThrow(ConnectorError);
      try {
        createSshCaConnector(bad as SshCaSystemConfigInput, { caPrivateKey: ca.privateKey });
      } catch (err) {
        expect((err as ConnectorError).type).toBe('InvalidConfig');
      }
    }
    expect(sshCaAccountFor({}, { username: 'alice' })).toBe('alice');
    expect(sshCaAccountFor({ accountTemplate: 'corp-{username}' }, { username: 'alice' })).toBe('corp-alice');
    for (const username of [null, '']) {
      expect(() => sshCaAccountFor({}, { username })).toThrow(expect.objectContaining({ type: 'NoSuchAccount' }));
    }
    expect(() => sshCaAccountFor({}, { username: 'a,b' })).toThrow(expect.objectContaining({ type: 'InvalidInput' }));
  });
});

describe('ssh-ca end to end with a real sshd', () => {
  let sshd: SshdHandle;
  let config: SshCaSystemConfigInput;
  let c: Connector;
  let alice: SshKeyPair;

  beforeAll(async () => {
    config = await freshConfig();
    c = connector(config);
    // the KRL must exist before anyone can log in (sshd refuses every key without it)
    await c.list(ROOT_PRINCIPAL);
    alice = await generateUserKeyPair(path.join(dir, 'keys'), 'alice');
    sshd = await startSshd({
      dir: path.join(dir, 'sshd'),
      trustedUserCaKeyPath: ca.publicKeyPath,
      krlPath: config.krlPath,
      principalsForUser: { root: [ROOT_PRINCIPAL] },
    });
  });

  afterAll(async () => {
    await sshd?.stop();
  });

  const login = (certificatePath?: string) =>
    sshLogin({ port: sshd.port, user: 'root', keyPath: alice.privateKeyPath, ...(certificatePath ? { certificatePath } : {}) });

  /** Waits for sshd to log a line matching `pattern` after line `from` (its log trails the client's exit). */
  const sshdLogged = (from: number, pattern: RegExp) =>
    waitFor(`sshd to log ${pattern}`, async () => (sshd.logLines().slice(from).some((l) => pattern.test(l)) ? true : undefined), 5000);

  const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

  it('a login works with the granted certificate and stops working once it is revoked', async () => {
    const m = { account: freshAccount('alice'), resource: ROOT_PRINCIPAL };
    let mark = sshd.logLines().length;
    const refusedBefore = await login();
    expect(refusedBefore.ok).toBe(false);
    expect(refusedBefore.stderr).toMatch(/Permission denied \(publickey\)/);
    // refused as a plain key with no authorized_keys, not because of the KRL
    await sshdLogged(mark, /^Failed publickey for root .* ED25519 SHA256:/);
    expect(sshd.logLines().slice(mark).join('\n')).not.toMatch(/revoked keys file|revoked by file/);

    const granted = await c.grant(m, lease(alice.publicKey));
    // not <key>-cert.pub, which ssh would also pick up by itself in the later tests
    const certPath = await writeCertificate(granted.credential, 'alice');
    mark = sshd.logLines().length;
    const accepted = await login(certPath);
    expect(accepted, accepted.stderr).toMatchObject({ ok: true, code: 0 });
    // sshd attributes the login to the person through the key id
    const keyId = `accessloop:${m.account}:${granted.credential?.credentialId}`;
    await sshdLogged(mark, new RegExp(`^Accepted publickey for root .* ID ${escape(keyId)} \\(serial ${granted.credential?.credentialId}\\)`));

    expect(await c.revoke(m)).toEqual({ changed: true });
    // still within its validity: only the KRL stands in the way
    const info = await inspectCertificate(certPath);
    expect(info.validBefore.getTime()).toBeGreaterThan(Date.now() + 60_000);
    expect(info.validAfter.getTime()).toBeLessThan(Date.now());
    mark = sshd.logLines().length;
    const refusedAfter = await login(certPath);
    expect(refusedAfter.ok).toBe(false);
    expect(refusedAfter.stderr).toMatch(/Permission denied \(publickey\)/);
    // sshd re-read the KRL for this attempt (no reload) and refused the certificate by it
    await sshdLogged(mark, new RegExp(`^Authentication key ED25519-CERT .* revoked by file ${escape(config.krlPath)}$`));
    expect(await c.check(m)).toEqual({ present: false });
  });

  it('a certificate for a principal the server does not map to the login is refused', async () => {
    const m = { account: freshAccount('bob'), resource: READONLY_PRINCIPAL };
    const granted = await c.grant(m, lease(alice.publicKey));
    const certPath = await writeCertificate(granted.credential, 'readonly');
    const info = await inspectCertificate(certPath);
    expect(info.principals).toEqual([READONLY_PRINCIPAL]);
    expect(await certificateTruth(config, m)).toBe(true); // a valid, unrevoked certificate...
    const mark = sshd.logLines().length;
    const refused = await login(certPath);
    expect(refused.ok).toBe(false); // ...that does not open root on this server
    expect(refused.stderr).toMatch(/Permission denied \(publickey\)/);
    await sshdLogged(mark, /^Certificate does not contain an authorized principal$/);
    expect(await c.revoke(m)).toEqual({ changed: true });
  });
});
