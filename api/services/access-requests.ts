import type { WorkflowClient } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import type { z } from 'zod';
import { appendAudit } from '../../activities/domain/audit.js';
import type { PolicyService } from '../../activities/domain/policy/service.js';
import type { Db } from '../../db/client.js';
import { accessRequests, identities, type AccessRequest } from '../../db/schema.js';
import type { Config } from '../../temporal/config.js';
import { extendUpdate, revokeSignal, rotateCredentialUpdate, type CredentialView, type ExtendResult } from '../../workflows/messages.js';
import { actorRef, hasRole, type Principal } from '../auth.js';
import { conflict, forbidden, notFound } from '../errors.js';
import type { extendBody, revokeBody } from '../schemas.js';
import { createDecisions } from './decisions.js';
import type { RequestWatch } from './request-watch.js';
import { createLeaseImport } from './lease-import.js';
import { createSubmission } from './submission.js';
import { fromClosedWorkflow, fromUpdateError, sendUpdate } from './update-rejections.js';

export type { Decision } from './decisions.js';
export type { Submission, Submitted } from './submission.js';

export interface AccessRequestServiceDeps {
  db: Pick<Db, 'select' | 'insert' | 'update' | 'delete' | 'transaction'>;
  temporal: { workflow: Pick<WorkflowClient, 'start' | 'getHandle'> };
  config: Config;
  policies: Pick<PolicyService, 'decide' | 'defaultDuration'>;
  /** Long polls: a decision that arrives before its stage is open waits for it. */
  watch?: RequestWatch | undefined;
}

/** Who acts, on which request, under which HTTP request id (for the audit trail). */
export interface Actor {
  principal: Principal;
  httpRequestId: string;
}

const REVOCABLE = ['pending_approval', 'scheduled', 'granting', 'active'];

/** Whether the principal asked for the request or is the one it grants access to. */
export const isParty = (p: Principal, req: AccessRequest) => p.identityId !== null && (p.identityId === req.requesterId || p.identityId === req.subjectId);

/**
 * The access-request rules: submit, decide, extend, revoke, rotate a credential. Each checks
 * who may act and in which state, then hands the change to the request's workflow; the HTTP
 * routes and the action-link route only translate to and from these calls.
 */
export function createAccessRequestService(deps: AccessRequestServiceDeps) {
  const { db, temporal } = deps;

  async function loadRequest(id: string): Promise<AccessRequest> {
    const [row] = await db.select().from(accessRequests).where(eq(accessRequests.id, id));
    if (!row) throw notFound('access request');
    return row;
  }

  const { submit } = createSubmission(deps);
  const importLeases = createLeaseImport({ submit });
  const { decide } = createDecisions({ db, temporal, loadRequest, watch: deps.watch });

  /** `updateId`: set by the service desk, so an event handled again after a crash does not extend twice. */
  async function extend({ principal: p, httpRequestId }: Actor, id: string, body: z.output<typeof extendBody>, updateId?: string): Promise<ExtendResult & { id: string }> {
    const row = await loadRequest(id);
    if (!(hasRole(p, 'operator') || (hasRole(p, 'requester') && isParty(p, row)))) throw forbidden('only the requester, the subject or an operator may extend');
    if (row.status !== 'active') throw conflict('not_active', `request is ${row.status}`);
    const handle = temporal.workflow.getHandle(row.workflowId);
    const result = await sendUpdate((id) => handle.executeUpdate(extendUpdate, { updateId: id, args: [{ actorId: actorRef(p), durationSeconds: body.durationSeconds, justification: body.justification, httpRequestId }] }), updateId).catch(fromUpdateError);
    return { id: row.id, ...result };
  }

  async function revoke({ principal: p, httpRequestId }: Actor, id: string, body: z.output<typeof revokeBody> | { reason: 'ticket'; comment?: string }): Promise<{ id: string }> {
    const row = await loadRequest(id);
    const isOperator = hasRole(p, 'operator');
    if (!isOperator && p.identityId !== row.subjectId) throw forbidden('only an operator or the subject may revoke');
    if (!isOperator && body.reason !== 'manual') throw forbidden('the subject may only revoke with reason "manual"');
    if (!REVOCABLE.includes(row.status)) throw conflict('not_revocable', `request is ${row.status}`);
    // The attestation that an authenticated principal asked for this revoke, committed before the
    // signal: the workflow credits the revocation to this actor only when the event exists, since
    // a signal's own actorId is whatever its sender typed (see docs/architecture.md#9-security-properties).
    await db.transaction((tx) =>
      appendAudit(tx, {
        idempotencyKey: `request/${row.id}/revoke_submitted/${httpRequestId}`,
        actorType: p.identityId ? 'identity' : 'client',
        actorId: actorRef(p),
        action: 'request.revoke_submitted',
        requestId: row.id,
        data: { reason: body.reason, httpRequestId },
      }),
    );
    await temporal.workflow
      .getHandle(row.workflowId)
      .signal(revokeSignal, { reason: body.reason, actorId: actorRef(p), ...(body.comment ? { comment: body.comment } : {}), httpRequestId })
      .catch((e: unknown) => {
        throw fromClosedWorkflow(e);
      });
    return { id: row.id };
  }

  async function rotateCredential({ principal: p, httpRequestId }: Actor, id: string): Promise<{ id: string; credential: CredentialView }> {
    const row = await loadRequest(id);
    const [subject] = await db.select({ id: identities.id, ownerId: identities.ownerId }).from(identities).where(eq(identities.id, row.subjectId));
    const owner = subject?.ownerId ?? subject?.id;
    if (!hasRole(p, 'operator') && (!p.identityId || p.identityId !== owner)) throw forbidden("only the credential's owner or an operator may rotate it");
    if (row.status !== 'active') throw conflict('not_active', `request is ${row.status}`);
    const handle = temporal.workflow.getHandle(row.workflowId);
    const credential = await sendUpdate((updateId) => handle.executeUpdate(rotateCredentialUpdate, { updateId, args: [{ actorId: actorRef(p), httpRequestId }] })).catch(fromUpdateError);
    return { id: row.id, credential };
  }

  return { loadRequest, submit, importLeases, decide, extend, revoke, rotateCredential };
}

export type AccessRequestService = ReturnType<typeof createAccessRequestService>;
