import { ApplicationFailure } from '@temporalio/activity';
import { and, eq, ne, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { credentials, entitlements, grants, type Identity } from '../db/schema.js';
import { appendAudit } from './domain/audit.js';
import { ConnectorError, type IssuedCredential } from './connectors/types.js';
import { storeCredential, type CredentialRef } from './domain/vault.js';
import type { ActivityDeps } from './deps.js';
import { actorTypeOf, apiRef, BY_WORKFLOW, createLeaseTargets, credentialModeOf, justifiesMembership, type FromApi, type Keyed, type LeaseContext, type LeaseRef } from './lease-context.js';

/** The subject's registered SSH public key (PUT /v1/identities/:id/ssh-public-key). */
function sshPublicKeyOf(identity: Pick<Identity, 'attributes'>): string | undefined {
  const key = identity.attributes?.sshPublicKey;
  return typeof key === 'string' && key.length > 0 ? key : undefined;
}

/**
 * Issues (or re-issues) the lease's credential on the target. A password is a new login
 * secret for the account; a certificate is a new grant of the principal for the subject's key
 * (the previous certificate, if any, goes to the KRL first).
 */
export async function issueOnTarget(ctx: LeaseContext, notAfter: Date, opts: { replace: boolean }): Promise<{ changed: boolean; issued: IssuedCredential | undefined }> {
  const { connector, m, system, entitlement, identity } = ctx;
  const mode = credentialModeOf(system, entitlement);
  if (mode === 'password') {
    if (!connector.issueCredential) throw new ConnectorError('InvalidConfig', `${system.kind} systems cannot issue password credentials`);
    return { changed: true, issued: await connector.issueCredential(m.account, { notAfter }) };
  }
  if (mode === 'certificate') {
    const publicKey = sshPublicKeyOf(identity);
    if (!publicKey) throw new ConnectorError('NoSuchAccount', 'the subject has no SSH public key registered (PUT /v1/identities/:id/ssh-public-key)');
    if (opts.replace) await connector.revoke(m);
    const g = await connector.grant(m, { notAfter, publicKey });
    return { changed: g.changed, issued: g.credential };
  }
  return { changed: false, issued: undefined };
}

/** Another live grant of the same identity that also relies on its login credential on this system. */
async function otherPasswordGrant(db: Pick<Db, 'select'>, identityId: string, systemId: string, grantId: string): Promise<string | undefined> {
  const [row] = await db
    .select({ id: grants.id })
    .from(grants)
    .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
    .where(
      and(
        eq(grants.identityId, identityId),
        eq(entitlements.systemId, systemId),
        ne(grants.id, grantId),
        justifiesMembership(),
        sql`${entitlements.attributes}->>'credential' = 'password'`,
      ),
    )
    .limit(1);
  return row?.id;
}

/**
 * Ends the lease's login credential on the target when the grant is the last one relying on it,
 * and reads it back: verified only once the role can no longer log in and none of its sessions
 * is left; throws while it still can. Reports whether the target changed. Runs under the
 * membership lock (the lease's removal and the sentinel's), in its transaction.
 */
export async function revokeLoginCredential(tx: Pick<Db, 'select'>, ctx: LeaseContext, grantId: string): Promise<boolean> {
  const { connector, m, system, entitlement, identity } = ctx;
  if (credentialModeOf(system, entitlement) !== 'password' || (await otherPasswordGrant(tx, identity.id, system.id, grantId))) return false;
  if (!connector.revokeCredential || !connector.credentialActive) throw new ConnectorError('InvalidConfig', `${system.kind} systems cannot revoke credentials`);
  const { changed } = await connector.revokeCredential(m.account);
  if ((await connector.credentialActive(m.account)).active) throw new ConnectorError('TargetUnavailable', 'login credential still active after revoke');
  return changed;
}

export function createCredentialActivities(deps: Pick<ActivityDeps, 'db' | 'connectors' | 'metrics' | 'vault'>) {
  const { db, vault } = deps;
  const { onLease } = createLeaseTargets(deps);

  return {
    /**
     * A new secret (or certificate) for an active lease; the old one stops working. The material
     * is sealed for the owner's one-time read; the workflow gets the reference.
     */
    async rotateCredential(input: Keyed & FromApi & LeaseRef & { actorId: string }): Promise<CredentialRef> {
      const [g] = await db.select().from(grants).where(eq(grants.id, input.grantId));
      if (!g || g.status !== 'active' || !g.expiresAt) throw ApplicationFailure.nonRetryable('the grant is not active', 'NotActive');
      const notAfter = g.expiresAt;
      const { issued, identity } = await onLease(input, 'rotate', async (ctx) => ({ ...(await issueOnTarget(ctx, notAfter, { replace: true })), identity: ctx.identity }));
      if (!issued) throw ApplicationFailure.nonRetryable('this grant has no credential to rotate', 'NoCredential');
      return db.transaction(async (tx) => {
        const ref = await storeCredential(tx, vault, { grantId: input.grantId, identity, issued });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          actorType: actorTypeOf(input.actorId),
          actorId: input.actorId,
          action: 'credential.rotated',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          data: { credentialId: ref.id, credentialKind: ref.kind, credentialNotAfter: ref.notAfter, ...apiRef(input) },
        });
        return ref;
      });
    },

    /**
     * Follows an extended lease: a password's VALID UNTIL moves; a certificate's validity is
     * fixed, so a new one is issued (delivered like the first) and the old one revoked.
     */
    async renewCredential(input: Keyed & LeaseRef & { notAfter: string }): Promise<CredentialRef | undefined> {
      const notAfter = new Date(input.notAfter);
      const outcome = await onLease(input, 'renew', async (ctx) => {
        const mode = credentialModeOf(ctx.system, ctx.entitlement);
        if (mode === 'password') {
          if (!ctx.connector.extendCredential) throw new ConnectorError('InvalidConfig', `${ctx.system.kind} systems cannot extend credentials`);
          await ctx.connector.extendCredential(ctx.m.account, { notAfter });
          return { identity: ctx.identity, issued: undefined, mode };
        }
        return { identity: ctx.identity, mode, ...(await issueOnTarget(ctx, notAfter, { replace: true })) };
      });
      return db.transaction(async (tx) => {
        let ref: CredentialRef | undefined;
        if (outcome.issued) ref = await storeCredential(tx, vault, { grantId: input.grantId, identity: outcome.identity, issued: outcome.issued });
        else await tx.update(credentials).set({ notAfter }).where(and(eq(credentials.grantId, input.grantId), eq(credentials.status, 'active')));
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'credential.renewed',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          data: { credentialNotAfter: input.notAfter, ...(ref ? { credentialId: ref.id } : {}) },
        });
        return ref;
      });
    },
  };
}
