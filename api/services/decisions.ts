import type { WorkflowClient } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { actionLinkUses, approvals, identities, type AccessRequest } from '../../db/schema.js';
import { decideUpdate } from '../../workflows/messages.js';
import { HttpError, conflict, forbidden } from '../errors.js';
import { fromUpdateError } from './update-rejections.js';

export interface DecisionDeps {
  db: Pick<Db, 'select' | 'insert' | 'delete'>;
  temporal: { workflow: Pick<WorkflowClient, 'getHandle'> };
  loadRequest: (id: string) => Promise<AccessRequest>;
}

export interface Decision {
  requestId: string;
  approverId: string;
  decision: 'approve' | 'reject';
  comment?: string | undefined;
  httpRequestId?: string;
  /**
   * Set when the decision arrives by a signed action link (already verified by the caller):
   * the link's id makes it single use, and it is bound to one stage.
   */
  link?: { jti: string; stage: number };
  /**
   * Set when the decision comes from a service-desk event: the update's id, so the event handled
   * again after a crash gets the first answer instead of deciding twice.
   */
  updateId?: string;
}

/**
 * The one decision path, for a bearer token and an action link alike. Cheap checks first, with
 * the answers the API promises; the workflow's update validator is the authority and repeats them.
 */
export function createDecisions({ db, temporal, loadRequest }: DecisionDeps) {
  async function checkAssigned(row: AccessRequest, approverId: string): Promise<void> {
    if (row.requesterId === approverId) throw forbidden('the requester cannot approve their own request', 'self_approval');
    // The beneficiary never approves their own access, even when a stage lists them (e.g. a row
    // written before resolution excluded the subject): refused here, before the workflow is asked.
    if (row.subjectId === approverId) throw forbidden('the subject cannot approve their own access', 'self_approval');
    const rows = await db.select({ approverId: approvals.approverId, status: approvals.status }).from(approvals).where(eq(approvals.requestId, row.id));
    if (rows.some((a) => a.approverId === approverId && a.status === 'pending')) return;
    // Policy is still being evaluated: the stage (and so the list of approvers) does not exist yet.
    if (rows.length === 0 && row.status === 'pending_approval') throw conflict('stage_not_open', 'the approval stage is not open yet; retry shortly');
    if (!rows.some((a) => a.status === 'pending')) throw conflict('not_pending', `request is ${row.status}, with no approval open`);
    throw forbidden('you are not an assigned approver of the open stage', 'not_eligible');
  }

  async function decideOn(row: AccessRequest, d: Decision): Promise<{ id: string; status: string }> {
    await checkAssigned(row, d.approverId);
    const stage = d.link?.stage;
    const result = await temporal.workflow
      .getHandle(row.workflowId)
      .executeUpdate(decideUpdate, {
        ...(d.updateId ? { updateId: d.updateId } : {}),
        args: [
          {
            approverId: d.approverId,
            decision: d.decision,
            ...(d.comment ? { comment: d.comment } : {}),
            ...(stage !== undefined ? { stage } : {}),
            ...(d.httpRequestId ? { httpRequestId: d.httpRequestId } : {}),
          },
        ],
      })
      .catch(fromUpdateError);
    return { id: row.id, status: result.status };
  }

  return {
    async decide(d: Decision): Promise<{ id: string; status: string }> {
      if (!d.link) return decideOn(await loadRequest(d.requestId), d);
      const { jti } = d.link;
      const [approver] = await db.select({ status: identities.status }).from(identities).where(eq(identities.id, d.approverId));
      if (approver?.status !== 'active') throw forbidden('the approver of this link is not active', 'approver_inactive');
      const row = await loadRequest(d.requestId);
      // Single use: the jti is claimed before the decision is attempted, so two clicks cannot both act.
      const claimed = await db.insert(actionLinkUses).values({ jti, requestId: d.requestId, approverId: d.approverId }).onConflictDoNothing().returning();
      if (claimed.length === 0) throw conflict('link_used', 'this approval link has already been used');
      try {
        return await decideOn(row, d);
      } catch (e) {
        // A refusal (4xx) consumes the link; an outage does not, so the approver can click again.
        if (!(e instanceof HttpError)) await db.delete(actionLinkUses).where(eq(actionLinkUses.jti, jti));
        throw e;
      }
    },
  };
}
