import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, eq, ne, sql } from 'drizzle-orm';
import { accessRequests, auditEvents, entitlements, grants, serviceDesks } from '../db/schema.js';
import { deskKinds, parseDeskConfig, resolveDeskSecrets } from './connectors/service-desk/registry.js';
import { appendAudit } from './domain/audit.js';
import { groupMemberIds, postUseReviewers, settingsOf } from './domain/break-glass.js';
import { openMicroReview } from './domain/reviews/micro.js';
import { storeCredential } from './domain/vault.js';
import { issueOnTarget } from './credentials.js';
import type { ActivityDeps } from './deps.js';
import { BY_WORKFLOW, createLeaseTargets, credentialModeOf, justifiesMembership, notFound, setRequestStatus, withMembershipLock, type Keyed, type LeaseRef } from './lease-context.js';

type BreakGlassLease = Keyed & LeaseRef & { requestId: string };

/**
 * The break-glass steps of a lease workflow (docs/break-glass.md): approvals skipped, the use
 * told at once, the post-use review opened, and the forced rotation when the lease ends.
 */
export function createBreakGlassActivities(deps: Pick<ActivityDeps, 'db' | 'policies' | 'connectors' | 'metrics' | 'vault' | 'temporal' | 'secretEnv'>) {
  const { db, policies, vault } = deps;
  const { onLease } = createLeaseTargets(deps);

  async function leaseRows(input: BreakGlassLease) {
    const [row] = await db
      .select({ request: accessRequests, entitlement: entitlements })
      .from(accessRequests)
      .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
      .where(eq(accessRequests.id, input.requestId));
    if (!row) throw notFound('request');
    return row;
  }

  return {
    /** The grant row is a `break_glass` one from the start; the request goes straight to granting. */
    async recordBreakGlass(input: BreakGlassLease): Promise<void> {
      await db.transaction(async (tx) => {
        await tx
          .insert(grants)
          .values({ id: input.grantId, identityId: input.subjectId, entitlementId: input.entitlementId, requestId: input.requestId, source: 'break_glass', status: 'granting' })
          .onConflictDoNothing();
        await setRequestStatus(tx, input.requestId, 'granting', { decidedAt: new Date() });
        await appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'break_glass.approvals_skipped',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          reason: 'break-glass confirmed by an invoker',
        });
      });
    },

    /**
     * Access is verified on the target: the `break_glass.used` event, and who hears of it — every
     * approver the normal policy path would have asked, the owner, the notify (security) group and
     * the reviewer group; never the invoker.
     */
    async breakGlassUsed(input: BreakGlassLease): Promise<{ recipientIds: string[]; details: Record<string, string | number> }> {
      const { request, entitlement } = await leaseRows(input);
      const s = settingsOf(entitlement);
      const verdict = await policies.decide({
        requesterId: request.requesterId,
        subjectId: request.subjectId,
        entitlementId: entitlement.id,
        durationSeconds: request.requestedDurationSeconds,
        justification: request.justification,
        ticketRef: request.ticketRef,
      });
      const approvers = verdict.effect === 'route' ? verdict.stages.flatMap((st) => st.approverIds) : [];
      const recipientIds = [...new Set([...approvers, entitlement.ownerId, ...(await groupMemberIds(db, s?.notify)), ...(s && s.reviewer !== 'entitlement_owner' ? await groupMemberIds(db, s.reviewer) : [])])]
        .filter((id) => id !== request.requesterId)
        .sort();
      const [g] = await db.select({ expiresAt: grants.expiresAt }).from(grants).where(eq(grants.id, input.grantId));
      const details = { invokerId: request.requesterId, durationSeconds: request.requestedDurationSeconds, ...(request.ticketRef ? { incidentRef: request.ticketRef } : {}), ...(g?.expiresAt ? { expiresAt: g.expiresAt.toISOString() } : {}) };
      await db.transaction((tx) =>
        appendAudit(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'break_glass.used',
          requestId: input.requestId,
          grantId: input.grantId,
          identityId: input.subjectId,
          reason: request.justification,
          data: { ...details, recipientIds, wouldHaveAsked: approvers.length },
        }),
      );
      return { recipientIds, details };
    },

    /**
     * The incident ticket hears of it too, when the incident reference names a ticket on a
     * registered service desk (`<desk name>#<ticket>`, the form desk-originated requests carry):
     * one internal comment, idempotent by its marker. It is a note on the incident, not a link:
     * the incident's status is not driven by this access (docs/break-glass.md).
     */
    async commentOnIncident(input: BreakGlassLease): Promise<{ posted: boolean; why?: string }> {
      const { request, entitlement } = await leaseRows(input);
      const m = /^(.+)#([^#]+)$/.exec(request.ticketRef ?? '');
      if (!m) return { posted: false, why: 'the incident reference names no desk ticket' };
      const [row] = await db.select().from(serviceDesks).where(eq(serviceDesks.name, m[1]!));
      if (!row) return { posted: false, why: 'no service desk of that name' };
      const { adapter } = parseDeskConfig(row.kind, row.config);
      const desk = deskKinds[row.kind]!.create(adapter, resolveDeskSecrets(row.kind, row.secretRefs, deps.secretEnv ?? process.env));
      try {
        const ticket = await desk.ticket(m[2]!);
        if (!ticket || ticket.state === 'deleted') return { posted: false, why: 'the ticket does not exist on the desk' };
        const [g] = await db.select({ expiresAt: grants.expiresAt }).from(grants).where(eq(grants.id, input.grantId));
        const text = [
          `Break-glass used: "${entitlement.name}" (${entitlement.riskTier}) granted at once, approvals skipped.`,
          `Subject ${request.subjectId}, invoked by ${request.requesterId}; access request ${request.id}.`,
          g?.expiresAt ? `The lease ends ${g.expiresAt.toISOString()} and its removal is read back from the target.` : 'The lease ends on its own and its removal is read back from the target.',
          `Justification: ${request.justification}`,
          'A post-use review has been opened.',
        ].join('\n');
        const { posted } = await desk.post({ ticketRef: m[2]!, marker: `break-glass/${request.id}/used`, text, visibility: 'internal' });
        return { posted };
      } finally {
        await desk.close();
      }
    },

    /** The mandatory post-use review: a micro-review due `postUseReviewHours` after the verified grant, never reviewed by the invoker. */
    async openPostUseReview(input: BreakGlassLease) {
      const { request, entitlement } = await leaseRows(input);
      const s = settingsOf(entitlement);
      const [g] = await db.select({ verifiedAt: grants.grantVerifiedAt }).from(grants).where(eq(grants.id, input.grantId));
      const from = g?.verifiedAt ?? new Date();
      const hours = s?.postUseReviewHours ?? 24;
      const reviewers = await postUseReviewers(db, s ?? { reviewer: 'entitlement_owner' }, {
        ownerId: entitlement.ownerId,
        invokerId: request.requesterId,
        subjectId: request.subjectId,
      });
      return openMicroReview(
        // The campaign workflow runs on this worker's task queue, like the lease.
        { db, taskQueue: Context.current().info.taskQueue, actor: BY_WORKFLOW, ...(deps.temporal ? { temporal: deps.temporal } : {}) },
        {
          grantId: input.grantId,
          trigger: 'break_glass',
          ...reviewers,
          dueAt: new Date(from.getTime() + hours * 3600_000),
          reason: `post-use review of a break-glass (${request.ticketRef ?? 'no incident'})`,
          deadlineRule: 'escalate',
        },
      );
    },

    /**
     * The lease ended and its removal is verified. A PostgreSQL login that another live grant still
     * relies on keeps working, so the secret the invoker saw gets replaced: a fresh password,
     * sealed for that grant's owner (old refused, new accepted). With no other grant the login was
     * revoked and read back with the removal; SSH certificates went to the KRL.
     */
    async rotateAfterBreakGlass(input: BreakGlassLease): Promise<{ rotated: boolean; why: string }> {
      // A retry after the rotation committed must not rotate (and seal) a second time.
      const [done] = await db.select({ seq: auditEvents.seq }).from(auditEvents).where(eq(auditEvents.idempotencyKey, input.idempotencyKey));
      if (done) return { rotated: true, why: 'password rotated for the grant still using the login' };
      return onLease(input, 'rotate', async (ctx) => {
        const mode = credentialModeOf(ctx.system, ctx.entitlement);
        if (mode === 'certificate') return { rotated: false, why: 'certificate revoked through the KRL at removal' };
        if (mode !== 'password') return { rotated: false, why: 'no credential on this entitlement' };
        return withMembershipLock(db, ctx, async (tx) => {
          const [other] = await tx
            .select({ id: grants.id, requestId: grants.requestId, expiresAt: grants.expiresAt })
            .from(grants)
            .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
            .where(and(eq(grants.identityId, input.subjectId), eq(entitlements.systemId, ctx.system.id), ne(grants.id, input.grantId), justifiesMembership(), sql`${entitlements.attributes}->>'credential' = 'password'`))
            .limit(1);
          if (!other) return { rotated: false, why: 'login revoked and verified with the removal' };
          if (!other.expiresAt) throw ApplicationFailure.retryable('the other grant is not verified yet', 'GrantNotVerified');
          const { issued } = await issueOnTarget(ctx, other.expiresAt, { replace: true });
          if (!issued) return { rotated: false, why: 'the target issued no credential' };
          const ref = await storeCredential(tx, vault, { grantId: other.id, identity: ctx.identity, issued });
          await appendAudit(tx, {
            idempotencyKey: input.idempotencyKey,
            ...BY_WORKFLOW,
            action: 'credential.rotated',
            requestId: other.requestId,
            grantId: other.id,
            identityId: input.subjectId,
            reason: 'break_glass',
            data: { credentialId: ref.id, credentialKind: ref.kind, credentialNotAfter: ref.notAfter, afterBreakGlassRequestId: input.requestId, afterBreakGlassGrantId: input.grantId },
          });
          return { rotated: true, why: 'password rotated for the grant still using the login' };
        });
      });
    },
  };
}
