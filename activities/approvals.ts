import { and, eq } from 'drizzle-orm';
import { accessRequests, approvals, auditEvents } from '../db/schema.js';
import { appendAudit, appendAuditEvent } from './domain/audit.js';
import type { ActivityDeps } from './deps.js';
import { actorTypeOf, apiRef, BY_WORKFLOW, loadLease, notFound, setRequestStatus, type FromApi, type Keyed } from './lease-context.js';

/** Routing by policy, approval stages and their decisions, up to the point a grant starts (or never does). */
export function createApprovalActivities({ db, policies, metrics }: Pick<ActivityDeps, 'db' | 'policies' | 'metrics'>) {
  return {
    /**
     * Routes the request by the active policy: deny, auto-approve, or stages of resolved
     * approvers. The policy version and the rules that fired go into history and evidence.
     */
    async evaluatePolicy(input: { requestId: string; requesterId: string; subjectId: string; entitlementId: string; durationSeconds?: number; purpose?: 'request' | 'extension' }) {
      const [req] = await db.select().from(accessRequests).where(eq(accessRequests.id, input.requestId));
      // The API commits the row before it starts the workflow, so a missing row is final.
      if (!req) throw notFound('access request');
      const { identity: subject } = await loadLease(db, input);
      // The API closes a request as `failed` when it could not start its workflow; if a start it
      // gave up on went through after all, that run must not route a request already closed.
      const closedBeforeStart = input.purpose !== 'extension' && req.status === 'failed';
      const d = closedBeforeStart
        ? ({ effect: 'deny', reason: 'the request was closed before its workflow started', fired: [], maxDurationSeconds: 0, policyVersion: 'n/a' } as const)
        : subject.status !== 'active'
        ? ({ effect: 'deny', reason: 'subject is not active', fired: [], maxDurationSeconds: 0, policyVersion: 'n/a' } as const)
        : await policies.decide({
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
      const added = await policies.escalationTargets(input.requestId, input.waitingApproverIds, input.excludeIds);
      const wrote = await db.transaction(async (tx) => {
        if (added.length) {
          await tx
            .insert(approvals)
            .values(added.map((approverId) => ({ requestId: input.requestId, stage: input.stage, stageName: input.stageName, approverId, policyVersion: input.policyVersion, dueAt: new Date(input.dueAt) })))
            .onConflictDoNothing();
        }
        const { inserted } = await appendAuditEvent(tx, {
          idempotencyKey: input.idempotencyKey,
          ...BY_WORKFLOW,
          action: 'approval.escalated',
          requestId: input.requestId,
          policyVersion: input.policyVersion,
          data: { stage: input.stage, waiting: input.waitingApproverIds, added },
        });
        return inserted;
      });
      // Counted once per escalation, after the commit: a retried attempt found the event and counts nothing.
      if (wrote) metrics.exceptions.inc({ kind: 'escalation' });
      return { approverIds: added };
    },

    /** The extension was refused: its approval tasks close, and the lease runs on to its current expiry. */
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
      const stage = await policies.reviewStage(input.requestId, input.deadlineSeconds);
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
      // Metrics are counted after the commit, and only by the attempt that wrote the decision.
      const counted: Array<() => void> = [];
      const wrote = await db.transaction(async (tx) => {
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
          if (r) counted.push(() => metrics.approvalHumanWait.observe({ outcome: input.decision === 'reject' ? 'rejected' : 'approved' }, (now.getTime() - r.createdAt.getTime()) / 1000));
        }
        if (input.decision === 'approve' && stageComplete) {
          const [a] = await tx.select({ stageName: approvals.stageName }).from(approvals).where(and(eq(approvals.requestId, input.requestId), eq(approvals.stage, input.stage))).limit(1);
          if (a?.stageName?.startsWith('sod-')) counted.push(() => metrics.exceptions.inc({ kind: 'sod_exception' }));
        }
        const { inserted } = await appendAuditEvent(tx, {
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
        return inserted;
      });
      if (wrote) for (const count of counted) count();
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
  };
}
