import { ApplicationFailure } from '@temporalio/activity';
import { and, desc, eq, ne, sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';
import { accessRequests, approvals, auditEvents, grants, hrEvents, revokeReason, type RevokeReason } from '../db/schema.js';
import { appendAudit, appendAuditEvent, type AuditInput } from './domain/audit.js';
import { alertRecipients } from './domain/notifier.js';
import { ConnectorError } from './connectors/types.js';
import { endCredentials, storeCredential, type CredentialRef } from './domain/vault.js';
import { AUTOMATED_REVOKE_REASONS } from './domain/metrics.js';
import { issueOnTarget, revokeLoginCredential } from './credentials.js';
import type { ActivityDeps } from './deps.js';
import {
  activityAttempt,
  actorTypeOf,
  apiRef,
  BY_WORKFLOW,
  createLeaseTargets,
  credentialModeOf,
  FINAL_GRANT_STATES,
  justifiesMembership,
  lockOpenGrant,
  notFound,
  setRequestStatus,
  withMembershipLock,
  type FromApi,
  type Keyed,
  type LeaseRef,
} from './lease-context.js';

/** Grant states in which the membership must not be (re)added. */
const REMOVING_OR_ENDED = ['revoking', 'revocation_unverified', ...FINAL_GRANT_STATES] as const;

export interface BeginRevocationInput extends Keyed, FromApi {
  requestId?: string | undefined;
  grantId: string;
  reason: RevokeReason;
  actorId: string;
  /** The revoke came from a signal: `actorId` is a claim, believed only when the API attested it. */
  signalActorClaimed?: boolean | undefined;
  comment?: string | undefined;
  requestedAt: string;
}

/** The actor the identity workflow names for HR-driven revocations. */
const HR_ACTOR = 'hr';

/** Activity attempts that wait for the unverified-revocation webhook before giving up on it. */
const UNVERIFIED_NOTIFY_ATTEMPTS = 3;

/** The actor the workflow gives a revoke signal that names none (workflows/lifecycle.ts). */
const UNNAMED_SIGNAL_ACTOR = 'temporal-ui';

/** An unauthenticated Temporal-side action (a signal from the UI or CLI): who sent it is not known. */
const BY_TEMPORAL_SIGNAL = { actorType: 'temporal', actorId: 'temporal-signal' } as const;

/**
 * Who a revocation is attributed to. Revocations the workflows make themselves (expiry, leaver,
 * mover, review) keep their actor. A signal's actor is only a claim: it is believed when the API
 * wrote its `request.revoke_submitted` attestation (actor from the bearer token) for the same
 * request and HTTP request id before signalling; otherwise it is recorded as the claim it is.
 */
async function revocationActor(db: Pick<Db, 'select'>, input: BeginRevocationInput): Promise<Pick<AuditInput, 'actorType' | 'actorId'> & { claimedActorId?: string }> {
  if (!input.signalActorClaimed) return { actorType: actorTypeOf(input.actorId), actorId: input.actorId };
  if (input.requestId && input.httpRequestId) {
    const [attested] = await db
      .select({ actorType: auditEvents.actorType, actorId: auditEvents.actorId })
      .from(auditEvents)
      .where(and(eq(auditEvents.action, 'request.revoke_submitted'), eq(auditEvents.requestId, input.requestId), sql`${auditEvents.data}->>'httpRequestId' = ${input.httpRequestId}`))
      .limit(1);
    if (attested) return { actorType: attested.actorType as AuditInput['actorType'], actorId: attested.actorId };
  }
  // The identity workflow signals leaver and mover revocations as 'hr': believed when the HR inbox
  // holds an applied event of that type for the grant's identity (the signed webhook attests it).
  if (input.actorId === HR_ACTOR && (input.reason === 'leaver' || input.reason === 'mover')) {
    const [event] = await db
      .select({ id: hrEvents.id })
      .from(hrEvents)
      .innerJoin(grants, eq(grants.identityId, hrEvents.identityId))
      .where(and(eq(grants.id, input.grantId), eq(hrEvents.type, input.reason), eq(hrEvents.outcome, 'applied')))
      .limit(1);
    if (event) return { actorType: 'client', actorId: HR_ACTOR };
  }
  // A bare signal claims nobody: the workflow's stand-in actor is not a claim worth recording.
  const claimed = input.actorId && input.actorId !== UNNAMED_SIGNAL_ACTOR ? input.actorId : undefined;
  return { ...BY_TEMPORAL_SIGNAL, ...(claimed ? { claimedActorId: claimed } : {}) };
}

/** The lease on the target and in the database: grant, verify, extend, revoke, verify removal. */
export function createLeaseActivities(deps: Pick<ActivityDeps, 'db' | 'connectors' | 'metrics' | 'vault' | 'log' | 'notifier' | 'policies'>) {
  const { db, log, metrics, vault, notifier, policies } = deps;
  const { onLease } = createLeaseTargets(deps);

  /**
   * Tells the entitlement owner and the operators (signed webhook), once per grant: the
   * notification's key is the grant's, and the notifier does not resend a delivered message. A
   * webhook that is down is retried a few attempts, then left (recorded `failed`, logged): the
   * flag, the metric and the audit event stand, and the workflow's removal must not wait on it.
   */
  async function announceUnverified(input: { requestId?: string | undefined; grantId: string; errorType?: string | undefined }, entitlementId: string | undefined) {
    try {
      const recipientIds = await alertRecipients(db, { entitlementIds: entitlementId ? [entitlementId] : [], securityTeam: (await policies.active()).document.securityTeam });
      await notifier.send({
        event: 'revocation.unverified',
        requestId: input.requestId,
        grantId: input.grantId,
        details: { errorType: input.errorType ?? 'unknown' },
        recipientIds,
        idempotencyKey: `revocation-unverified/${input.grantId}`,
      });
    } catch (err) {
      const attempt = activityAttempt();
      const retryable = !(err instanceof ApplicationFailure && err.nonRetryable);
      if (retryable && attempt !== undefined && attempt < UNVERIFIED_NOTIFY_ATTEMPTS) throw err;
      log.error({ alert: 'revocation_unverified', grantId: input.grantId, errorType: err instanceof ApplicationFailure ? err.type : 'error' }, 'could not notify about an unverified revocation');
    }
  }

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
      // The target write holds the membership's lock. The `granting` row committed above, so a
      // removal of the same membership that locks after us sees this grant and retains; one that
      // locked first finishes its removal before we add the membership back.
      const { changed, issued, identity } = await onLease(input, 'grant', (ctx) =>
        withMembershipLock(db, ctx, async (tx) => {
          // Under the lock, so a removal of this membership cannot be in between: a grant whose
          // removal has begun or ended (a late attempt after the lease ended, or the sentinel
          // ended it) must not put the membership back on the target.
          const [current] = await tx.select({ status: grants.status }).from(grants).where(eq(grants.id, input.grantId));
          if (current && (REMOVING_OR_ENDED as readonly string[]).includes(current.status)) throw ApplicationFailure.nonRetryable('the grant is being removed or has ended', 'GrantClosed');
          const mode = credentialModeOf(ctx.system, ctx.entitlement);
          // The credential first: a login role must exist before it can be granted anything, and a
          // certificate is the grant itself.
          const credential = mode ? await issueOnTarget(ctx, notAfter, { replace: false }) : undefined;
          const changed = mode === 'certificate' ? credential!.changed : (await ctx.connector.grant(ctx.m)).changed;
          return { changed, issued: credential?.issued, identity: ctx.identity };
        }),
      );
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
      const [last] = input.requestId
        ? await db.select({ at: approvals.decidedAt }).from(approvals).where(and(eq(approvals.requestId, input.requestId), eq(approvals.status, 'approved'))).orderBy(desc(approvals.decidedAt)).limit(1)
        : [];
      const { inserted } = await db.transaction(async (tx) => {
        // A late attempt after the lease already ended changes nothing (and writes no event).
        if (!(await lockOpenGrant(tx, input.grantId))) return { inserted: false };
        await tx.update(grants).set({ status: 'active', grantVerifiedAt: verifiedAt, expiresAt }).where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'active');
        return appendAuditEvent(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.verified',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          data: { expiresAt: expiresAt.toISOString() },
        });
      });
      // Observed once per verified grant: a retry that finds its event already written does not count again.
      if (inserted && last?.at) metrics.approvalSystemPart.observe((verifiedAt.getTime() - last.at.getTime()) / 1000);
      return { verifiedAt: verifiedAt.toISOString(), expiresAt: expiresAt.toISOString() };
    },

    async recordExtension(input: Keyed & FromApi & { requestId: string; grantId: string; actorId: string; justification: string; expiresAt: string; shortened?: boolean }) {
      await db.transaction(async (tx) => {
        const before = await lockOpenGrant(tx, input.grantId);
        if (!before) return; // the lease ended meanwhile: no extension to record
        await tx.update(grants).set({ expiresAt: new Date(input.expiresAt) }).where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'active');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          actorType: 'identity',
          actorId: input.actorId,
          action: input.shortened ? 'grant.shortened' : 'grant.extended',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.justification,
          data: { from: before?.expiresAt?.toISOString() ?? null, to: input.expiresAt, ...apiRef(input) },
        });
      });
    },

    async beginRevocation(input: BeginRevocationInput) {
      // Defence in depth behind the workflow's own check: a reason the database enum does not know
      // would fail the same way on every retry.
      if (!(revokeReason.enumValues as readonly string[]).includes(input.reason)) throw ApplicationFailure.nonRetryable('unknown revoke reason', 'InvalidInput');
      const { claimedActorId, ...actor } = await revocationActor(db, input);
      await db.transaction(async (tx) => {
        // A grant that already ended (the sentinel ended it, or this is a late attempt) is not
        // reopened, and no request to revoke it is recorded after the fact.
        if (!(await lockOpenGrant(tx, input.grantId))) return;
        await tx
          .update(grants)
          .set({ status: 'revoking', revokeReason: input.reason, revokeRequestedAt: new Date(input.requestedAt), revokedBy: actor.actorId })
          .where(eq(grants.id, input.grantId));
        await setRequestStatus(tx, input.requestId, 'revoking');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...actor,
          action: 'grant.revoke_requested',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.comment ?? input.reason,
          data: { reason: input.reason, ...apiRef(input), ...(claimedActorId ? { claimedActorId } : {}) },
        });
      });
    },

    /**
     * Removes the membership (unless another active grant still justifies it) and reads the
     * target back. Throws while the membership is still there, so Temporal retries with backoff.
     */
    async removeAndVerify(input: LeaseRef & { reason: RevokeReason }) {
      // The check and the removal hold the membership's lock: a concurrent grant of the same
      // membership cannot slip in between "nothing else justifies it" and the revoke.
      return onLease(input, 'revoke', ({ connector, m, system, entitlement, identity }) =>
        withMembershipLock(db, { system, m }, async (tx) => {
          const [other] = await tx
            .select({ id: grants.id })
            .from(grants)
            .where(and(eq(grants.identityId, input.subjectId), eq(grants.entitlementId, input.entitlementId), ne(grants.id, input.grantId), justifiesMembership()))
            .limit(1);
          if (other) return { changed: false, retainedBy: other.id as string | undefined, verifiedAt: new Date().toISOString() };
          let changed = false;
          try {
            changed = (await connector.revoke(m)).changed;
            const { present } = await connector.check(m);
            if (present) throw new ConnectorError('TargetUnavailable', 'membership still present after revoke');
          } catch (e) {
            // A resource that does not exist holds no members: the removal is verified as such.
            if (!(e instanceof ConnectorError && e.type === 'NoSuchResource')) throw e;
          }
          // The login credential goes with the last grant that relies on it, read back like the membership.
          changed = (await revokeLoginCredential(tx, { connector, m, system, entitlement, identity }, input.grantId)) || changed;
          return { changed, retainedBy: undefined as string | undefined, verifiedAt: new Date().toISOString() };
        }),
      );
    },

    /**
     * The alert: a revocation that missed its verification deadline (retries continue in the
     * workflow). Flagged, counted and announced once per grant, however often this is retried.
     */
    async markRevocationUnverified(input: Keyed & { requestId?: string | undefined; grantId: string; error: string; errorType?: string }) {
      const flagged = await db.transaction(async (tx) => {
        // A late attempt (one that outlived its start-to-close timeout, its query queued through a
        // database restart) can land after the removal was verified: it must not reopen the grant.
        if (!(await lockOpenGrant(tx, input.grantId))) return undefined;
        const [g] = await tx.update(grants).set({ status: 'revocation_unverified' }).where(eq(grants.id, input.grantId)).returning({ entitlementId: grants.entitlementId });
        await setRequestStatus(tx, input.requestId, 'revocation_unverified');
        const { inserted } = await appendAuditEvent(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.revocation_unverified',
          requestId: input.requestId,
          grantId: input.grantId,
          reason: input.error,
        });
        return { inserted, entitlementId: g?.entitlementId };
      });
      if (!flagged) return;
      const { inserted, entitlementId } = flagged;
      if (inserted) {
        metrics.revocationsUnverified.inc();
        metrics.exceptions.inc({ kind: 'revocation_unverified' });
        // Only the stable failure type goes to the log: connector messages can name accounts (PII).
        // The full message is in the audit event and the workflow's details, behind access control.
        log.error({ alert: 'revocation_unverified', requestId: input.requestId, grantId: input.grantId, errorType: input.errorType ?? 'unknown' }, 'revocation not verified within deadline');
      }
      await announceUnverified(input, entitlementId);
    },

    async completeRevocation(input: Keyed & { requestId?: string | undefined; grantId: string; changed: boolean; retainedBy?: string | undefined; verifiedAt: string }) {
      const verifiedAt = new Date(input.verifiedAt);
      const closed = await db.transaction(async (tx) => {
        const [g] = await tx.select().from(grants).where(eq(grants.id, input.grantId));
        if (!g) throw notFound('grant');
        const timeToRevokeMs = g.revokeRequestedAt ? verifiedAt.getTime() - g.revokeRequestedAt.getTime() : null;
        let closedNow = false;
        if (g.status !== 'revoked') {
          // Conditional on the status, so only the call that really closes the grant counts it.
          const updated = await tx
            .update(grants)
            .set({
              status: 'revoked',
              revokedAt: verifiedAt,
              // A membership still justified by another grant stays: there is no removal to verify.
              removalVerifiedAt: input.retainedBy ? null : verifiedAt,
            })
            .where(and(eq(grants.id, input.grantId), ne(grants.status, 'revoked')))
            .returning({ id: grants.id });
          closedNow = updated.length > 0;
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
        return closedNow ? { reason: g.revokeReason ?? 'unknown', timeToRevokeMs } : undefined;
      });
      // Counted after commit: a retry after a rolled-back attempt counts once, a retry after a committed one not again.
      if (closed) {
        if (closed.timeToRevokeMs !== null && !input.retainedBy) metrics.timeToRevoke.observe({ reason: closed.reason }, closed.timeToRevokeMs / 1000);
        metrics.removals.inc({ reason: closed.reason, automated: String(AUTOMATED_REVOKE_REASONS.includes(closed.reason)), verified: String(!input.retainedBy) });
      }
    },

    async markFailed(input: Keyed & { requestId: string; grantId: string; reason: string }) {
      await db.transaction(async (tx) => {
        if (!(await lockOpenGrant(tx, input.grantId))) return; // already ended: a late attempt
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
