import { ApplicationFailure } from '@temporalio/activity';
import { and, desc, eq, inArray, ne, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { accessRequests, approvals, entitlements, grants, type RevokeReason } from '../db/schema.js';
import { appendAudit } from './domain/audit.js';
import { ConnectorError } from './connectors/types.js';
import { endCredentials, storeCredential, type CredentialRef } from './domain/vault.js';
import { AUTOMATED_REVOKE_REASONS } from './domain/metrics.js';
import { issueOnTarget } from './credentials.js';
import type { ActivityDeps } from './deps.js';
import { actorTypeOf, apiRef, BY_WORKFLOW, createLeaseTargets, credentialModeOf, notFound, setRequestStatus, type FromApi, type Keyed, type LeaseRef } from './lease-context.js';

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
        inArray(grants.status, ['granting', 'active']),
        sql`${entitlements.attributes}->>'credential' = 'password'`,
      ),
    )
    .limit(1);
  return row?.id;
}

/** The lease on the target and in the database: grant, verify, extend, revoke, verify removal. */
export function createLeaseActivities(deps: Pick<ActivityDeps, 'db' | 'connectors' | 'metrics' | 'vault' | 'log'>) {
  const { db, log, metrics, vault } = deps;
  const { onLease } = createLeaseTargets(deps);

  return {
    async grantAccess(input: Keyed & LeaseRef) {
      await db
        .insert(grants)
        .values({ id: input.grantId, identityId: input.subjectId, entitlementId: input.entitlementId, requestId: input.requestId, source: 'request', status: 'granting' })
        .onConflictDoNothing();
      // A credential issued for the lease ends with it (the workflow revokes at expiry anyway;
      // this bounds the credential if the workflow could not).
      const [request] = input.requestId
        ? await db.select({ seconds: accessRequests.requestedDurationSeconds }).from(accessRequests).where(eq(accessRequests.id, input.requestId))
        : [];
      const notAfter = new Date(Date.now() + (request?.seconds ?? 86_400) * 1000);
      const { changed, issued, identity } = await onLease(input, 'grant', async (ctx) => {
        const mode = credentialModeOf(ctx.system, ctx.entitlement);
        // The credential first: a login role must exist before it can be granted anything, and a
        // certificate is the grant itself.
        const credential = mode ? await issueOnTarget(ctx, notAfter, { replace: false }) : undefined;
        const changed = mode === 'certificate' ? credential!.changed : (await ctx.connector.grant(ctx.m)).changed;
        return { changed, issued: credential?.issued, identity: ctx.identity };
      });
      let credential: CredentialRef | undefined;
      await db.transaction(async (tx) => {
        // Only the first successful call records whether we changed the target; a retry that finds
        // the membership already present must not overwrite it.
        const [row] = await tx.select().from(grants).where(eq(grants.id, input.grantId));
        if (row?.grantedAt == null) {
          await tx.update(grants).set({ grantedAt: new Date(), targetChanged: changed }).where(eq(grants.id, input.grantId));
        }
        if (issued) credential = await storeCredential(tx, vault, { grantId: input.grantId, identity, issued });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.applied',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          data: { changed, ...(credential ? { credentialId: credential.id, credentialKind: credential.kind, credentialNotAfter: credential.notAfter } : {}) },
        });
      });
      // Only the reference goes back to the workflow: the material stays sealed in our database.
      return credential ? { changed, credential } : { changed };
    },

    /** Reads the target back; the lease starts only once the membership is really there. */
    async verifyGranted(input: Keyed & LeaseRef & { expiresAt: string }) {
      const [row] = await db.select().from(grants).where(eq(grants.id, input.grantId));
      if (row?.grantVerifiedAt && row.expiresAt) return { verifiedAt: row.grantVerifiedAt.toISOString(), expiresAt: row.expiresAt.toISOString() };
      const { present } = await onLease(input, 'check', async (ctx) => {
        const { present } = await ctx.connector.check(ctx.m);
        if (!present || credentialModeOf(ctx.system, ctx.entitlement) !== 'password' || !ctx.connector.credentialActive) return { present };
        // A login credential is part of the grant: it must be live too.
        return { present: (await ctx.connector.credentialActive(ctx.m.account)).active };
      });
      if (!present) throw ApplicationFailure.retryable('membership not yet visible on the target', 'GrantNotVerified');
      const verifiedAt = new Date();
      const expiresAt = new Date(input.expiresAt);
      if (input.requestId) {
        const [last] = await db.select({ at: approvals.decidedAt }).from(approvals).where(and(eq(approvals.requestId, input.requestId), eq(approvals.status, 'approved'))).orderBy(desc(approvals.decidedAt)).limit(1);
        if (last?.at) metrics.approvalSystemPart.observe((verifiedAt.getTime() - last.at.getTime()) / 1000);
      }
      await db.transaction(async (tx) => {
        await tx.update(grants).set({ status: 'active', grantVerifiedAt: verifiedAt, expiresAt }).where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'active');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.verified',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          data: { expiresAt: expiresAt.toISOString() },
        });
      });
      return { verifiedAt: verifiedAt.toISOString(), expiresAt: expiresAt.toISOString() };
    },

    async recordExtension(input: Keyed & FromApi & { requestId: string; grantId: string; actorId: string; justification: string; expiresAt: string }) {
      await db.transaction(async (tx) => {
        const [before] = await tx.select({ expiresAt: grants.expiresAt }).from(grants).where(eq(grants.id, input.grantId));
        await tx.update(grants).set({ expiresAt: new Date(input.expiresAt) }).where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'active');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          actorType: 'identity',
          actorId: input.actorId,
          action: 'grant.extended',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.justification,
          data: { from: before?.expiresAt?.toISOString() ?? null, to: input.expiresAt, ...apiRef(input) },
        });
      });
    },

    async beginRevocation(input: Keyed & FromApi & { requestId?: string | undefined; grantId: string; reason: RevokeReason; actorId: string; comment?: string | undefined; requestedAt: string }) {
      await db.transaction(async (tx) => {
        await tx
          .update(grants)
          .set({ status: 'revoking', revokeReason: input.reason, revokeRequestedAt: new Date(input.requestedAt), revokedBy: input.actorId })
          .where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'revoking');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          actorType: actorTypeOf(input.actorId),
          actorId: input.actorId,
          action: 'grant.revoke_requested',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.comment ?? input.reason,
          data: { reason: input.reason, ...apiRef(input) },
        });
      });
    },

    /**
     * Removes the membership (unless another active grant still justifies it) and reads the
     * target back. Throws while the membership is still there, so Temporal retries with backoff.
     */
    async removeAndVerify(input: LeaseRef & { reason: RevokeReason }) {
      const [other] = await db
        .select({ id: grants.id })
        .from(grants)
        .where(
          and(
            eq(grants.identityId, input.subjectId),
            eq(grants.entitlementId, input.entitlementId),
            ne(grants.id, input.grantId),
            inArray(grants.status, ['granting', 'active']),
          ),
        )
        .limit(1);
      if (other) return { changed: false, retainedBy: other.id, verifiedAt: new Date().toISOString() };
      return onLease(input, 'revoke', async ({ connector, m, system, entitlement, identity }) => {
        let changed = false;
        try {
          changed = (await connector.revoke(m)).changed;
          const { present } = await connector.check(m);
          if (present) throw new ConnectorError('TargetUnavailable', 'membership still present after revoke');
        } catch (e) {
          // A resource that does not exist holds no members: the removal is verified as such.
          if (!(e instanceof ConnectorError && e.type === 'NoSuchResource')) throw e;
        }
        // The login credential goes with the last grant that relies on it; removal is verified
        // only once the role can no longer log in and none of its sessions is left.
        if (credentialModeOf(system, entitlement) === 'password' && !(await otherPasswordGrant(db, identity.id, system.id, input.grantId))) {
          if (!connector.revokeCredential || !connector.credentialActive) throw new ConnectorError('InvalidConfig', `${system.kind} systems cannot revoke credentials`);
          changed = (await connector.revokeCredential(m.account)).changed || changed;
          if ((await connector.credentialActive(m.account)).active) throw new ConnectorError('TargetUnavailable', 'login credential still active after revoke');
        }
        return { changed, retainedBy: undefined as string | undefined, verifiedAt: new Date().toISOString() };
      });
    },

    /** The alert: a revocation that missed its verification deadline. Retries continue in the workflow. */
    async markRevocationUnverified(input: Keyed & { requestId?: string | undefined; grantId: string; error: string; errorType?: string }) {
      metrics.revocationsUnverified.inc();
      metrics.exceptions.inc({ kind: 'revocation_unverified' });
      // Only the stable failure type goes to the log: connector messages can name accounts (PII).
      // The full message is in the audit event and the workflow's details, behind access control.
      log.error({ alert: 'revocation_unverified', requestId: input.requestId, grantId: input.grantId, errorType: input.errorType ?? 'unknown' }, 'revocation not verified within deadline');
      await db.transaction(async (tx) => {
        await tx.update(grants).set({ status: 'revocation_unverified' }).where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'revocation_unverified');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.revocation_unverified',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.error,
        });
      });
    },

    async completeRevocation(input: Keyed & { requestId?: string | undefined; grantId: string; changed: boolean; retainedBy?: string | undefined; verifiedAt: string }) {
      const verifiedAt = new Date(input.verifiedAt);
      await db.transaction(async (tx) => {
        const [g] = await tx.select().from(grants).where(eq(grants.id, input.grantId));
        if (!g) throw notFound('grant');
        const timeToRevokeMs = g.revokeRequestedAt ? verifiedAt.getTime() - g.revokeRequestedAt.getTime() : null;
        if (g.status !== 'revoked') {
          await tx
            .update(grants)
            .set({
              status: 'revoked',
              revokedAt: verifiedAt,
              // A membership still justified by another grant stays: there is no removal to verify.
              removalVerifiedAt: input.retainedBy ? null : verifiedAt,
            })
            .where(eq(grants.id, input.grantId));
          if (timeToRevokeMs !== null && !input.retainedBy) metrics.timeToRevoke.observe({ reason: g.revokeReason ?? 'unknown' }, timeToRevokeMs / 1000);
          const reason = g.revokeReason ?? 'unknown';
          metrics.removals.inc({ reason, automated: String(AUTOMATED_REVOKE_REASONS.includes(reason)), verified: String(!input.retainedBy) });
        }
        await endCredentials(tx, input.grantId);
        await setRequestStatus(tx, input.requestId, 'revoked');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: input.retainedBy ? 'grant.ended_membership_retained' : 'grant.removal_verified',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: g.identityId,
          reason: g.revokeReason,
          data: { changed: input.changed, retainedBy: input.retainedBy ?? null, timeToRevokeMs },
        });
      });
    },

    async markFailed(input: Keyed & { requestId: string; grantId: string; reason: string }) {
      await db.transaction(async (tx) => {
        await tx.update(grants).set({ status: 'failed' }).where(eq(grants.id, input.grantId));
        await endCredentials(tx, input.grantId);
        await setRequestStatus(tx, input.requestId, 'failed', { failureReason: input.reason });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'request.failed',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.reason,
        });
      });
    },
  };
}
