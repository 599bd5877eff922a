import { createHash } from 'node:crypto';
import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, desc, eq, inArray, ne, sql } from 'drizzle-orm';
import { ZodError } from 'zod';
import type { Db } from '../db/client.js';
import {
  accessRequests,
  approvals,
  auditEvents,
  entitlements,
  grants,
  identities,
  credentials,
  type Entitlement,
  type Identity,
  type System,
  type RequestStatus,
  type RevokeReason,
} from '../db/schema.js';
import type { Logger } from '../temporal/logger.js';
import { appendAudit, canonicalJson } from './domain/audit.js';
import { createHrActivities } from './hr.js';
import { createReconciliationActivities } from './reconciliation.js';
import type { ConnectorRegistry } from './connectors/registry.js';
import { ConnectorError, type Connector, type IssuedCredential, type Membership } from './connectors/types.js';
import { endCredentials, storeCredential, type CredentialRef, type CredentialVault } from './domain/vault.js';
import { AUTOMATED_REVOKE_REASONS, type Metrics } from './domain/metrics.js';
import type { Notifier, NotifyInput } from './domain/notifier.js';
import type { PolicyService } from './domain/policy/service.js';

export interface ActivityDeps {
  db: Db;
  policies: PolicyService;
  notifier: Notifier;
  connectors: ConnectorRegistry;
  log: Logger;
  metrics: Metrics;
  /** Seals issued credentials until their owner reads them once. */
  vault: CredentialVault;
}

interface Keyed {
  idempotencyKey: string;
}
/** Transitions an API call caused carry its HTTP request id into the audit event (joins logs and audit). */
interface FromApi {
  httpRequestId?: string | undefined;
}
const apiRef = (i: FromApi) => (i.httpRequestId ? { httpRequestId: i.httpRequestId } : {});
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
/** Attempts (BOOKKEEPING backoff: about a minute) before a request row that never appeared fails the workflow. */
const REQUEST_VISIBLE_ATTEMPTS = 10;

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

/**
 * Whether a grant of this entitlement issues a credential: SSH CA grants are certificates;
 * a PostgreSQL entitlement with `attributes.credential = "password"` makes the subject (a
 * service account) a login role with a generated password for the lease.
 */
export function credentialModeOf(system: Pick<System, 'kind'>, entitlement: Pick<Entitlement, 'attributes'>): 'password' | 'certificate' | undefined {
  if (system.kind === 'ssh_ca') return 'certificate';
  if (entitlement.attributes?.credential === 'password') return 'password';
  return undefined;
}

/** The subject's registered SSH public key (PUT /v1/identities/:id/ssh-public-key). */
function sshPublicKeyOf(identity: Pick<Identity, 'attributes'>): string | undefined {
  const key = identity.attributes?.sshPublicKey;
  return typeof key === 'string' && key.length > 0 ? key : undefined;
}

interface LeaseContext {
  connector: Connector;
  m: Membership;
  identity: Identity;
  entitlement: Entitlement;
  system: System;
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
  const { db, connectors, log, metrics, vault } = deps;

  async function loadLease(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>) {
    const [identity] = await db.select().from(identities).where(eq(identities.id, l.subjectId));
    if (!identity) throw notFound('identity');
    const [entitlement] = await db.select().from(entitlements).where(eq(entitlements.id, l.entitlementId));
    if (!entitlement) throw notFound('entitlement');
    return { identity, entitlement };
  }

  /** Resolves the connector, the membership and the catalog rows for a lease, then runs target operations. */
  async function onLease<T>(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>, op: string, fn: (ctx: LeaseContext) => Promise<T>): Promise<T> {
    const { identity, entitlement } = await loadLease(l);
    let kind = 'unknown';
    try {
      const { connector, accountFor, system } = await connectors.forSystem(entitlement.systemId);
      kind = system.kind;
      const result = await fn({ connector, m: { account: accountFor(identity), resource: entitlement.resource }, identity, entitlement, system });
      metrics.targetCalls.inc({ kind, op, outcome: 'ok' });
      return result;
    } catch (err) {
      metrics.targetCalls.inc({ kind, op, outcome: err instanceof ConnectorError ? err.type : 'error' });
      throw toFailure(err);
    }
  }

  /** One target operation on a lease's membership. */
  function onTarget<T>(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>, op: string, fn: (c: Connector, m: Membership) => Promise<T>): Promise<T> {
    return onLease(l, op, ({ connector, m }) => fn(connector, m));
  }

  /**
   * Issues (or re-issues) the lease's credential on the target. A password is a new login
   * secret for the account; a certificate is a new grant of the principal for the subject's key
   * (the previous certificate, if any, goes to the KRL first).
   */
  async function issueOnTarget(ctx: LeaseContext, notAfter: Date, opts: { replace: boolean }): Promise<{ changed: boolean; issued: IssuedCredential | undefined }> {
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
  async function otherPasswordGrant(identityId: string, systemId: string, grantId: string): Promise<string | undefined> {
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
      if (!req) {
        // The API starts the workflow inside the transaction that inserts the row, so the first
        // attempt can run before the commit is visible: wait for it, but not for ever (a start
        // whose transaction rolled back leaves a workflow with no request).
        if (Context.current().info.attempt < REQUEST_VISIBLE_ATTEMPTS) throw ApplicationFailure.retryable('access request not committed yet', 'RequestNotVisible');
        throw notFound('access request');
      }
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
      metrics.exceptions.inc({ kind: 'escalation' });
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
        /** The policy rules that shaped the routing (first stage only): evidence of why these approvers. */
        fired?: string[];
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
          data: { stage: input.stage, stageName: input.stageName ?? 'owner', approverIds: input.approverIds, onBehalfOf: input.onBehalfOf ?? {}, dueAt: input.dueAt, ...(input.fired ? { rules: input.fired } : {}) },
        });
      });
    },

    async recordDecision(
      input: Keyed & FromApi & {
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
        const final = !forExtension && (input.decision === 'reject' || (stageComplete && finalStage));
        if (!forExtension && input.decision === 'reject') await setRequestStatus(tx, input.requestId, 'rejected', { decidedAt: now });
        else if (final) await setRequestStatus(tx, input.requestId, 'granting', { decidedAt: now });
        if (final) {
          const [r] = await tx.select({ createdAt: accessRequests.createdAt }).from(accessRequests).where(eq(accessRequests.id, input.requestId));
          if (r) metrics.approvalHumanWait.observe({ outcome: input.decision === 'reject' ? 'rejected' : 'approved' }, (now.getTime() - r.createdAt.getTime()) / 1000);
        }
        if (input.decision === 'approve' && stageComplete) {
          const [a] = await tx.select({ stageName: approvals.stageName }).from(approvals).where(and(eq(approvals.requestId, input.requestId), eq(approvals.stage, input.stage))).limit(1);
          if (a?.stageName?.startsWith('sod-')) metrics.exceptions.inc({ kind: 'sod_exception' });
        }
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
          data: { stage: input.stage, stageComplete, ...apiRef(input) },
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
        if (credentialModeOf(system, entitlement) === 'password' && !(await otherPasswordGrant(identity.id, system.id, input.grantId))) {
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
