import { randomUUID } from 'node:crypto';
import { ServiceError, WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
import { ApplicationFailure } from '@temporalio/common';
import { UpdateRejection } from '../../workflows/messages.js';
import { badRequest, conflict, forbidden } from '../errors.js';

/**
 * The one mapping of a workflow's typed update rejection (thrown by its validator, so nothing
 * reached history) onto the HTTP contract. Anything else is rethrown as it is.
 */
export function fromUpdateError(err: unknown): never {
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
      case UpdateRejection.InvalidInput:
        throw badRequest('invalid_input', f.message);
    }
  }
  throw fromClosedWorkflow(err);
}

/** A signal or update to a workflow that has finished: the request is closed. */
export function fromClosedWorkflow(err: unknown): unknown {
  return err instanceof WorkflowNotFoundError ? conflict('closed', 'the request is closed') : err;
}

/** How often an update is sent again after the server dropped it with its workflow task. */
const UPDATE_SENDS = 3;

/**
 * The server drops an update, unaccepted, when the workflow task that carried it fails, e.g.
 * with UnhandledCommand because an activity completed while the task ran its local activities
 * (FAILED_PRECONDITION, "unexpected workflow task failure"). Nothing reached history, so the
 * update is sent again under the same update id: if an earlier send was accepted after all, the
 * server answers with that one's outcome instead of running it twice.
 */
export async function sendUpdate<T>(send: (updateId: string) => Promise<T>, updateId: string = randomUUID()): Promise<T> {
  for (let attempt = 1; ; attempt++) {
    try {
      return await send(updateId);
    } catch (err) {
      if (attempt >= UPDATE_SENDS || !droppedWithItsTask(err)) throw err;
    }
  }
}

function droppedWithItsTask(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e instanceof Error && depth < 4; e = e.cause, depth++) {
    const code = (e as { code?: unknown }).code;
    // 9: gRPC FAILED_PRECONDITION
    if ((e instanceof ServiceError || code === 9) && /workflow task failure/i.test(e.message)) return true;
  }
  return false;
}
