import { randomUUID } from 'node:crypto';
import { WorkflowNotFoundError, WorkflowUpdateFailedError, type Client } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { and, asc, desc, eq, inArray, lt, or } from 'drizzle-orm';
import { Router } from 'express';
import type { Db } from '../../db/client.js';
import { accessRequests, approvals, auditEvents, entitlements, grants, identities, systems, type AccessRequest } from '../../db/schema.js';
import type { PolicyService } from '../../activities/domain/policy/service.js';
import type { Config } from '../../temporal/config.js';
import { lifecycleTiming } from '../../temporal/config.js';
import {
  type AccessRequestInput,
  UpdateRejection,
  accessRequestWorkflowId,
  decideUpdate,
  extendUpdate,
  revokeSignal,
  rotateCredentialUpdate,
} from '../../workflows/messages.js';
import { deliverOnce, type CredentialVault } from '../../activities/domain/vault.js';
import { appendAudit } from '../../activities/domain/audit.js';
import { requestIdOf } from '../request-context.js';
import {
  AccessStateKey,
  EntitlementRefKey,
  IdentityRefKey,
  RiskTierKey,
  SystemRefKey,
  TicketRefKey,
} from '../../workflows/search-attributes.js';
import { actorRef, hasRole, identityOf, principalOf, requireRole, type Principal } from '../auth.js';
import { HttpError, badRequest, conflict, forbidden, notFound } from '../errors.js';
import { createAccessRequestBody, decisionBody, extendBody, idParam, listRequestsQuery, revokeBody } from '../schemas.js';
import { valid, validate } from '../validate.js';

export interface RouteDeps {
  db: Db;
  temporal: Client;
  config: Config;
  policies: PolicyService;
  vault: CredentialVault;
}

const OPEN_STATES = ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified'] as const;

/** Maps a workflow's update rejection (validator) onto the HTTP contract. */
function fromUpdateError(err: unknown): never {
  if (err instanceof WorkflowUpdateFailedError && err.cause instanceof ApplicationFailure) {
    const f = err.cause;
    switch (f.type) {
      case UpdateRejection.NotEligible:
      case UpdateRejection.SelfApproval:
        throw forbidden(f.message, f.type === UpdateRejection.SelfApproval ? 'self_approval' : 'not_eligible');
      case UpdateRejection.NotPending:
        throw conflict('not_pending', f.message);
      case UpdateRejection.NotActive:
        throw conflict('not_active', f.message);
      case UpdateRejection.NoCredential:
        throw conflict('no_credential', f.message);
      case UpdateRejection.OutsidePolicy:
        throw badRequest('outside_policy', f.message);
    }
  }
  if (err instanceof WorkflowNotFoundError) throw conflict('closed', 'the request is closed');
  throw err;
}

export function accessRequestRoutes({ db, temporal, config, policies, vault }: RouteDeps): { router: Router; decide: DecideFn; loadRequest: (id: string) => Promise<AccessRequest> } {
  const r = Router();

  async function loadRequest(id: string): Promise<AccessRequest> {
    const [row] = await db.select().from(accessRequests).where(eq(accessRequests.id, id));
    if (!row) throw notFound('access request');
    return row;
  }

  /**
   * The one decision path (bearer token or action link). Cheap checks first, with the answers
   * the API promises; the workflow's update validator is the authority and repeats them.
   */
  async function decide(row: AccessRequest, approverId: string, body: { decision: 'approve' | 'reject'; comment?: string | undefined }, opts: { stage?: number; httpRequestId?: string } = {}) {
    if (row.requesterId === approverId) throw forbidden('the requester cannot approve their own request', 'self_approval');
    const rows = await db.select({ approverId: approvals.approverId, status: approvals.status }).from(approvals).where(eq(approvals.requestId, row.id));
    const mine = rows.some((a) => a.approverId === approverId && a.status === 'pending');
    if (!mine) {
      const anyOpen = rows.some((a) => a.status === 'pending');
      // Policy is still being evaluated: the stage (and so the list of approvers) does not exist yet.
      if (rows.length === 0 && row.status === 'pending_approval') throw conflict('stage_not_open', 'the approval stage is not open yet; retry shortly');
      if (!anyOpen) throw conflict('not_pending', `request is ${row.status}, with no approval open`);
      throw forbidden('you are not an assigned approver of the open stage', 'not_eligible');
    }
    return temporal.workflow
      .getHandle(row.workflowId)
      .executeUpdate(decideUpdate, {
        args: [
          {
            approverId,
            decision: body.decision,
            ...(body.comment ? { comment: body.comment } : {}),
            ...(opts.stage !== undefined ? { stage: opts.stage } : {}),
            ...(opts.httpRequestId ? { httpRequestId: opts.httpRequestId } : {}),
          },
        ],
      })
      .catch(fromUpdateError);
  }

  async function isAssignedApprover(p: Principal, requestId: string): Promise<boolean> {
    if (!p.identityId || !hasRole(p, 'approver')) return false;
    const rows = await db
      .select({ id: approvals.id })
      .from(approvals)
      .where(and(eq(approvals.requestId, requestId), eq(approvals.approverId, p.identityId)))
      .limit(1);
    return rows.length > 0;
  }

  const isParty = (p: Principal, req: AccessRequest) => p.identityId !== null && (p.identityId === req.requesterId || p.identityId === req.subjectId);

  r.post('/', requireRole('requester'), validate({ body: createAccessRequestBody }), async (req, res) => {
    const p = principalOf(req);
    const requesterId = identityOf(p);
    const { body } = valid(res, { body: createAccessRequestBody });
    const subjectId = body.subjectId ?? requesterId;

    const [subject] = await db.select().from(identities).where(eq(identities.id, subjectId));
    if (!subject) throw notFound('subject identity');
    if (subjectId !== requesterId && subject.managerId !== requesterId && subject.ownerId !== requesterId && !hasRole(p, 'operator')) {
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
    if (!e.requestable) throw badRequest('not_requestable', 'this entitlement cannot be requested');
    const durationSeconds = body.durationSeconds ?? (await policies.defaultDuration(e.id)) ?? e.defaultDurationSeconds;
    if (durationSeconds > e.maxDurationSeconds) {
      throw badRequest('outside_policy', `durationSeconds exceeds the entitlement's maximum of ${e.maxDurationSeconds}`);
    }
    const startAt = body.startAt ? new Date(body.startAt) : undefined;
    if (startAt && (startAt.getTime() <= Date.now() || startAt.getTime() > Date.now() + 90 * 86400_000)) {
      throw badRequest('invalid_start', 'startAt must be in the future and within 90 days');
    }
    const open = await db
      .select({ id: accessRequests.id })
      .from(accessRequests)
      .where(and(eq(accessRequests.subjectId, subjectId), eq(accessRequests.entitlementId, e.id), inArray(accessRequests.status, [...OPEN_STATES])))
      .limit(1);
    if (open[0]) throw conflict('duplicate_request', `an open request already exists for this subject and entitlement: ${open[0].id}`);
    // The policy is checked up front so a request it would deny is refused now, with nothing
    // written; the workflow evaluates again (authoritatively) and records the version it used.
    const verdict = await policies.decide({ requesterId, subjectId, entitlementId: e.id, durationSeconds, justification: body.justification, ticketRef: body.ticketRef ?? null });
    if (verdict.effect === 'deny') {
      if (durationSeconds > verdict.maxDurationSeconds) throw badRequest('outside_policy', verdict.reason, { maxDurationSeconds: verdict.maxDurationSeconds });
      throw new HttpError(403, 'denied_by_policy', verdict.reason, { policyVersion: verdict.policyVersion, rules: verdict.fired.map((f) => f.rule) });
    }

    const id = randomUUID();
    const workflowId = accessRequestWorkflowId(id);
    const input: AccessRequestInput = {
      version: 1,
      requestId: id,
      grantId: randomUUID(),
      requesterId,
      subjectId,
      entitlementId: e.id,
      systemId: e.systemId,
      durationSeconds,
      ...(startAt ? { startAt: startAt.toISOString() } : {}),
      timing: lifecycleTiming(config),
    };
    // Row, audit event and workflow start commit together: a failed start rolls both back, so a
    // client never sees a request that no workflow drives. The audit event goes first so the
    // commit follows the start at once (the workflow's first activity waits for the row).
    await db.transaction(async (tx) => {
      await tx.insert(accessRequests).values({
        id,
        requesterId,
        subjectId,
        entitlementId: e.id,
        justification: body.justification,
        requestedDurationSeconds: durationSeconds,
        startAt: startAt ?? null,
        ticketRef: body.ticketRef ?? null,
        status: 'pending_approval',
        workflowId,
      });
      await appendAudit(tx, {
        idempotencyKey: `request/${id}/submitted`,
        actorType: 'identity',
        actorId: requesterId,
        action: 'request.submitted',
        requestId: id,
        identityId: subjectId,
        reason: body.justification,
        data: {
          entitlementId: e.id,
          durationSeconds,
          ...(body.ticketRef ? { ticketRef: body.ticketRef } : {}),
          ...(startAt ? { startAt: startAt.toISOString() } : {}),
          httpRequestId: requestIdOf(res),
        },
      });
      await temporal.workflow.start('accessRequestWorkflow', {
        workflowId,
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [input],
        typedSearchAttributes: [
          { key: AccessStateKey, value: 'pending_approval' },
          { key: IdentityRefKey, value: subjectId },
          { key: EntitlementRefKey, value: e.id },
          { key: SystemRefKey, value: e.systemId },
          { key: RiskTierKey, value: e.riskTier },
          ...(body.ticketRef ? [{ key: TicketRefKey, value: body.ticketRef }] : []),
        ],
        staticSummary: `${e.name} · ${e.riskTier} · ${humanDuration(durationSeconds)} lease`,
        staticDetails: [
          `**Access request** \`${id}\``,
          `entitlement \`${e.id}\` on ${ent.systemKind} system \`${e.systemId}\``,
          `subject \`${subjectId}\`, requested by \`${requesterId}\``,
          body.ticketRef ? `ticket ${body.ticketRef}` : undefined,
        ]
          .filter(Boolean)
          .join('\n\n'),
      });
    });
    res.status(202).location(`/v1/access-requests/${id}`).json({ id, status: 'pending_approval', workflowId });
  });

  // Operators and auditors see everything; others see requests they are party to or assigned to decide.
  r.get('/', validate({ query: listRequestsQuery }), async (req, res) => {
    const p = principalOf(req);
    const { query } = valid(res, { query: listRequestsQuery });
    const filters = [
      query.status ? eq(accessRequests.status, query.status) : undefined,
      query.subjectId ? eq(accessRequests.subjectId, query.subjectId) : undefined,
      query.entitlementId ? eq(accessRequests.entitlementId, query.entitlementId) : undefined,
    ];
    if (query.before) {
      const [at, id] = query.before.split('|') as [string, string];
      filters.push(or(lt(accessRequests.createdAt, new Date(at)), and(eq(accessRequests.createdAt, new Date(at)), lt(accessRequests.id, id))));
    }
    if (!hasRole(p, 'operator', 'auditor')) {
      const me = identityOf(p);
      const assigned = db.select({ id: approvals.requestId }).from(approvals).where(eq(approvals.approverId, me));
      filters.push(or(eq(accessRequests.requesterId, me), eq(accessRequests.subjectId, me), hasRole(p, 'approver') ? inArray(accessRequests.id, assigned) : undefined));
    }
    const rows = await db
      .select()
      .from(accessRequests)
      .where(and(...filters))
      .orderBy(desc(accessRequests.createdAt), desc(accessRequests.id))
      .limit(query.limit + 1);
    const page = rows.slice(0, query.limit);
    const last = page[page.length - 1];
    res.json({
      items: page.map((r) => ({ id: r.id, status: r.status, subjectId: r.subjectId, requesterId: r.requesterId, entitlementId: r.entitlementId, ticketRef: r.ticketRef, createdAt: r.createdAt, decidedAt: r.decidedAt })),
      nextCursor: rows.length > query.limit && last ? `${last.createdAt.toISOString()}|${last.id}` : null,
    });
  });

  r.get('/:id', validate({ params: idParam }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: idParam });
    const row = await loadRequest(params.id);
    const allowed = hasRole(p, 'operator', 'auditor') || (hasRole(p, 'requester') && isParty(p, row)) || (await isAssignedApprover(p, row.id));
    if (!allowed) throw notFound('access request'); // do not reveal that it exists
    const [stageRows, [grant], timeline] = await Promise.all([
      db.select().from(approvals).where(eq(approvals.requestId, row.id)).orderBy(asc(approvals.stage), asc(approvals.createdAt)),
      db.select().from(grants).where(eq(grants.requestId, row.id)),
      db.select().from(auditEvents).where(eq(auditEvents.requestId, row.id)).orderBy(asc(auditEvents.seq)),
    ]);
    res.json({
      id: row.id,
      status: row.status,
      workflowId: row.workflowId,
      requesterId: row.requesterId,
      subjectId: row.subjectId,
      entitlementId: row.entitlementId,
      justification: row.justification,
      durationSeconds: row.requestedDurationSeconds,
      startAt: row.startAt,
      ticketRef: row.ticketRef,
      policyVersion: row.policyVersion,
      failureReason: row.failureReason,
      createdAt: row.createdAt,
      decidedAt: row.decidedAt,
      stages: stageRows.map((a) => ({
        stage: a.stage,
        name: a.stageName,
        approverId: a.approverId,
        onBehalfOf: a.onBehalfOf,
        status: a.status,
        comment: a.comment,
        dueAt: a.dueAt,
        decidedAt: a.decidedAt,
      })),
      grant: grant
        ? {
            id: grant.id,
            status: grant.status,
            grantedAt: grant.grantedAt,
            grantVerifiedAt: grant.grantVerifiedAt,
            expiresAt: grant.expiresAt,
            revokeReason: grant.revokeReason,
            revokeRequestedAt: grant.revokeRequestedAt,
            revokedAt: grant.revokedAt,
            removalVerifiedAt: grant.removalVerifiedAt,
          }
        : null,
      expiresAt: grant?.expiresAt ?? null,
      removalVerifiedAt: grant?.removalVerifiedAt ?? null,
      timeline: timeline.map((t) => ({ seq: t.seq, at: t.at, action: t.action, actorType: t.actorType, actorId: t.actorId, reason: t.reason, data: t.data })),
    });
  });

  r.post('/:id/decision', requireRole('approver'), validate({ params: idParam, body: decisionBody }), async (req, res) => {
    const approverId = identityOf(principalOf(req));
    const { params, body } = valid(res, { params: idParam, body: decisionBody });
    const row = await loadRequest(params.id);
    const result = await decide(row, approverId, body, { httpRequestId: requestIdOf(res) });
    res.json({ id: row.id, status: result.status });
  });

  r.post('/:id/extend', validate({ params: idParam, body: extendBody }), async (req, res) => {
    const p = principalOf(req);
    const { params, body } = valid(res, { params: idParam, body: extendBody });
    const row = await loadRequest(params.id);
    if (!(hasRole(p, 'operator') || (hasRole(p, 'requester') && isParty(p, row)))) throw forbidden('only the requester, the subject or an operator may extend');
    if (row.status !== 'active') throw conflict('not_active', `request is ${row.status}`);
    const result = await temporal.workflow
      .getHandle(row.workflowId)
      .executeUpdate(extendUpdate, { args: [{ actorId: actorRef(p), durationSeconds: body.durationSeconds, justification: body.justification, httpRequestId: requestIdOf(res) }] })
      .catch(fromUpdateError);
    res.status(result.pendingApproval ? 202 : 200).json({ id: row.id, status: result.pendingApproval ? 'extension_pending_approval' : 'active', expiresAt: result.expiresAt });
  });

  r.post('/:id/revoke', validate({ params: idParam, body: revokeBody }), async (req, res) => {
    const p = principalOf(req);
    const { params, body } = valid(res, { params: idParam, body: revokeBody });
    const row = await loadRequest(params.id);
    const isOperator = hasRole(p, 'operator');
    const isSubject = p.identityId === row.subjectId;
    if (!isOperator && !isSubject) throw forbidden('only an operator or the subject may revoke');
    if (!isOperator && body.reason !== 'manual') throw forbidden('the subject may only revoke with reason "manual"');
    if (!['pending_approval', 'scheduled', 'granting', 'active'].includes(row.status)) throw conflict('not_revocable', `request is ${row.status}`);
    await temporal.workflow
      .getHandle(row.workflowId)
      .signal(revokeSignal, { reason: body.reason, actorId: actorRef(p), ...(body.comment ? { comment: body.comment } : {}), httpRequestId: requestIdOf(res) })
      .catch((e) => {
        if (e instanceof WorkflowNotFoundError) throw conflict('closed', 'the request is closed');
        throw e;
      });
    res.status(202).json({ id: row.id, status: 'revoke_requested' });
  });

  /**
   * The lease's credential (a service account's password, an SSH certificate), to its owner
   * only and only once: the read wipes it. Nobody else learns whether one exists (404); a second
   * read is 410, and the owner rotates to get a fresh one.
   */
  r.get('/:id/credential', validate({ params: idParam }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: idParam });
    const row = await loadRequest(params.id);
    const [grant] = await db.select({ id: grants.id }).from(grants).where(eq(grants.requestId, row.id));
    if (!p.identityId || !grant) throw notFound('credential');
    const d = await deliverOnce(db, vault, { grantId: grant.id, requestId: row.id, httpRequestId: requestIdOf(res) }, p.identityId);
    switch (d.outcome) {
      case 'none':
      case 'not_owner':
        throw notFound('credential');
      case 'already_delivered':
        throw new HttpError(410, 'already_delivered', 'this credential was delivered already and is no longer stored; rotate it to get a new one');
      case 'ended':
        throw new HttpError(410, 'credential_ended', `this credential is ${d.status}`);
      case 'delivered':
        // never cached by a proxy or the browser
        res.set('Cache-Control', 'no-store');
        res.json({
          id: d.credentialId,
          kind: d.kind,
          ...(d.kind === 'password' ? { username: d.targetRef, password: d.material } : { serial: d.targetRef, certificate: d.material }),
          issuedAt: d.issuedAt,
          notAfter: d.notAfter,
        });
    }
  });

  r.post('/:id/credential/rotate', validate({ params: idParam }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: idParam });
    const row = await loadRequest(params.id);
    const [subject] = await db.select({ id: identities.id, ownerId: identities.ownerId }).from(identities).where(eq(identities.id, row.subjectId));
    const owner = subject?.ownerId ?? subject?.id;
    if (!hasRole(p, 'operator') && (!p.identityId || p.identityId !== owner)) throw forbidden('only the credential\'s owner or an operator may rotate it');
    if (row.status !== 'active') throw conflict('not_active', `request is ${row.status}`);
    const rotated = await temporal.workflow
      .getHandle(row.workflowId)
      .executeUpdate(rotateCredentialUpdate, { args: [{ actorId: actorRef(p), httpRequestId: requestIdOf(res) }] })
      .catch(fromUpdateError);
    res.json({ id: row.id, credential: rotated });
  });

  return { router: r, decide, loadRequest };
}

export type DecideFn = (
  row: AccessRequest,
  approverId: string,
  body: { decision: 'approve' | 'reject'; comment?: string | undefined },
  opts?: { stage?: number; httpRequestId?: string },
) => Promise<{ status: string }>;

export { HttpError };

/** 45 s, 20 min, 8 h, 30 d: the unit an operator would use. */
export function humanDuration(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 2 * 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}
