/**
 * Just-in-time SSH access through the API: a certificate for the person's own key, signed by
 * our CA for the lease, collected once, accepted by a real sshd on 127.0.0.1, and refused after
 * an early revoke while the certificate itself would still be valid (the KRL the server reads).
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCaKeyPair, generateUserKeyPair, type SshKeyPair } from '../../activities/connectors/ssh-ca/ca.js';
import { sshLogin, startSshd, type SshdHandle } from '../helpers/sshd.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const execFileAsync = promisify(execFile);
const CA_SECRET = 'ACCESSLOOP_SECRET_SSH_CA';
let s: Stack;
let tok: Record<string, string>;
let dir: string;
let ca: SshKeyPair;
let aliceKey: SshKeyPair;
let sshd: SshdHandle;
let rootEntitlement: string;

/** What `ssh-keygen -L` says about a certificate (principals, key id, valid-before as epoch ms). */
async function inspect(certPath: string): Promise<{ keyId: string; principals: string[]; validBefore: number }> {
  const { stdout } = await execFileAsync('ssh-keygen', ['-L', '-f', certPath], { env: { ...process.env, TZ: 'UTC' } });
  const keyId = /Key ID: "([^"]*)"/.exec(stdout)?.[1] ?? '';
  const to = /Valid: from \S+ to (\S+)/.exec(stdout)?.[1] ?? '';
  const principals = (/Principals:\s*\n((?:\s{16,}\S+\n)+)/.exec(stdout)?.[1] ?? '').split('\n').map((l) => l.trim()).filter(Boolean);
  return { keyId, principals, validBefore: Date.parse(`${to}Z`) };
}

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-ssh-e2e-'));
  ca = await generateCaKeyPair(path.join(dir, 'keys'));
  aliceKey = await generateUserKeyPair(path.join(dir, 'keys'), 'alice');
  const krlPath = path.join(dir, 'ca', 'revoked.krl');
  s = await startStack({ secrets: { [CA_SECRET]: ca.privateKey } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  const sys = await s.call('POST', '/v1/systems', tok.operator, {
    name: 'prod-ssh-ca',
    kind: 'ssh_ca',
    config: { stateDir: path.join(dir, 'ca'), krlPath, principals: ['prod-root', 'prod-readonly'], maxValiditySeconds: 7200 },
    secretRefs: { caPrivateKey: CA_SECRET },
    ownerId: s.catalog.identities.carol,
  });
  expect(sys.status, JSON.stringify(sys.body)).toBe(201);
  const e = await s.call('POST', '/v1/entitlements', tok.operator, {
    systemId: sys.body.id,
    name: 'Production root shell',
    resource: 'prod-root',
    ownerId: s.catalog.identities.bob,
    riskTier: 'privileged',
    defaultDurationSeconds: 900,
    maxDurationSeconds: 7200,
  });
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  rootEntitlement = e.body.id;
  sshd = await startSshd({ dir: path.join(dir, 'sshd'), trustedUserCaKeyPath: ca.publicKeyPath, krlPath, principalsForUser: { root: ['prod-root'] } });
}, 60_000);

afterAll(async () => {
  await sshd?.stop();
  await s?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const login = (certificatePath?: string) => sshLogin({ port: sshd.port, user: 'root', keyPath: aliceKey.privateKeyPath, ...(certificatePath ? { certificatePath } : {}) });

async function approve(requestId: string): Promise<void> {
  await waitFor(async () => (await s.call('POST', `/v1/access-requests/${requestId}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
}

/** Collects the lease's certificate (once) into a file next to nothing else, so ssh uses exactly it. */
async function collect(requestId: string, name: string): Promise<{ path: string; serial: string; notAfter: string }> {
  const r = await s.call('GET', `/v1/access-requests/${requestId}/credential`, tok.alice);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  expect(r.body.kind).toBe('ssh_certificate');
  const file = path.join(dir, `${name}.cert`);
  await writeFile(file, r.body.certificate);
  return { path: file, serial: r.body.serial, notAfter: r.body.notAfter };
}

describe('SSH certificates through the lifecycle', () => {
  it('registers the caller\'s public key: the fingerprint matches ssh-keygen\'s; bad keys are 400 and change nothing', async () => {
    const bad = await s.call('PUT', `/v1/identities/${s.catalog.identities.alice}/ssh-public-key`, tok.alice, { publicKey: 'ssh-ed25519 not base64!' });
    expect(bad.status).toBe(400);
    const other = await s.call('PUT', `/v1/identities/${s.catalog.identities.bob}/ssh-public-key`, tok.alice, { publicKey: aliceKey.publicKey });
    expect(other.status).toBe(404);
    const r = await s.call('PUT', `/v1/identities/${s.catalog.identities.alice}/ssh-public-key`, tok.alice, { publicKey: aliceKey.publicKey });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const { stdout } = await execFileAsync('ssh-keygen', ['-l', '-E', 'sha256', '-f', aliceKey.publicKeyPath]);
    expect(stdout.split(' ')[1]).toBe(r.body.fingerprint);
    const bob = (await s.call('GET', `/v1/identities/${s.catalog.identities.bob}`, tok.operator)).body;
    expect(bob.attributes.sshPublicKey).toBeUndefined();
  });

  it('logs in while granted, gets a fresh certificate on extension, and is refused after an early revoke', async () => {
    expect((await login()).ok).toBe(false);
    const created = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: rootEntitlement, durationSeconds: 900, justification: 'INC-4711: restart the stuck ingest on prod' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    const id = created.body.id as string;
    await approve(id);
    const active = await s.waitForStatus(id, ['active']);

    const first = await collect(id, 'first');
    expect((await s.call('GET', `/v1/access-requests/${id}/credential`, tok.alice)).status).toBe(410);
    const cert = await inspect(first.path);
    expect(cert.principals).toEqual(['prod-root']);
    expect(cert.keyId).toContain('alice');
    // the certificate ends with the lease (to the second; it was issued just before the lease was verified)
    expect(Math.abs(cert.validBefore - Date.parse(active.expiresAt))).toBeLessThan(5_000);
    const inside = await login(first.path);
    expect(inside.ok, inside.stderr).toBe(true);

    // An extension issues a new certificate for the longer lease; the old one goes to the KRL.
    const ext = await s.call('POST', `/v1/access-requests/${id}/extend`, tok.alice, { durationSeconds: 3600, justification: 'the ingest restart takes longer' });
    expect(ext.status, JSON.stringify(ext.body)).toBe(200);
    const second = await collect(id, 'second');
    expect(second.serial).not.toBe(first.serial);
    expect(Math.abs((await inspect(second.path)).validBefore - Date.parse(ext.body.expiresAt))).toBeLessThan(5_000);
    expect((await login(first.path)).ok).toBe(false);
    expect((await login(second.path)).ok).toBe(true);

    const rv = await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.alice, { reason: 'manual', comment: 'incident resolved' });
    expect(rv.status).toBe(202);
    const done = await s.waitForStatus(id, ['revoked']);
    expect(done.removalVerifiedAt).toBeTruthy();
    // still within its validity, yet refused: the server read the KRL
    expect((await inspect(second.path)).validBefore).toBeGreaterThan(Date.now() + 60_000);
    const after = await login(second.path);
    expect(after.ok).toBe(false);
    await waitFor(async () => sshd.logLines().some((l) => /revoked by file/.test(l)), 'sshd to log the KRL refusal', 5_000);
    expect((await s.call('GET', `/v1/access-requests/${id}/credential`, tok.alice)).status).toBe(410);
  });

  it('fails the grant, with nothing issued, when the subject has no public key registered', async () => {
    const created = await s.call('POST', '/v1/access-requests', tok.carol, { entitlementId: rootEntitlement, durationSeconds: 900, justification: 'no key yet' });
    expect(created.status).toBe(202);
    await approve(created.body.id);
    const failed = await s.waitForStatus(created.body.id, ['failed']);
    expect(failed.failureReason).toMatch(/no SSH public key/);
    expect(failed.grant.removalVerifiedAt).toBeNull();
  });
});
