import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { canonicalJson } from '../audit.js';
import { EVIDENCE_KEY_FILE, type EvidenceBundle, type Unsigned } from './format.js';

// ---- the signing key ----------------------------------------------------------------------

export interface EvidenceSigner {
  algorithm: 'Ed25519';
  publicKeyPem: string;
  fingerprint: string;
  /** base64 signature of the message */
  sign(message: Buffer): string;
}

// PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export function evidenceSignerFromSeed(seed: Buffer): EvidenceSigner {
  if (seed.length !== 32) throw new Error('an Ed25519 evidence signing key is 32 bytes (64 hex characters)');
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const publicKeyPem = createPublicKey(privateKey).export({ format: 'pem', type: 'spki' }).toString();
  return { algorithm: 'Ed25519', publicKeyPem, fingerprint: keyFingerprint(publicKeyPem), sign: (m) => sign(null, m, privateKey).toString('base64') };
}

/** `SHA256:<base64>` of the SubjectPublicKeyInfo, the way ssh-keygen prints fingerprints. */
export function keyFingerprint(publicKey: string | KeyObject): string {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const der = key.export({ format: 'der', type: 'spki' });
  return `SHA256:${createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
}

/** The configured key, or one generated once into the data dir (like the action-link and credential keys). */
export async function loadEvidenceSigner(opts: { key?: string | undefined; dataDir: string }): Promise<EvidenceSigner> {
  if (opts.key) return evidenceSignerFromSeed(Buffer.from(opts.key, 'hex'));
  const file = path.join(opts.dataDir, EVIDENCE_KEY_FILE);
  let hex = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (!hex) {
    await mkdir(opts.dataDir, { recursive: true });
    // Another process may win the race: whatever is on disk afterwards is the key.
    await writeFile(file, randomBytes(32).toString('hex'), { mode: 0o600, flag: 'wx' }).catch(() => undefined);
    hex = (await readFile(file, 'utf8')).trim();
  }
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error(`${file} does not hold an Ed25519 seed (64 hex characters)`);
  return evidenceSignerFromSeed(Buffer.from(hex, 'hex'));
}

const signedBytes = (b: Unsigned | Omit<EvidenceBundle, 'signature'>) => Buffer.from(canonicalJson(b), 'utf8');

export function signBundle(unsigned: Unsigned, signer: EvidenceSigner): EvidenceBundle {
  const withSigner = { ...unsigned, signer: { algorithm: signer.algorithm, publicKey: signer.publicKeyPem, fingerprint: signer.fingerprint } };
  return { ...withSigner, signature: signer.sign(signedBytes(withSigner)) };
}
