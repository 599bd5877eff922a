/**
 * Credentials issued for grants (non-human PostgreSQL logins, SSH certificates).
 *
 * The material (a password, a certificate) is produced inside an activity and never leaves it
 * through a return value: it is sealed with AES-256-GCM into the `credential` row and the
 * workflow carries the row id. The owner reads it once through the API (`deliverOnce`), which
 * wipes the sealed value in the same statement, so a second read, a database dump after
 * delivery or the workflow history holds nothing to steal.
 */
import { createCipheriv, createDecipheriv, randomBytes, randomUUID } from 'node:crypto';
import { and, eq, isNotNull } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { credentials, type Identity } from '../../db/schema.js';
import { appendAudit } from './audit.js';
import type { IssuedCredential } from '../connectors/types.js';

const SEAL_VERSION = 'v1';

export interface CredentialVault {
  /** `aad` binds the ciphertext to its row: a sealed value copied to another row does not open. */
  seal(plaintext: string, aad: string): string;
  open(sealed: string, aad: string): string;
}

export function createCredentialVault(key: Buffer): CredentialVault {
  if (key.length !== 32) throw new Error('the credential key must be 32 bytes (AES-256)');
  return {
    seal(plaintext, aad) {
      const iv = randomBytes(12);
      const cipher = createCipheriv('aes-256-gcm', key, iv);
      cipher.setAAD(Buffer.from(aad, 'utf8'));
      const ct = Buffer.concat([cipher.update(plaintext, 'utf8'), cipher.final()]);
      return [SEAL_VERSION, iv.toString('base64url'), ct.toString('base64url'), cipher.getAuthTag().toString('base64url')].join('.');
    },
    open(sealed, aad) {
      const [version, iv, ct, tag] = sealed.split('.');
      if (version !== SEAL_VERSION || !iv || ct === undefined || !tag) throw new Error('unknown sealed credential format');
      const decipher = createDecipheriv('aes-256-gcm', key, Buffer.from(iv, 'base64url'));
      decipher.setAAD(Buffer.from(aad, 'utf8'));
      decipher.setAuthTag(Buffer.from(tag, 'base64url'));
      return Buffer.concat([decipher.update(Buffer.from(ct, 'base64url')), decipher.final()]).toString('utf8');
    },
  };
}

/** What the workflow may know about a credential: a reference and its end, never the material. */
export interface CredentialRef {
  id: string;
  kind: IssuedCredential['kind'];
  notAfter: string;
}

/** Who may read a credential: a non-human identity's owner, or a person themselves. */
export function credentialOwnerOf(identity: Pick<Identity, 'id' | 'ownerId'>): string {
  return identity.ownerId ?? identity.id;
}

/**
 * Stores a freshly issued credential for a grant and supersedes (and wipes) every earlier one
 * of the same grant. Runs in the caller's transaction.
 */
export async function storeCredential(
  tx: Pick<Db, 'insert' | 'update'>,
  vault: CredentialVault,
  input: { grantId: string; identity: Pick<Identity, 'id' | 'ownerId'>; issued: IssuedCredential },
): Promise<CredentialRef> {
  const id = randomUUID();
  await tx
    .update(credentials)
    .set({ status: 'superseded', sealed: null, endedAt: new Date() })
    .where(and(eq(credentials.grantId, input.grantId), eq(credentials.status, 'active')));
  await tx.insert(credentials).values({
    id,
    grantId: input.grantId,
    identityId: input.identity.id,
    ownerId: credentialOwnerOf(input.identity),
    kind: input.issued.kind,
    targetRef: input.issued.credentialId,
    sealed: vault.seal(input.issued.material, id),
    notAfter: input.issued.notAfter,
  });
  return { id, kind: input.issued.kind, notAfter: input.issued.notAfter.toISOString() };
}

/** Ends a grant's credential: no longer deliverable, the facts stay (superseded ones were wiped already). */
export async function endCredentials(tx: Pick<Db, 'update'>, grantId: string): Promise<void> {
  await tx
    .update(credentials)
    .set({ status: 'revoked', sealed: null, endedAt: new Date() })
    .where(and(eq(credentials.grantId, grantId), eq(credentials.status, 'active')));
}

export type DeliveryOutcome =
  | { outcome: 'delivered'; material: string; kind: IssuedCredential['kind']; credentialId: string; targetRef: string; notAfter: Date; issuedAt: Date }
  | { outcome: 'none' }
  | { outcome: 'not_owner' }
  | { outcome: 'already_delivered'; deliveredAt: Date | null }
  | { outcome: 'ended'; status: string };

/**
 * Hands the grant's current credential to its owner, once: the sealed value is taken and wiped
 * in one UPDATE … RETURNING, so two concurrent reads cannot both get it.
 */
export async function deliverOnce(db: Db, vault: CredentialVault, lease: { grantId: string; requestId: string; httpRequestId?: string }, readerId: string): Promise<DeliveryOutcome> {
  const { grantId, requestId } = lease;
  const rows = await db.select().from(credentials).where(eq(credentials.grantId, grantId));
  const current = rows.sort((a, b) => b.issuedAt.getTime() - a.issuedAt.getTime())[0];
  if (!current) return { outcome: 'none' };
  if (current.ownerId !== readerId) return { outcome: 'not_owner' };
  if (current.status !== 'active') return { outcome: 'ended', status: current.status };
  if (current.notAfter.getTime() <= Date.now()) return { outcome: 'ended', status: 'expired' };
  const taken = await db.transaction(async (tx) => {
    const [row] = await tx
      .update(credentials)
      .set({ sealed: null, deliveredAt: new Date(), deliveredTo: readerId })
      .where(and(eq(credentials.id, current.id), isNotNull(credentials.sealed), eq(credentials.status, 'active')))
      .returning({ id: credentials.id });
    if (!row) return false;
    await appendAudit(tx, {
      idempotencyKey: `credential-delivered/${current.id}`,
      actorType: 'identity',
      actorId: readerId,
      action: 'credential.delivered',
      requestId,
      grantId,
      identityId: current.identityId,
      data: { credentialId: current.id, credentialKind: current.kind, ...(lease.httpRequestId ? { httpRequestId: lease.httpRequestId } : {}) },
    });
    return true;
  });
  // RETURNING gives the new row (sealed null): open the value we loaded before wiping it.
  if (!taken || current.sealed === null) return { outcome: 'already_delivered', deliveredAt: current.deliveredAt };
  return {
    outcome: 'delivered',
    material: vault.open(current.sealed, current.id),
    kind: current.kind,
    credentialId: current.id,
    targetRef: current.targetRef,
    notAfter: current.notAfter,
    issuedAt: current.issuedAt,
  };
}
