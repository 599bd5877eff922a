import type { WorkflowClient } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { actionLinkUses, approvals, identities, type AccessRequest } from '../../db/schema.js';
import { decideUpdate } from '../../workflows/messages.js';
import { HttpError, conflict, forbidden } from '../errors.js';
import { fromUpdateError, sendUpdate } from './update-rejections.js';
import { waitForRequest, type RequestWatch } from './request-watch.js';

/** How long a decision that arrives before its stage is open waits for it (the workflow is evaluating policy). */
const STAGE_OPEN_WAIT_MS = 5_000;

export interface DecisionDeps {
  db: Pick<Db, 'select' | 'insert' | 'delete'>;
  temporal: { workflow: Pick<WorkflowClient, 'getHandle'> };
  loadRequest: (id: string) => Promise<AccessRequest>;
  /** Wakes a decision waiting for its stage to open; without it, such a decision is refused at once (409 stage_not_open). */
  watch?: RequestWatch | undefined;
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
export function createDecisions({ db, temporal, loadRequest, watch }: DecisionDeps) {
  async function checkAssigned(first: AccessRequest, approverId: string): Promise<void> {
    if (first.requesterId === approverId) throw forbidden('the requester cannot approve their own request', 'self_approval');
    // The beneficiary never approves their own access, even when a stage lists them (e.g. a row
    // written before resolution excluded the subject): refused here, before the workflow is asked.
    if (first.subjectId === approverId) throw forbidden('the subject cannot approve their own access', 'self_approval');
    const stageRows = () => db.select({ approverId: approvals.approverId, status: approvals.status }).from(approvals).where(eq(approvals.requestId, first.id));
    const notOpenYet = (r: { row: AccessRequest; rows: Awaited<ReturnType<typeof stageRows>> }) => r.rows.length === 0 && r.row.status === 'pending_approval';
    // Policy is still being evaluated: the stage (and so the list of approvers) does not exist
    // yet. A decision sent at once (a link clicked, a desk rule firing) waits a moment for it.
    let read = { row: first, rows: await stageRows() };
    if (notOpenYet(read)) {
      read = await waitForRequest(watch, first.id, async () => ({ row: await loadRequest(first.id), rows: await stageRows() }), (r) => !notOpenYet(r), STAGE_OPEN_WAIT_MS);
    }
    const { row, rows } = read;
    if (rows.some((a) => a.approverId === approverId && a.status === 'pending')) return;
    if (notOpenYet(read)) throw conflict('stage_not_open', 'the approval stage is not open yet; retry shortly');
    if (!rows.some((a) => a.status === 'pending')) throw conflict('not_pending', `request is ${row.status}, with no approval open`);
    throw forbidden('you are not an assigned approver of the open stage', 'not_eligible');
  }

  async function decideOn(row: AccessRequest, d: Decision): Promise<{ id: string; status: string }> {
    await checkAssigned(row, d.approverId);
    const stage = d.link?.stage;
    const handle = temporal.workflow.getHandle(row.workflowId);
    const result = await sendUpdate(
      (updateId) =>
        handle.executeUpdate(decideUpdate, {
        updateId,
        args: [
          {
            approverId: d.approverId,
            decision: d.decision,
            ...(d.comment ? { comment: d.comment } : {}),
            ...(stage !== undefined ? { stage } : {}),
            ...(d.httpRequestId ? { httpRequestId: d.httpRequestId } : {}),
          },
        ],
      }),
      d.updateId,
    ).catch(fromUpdateError);
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
