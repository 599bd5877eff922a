import { allHandlersFinished, condition, setHandler } from '@temporalio/workflow';
import { AccessLifecycle } from './lifecycle.js';
import {
  type AccessRequestInput,
  type RequestStateView,
  decideUpdate,
  extendUpdate,
  reviewSignal,
  revokeSignal,
  rotateCredentialUpdate,
  shortenUpdate,
  stateQuery,
} from './messages.js';

/**
 * One access request (`access-request/<id>`, see ./ids.ts), from policy to verified revoke:
 * policy and approval stages → an optional scheduled start → grant → the lease (extensions,
 * credential rotation, mover reviews) → revoke, verified on the target. The phases and all the
 * state they share live in `AccessLifecycle`; this function wires the messages and runs them.
 */
export async function accessRequestWorkflow(input: AccessRequestInput): Promise<RequestStateView> {
  const request = new AccessLifecycle(input);
  const { approvals } = request;

  setHandler(stateQuery, () => request.state);
  // Validators reject before anything is written to history: a refused update leaves no trace.
  setHandler(decideUpdate, (args) => approvals.decide(args), { validator: (args) => approvals.validate(args) });
  setHandler(extendUpdate, (args) => request.extend(args), { validator: (args) => request.validateExtend(args) });
  setHandler(shortenUpdate, (args) => request.shorten(args), { validator: (args) => request.validateShorten(args) });
  setHandler(rotateCredentialUpdate, (args) => request.rotateCredential(args), { validator: (args) => request.validateRotate(args) });
  setHandler(reviewSignal, (args) => request.requestReview(args));
  setHandler(revokeSignal, (args) => request.requestRevoke(args));

  // Each phase that ends the request early has closed it (status, audit) before returning false.
  if (!(await request.approve())) return finish(request.state);
  if (!(await request.awaitStart())) return finish(request.state);
  if (!(await request.grant())) return finish(request.state);
  const reason = await request.holdLease();
  // An extension or a rotation still writing to the target must finish before the removal starts.
  await condition(allHandlersFinished);
  await request.revoke(reason);
  return finish(request.state);
}

async function finish(state: RequestStateView): Promise<RequestStateView> {
  await condition(allHandlersFinished);
  return state;
}
