import { createHash } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/activity';
import { and, eq, inArray, ne } from 'drizzle-orm';
import { ZodError } from 'zod';
import type { Db } from '../db/client.js';
import {
  accessRequests,
  approvals,
  auditEvents,
  entitlements,
  grants,
  identities,
  type Entitlement,
  type RequestStatus,
  type RevokeReason,
} from '../db/schema.js';
import type { Logger } from '../temporal/logger.js';
import { appendAudit, canonicalJson } from './audit.js';
import { createHrActivities } from './hr.js';
import { createReconciliationActivities } from './reconciliation.js';
import type { ConnectorRegistry } from './connectors/registry.js';
import { ConnectorError, type Connector, type Membership } from './connectors/types.js';
import type { Metrics } from './metrics.js';
import type { Notifier, NotifyInput } from './notifications.js';
import type { PolicyService } from './policy/service.js';

export interface ActivityDeps {
  db: Db;
  policies: PolicyService;
  notifier: Notifier;
  connectors: ConnectorRegistry;
  log: Logger;
  metrics: Metrics;
}

interface Keyed {
  idempotencyKey: string;
}
interface LeaseRef {
  /** Absent for birthright grants (no request: the HR rule is the justification). */
  requestId?: string | undefined;
  grantId: string;
  subjectId: string;
  entitlementId: string;
}

/** Transitions the workflow makes on its own (expiry, verification, stage timing). */
const BY_WORKFLOW = { actorType: 'workflow', actorId: 'accessRequestWorkflow' } as const;

const notFound = (what: string) => ApplicationFailure.nonRetryable(`${what} not found`, 'NotFound');

/** Maps connector errors onto Temporal's retry semantics with stable types. */
function toFailure(err: unknown): unknown {
  if (err instanceof ConnectorError) {
    return err.retryable
      ? ApplicationFailure.retryable(err.message, err.type)
      : ApplicationFailure.nonRetryable(err.message, err.type);
  }
  if (err instanceof ZodError) return ApplicationFailure.nonRetryable(`invalid system configuration: ${err.issues.map((i) => i.message).join('; ')}`, 'InvalidConfig');
  return err;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** API actors are identity ids or `client:<name>`; the workflow itself is `system`; anything else came from a Temporal UI signal. */
function actorTypeOf(actorId: string): 'identity' | 'client' | 'workflow' {
  if (actorId === 'system') return 'workflow';
  return UUID.test(actorId) ? 'identity' : 'client';
}

export function policyVersionOf(e: Pick<Entitlement, 'id' | 'approvalPolicy' | 'maxDurationSeconds' | 'riskTier' | 'ownerId'>): string {
  const digest = createHash('sha256')
    .update(canonicalJson({ p: e.approvalPolicy, max: e.maxDurationSeconds, tier: e.riskTier, owner: e.ownerId }))
    .digest('hex');
  return `ent-${e.id.slice(0, 8)}@${digest.slice(0, 12)}`;
}

export function createActivities(deps: ActivityDeps) {
  const { db, connectors, log, metrics } = deps;

  async function loadLease(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>) {
    const [identity] = await db.select().from(identities).where(eq(identities.id, l.subjectId));
    if (!identity) throw notFound('identity');
    const [entitlement] = await db.select().from(entitlements).where(eq(entitlements.id, l.entitlementId));
    if (!entitlement) throw notFound('entitlement');
    return { identity, entitlement };
  }

  /** Resolves the connector and the membership for a lease, then runs one target operation. */
  async function onTarget<T>(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>, op: string, fn: (c: Connector, m: Membership) => Promise<T>): Promise<T> {
    const { identity, entitlement } = await loadLease(l);
    let kind = 'unknown';
    try {
      const { connector, accountFor, system } = await connectors.forSystem(entitlement.systemId);
      kind = system.kind;
      const result = await fn(connector, { account: accountFor(identity), resource: entitlement.resource });
      metrics.targetCalls.inc({ kind, op, outcome: 'ok' });
      return result;
    } catch (err) {
      metrics.targetCalls.inc({ kind, op, outcome: err instanceof ConnectorError ? err.type : 'error' });
      throw toFailure(err);
    }
  }

  async function setRequestStatus(tx: Pick<Db, 'update'>, requestId: string | undefined, status: RequestStatus, extra: Partial<typeof accessRequests.$inferInsert> = {}) {
    if (!requestId) return;
    await tx.update(accessRequests).set({ status, updatedAt: new Date(), ...extra }).where(eq(accessRequests.id, requestId));
  }

  return {
    ...createHrActivities({ db, policies: deps.policies, connectors, onTarget }),
    ...createReconciliationActivities({ db, connectors, policies: deps.policies }),

    /**
     * Routes the request by the active policy: deny, auto-approve, or stages of resolved
     * approvers. The policy version and the rules that fired go into history and evidence.
     */
    async evaluatePolicy(input: { requestId: string; requesterId: string; subjectId: string; entitlementId: string; durationSeconds?: number; purpose?: 'request' | 'extension' }) {
      const [req] = await db.select().from(accessRequests).where(eq(accessRequests.id, input.requestId));
      if (!req) throw notFound('access request');
      const { identity: subject } = await loadLease(input);
      const d = subject.status !== 'active'
        ? ({ effect: 'deny', reason: 'subject is not active', fired: [], maxDurationSeconds: 0, policyVersion: 'n/a' } as const)
        : await deps.policies.decide({
            requestId: input.requestId,
            requesterId: input.requesterId,
            subjectId: input.subjectId,
            entitlementId: input.entitlementId,
            durationSeconds: input.durationSeconds ?? req.requestedDurationSeconds,
            justification: req.justification,
            ticketRef: req.ticketRef,
          });
      return {
        effect: d.effect,
        policyVersion: d.policyVersion,
        maxDurationSeconds: d.maxDurationSeconds,
        fired: d.fired.map((f) => f.rule),
        reason: d.effect === 'route' ? undefined : d.reason,
        extendRequiresApproval: d.effect === 'route' ? d.extendRequiresApproval : false,
        ...(d.effect === 'route'
          ? {
              stages: d.stages.map(({ name, quorum, timeoutSeconds, reminderAfterSeconds, escalateAfterSeconds, requireComment, approverIds, onBehalfOf }) => ({
                name,
                quorum,
                ...(timeoutSeconds ? { timeoutSeconds } : {}),
                ...(reminderAfterSeconds ? { reminderAfterSeconds } : {}),
                ...(escalateAfterSeconds ? { escalateAfterSeconds } : {}),
                requireComment,
                approverIds,
                onBehalfOf,
              })),
            }
          : { stages: [] }),
      };
    },

    /** Escalation: the waiting approvers' managers (else the security team) join the open stage. */
    async escalateStage(input: Keyed & { requestId: string; stage: number; stageName: string; waitingApproverIds: string[]; excludeIds: string[]; policyVersion: string; dueAt: string }) {
      const [already] = await db.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, input.idempotencyKey));
      if (already) return { approverIds: (already.data as { added?: string[] }).added ?? [] };
      const added = await deps.policies.escalationTargets(input.waitingApproverIds, input.excludeIds);
      await db.transaction(async (tx) => {
        if (added.length) {
          await tx
            .insert(approvals)
            .values(added.map((approverId) => ({ requestId: input.requestId, stage: input.stage, stageName: input.stageName, approverId, policyVersion: input.policyVersion, dueAt: new Date(input.dueAt) })))
            .onConflictDoNothing();
        }
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'approval.escalated',
          requestId: input.requestId,
          policyVersion: input.policyVersion,
          data: { stage: input.stage, waiting: input.waitingApproverIds, added },
        });
      });
      return { approverIds: added };
    },

    async notify(input: NotifyInput) {
      return deps.notifier.send(input);
    },

    async closeExtension(input: Keyed & { requestId: string; grantId: string; outcome: 'refused'; reason: string }) {
      await db.transaction(async (tx) => {
        await tx
          .update(approvals)
          .set({ status: 'closed' })
          .where(and(eq(approvals.requestId, input.requestId), eq(approvals.status, 'pending')));
        await appendAudit(tx, { idempotencyKey: input.idempotencyKey, ...BY_WORKFLOW, action: 'extension.refused', requestId: input.requestId, grantId: input.grantId, reason: input.reason });
      });
    },

    /** The one-stage review of a mover's requested access: the subject's manager (with the usual substitutions). */
    async reviewStages(input: { requestId: string; subjectId: string; requesterId: string; deadlineSeconds: number }) {
      const stage = await deps.policies.reviewStage(input.requestId, input.deadlineSeconds);
      return stage ? [{ name: stage.name, quorum: 1, timeoutSeconds: input.deadlineSeconds, requireComment: false, approverIds: stage.approverIds, onBehalfOf: stage.onBehalfOf }] : [];
    },

    async recordAutoApproval(input: Keyed & { requestId: string; policyVersion: string; reason: string; fired: string[] }) {
      await db.transaction(async (tx) => {
        await setRequestStatus(tx, input.requestId, 'granting', { decidedAt: new Date(), policyVersion: input.policyVersion });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'request.auto_approved',
          requestId: input.requestId,
          policyVersion: input.policyVersion,
          reason: input.reason,
          data: { rules: input.fired },
        });
      });
    },

    async openApprovalStage(
      input: Keyed & {
        requestId: string;
        stage: number;
        stageName?: string;
        approverIds: string[];
        onBehalfOf?: Record<string, string>;
        policyVersion: string;
        dueAt: string;
        /** Extension re-approval or a mover's review: the request stays `active` meanwhile. */
        purpose?: 'request' | 'extension' | 'review';
      },
    ) {
      await db.transaction(async (tx) => {
        await tx
          .insert(approvals)
          .values(
            input.approverIds.map((approverId) => ({
              requestId: input.requestId,
              stage: input.stage,
              stageName: input.stageName ?? 'owner',
              approverId,
              onBehalfOf: input.onBehalfOf?.[approverId] ?? null,
              policyVersion: input.policyVersion,
              dueAt: new Date(input.dueAt),
            })),
          )
          .onConflictDoNothing();
        if (!input.purpose || input.purpose === 'request') await setRequestStatus(tx, input.requestId, 'pending_approval', { policyVersion: input.policyVersion });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: input.purpose && input.purpose !== 'request' ? `${input.purpose}.stage_opened` : 'approval.stage_opened',
          requestId: input.requestId,
          policyVersion: input.policyVersion,
          data: { stage: input.stage, stageName: input.stageName ?? 'owner', approverIds: input.approverIds, onBehalfOf: input.onBehalfOf ?? {}, dueAt: input.dueAt },
        });
      });
    },

    async recordDecision(
      input: Keyed & {
        requestId: string;
        stage: number;
        approverId: string;
        decision: 'approve' | 'reject';
        comment?: string | undefined;
        policyVersion: string;
        /** Quorum reached (or rejected): the stage's other open tasks close. */
        stageComplete?: boolean;
        finalStage?: boolean;
        purpose?: 'request' | 'extension' | 'review';
      },
    ) {
      const forExtension = !!input.purpose && input.purpose !== 'request';
      const stageComplete = input.stageComplete ?? true;
      const finalStage = input.finalStage ?? true;
      const now = new Date();
      await db.transaction(async (tx) => {
        await tx
          .update(approvals)
          .set({ status: input.decision === 'approve' ? 'approved' : 'rejected', comment: input.comment ?? null, decidedAt: now })
          .where(and(eq(approvals.requestId, input.requestId), eq(approvals.stage, input.stage), eq(approvals.approverId, input.approverId), eq(approvals.status, 'pending')));
        if (stageComplete) {
          // The stage is decided: the other approvers' tasks close without a decision.
          await tx
            .update(approvals)
            .set({ status: 'closed' })
            .where(and(eq(approvals.requestId, input.requestId), eq(approvals.stage, input.stage), eq(approvals.status, 'pending')));
        }
        if (!forExtension && input.decision === 'reject') await setRequestStatus(tx, input.requestId, 'rejected', { decidedAt: now });
        else if (!forExtension && stageComplete && finalStage) await setRequestStatus(tx, input.requestId, 'granting', { decidedAt: now });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          actorType: 'identity',
          actorId: input.approverId,
          action: forExtension
            ? `${input.purpose}.${input.decision === 'reject' ? 'rejected' : 'approval_recorded'}`
            : input.decision === 'reject'
              ? 'request.rejected'
              : stageComplete && finalStage
                ? 'request.approved'
                : 'approval.recorded',
          requestId: input.requestId,
          policyVersion: input.policyVersion,
          reason: input.comment ?? null,
          data: { stage: input.stage, stageComplete },
        });
      });
    },

    async closeUnapproved(
      input: Keyed & { requestId: string; outcome: 'expired_unapproved' | 'cancelled' | 'rejected'; reason: string; actorId?: string | undefined; fired?: string[] | undefined },
    ) {
      await db.transaction(async (tx) => {
        await tx
          .update(approvals)
          .set({ status: input.outcome === 'expired_unapproved' ? 'expired' : 'closed' })
          .where(and(eq(approvals.requestId, input.requestId), eq(approvals.status, 'pending')));
        await setRequestStatus(tx, input.requestId, input.outcome, { decidedAt: new Date() });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          actorType: input.actorId ? actorTypeOf(input.actorId) : 'workflow',
          actorId: input.actorId ?? 'accessRequestWorkflow',
          action: `request.${input.outcome}`,
          requestId: input.requestId,
          reason: input.reason,
          ...(input.fired?.length ? { data: { rules: input.fired } } : {}),
        });
      });
    },

    async recordScheduled(input: Keyed & { requestId: string; startAt: string }) {
      await db.transaction(async (tx) => {
        await setRequestStatus(tx, input.requestId, 'scheduled');
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.scheduled',
          requestId: input.requestId,
          data: { startAt: input.startAt },
        });
      });
    },

    async grantAccess(input: Keyed & LeaseRef) {
      await db
        .insert(grants)
        .values({ id: input.grantId, identityId: input.subjectId, entitlementId: input.entitlementId, requestId: input.requestId, source: 'request', status: 'granting' })
        .onConflictDoNothing();
      const { changed } = await onTarget(input, 'grant', (c, m) => c.grant(m));
      await db.transaction(async (tx) => {
        // Only the first successful call records whether we changed the target; a retry that finds
        // the membership already present must not overwrite it.
        const [row] = await tx.select().from(grants).where(eq(grants.id, input.grantId));
        if (row?.grantedAt == null) {
          await tx.update(grants).set({ grantedAt: new Date(), targetChanged: changed }).where(eq(grants.id, input.grantId));
        }
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'grant.applied',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          data: { changed },
        });
      });
      return { changed };
    },

    /** Reads the target back; the lease starts only once the membership is really there. */
    async verifyGranted(input: Keyed & LeaseRef & { expiresAt: string }) {
      const [row] = await db.select().from(grants).where(eq(grants.id, input.grantId));
      if (row?.grantVerifiedAt && row.expiresAt) return { verifiedAt: row.grantVerifiedAt.toISOString(), expiresAt: row.expiresAt.toISOString() };
      const { present } = await onTarget(input, 'check', (c, m) => c.check(m));
      if (!present) throw ApplicationFailure.retryable('membership not yet visible on the target', 'GrantNotVerified');
      const verifiedAt = new Date();
      const expiresAt = new Date(input.expiresAt);
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

    async recordExtension(input: Keyed & { requestId: string; grantId: string; actorId: string; justification: string; expiresAt: string }) {
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
          data: { from: before?.expiresAt?.toISOString() ?? null, to: input.expiresAt },
        });
      });
    },

    async beginRevocation(input: Keyed & { requestId?: string | undefined; grantId: string; reason: RevokeReason; actorId: string; comment?: string | undefined; requestedAt: string }) {
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
          data: { reason: input.reason },
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
      return onTarget(input, 'revoke', async (connector, m) => {
        try {
          const { changed } = await connector.revoke(m);
          const { present } = await connector.check(m);
          if (present) throw new ConnectorError('TargetUnavailable', 'membership still present after revoke');
          return { changed, retainedBy: undefined as string | undefined, verifiedAt: new Date().toISOString() };
        } catch (e) {
          // A resource that does not exist holds no members: the removal is verified as such.
          if (e instanceof ConnectorError && e.type === 'NoSuchResource') return { changed: false, retainedBy: undefined as string | undefined, verifiedAt: new Date().toISOString() };
          throw e;
        }
      });
    },

    /** The alert: a revocation that missed its verification deadline. Retries continue in the workflow. */
    async markRevocationUnverified(input: Keyed & { requestId?: string | undefined; grantId: string; error: string; errorType?: string }) {
      metrics.revocationsUnverified.inc();
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
        }
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
