import { randomUUID } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/activity';
import { and, eq, inArray, isNull, max } from 'drizzle-orm';
import { accessRequests, credentials, grants, hrEvents, identities, systems } from '../db/schema.js';
import type { HrEventType } from '../workflows/messages.js';
import { appendAudit, appendAuditEvent } from './domain/audit.js';
import { alertRecipients } from './domain/notifier.js';
import { ConnectorError } from './connectors/types.js';
import { identityVars } from './domain/policy/service.js';
import type { ActivityDeps } from './deps.js';
import { createLeaseTargets, withMembershipLock } from './lease-context.js';
import { hrEventBody } from './domain/hr-event.js';


const ACTOR = { actorType: 'client', actorId: 'hr' } as const;
export const CONTRACT_END_SOURCE = 'accessloop:contract-end';

const BY_IDENTITY_WORKFLOW = { actorType: 'workflow', actorId: 'identityWorkflow' } as const;

export function createHrActivities(deps: Pick<ActivityDeps, 'db' | 'policies' | 'connectors' | 'metrics' | 'notifier' | 'log'>) {
  const { db, policies, connectors, metrics, notifier, log } = deps;
  const { onLease, onTarget } = createLeaseTargets(deps);

  /**
   * A birthright grant that can no longer succeed is `failed`: it justifies nothing (overlap
   * checks, reconciliation) and the next plan grants the entitlement afresh. Only a grant still
   * `granting` turns failed; one that became active stays so.
   */
  async function failBirthright(input: { identityId: string; grantId: string; errorType: string }) {
    await db.transaction(async (tx) => {
      await tx.update(grants).set({ status: 'failed' }).where(and(eq(grants.id, input.grantId), eq(grants.status, 'granting')));
      await appendAudit(tx, {
        idempotencyKey: `birthright/${input.grantId}/failed`,
        ...ACTOR,
        action: 'grant.birthright_failed',
        grantId: input.grantId,
        identityId: input.identityId,
        reason: input.errorType,
      });
    });
  }

  /**
   * Runs an account operation on every system whose connector supports it and where the
   * account exists; reports which systems changed.
   */
  async function onAccounts(identityId: string, op: 'disable' | 'enable') {
    const [who] = await db.select().from(identities).where(eq(identities.id, identityId));
    if (!who) throw ApplicationFailure.nonRetryable('identity not found', 'NotFound');
    const changed: string[] = [];
    for (const sys of await db.select({ id: systems.id }).from(systems)) {
      try {
        const { connector, accountFor } = await connectors.forSystem(sys.id);
        if (!connector.accountDisabled || !connector.disableAccount || !connector.enableAccount) continue;
        const account = accountFor(who);
        const state = await connector.accountDisabled(account);
        if (!state.exists) continue;
        const r = op === 'disable' ? await connector.disableAccount(account) : await connector.enableAccount(account);
        if (r.changed) changed.push(sys.id);
      } catch (e) {
        if (e instanceof ConnectorError) {
          if (e.retryable) throw ApplicationFailure.retryable(e.message, e.type);
          if (e.type === 'NoSuchAccount') continue;
        }
        throw e;
      }
    }
    return { changed };
  }

  async function identityByExternalId(externalId: string | undefined) {
    if (!externalId) return undefined;
    const [row] = await db.select({ id: identities.id }).from(identities).where(eq(identities.externalId, externalId));
    return row?.id;
  }

  return {
    /**
     * Applies one inbox event to the identity, honouring the per-worker sequence: an event older
     * than the last applied one is `stale`; a mover/update for a terminated worker is `ignored`.
     */
    async applyHrEvent(input: { eventId: string; identityId: string }) {
      const [ev] = await db.select().from(hrEvents).where(eq(hrEvents.id, input.eventId));
      const [who] = await db.select().from(identities).where(eq(identities.id, input.identityId));
      if (!ev || !who) throw ApplicationFailure.nonRetryable('event or identity not found', 'NotFound');
      const body = hrEventBody.parse(ev.payload);
      const w = body.worker;
      // A contract end we scheduled ourselves is not in HR's numbering: it neither needs nor consumes a sequence.
      const synthetic = ev.sourceClient === CONTRACT_END_SOURCE;
      let outcome: 'applied' | 'stale' | 'ignored' = 'applied';
      if (ev.processedAt) outcome = (ev.outcome as typeof outcome) ?? 'applied';
      else if (synthetic && who.status === 'terminated') outcome = 'ignored';
      else if (!synthetic && who.hrSequence !== null && ev.sequence <= who.hrSequence) outcome = 'stale';
      else if ((ev.type === 'mover' || ev.type === 'update') && who.status === 'terminated') outcome = 'ignored';

      if (!ev.processedAt) {
        const [managerId, sponsorId] = await Promise.all([identityByExternalId(w.managerId), identityByExternalId(w.sponsorId)]);
        await db.transaction(async (tx) => {
          if (outcome === 'applied') {
            const attrs = {
              ...(w.displayName ? { displayName: w.displayName } : {}),
              ...(w.email ? { email: w.email } : {}),
              ...(w.kind ? { kind: w.kind } : {}),
              ...(w.department !== undefined ? { department: w.department } : {}),
              ...(w.location !== undefined ? { location: w.location } : {}),
              ...(w.employmentType !== undefined ? { employmentType: w.employmentType } : {}),
              ...(w.jobCode !== undefined ? { jobCode: w.jobCode } : {}),
              ...(managerId ? { managerId } : {}),
              ...(sponsorId ? { sponsorId } : {}),
              ...(w.endDate !== undefined ? { endDate: w.endDate ? new Date(w.endDate) : null } : {}),
            };
            const status =
              ev.type === 'leaver'
                ? { status: 'terminated' as const, terminatedAt: ev.effectiveAt }
                : ev.type === 'joiner' || ev.type === 'rehire'
                  ? { status: 'active' as const, terminatedAt: null }
                  : who.status === 'suspended'
                    ? { status: 'active' as const } // a mover/update for a worker we only knew as a shell
                    : {};
            await tx
              .update(identities)
              .set({ ...attrs, ...status, ...(synthetic ? {} : { hrSequence: ev.sequence }), updatedAt: new Date() })
              .where(eq(identities.id, who.id));
          }
          await tx.update(hrEvents).set({ processedAt: new Date(), outcome }).where(eq(hrEvents.id, ev.id));
          await appendAudit(tx, {
            idempotencyKey: `hr/${ev.id}/applied`,
            ...ACTOR,
            action: `hr.${ev.type}.${outcome}`,
            identityId: who.id,
            data: { eventId: ev.id, sequence: ev.sequence, effectiveAt: ev.effectiveAt.toISOString(), lastSequence: who.hrSequence },
          });
        });
      }
      const [after] = await db.select({ status: identities.status, endDate: identities.endDate }).from(identities).where(eq(identities.id, who.id));
      return { outcome, type: ev.type as HrEventType, status: after!.status, endDate: after!.endDate?.toISOString() ?? null, receivedAt: ev.receivedAt.toISOString() };
    },

    /** The end date passed: record a leaver in the inbox (idempotent per end date) and hand it to the workflow. */
    async recordContractEnd(input: { identityId: string }) {
      const [who] = await db.select().from(identities).where(eq(identities.id, input.identityId));
      if (!who?.endDate) throw ApplicationFailure.nonRetryable('identity has no end date', 'NotFound');
      const webhookId = `contract-end/${who.id}/${who.endDate.toISOString()}`;
      const payload = { type: 'leaver', sequence: who.hrSequence ?? 0, effectiveAt: who.endDate.toISOString(), worker: { id: who.externalId ?? who.id } };
      await db
        .insert(hrEvents)
        .values({ webhookId, sourceClient: CONTRACT_END_SOURCE, type: 'leaver', workerId: who.externalId ?? who.id, sequence: who.hrSequence ?? 0, effectiveAt: who.endDate, payload, identityId: who.id })
        .onConflictDoNothing();
      const [ev] = await db.select().from(hrEvents).where(eq(hrEvents.webhookId, webhookId));
      return { eventId: ev!.id, type: 'leaver' as const, sequence: ev!.sequence, effectiveAt: ev!.effectiveAt.toISOString() };
    },

    /** Birthright the identity's attributes justify now, versus the birthright grants it holds. */
    async planBirthright(input: { identityId: string }) {
      const [who] = await db.select().from(identities).where(eq(identities.id, input.identityId));
      if (!who) throw ApplicationFailure.nonRetryable('identity not found', 'NotFound');
      const policy = await policies.active();
      const desired = who.status === 'active' ? policy.birthright(identityVars(who) as never) : { entitlementIds: new Set<string>(), rules: [], errors: [] };
      const held = await db
        .select({ grantId: grants.id, entitlementId: grants.entitlementId })
        .from(grants)
        .where(and(eq(grants.identityId, who.id), eq(grants.source, 'birthright'), inArray(grants.status, ['granting', 'active'])));
      const heldIds = new Set(held.map((h) => h.entitlementId));
      return {
        policyVersion: policy.version,
        rules: desired.rules,
        errors: desired.errors,
        graceSeconds: policy.document.moverGraceSeconds,
        grant: [...desired.entitlementIds].filter((e) => !heldIds.has(e)).map((entitlementId) => ({ entitlementId, grantId: randomUUID() })),
        revoke: held.filter((h) => !desired.entitlementIds.has(h.entitlementId)),
      };
    },

    /**
     * Grants one birthright entitlement and reads it back (no approval: the rule is the
     * justification). An error that can never succeed marks the grant `failed` before it fails
     * the activity; a grant that fails by running out of time is marked by `markBirthrightFailed`.
     */
    async grantBirthright(input: { identityId: string; entitlementId: string; grantId: string; rules: string[]; policyVersion: string }) {
      await db
        .insert(grants)
        .values({ id: input.grantId, identityId: input.identityId, entitlementId: input.entitlementId, source: 'birthright', status: 'granting' })
        .onConflictDoNothing();
      const lease = { subjectId: input.identityId, entitlementId: input.entitlementId };
      let changed: boolean;
      try {
        // Under the membership's lock, like a request's grant: a concurrent removal of the same
        // membership either sees this `granting` row or finishes before the membership is added.
        ({ changed } = await onLease(lease, 'grant', (ctx) => withMembershipLock(db, ctx, () => ctx.connector.grant(ctx.m))));
      } catch (err) {
        if (err instanceof ApplicationFailure && err.nonRetryable) await failBirthright({ identityId: input.identityId, grantId: input.grantId, errorType: err.type ?? 'ApplicationFailure' });
        throw err;
      }
      const { present } = await onTarget(lease, 'check', (c, m) => c.check(m));
      if (!present) throw ApplicationFailure.retryable('membership not yet visible on the target', 'GrantNotVerified');
      const now = new Date();
      await db.transaction(async (tx) => {
        await tx
          .update(grants)
          .set({ status: 'active', grantedAt: now, grantVerifiedAt: now, targetChanged: changed })
          .where(and(eq(grants.id, input.grantId), eq(grants.status, 'granting')));
        await appendAudit(tx, {
          idempotencyKey: `birthright/${input.grantId}/granted`,
          ...ACTOR,
          action: 'grant.birthright_applied',
          grantId: input.grantId,
          identityId: input.identityId,
          policyVersion: input.policyVersion,
          data: { entitlementId: input.entitlementId, rules: input.rules, changed },
        });
      });
      return { changed };
    },

    /** The identity workflow gave up on a birthright grant (its activity failed for good): it justifies nothing. */
    async markBirthrightFailed(input: { identityId: string; grantId: string; errorType: string }) {
      await failBirthright(input);
    },

    /**
     * The alert for a leaver whose removals are not all verified by the deadline (they keep
     * retrying): an audit event, a counter and a signed notification to the owners of the
     * entitlements concerned and the operators, once per idempotency key.
     */
    async alertStuckLeaver(input: { identityId: string; eventId: string; pendingGrantIds: string[]; sinceSeconds: number; idempotencyKey: string }) {
      const { inserted } = await db.transaction((tx) =>
        appendAuditEvent(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_IDENTITY_WORKFLOW,
          action: 'leaver.removals_overdue',
          identityId: input.identityId,
          data: { eventId: input.eventId, pendingGrantIds: input.pendingGrantIds, sinceSeconds: input.sinceSeconds },
        }),
      );
      if (inserted) {
        metrics.leaverRemovalsOverdue.inc();
        metrics.exceptions.inc({ kind: 'leaver_removals_overdue' });
        log.error({ alert: 'leaver_removals_overdue', identityId: input.identityId, pending: input.pendingGrantIds.length, sinceSeconds: input.sinceSeconds }, 'leaver removals not verified by the deadline');
      }
      const pending = input.pendingGrantIds.length
        ? await db.select({ entitlementId: grants.entitlementId }).from(grants).where(inArray(grants.id, input.pendingGrantIds))
        : [];
      const recipientIds = await alertRecipients(db, { entitlementIds: [...new Set(pending.map((p) => p.entitlementId))], securityTeam: (await policies.active()).document.securityTeam });
      // The notifier does not resend a delivered message, so a retry (webhook down) is safe.
      return notifier.send({
        event: 'leaver.removals_overdue',
        identityId: input.identityId,
        details: { eventId: input.eventId, pendingGrantIds: input.pendingGrantIds, sinceSeconds: input.sinceSeconds },
        recipientIds,
        idempotencyKey: `leaver-overdue/${input.idempotencyKey}`,
      });
    },

    /** Leavers: lock the directory/database accounts so nothing can log in, whatever access remains elsewhere. */
    async disableAccounts(input: { identityId: string }) {
      return onAccounts(input.identityId, 'disable');
    },

    /** Rehires: unlock what a leaver's processing locked. */
    async enableAccounts(input: { identityId: string }) {
      return onAccounts(input.identityId, 'enable');
    },

    /** A mover's requested (non-birthright) leases, to be re-approved by the new manager. */
    async moverReviewTargets(input: { identityId: string }) {
      const rows = await db
        .select({ workflowId: accessRequests.workflowId })
        .from(accessRequests)
        .where(and(eq(accessRequests.subjectId, input.identityId), eq(accessRequests.status, 'active')));
      return { requestWorkflowIds: rows.map((r) => r.workflowId) };
    },

    /** Everything a leaver holds or has asked for: request workflows to signal, birthright grants to revoke. */
    async leaverTargets(input: { identityId: string }) {
      const requests = await db
        .select({ workflowId: accessRequests.workflowId })
        .from(accessRequests)
        .where(and(eq(accessRequests.subjectId, input.identityId), inArray(accessRequests.status, ['pending_approval', 'scheduled', 'granting', 'active'])));
      const birthright = await db
        .select({ grantId: grants.id, entitlementId: grants.entitlementId })
        .from(grants)
        .where(and(eq(grants.identityId, input.identityId), eq(grants.source, 'birthright'), inArray(grants.status, ['granting', 'active'])));
      return { requestWorkflowIds: requests.map((r) => r.workflowId), birthright };
    },

    /** Retried by Temporal until every grant of the identity is closed with its removal verified. */
    async awaitIdentityRemovals(input: { identityId: string }) {
      const open = await db
        .select({ id: grants.id, status: grants.status })
        .from(grants)
        .where(and(eq(grants.identityId, input.identityId), inArray(grants.status, ['granting', 'active', 'revoking', 'revocation_unverified'])));
      const openRequests = await db
        .select({ id: accessRequests.id })
        .from(accessRequests)
        .where(and(eq(accessRequests.subjectId, input.identityId), inArray(accessRequests.status, ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified'])));
      if (open.length || openRequests.length) {
        throw ApplicationFailure.retryable(`${open.length} grant(s) and ${openRequests.length} request(s) still open`, 'RemovalsPending');
      }
      const [last] = await db.select({ at: max(grants.removalVerifiedAt) }).from(grants).where(eq(grants.identityId, input.identityId));
      return { lastVerifiedAt: last?.at?.toISOString() ?? new Date().toISOString() };
    },

    /**
     * Closes a leaver: time to revoke (event received → last removal verified), and non-human
     * identities the leaver owned handed to their manager so none is left without an owner.
     */
    async completeLeaver(input: { eventId: string; identityId: string; lastVerifiedAt: string; disabledSystems?: string[] }) {
      const [ev] = await db.select().from(hrEvents).where(eq(hrEvents.id, input.eventId));
      const [who] = await db.select({ managerId: identities.managerId }).from(identities).where(eq(identities.id, input.identityId));
      const completedAt = new Date(Math.max(Date.parse(input.lastVerifiedAt), ev?.receivedAt.getTime() ?? 0));
      const timeToRevokeMs = ev ? completedAt.getTime() - ev.receivedAt.getTime() : null;
      await db.transaction(async (tx) => {
        await tx.update(hrEvents).set({ completedAt }).where(and(eq(hrEvents.id, input.eventId), isNull(hrEvents.completedAt)));
        const handed = who?.managerId
          ? await tx
              .update(identities)
              .set({ ownerId: who.managerId, updatedAt: new Date() })
              .where(and(eq(identities.ownerId, input.identityId), inArray(identities.kind, ['service_account', 'api_key', 'workload', 'ai_agent'])))
              .returning({ id: identities.id })
          : [];
        if (handed.length && who?.managerId) {
          // Their live credentials follow them: the new owner reads and rotates them.
          await tx
            .update(credentials)
            .set({ ownerId: who.managerId })
            .where(and(eq(credentials.ownerId, input.identityId), inArray(credentials.identityId, handed.map((h) => h.id)), eq(credentials.status, 'active')));
        }
        await appendAudit(tx, {
          idempotencyKey: `hr/${input.eventId}/leaver-completed`,
          ...ACTOR,
          action: 'hr.leaver_completed',
          identityId: input.identityId,
          data: { eventId: input.eventId, timeToRevokeMs, disabledSystems: input.disabledSystems ?? [], reassignedIdentities: handed.map((h) => h.id), newOwner: who?.managerId ?? null },
        });
      });
      return { timeToRevokeMs };
    },
  };
}
