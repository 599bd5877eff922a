import { randomUUID } from 'node:crypto';
import type { WorkflowClient } from '@temporalio/client';
import { and, eq, inArray } from 'drizzle-orm';
import type { z } from 'zod';
import type { PolicyService } from '../../activities/domain/policy/service.js';
import { appendAudit, type Tx } from '../../activities/domain/audit.js';
import type { Db } from '../../db/client.js';
import { accessRequests, entitlements, identities, systems, type Entitlement } from '../../db/schema.js';
import { lifecycleTiming, type Config } from '../../temporal/config.js';
import { accessRequestWorkflow } from '../../workflows/index.js';
import { accessRequestWorkflowId } from '../../workflows/ids.js';
import type { AccessRequestInput } from '../../workflows/messages.js';
import { AccessStateKey, BreakGlassKey, EntitlementRefKey, IdentityRefKey, RiskTierKey, SystemRefKey, TicketRefKey } from '../../workflows/search-attributes.js';
import { hasRole, identityOf, type Principal } from '../auth.js';
import { HttpError, badRequest, conflict, forbidden, notFound } from '../errors.js';
import type { createAccessRequestBody } from '../schemas.js';
import { startIdempotently } from './workflow-start.js';

export interface SubmissionDeps {
  db: Pick<Db, 'select' | 'transaction'>;
  temporal: { workflow: Pick<WorkflowClient, 'start'> };
  config: Config;
  policies: Pick<PolicyService, 'decide' | 'defaultDuration'>;
}

export interface Submission {
  principal: Principal;
  body: z.output<typeof createAccessRequestBody>;
  httpRequestId: string;
  /**
   * Runs in the request row's transaction, before its audit event: the service desk links its
   * ticket here, so the link exists exactly when the request does and `request.submitted` is
   * already queued for the ticket.
   */
  onRecord?: (tx: Tx, requestId: string) => Promise<void>;
  /** Where the request came from, for the audit trail (absent: the REST API). */
  channel?: string;
  /**
   * A confirmed break-glass (api/services/break-glass.ts, which checked the invoker, the cap and
   * the cooldown): approvals are skipped, so neither `requestable` nor the policy's routing applies;
   * the lease (expiry, revoke, read-back) is the usual one.
   */
  breakGlass?: boolean;
  /**
   * Access that exists already, brought under a lease: reconciliation adopting a membership no
   * grant explains (RequestOps.adopt; its micro-review decides), or an operator's import
   * (api/services/lease-import.ts). Approvals are skipped, so neither `requestable` nor the
   * policy's routing applies; `actor` then names who did it in the audit trail (the principal
   * is the holder, formally the requester: nobody asked for it).
   */
  adopted?: NonNullable<AccessRequestInput['adopted']>;
  actor?: { actorType: 'identity' | 'client' | 'workflow'; actorId: string };
}

export interface Submitted {
  id: string;
  status: 'pending_approval';
  workflowId: string;
}

/** States in which a request still holds (or may still get) access: one per subject and entitlement. */
export const OPEN_STATES = ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified'] as const;

const REQUEST_HORIZON_MS = 90 * 86400_000;

type Checked = Awaited<ReturnType<typeof checkSubmission>>;

/** The partial unique index (db/schema.ts) that makes "one open request per subject and entitlement" hold under concurrency. */
const OPEN_REQUEST_INDEX = 'access_request_open_uq';

async function openRequestId(db: Pick<Db, 'select'>, subjectId: string, entitlementId: string): Promise<string | undefined> {
  const [open] = await db
    .select({ id: accessRequests.id })
    .from(accessRequests)
    .where(and(eq(accessRequests.subjectId, subjectId), eq(accessRequests.entitlementId, entitlementId), inArray(accessRequests.status, [...OPEN_STATES])))
    .limit(1);
  return open?.id;
}

const duplicate = (openId: string | undefined) =>
  conflict('duplicate_request', openId ? `an open request already exists for this subject and entitlement: ${openId}` : 'an open request already exists for this subject and entitlement');

/** A unique violation on the open-request index, as postgres.js reports it (drizzle may wrap it as the cause). */
function isOpenRequestConflict(e: unknown): boolean {
  for (let cur: unknown = e, depth = 0; cur && typeof cur === 'object' && depth < 3; cur = (cur as { cause?: unknown }).cause, depth++) {
    const pg = cur as { code?: unknown; constraint_name?: unknown };
    if (pg.code === '23505' && pg.constraint_name === OPEN_REQUEST_INDEX) return true;
  }
  return false;
}

/** Who for, which entitlement, how long, and the policy's verdict: every refusal happens here, with nothing written. */
async function checkSubmission({ db, policies }: Pick<SubmissionDeps, 'db' | 'policies'>, { principal, body, breakGlass = false, adopted, actor }: Submission) {
  const requesterId = identityOf(principal);
  const subjectId = body.subjectId ?? requesterId;
  const [subject] = await db.select().from(identities).where(eq(identities.id, subjectId));
  if (!subject) throw notFound('subject identity');
  if (subjectId !== requesterId && subject.managerId !== requesterId && subject.ownerId !== requesterId && !hasRole(principal, 'operator')) {
    throw forbidden('you may request access for yourself, your direct reports, non-human identities you own, or as an operator');
  }
  if (subject.status !== 'active') throw conflict('subject_inactive', 'the subject identity is not active');
  const [ent] = await db
    .select({ e: entitlements, systemKind: systems.kind })
    .from(entitlements)
    .innerJoin(systems, eq(systems.id, entitlements.systemId))
    .where(eq(entitlements.id, body.entitlementId));
  if (!ent) throw notFound('entitlement');
  const e = ent.e;
  if (!e.requestable && !breakGlass && !adopted) throw badRequest('not_requestable', 'this entitlement cannot be requested');
  const durationSeconds = body.durationSeconds ?? (await policies.defaultDuration(e.id)) ?? e.defaultDurationSeconds;
  if (durationSeconds > e.maxDurationSeconds) {
    throw badRequest('outside_policy', `durationSeconds exceeds the entitlement's maximum of ${e.maxDurationSeconds}`);
  }
  const startAt = body.startAt ? new Date(body.startAt) : undefined;
  if (startAt && (startAt.getTime() <= Date.now() || startAt.getTime() > Date.now() + REQUEST_HORIZON_MS)) {
    throw badRequest('invalid_start', 'startAt must be in the future and within 90 days');
  }
  const open = await openRequestId(db, subjectId, e.id);
  if (open) throw duplicate(open);
  if (breakGlass || adopted) return { requesterId, subjectId, entitlement: e, systemKind: ent.systemKind, durationSeconds, startAt, breakGlass, adopted, actor };
  // The policy is checked up front so a request it would deny is refused now, with nothing
  // written; the workflow evaluates again (authoritatively) and records the version it used.
  const verdict = await policies.decide({ requesterId, subjectId, entitlementId: e.id, durationSeconds, justification: body.justification, ticketRef: body.ticketRef ?? null });
  if (verdict.effect === 'deny') {
    if (verdict.noEligibleApprover) {
      throw new HttpError(403, 'no_eligible_approver', verdict.reason, { stage: verdict.noEligibleApprover.stage, policyVersion: verdict.policyVersion, rules: verdict.fired.map((f) => f.rule) });
    }
    if (durationSeconds > verdict.maxDurationSeconds) throw badRequest('outside_policy', verdict.reason, { maxDurationSeconds: verdict.maxDurationSeconds });
    throw new HttpError(403, 'denied_by_policy', verdict.reason, { policyVersion: verdict.policyVersion, rules: verdict.fired.map((f) => f.rule) });
  }
  return { requesterId, subjectId, entitlement: e, systemKind: ent.systemKind, durationSeconds, startAt, breakGlass, adopted, actor };
}

/**
 * Submitting a request: the checks (who for, which entitlement, how long, the policy) refuse
 * with nothing written; then the row and its audit event commit; then the workflow starts.
 * The start comes after the commit so no lock is held across a Temporal call and the workflow's
 * first activity finds the row; a start that keeps failing closes the row rather than leaving
 * it pending with nothing to drive it.
 */
export function createSubmission(deps: SubmissionDeps) {
  const { db, temporal, config } = deps;

  /** The row and its `request.submitted` event, in one transaction. */
  async function record(id: string, workflowId: string, c: Checked, { body, httpRequestId, onRecord, channel }: Submission): Promise<void> {
    await db.transaction(async (tx) => {
      await tx.insert(accessRequests).values({
        id,
        requesterId: c.requesterId,
        subjectId: c.subjectId,
        entitlementId: c.entitlement.id,
        justification: body.justification,
        requestedDurationSeconds: c.durationSeconds,
        startAt: c.startAt ?? null,
        ticketRef: body.ticketRef ?? null,
        status: 'pending_approval',
        workflowId,
      });
      if (onRecord) await onRecord(tx, id);
      await appendAudit(tx, {
        idempotencyKey: `request/${id}/submitted`,
        ...(c.actor ?? { actorType: 'identity' as const, actorId: c.requesterId }),
        action: 'request.submitted',
        requestId: id,
        identityId: c.subjectId,
        reason: body.justification,
        data: {
          entitlementId: c.entitlement.id,
          durationSeconds: c.durationSeconds,
          ...(body.ticketRef ? { ticketRef: body.ticketRef } : {}),
          ...(c.startAt ? { startAt: c.startAt.toISOString() } : {}),
          httpRequestId,
          ...(channel ? { channel } : {}),
        },
      });
    });
  }

  function start(id: string, workflowId: string, c: Checked, ticketRef: string | undefined) {
    const e: Entitlement = c.entitlement;
    const input: AccessRequestInput = {
      version: 1,
      requestId: id,
      grantId: randomUUID(),
      requesterId: c.requesterId,
      subjectId: c.subjectId,
      entitlementId: e.id,
      systemId: e.systemId,
      durationSeconds: c.durationSeconds,
      ...(c.startAt ? { startAt: c.startAt.toISOString() } : {}),
      ...(c.breakGlass ? { breakGlass: true as const } : {}),
      ...(c.adopted ? { adopted: c.adopted } : {}),
      timing: lifecycleTiming(config),
    };
    return () =>
      temporal.workflow.start(accessRequestWorkflow, {
        workflowId,
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [input],
        // A retried start must find the first run, even one that already finished (a quick policy
        // deny), and never begin a second run of the same request.
        workflowIdReusePolicy: 'REJECT_DUPLICATE',
        typedSearchAttributes: [
          { key: AccessStateKey, value: 'pending_approval' },
          { key: IdentityRefKey, value: c.subjectId },
          { key: EntitlementRefKey, value: e.id },
          { key: SystemRefKey, value: e.systemId },
          { key: RiskTierKey, value: e.riskTier },
          ...(ticketRef ? [{ key: TicketRefKey, value: ticketRef }] : []),
          ...(c.breakGlass ? [{ key: BreakGlassKey, value: true }] : []),
        ],
        staticSummary: `${e.name} · ${e.riskTier} · ${humanDuration(c.durationSeconds)} lease`,
        staticDetails: [
          `**Access request** \`${id}\``,
          `entitlement \`${e.id}\` on ${c.systemKind} system \`${e.systemId}\``,
          c.adopted?.from === 'reconciliation'
            ? `subject \`${c.subjectId}\`, adopted by reconciliation (finding \`${c.adopted.findingId}\`)`
            : c.adopted
              ? `subject \`${c.subjectId}\`, existing access imported by \`${c.actor?.actorId ?? 'an operator'}\``
              : `subject \`${c.subjectId}\`, requested by \`${c.requesterId}\``,
          ticketRef ? `ticket ${ticketRef}` : undefined,
        ]
          .filter(Boolean)
          .join('\n\n'),
      });
  }

  /** Closes a committed request whose workflow never started, so no row claims to be pending with nothing behind it. */
  async function closeUnstarted(id: string, c: Checked, err: unknown, httpRequestId: string): Promise<void> {
    const reason = 'the workflow could not be started';
    await db.transaction(async (tx) => {
      const closed = await tx
        .update(accessRequests)
        .set({ status: 'failed', failureReason: reason, updatedAt: new Date() })
        .where(and(eq(accessRequests.id, id), eq(accessRequests.status, 'pending_approval')))
        .returning({ id: accessRequests.id });
      if (closed.length === 0) return;
      await appendAudit(tx, {
        idempotencyKey: `request/${id}/start_failed`,
        actorType: 'system',
        actorId: 'api',
        action: 'request.failed',
        requestId: id,
        identityId: c.subjectId,
        reason,
        // the error's class only: its message may carry server addresses
        data: { cause: 'workflow_start_failed', error: err instanceof Error ? err.name : typeof err, httpRequestId },
      });
    });
  }

  return {
    /** Checks, commits, then starts the workflow; 503 (and a closed row) when the start cannot be made. */
    async submit(s: Submission): Promise<Submitted> {
      const checked = await checkSubmission(deps, s);
      const id = randomUUID();
      const workflowId = accessRequestWorkflowId(id);
      try {
        await record(id, workflowId, checked, s);
      } catch (e) {
        // Two submissions passed the pre-check at once: the index lets one commit, and the loser
        // gets the pre-check's answer. Its transaction rolled back, so nothing of it was written.
        if (isOpenRequestConflict(e)) throw duplicate(await openRequestId(db, checked.subjectId, checked.entitlement.id));
        throw e;
      }
      try {
        await startIdempotently(start(id, workflowId, checked, s.body.ticketRef));
      } catch (err) {
        await closeUnstarted(id, checked, err, s.httpRequestId);
        throw new HttpError(503, 'workflow_unavailable', 'the request could not be started and was closed; nothing was granted, retry later', { id, status: 'failed' });
      }
      return { id, status: 'pending_approval', workflowId };
    },
  };
}

/** 45 s, 20 min, 8 h, 30 d: the unit an operator would use. */
export function humanDuration(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 2 * 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}
