import {
  ActivityFailure,
  ApplicationFailure,
  allHandlersFinished,
  condition,
  isCancellation,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  upsertSearchAttributes,
  workflowInfo,
} from '@temporalio/workflow';
import type { createActivities } from '../activities/index.js';
import {
  type AccessRequestInput,
  type ExtendArgs,
  type RequestState,
  type RequestStateView,
  type RevokeArgs,
  type RevokeReason,
  UpdateRejection,
  decideUpdate,
  extendUpdate,
  revokeSignal,
  stateQuery,
} from './messages.js';
import { AccessExpiresAtKey, AccessStateKey } from './search-attributes.js';

type Activities = ReturnType<typeof createActivities>;

// Bookkeeping in our own database: fast, idempotent, retried until it lands.
const book = proxyActivities<Activities>({
  startToCloseTimeout: '15s',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' },
});

// A write to the target system: idempotent by contract, bounded so a dead target fails the grant.
const targetWrite = proxyActivities<Activities>({
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '10m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
});

const MS = 1000;

export async function accessRequestWorkflow(input: AccessRequestInput): Promise<RequestStateView> {
  const { requestId, grantId, timing } = input;
  const state: RequestStateView = { requestId, status: 'pending_approval', removalAttempts: 0 };

  /** The open stage: who may decide and how many approvals it needs. */
  let stage: ApprovalStage | undefined;
  let stageNumber = 0;
  let stageCount = 0;
  /** The open stage's approval rows are committed; decisions are recorded only after that. */
  let stageRecorded = false;
  let stageApprovals = new Set<string>();
  /** Everyone who approved any stage of this request: four eyes means two people. */
  const approvedBy = new Set<string>();
  let rejected = false;
  let maxDurationSeconds = input.durationSeconds;
  let revokeRequest: RevokeArgs | undefined;
  let expiresAtMs = 0;
  let transitions = 0;
  /** Idempotency key for the n-th audited transition of this run: stable across activity retries and replays. */
  const nextKey = (what: string) => `${workflowInfo().workflowId}/${++transitions}/${what}`;

  const setStatus = (status: RequestState, details?: string) => {
    state.status = status;
    upsertSearchAttributes([{ key: AccessStateKey, value: status }]);
    setCurrentDetails(renderDetails(state, details));
  };

  setHandler(stateQuery, () => state);

  setHandler(
    decideUpdate,
    async (args) => {
      const current = stage!;
      const number = stageNumber;
      if (args.decision === 'approve') {
        stageApprovals.add(args.approverId);
        approvedBy.add(args.approverId);
      } else rejected = true;
      const complete = rejected || stageApprovals.size >= current.quorum;
      state.decision = { approverId: args.approverId, decision: args.decision, at: new Date().toISOString() };
      // Approvers are known (validator passed) before their rows are written; never let the
      // decision's write overtake the stage's.
      await condition(() => stageRecorded);
      await book.recordDecision({
        requestId,
        stage: number,
        approverId: args.approverId,
        decision: args.decision,
        comment: args.comment,
        policyVersion: state.policyVersion ?? 'unknown',
        stageComplete: complete,
        finalStage: number === stageCount,
        idempotencyKey: nextKey(`decision-${args.decision}`),
      });
      if (rejected) return { status: 'rejected' };
      return { status: complete && number === stageCount ? 'granting' : 'pending_approval' };
    },
    {
      // Validators reject before anything is written to history: a refused decision leaves no trace.
      validator: (args) => {
        if (state.status !== 'pending_approval' || !stage || rejected || stageApprovals.size >= stage.quorum) {
          throw ApplicationFailure.nonRetryable(`request is ${state.status}, not pending approval`, UpdateRejection.NotPending);
        }
        if (args.approverId === input.requesterId) {
          throw ApplicationFailure.nonRetryable('the requester cannot approve their own request', UpdateRejection.SelfApproval);
        }
        if (approvedBy.has(args.approverId)) {
          throw ApplicationFailure.nonRetryable('an approver decides once per request (four eyes means two people)', UpdateRejection.NotEligible);
        }
        if (!stage.approverIds.includes(args.approverId)) {
          throw ApplicationFailure.nonRetryable('not an assigned approver of the open stage', UpdateRejection.NotEligible);
        }
        if (stage.requireComment && args.decision === 'approve' && !args.comment?.trim()) {
          throw ApplicationFailure.nonRetryable(`stage ${stage.name} is an exception: approving it requires a comment that justifies it`, UpdateRejection.OutsidePolicy);
        }
      },
    },
  );

  setHandler(
    extendUpdate,
    async (args) => {
      const newExpiry = Date.now() + args.durationSeconds * MS;
      await book.recordExtension({
        requestId,
        grantId,
        actorId: args.actorId,
        justification: args.justification,
        expiresAt: new Date(newExpiry).toISOString(),
        idempotencyKey: nextKey('extended'),
      });
      expiresAtMs = newExpiry;
      state.expiresAt = new Date(newExpiry).toISOString();
      upsertSearchAttributes([{ key: AccessExpiresAtKey, value: new Date(newExpiry) }]);
      setCurrentDetails(renderDetails(state));
      return { expiresAt: state.expiresAt };
    },
    {
      validator: (args) => {
        if (state.status !== 'active' || revokeRequest) {
          throw ApplicationFailure.nonRetryable(`request is ${state.status}, not active`, UpdateRejection.NotActive);
        }
        if (!Number.isInteger(args.durationSeconds) || args.durationSeconds <= 0 || args.durationSeconds > maxDurationSeconds) {
          throw ApplicationFailure.nonRetryable(
            `duration must be between 1 and ${maxDurationSeconds} seconds`,
            UpdateRejection.OutsidePolicy,
          );
        }
        if (Date.now() + args.durationSeconds * MS <= expiresAtMs) {
          throw ApplicationFailure.nonRetryable('an extension must move the expiry later; revoke to end access sooner', UpdateRejection.OutsidePolicy);
        }
      },
    },
  );

  setHandler(revokeSignal, (args) => {
    // First revoke wins; later ones (a second click, a leaver after a manual revoke) change nothing.
    if (!revokeRequest) revokeRequest = { reason: args.reason ?? 'manual', actorId: args.actorId ?? 'temporal-ui', comment: args.comment };
  });

  // ---- policy and approval -------------------------------------------------------------------
  setCurrentDetails(renderDetails(state, 'evaluating policy'));
  const policy = await book.evaluatePolicy({
    requestId,
    requesterId: input.requesterId,
    subjectId: input.subjectId,
    entitlementId: input.entitlementId,
    durationSeconds: input.durationSeconds,
  });
  state.policyVersion = policy.policyVersion;
  maxDurationSeconds = policy.maxDurationSeconds;
  const stages = stagesOf(policy, timing);
  stageCount = stages.length;

  if (policy.effect === 'deny' || (policy.effect === undefined && stageCount === 0)) {
    const reason = policy.reason ?? 'no eligible approver';
    await book.closeUnapproved({ requestId, outcome: 'rejected', reason, fired: policy.fired, idempotencyKey: nextKey('no-approver') });
    setStatus('rejected', reason);
    return finish(state);
  }

  if (policy.effect === 'auto_approve') {
    await book.recordAutoApproval({ requestId, policyVersion: policy.policyVersion, reason: policy.reason ?? 'policy', fired: policy.fired ?? [], idempotencyKey: nextKey('auto-approved') });
  }

  for (const [i, next] of stages.entries()) {
    // Someone who approved an earlier stage cannot approve this one too.
    const eligible = next.approverIds.filter((a) => !approvedBy.has(a) && a !== input.requesterId);
    if (eligible.length < next.quorum) {
      const reason = `stage ${next.name} cannot reach its quorum of ${next.quorum} with distinct approvers`;
      setStatus('rejected', reason);
      await book.closeUnapproved({ requestId, outcome: 'rejected', reason, idempotencyKey: nextKey('no-quorum') });
      return finish(state);
    }
    stage = { ...next, approverIds: eligible };
    stageNumber = i + 1;
    stageApprovals = new Set();
    stageRecorded = false;
    const dueAt = new Date(Date.now() + next.timeoutSeconds * MS).toISOString();
    // Eligible from this point: anyone who can see the task (the rows below) must pass the validator.
    state.stage = { number: stageNumber, approverIds: eligible, dueAt };
    await book.openApprovalStage({
      requestId,
      stage: stageNumber,
      stageName: next.name,
      approverIds: eligible,
      onBehalfOf: next.onBehalfOf,
      policyVersion: policy.policyVersion,
      dueAt,
      idempotencyKey: nextKey('stage-opened'),
    });
    stageRecorded = true;
    setStatus('pending_approval', stageCount > 1 ? `stage ${stageNumber}/${stageCount} (${next.name}): ${next.quorum} approval(s) needed` : 'waiting for the entitlement owner');

    const current = stage;
    const decided = await condition(() => rejected || stageApprovals.size >= current.quorum || revokeRequest !== undefined, next.timeoutSeconds * MS);
    // The decision handlers may still be persisting; their rows must exist before we move on.
    await condition(allHandlersFinished);
    if (rejected) {
      setStatus('rejected', 'rejected by approver');
      return finish(state);
    }
    if (stageApprovals.size >= current.quorum) continue;
    if (!decided) {
      setStatus('expired_unapproved');
      await book.closeUnapproved({ requestId, outcome: 'expired_unapproved', reason: `approval stage ${next.name} timed out`, idempotencyKey: nextKey('expired') });
      return finish(state);
    }
    // Withdrawn (revoke signal) before the stages completed.
    setStatus('cancelled');
    await book.closeUnapproved({
      requestId,
      outcome: 'cancelled',
      reason: revokeRequest?.comment ?? 'withdrawn before approval',
      actorId: revokeRequest?.actorId,
      idempotencyKey: nextKey('cancelled'),
    });
    return finish(state);
  }
  stage = undefined;

  // ---- optional start time: approved now, granted later ------------------------------------
  if (input.startAt && Date.parse(input.startAt) > Date.now()) {
    state.startAt = input.startAt;
    setStatus('scheduled', `access starts ${input.startAt}`);
    await book.recordScheduled({ requestId, startAt: input.startAt, idempotencyKey: nextKey('scheduled') });
    const withdrawn = await condition(() => revokeRequest !== undefined, Date.parse(input.startAt) - Date.now());
    if (withdrawn) {
      setStatus('cancelled', 'withdrawn before the start time');
      await book.closeUnapproved({ requestId, outcome: 'cancelled', reason: revokeRequest?.comment ?? 'withdrawn before the start time', actorId: revokeRequest?.actorId, idempotencyKey: nextKey('cancelled') });
      return finish(state);
    }
  }

  // ---- grant and verify --------------------------------------------------------------------
  setStatus('granting');
  const lease = { requestId, grantId, subjectId: input.subjectId, entitlementId: input.entitlementId };
  try {
    await targetWrite.grantAccess({ ...lease, idempotencyKey: nextKey('granted') });
    expiresAtMs = Date.now() + input.durationSeconds * MS;
    const verified = await targetWrite.verifyGranted({
      ...lease,
      expiresAt: new Date(expiresAtMs).toISOString(),
      idempotencyKey: nextKey('grant-verified'),
    });
    // Expiry counts from verified grant: the subject gets the full lease they were approved for.
    expiresAtMs = Date.parse(verified.expiresAt);
  } catch (err) {
    if (isCancellation(err)) throw err;
    // A grant we could not complete must not leave half-access behind: remove and verify, then fail.
    state.lastError = describe(err);
    await removeVerified('manual', { closeLease: false });
    setStatus('failed', state.lastError);
    await book.markFailed({ requestId, grantId, reason: state.lastError, idempotencyKey: nextKey('failed') });
    return finish(state);
  }
  state.grantedAt = new Date().toISOString();
  state.expiresAt = new Date(expiresAtMs).toISOString();
  upsertSearchAttributes([{ key: AccessExpiresAtKey, value: new Date(expiresAtMs) }]);
  setStatus('active');

  // ---- the lease: sleep until expiry, a revoke signal, or an extension moves the expiry ------
  for (;;) {
    const seenExpiry = expiresAtMs;
    const woke = await condition(() => revokeRequest !== undefined || expiresAtMs !== seenExpiry, Math.max(0, expiresAtMs - Date.now()));
    if (revokeRequest !== undefined) break;
    if (!woke && Date.now() >= expiresAtMs) break;
  }
  const reason: RevokeReason = revokeRequest?.reason ?? 'expired';
  await condition(allHandlersFinished);

  // ---- revoke and verify -------------------------------------------------------------------
  state.revokeReason = reason;
  state.revokeRequestedAt = new Date(revokeRequest ? Date.now() : expiresAtMs).toISOString();
  setStatus('revoking');
  await book.beginRevocation({
    requestId,
    grantId,
    reason,
    actorId: revokeRequest?.actorId ?? 'system',
    comment: revokeRequest?.comment,
    requestedAt: state.revokeRequestedAt,
    idempotencyKey: nextKey('revoking'),
  });
  await removeVerified(reason);
  return finish(state);

  /**
   * Removes the membership and reads the target back until removal is confirmed. Never
   * returns unverified: past the deadline the lease is flagged `revocation_unverified`,
   * operators are alerted, and read-backs continue with a capped backoff.
   */
  async function removeVerified(why: RevokeReason, opts = { closeLease: true }): Promise<void> {
    const deadline = timing.revokeVerifyDeadlineSeconds;
    const firstPhase = proxyActivities<Activities>({
      startToCloseTimeout: '30s',
      scheduleToCloseTimeout: `${deadline}s`,
      retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: `${Math.max(1, Math.min(10, Math.ceil(deadline / 4)))}s` },
    });
    const overdue = proxyActivities<Activities>({
      startToCloseTimeout: '30s',
      retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: `${timing.verifyMaxIntervalSeconds}s` },
    });
    const attempt = { ...lease, reason: why };
    let result: Awaited<ReturnType<Activities['removeAndVerify']>> | undefined;
    try {
      state.removalAttempts++;
      result = await firstPhase.removeAndVerify(attempt);
    } catch (err) {
      if (isCancellation(err)) throw err;
      state.lastError = describe(err);
      log.warn('revocation not verified within deadline', { grantId, deadlineSeconds: deadline });
      setStatus('revocation_unverified', `removal not verified after ${deadline}s: ${state.lastError}; retrying`);
      await book.markRevocationUnverified({ requestId, grantId, error: state.lastError, errorType: failureType(err), idempotencyKey: nextKey('revocation-unverified') });
    }
    while (!result) {
      try {
        state.removalAttempts++;
        result = await overdue.removeAndVerify(attempt);
      } catch (err) {
        if (isCancellation(err)) throw err;
        // Non-retryable target errors (e.g. PermissionDenied) still must not close the lease:
        // wait, then try again; the operator sees the error in the details and the alert.
        state.lastError = describe(err);
        setCurrentDetails(renderDetails(state, `removal still unverified: ${state.lastError}; retrying`));
        await sleep(`${timing.verifyMaxIntervalSeconds}s`);
      }
    }
    state.removalVerifiedAt = result.verifiedAt;
    if (!opts.closeLease) return; // a failed grant: the caller records the failure
    await book.completeRevocation({
      requestId,
      grantId,
      changed: result.changed,
      retainedBy: result.retainedBy,
      verifiedAt: result.verifiedAt,
      idempotencyKey: nextKey('revoked'),
    });
    state.lastError = undefined;
    setStatus('revoked');
  }
}

interface ApprovalStage {
  name: string;
  quorum: number;
  timeoutSeconds: number;
  requireComment: boolean;
  approverIds: string[];
  onBehalfOf: Record<string, string>;
}

type PolicyResult = Awaited<ReturnType<Activities['evaluatePolicy']>>;

/**
 * Stages from the policy decision. Histories recorded before multi-stage policies carried only
 * `approverIds`; they become one owner stage, so those runs replay and continue unchanged.
 */
function stagesOf(p: PolicyResult & { approverIds?: string[]; approvalTimeoutSeconds?: number }, timing: AccessRequestInput['timing']): ApprovalStage[] {
  const dflt = timing.defaultApprovalTimeoutSeconds;
  if (p.stages) return p.stages.map((s) => ({ ...s, timeoutSeconds: s.timeoutSeconds ?? dflt }));
  if (p.effect === 'auto_approve' || p.effect === 'deny' || !p.approverIds?.length) return [];
  return [{ name: 'owner', quorum: 1, timeoutSeconds: p.approvalTimeoutSeconds ?? dflt, requireComment: false, approverIds: p.approverIds, onBehalfOf: {} }];
}

async function finish(state: RequestStateView): Promise<RequestStateView> {
  await condition(allHandlersFinished);
  return state;
}

function failureType(err: unknown): string {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  return e instanceof ApplicationFailure ? (e.type ?? 'ApplicationFailure') : e instanceof Error ? e.name : 'unknown';
}

function describe(err: unknown): string {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  if (e instanceof ApplicationFailure) return `${e.type ?? 'Error'}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}

/** Markdown shown as "current details" in the Temporal UI. Opaque ids only. */
function renderDetails(s: RequestStateView, note?: string): string {
  const lines = [`**${s.status}**${note ? ` — ${note}` : ''}`];
  if (s.stage && s.status === 'pending_approval') lines.push(`approval stage ${s.stage.number} due ${s.stage.dueAt}`);
  if (s.startAt && s.status === 'scheduled') lines.push(`starts ${s.startAt}`);
  if (s.expiresAt) lines.push(`expires ${s.expiresAt}`);
  if (s.revokeReason) lines.push(`revoke reason: ${s.revokeReason}`);
  if (s.removalAttempts) lines.push(`removal attempts: ${s.removalAttempts}`);
  if (s.removalVerifiedAt) lines.push(`removal verified ${s.removalVerifiedAt}`);
  return lines.join('\n\n');
}
