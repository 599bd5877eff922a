import { WorkflowNotFoundError, WorkflowUpdateFailedError } from '@temporalio/client';
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
