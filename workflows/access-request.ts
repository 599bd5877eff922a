import {
  ApplicationFailure,
  allHandlersFinished,
  condition,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
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
  type ReviewArgs,
  decideUpdate,
  extendUpdate,
  reviewSignal,
  revokeSignal,
  rotateCredentialUpdate,
  stateQuery,
} from './messages.js';
import { BOOKKEEPING, TARGET_WRITE, summarized } from './activity-options.js';
import { describeFailure, removeUntilVerified } from './removal.js';
import { AccessExpiresAtKey, AccessStateKey } from './search-attributes.js';

type Activities = ReturnType<typeof createActivities>;

const book = proxyActivities<Activities>(BOOKKEEPING);
/** Steps an operator looks for in the UI get a summary line. */
const bookAs = (summary: string) => proxyActivities<Activities>(summarized(BOOKKEEPING, summary));
const targetAs = (summary: string) => proxyActivities<Activities>(summarized(TARGET_WRITE, summary));

// Notifications never hold up a lease: bounded retries, not awaited by the lifecycle.
const notifier = proxyActivities<Activities>({
  startToCloseTimeout: '15s',
  scheduleToCloseTimeout: '15m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' },
});

const MS = 1000;

type StageOutcome = 'approved' | 'rejected' | 'expired' | 'withdrawn' | 'no_quorum';

export async function accessRequestWorkflow(input: AccessRequestInput): Promise<RequestStateView> {
  const { requestId, grantId, timing } = input;
  const lease = { requestId, grantId, subjectId: input.subjectId, entitlementId: input.entitlementId };
  const state: RequestStateView = { requestId, status: 'pending_approval', removalAttempts: 0 };

  /** The open stage: who may decide and how many approvals it needs. */
  let stage: ApprovalStage | undefined;
  /** Row/link number of the open stage; keeps counting across extension rounds (rows are unique per number). */
  let stageNumber = 0;
  let stageSeq = 0;
  /** Position of the open stage within the current run of stages, and the run's length. */
  let stageIndex = 0;
  let stageCount = 0;
  /** The open stage's approval rows are committed; decisions are recorded only after that. */
  let stageRecorded = false;
  /** Stages run for the initial request or, while active, to approve an extension. */
  let stagePurpose: 'request' | 'extension' | 'review' = 'request';
  let pendingReview: ReviewArgs | undefined;
  let extendRequiresApproval = false;
  let pendingExtension: ExtendArgs | undefined;
  let noQuorumReason = '';
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
      const index = stageIndex;
      if (args.decision === 'approve') {
        stageApprovals.add(args.approverId);
        approvedBy.add(args.approverId);
      } else rejected = true;
      const complete = rejected || stageApprovals.size >= current.quorum;
      state.decision = { approverId: args.approverId, decision: args.decision, at: new Date().toISOString() };
      // Approvers are known (validator passed) before their rows are written; never let the
      // decision's write overtake the stage's.
      await condition(() => stageRecorded);
      await bookAs(`record ${args.decision} · stage ${number}`).recordDecision({
        requestId,
        stage: number,
        approverId: args.approverId,
        decision: args.decision,
        comment: args.comment,
        policyVersion: state.policyVersion ?? 'unknown',
        stageComplete: complete,
        finalStage: index === stageCount,
        ...(stagePurpose !== 'request' ? { purpose: stagePurpose } : {}),
        ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}),
        idempotencyKey: nextKey(`decision-${args.decision}`),
      });
      if (stagePurpose !== 'request') return { status: rejected ? 'active' : complete && index === stageCount ? 'active' : 'pending_approval' };
      if (rejected) return { status: 'rejected' };
      return { status: complete && index === stageCount ? 'granting' : 'pending_approval' };
    },
    {
      // Validators reject before anything is written to history: a refused decision leaves no trace.
      validator: (args) => {
        // Not stageRecorded: the rows commit before the workflow hears back, and an approver who
        // already sees the task must be accepted; the handler waits for the stage write.
        if (!stage || rejected || stageApprovals.size >= stage.quorum) {
          throw ApplicationFailure.nonRetryable(`request is ${state.status}, with no approval open`, UpdateRejection.NotPending);
        }
        if (args.stage !== undefined && args.stage !== stageNumber) {
          // An action link is bound to the stage it was sent for.
          throw ApplicationFailure.nonRetryable(`this approval is for stage ${args.stage}; stage ${stageNumber} is open`, UpdateRejection.NotPending);
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
      // The API may see the grant verified (the DB row) a moment before this workflow does.
      await condition(() => state.status !== 'granting');
      if (state.status !== 'active' || revokeRequest) {
        throw ApplicationFailure.nonRetryable(`request is ${state.status}, not active`, UpdateRejection.NotActive);
      }
      if (extendRequiresApproval) {
        // Policy wants a fresh approval: the lease loop runs the stages; the expiry moves only if approved.
        pendingExtension = { actorId: args.actorId, durationSeconds: args.durationSeconds, justification: args.justification, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}) };
        return { expiresAt: state.expiresAt!, pendingApproval: true };
      }
      await moveExpiry(args);
      return { expiresAt: state.expiresAt! };
    },
    {
      validator: (args) => {
        if ((state.status !== 'active' && state.status !== 'granting') || revokeRequest) {
          throw ApplicationFailure.nonRetryable(`request is ${state.status}, not active`, UpdateRejection.NotActive);
        }
        if (pendingExtension || (stage && state.status === 'active')) {
          throw ApplicationFailure.nonRetryable('an extension is already waiting for approval', UpdateRejection.NotActive);
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

  setHandler(
    rotateCredentialUpdate,
    async (args) => {
      const rotated = await targetAs('rotate the credential on the target').rotateCredential({ ...lease, actorId: args.actorId, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}), idempotencyKey: nextKey('credential-rotated') });
      state.credential = rotated;
      setCurrentDetails(renderDetails(state, 'credential rotated'));
      return rotated;
    },
    {
      validator: (args) => {
        if (!args?.actorId) throw ApplicationFailure.nonRetryable('actorId is required', UpdateRejection.NotEligible);
        if (state.status !== 'active' || revokeRequest) {
          throw ApplicationFailure.nonRetryable(`request is ${state.status}, not active`, UpdateRejection.NotActive);
        }
        if (!state.credential) throw ApplicationFailure.nonRetryable('this lease has no credential to rotate', UpdateRejection.NoCredential);
      },
    },
  );

  setHandler(reviewSignal, (args) => {
    if (!pendingReview && state.status === 'active') pendingReview = args;
  });

  setHandler(revokeSignal, (args) => {
    // First revoke wins; later ones (a second click, a leaver after a manual revoke) change nothing.
    if (!revokeRequest) revokeRequest = { reason: args.reason ?? 'manual', actorId: args.actorId ?? 'temporal-ui', comment: args.comment, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}) };
  });

  // ---- policy and approval -------------------------------------------------------------------
  setCurrentDetails(renderDetails(state, 'evaluating policy'));
  const policy = await bookAs('evaluate the approval policy').evaluatePolicy({
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

  extendRequiresApproval = policy.extendRequiresApproval === true;
  const outcome = await runStages(stages, policy.policyVersion, Infinity, policy.fired);
  if (outcome === 'rejected') {
    setStatus('rejected', 'rejected by approver');
    return finish(state);
  }
  if (outcome === 'no_quorum') {
    setStatus('rejected', noQuorumReason);
    await book.closeUnapproved({ requestId, outcome: 'rejected', reason: noQuorumReason, idempotencyKey: nextKey('no-quorum') });
    return finish(state);
  }
  if (outcome === 'expired') {
    setStatus('expired_unapproved');
    await book.closeUnapproved({ requestId, outcome: 'expired_unapproved', reason: `approval stage ${stages[stageIndex - 1]!.name} timed out`, idempotencyKey: nextKey('expired') });
    return finish(state);
  }
  if (outcome === 'withdrawn') {
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
  stageNumber = 0;

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
  try {
    const granted = await targetAs('grant on the target').grantAccess({ ...lease, idempotencyKey: nextKey('granted') });
    if (granted.credential) state.credential = granted.credential;
    expiresAtMs = Date.now() + input.durationSeconds * MS;
    const verified = await targetAs('read the grant back from the target').verifyGranted({
      ...lease,
      expiresAt: new Date(expiresAtMs).toISOString(),
      idempotencyKey: nextKey('grant-verified'),
    });
    // Expiry counts from verified grant: the subject gets the full lease they were approved for.
    expiresAtMs = Date.parse(verified.expiresAt);
  } catch (err) {
    if (isCancellation(err)) throw err;
    // A grant we could not complete must not leave half-access behind: remove and verify, then fail.
    state.lastError = describeFailure(err);
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
    const woke = await condition(
      () => revokeRequest !== undefined || expiresAtMs !== seenExpiry || pendingExtension !== undefined || pendingReview !== undefined,
      Math.max(0, expiresAtMs - Date.now()),
    );
    if (revokeRequest !== undefined) break;
    if (pendingExtension) {
      await approveExtension(pendingExtension);
      pendingExtension = undefined;
      if (revokeRequest !== undefined) break;
      continue;
    }
    if (pendingReview) {
      await review(pendingReview);
      pendingReview = undefined;
      if (revokeRequest !== undefined) break;
      continue;
    }
    if (!woke && Date.now() >= expiresAtMs) break;
  }
  const reason: RevokeReason = revokeRequest?.reason ?? 'expired';
  await condition(allHandlersFinished);

  // ---- revoke and verify -------------------------------------------------------------------
  state.revokeReason = reason;
  state.revokeRequestedAt = new Date(revokeRequest ? Date.now() : expiresAtMs).toISOString();
  setStatus('revoking');
  await bookAs(`revoke requested · ${reason}`).beginRevocation({
    requestId,
    grantId,
    reason,
    actorId: revokeRequest?.actorId ?? 'system',
    comment: revokeRequest?.comment,
    ...(revokeRequest?.httpRequestId ? { httpRequestId: revokeRequest.httpRequestId } : {}),
    requestedAt: state.revokeRequestedAt,
    idempotencyKey: nextKey('revoking'),
  });
  await removeVerified(reason);
  return finish(state);

  /**
   * Runs approval stages in order. Each stage: approval rows, a notification (with signed
   * action links, minted in the activity), an optional reminder and escalation, and a final
   * timeout. `deadlineMs` cuts every stage short (an extension must be approved before the lease
   * it extends runs out).
   */
  async function runStages(list: ApprovalStage[], policyVersion: string, deadlineMs = Infinity, fired?: string[]): Promise<StageOutcome> {
    for (const [i, next] of list.entries()) {
      // Someone who approved an earlier stage cannot approve this one too.
      const eligible = next.approverIds.filter((a) => !approvedBy.has(a) && a !== input.requesterId);
      if (eligible.length < next.quorum) {
        noQuorumReason = `stage ${next.name} cannot reach its quorum of ${next.quorum} with distinct approvers`;
        return 'no_quorum';
      }
      stage = { ...next, approverIds: eligible };
      stageIndex = i + 1;
      stageNumber = ++stageSeq;
      stageCount = list.length;
      stageApprovals = new Set();
      stageRecorded = false;
      rejected = false;
      const openedAt = Date.now();
      const finalAt = Math.min(openedAt + next.timeoutSeconds * MS, deadlineMs);
      const dueAt = new Date(finalAt).toISOString();
      // Eligible from this point: anyone who can see the task (the rows below) must pass the validator.
      state.stage = { number: stageNumber, approverIds: eligible, dueAt };
      await bookAs(`open approval stage ${stageNumber} · quorum ${next.quorum}`).openApprovalStage({
        requestId,
        stage: stageNumber,
        stageName: next.name,
        approverIds: eligible,
        onBehalfOf: next.onBehalfOf,
        policyVersion,
        dueAt,
        ...(stagePurpose !== 'request' ? { purpose: stagePurpose } : {}),
        ...(i === 0 && fired ? { fired } : {}),
        idempotencyKey: nextKey('stage-opened'),
      });
      stageRecorded = true;
      const label = list.length > 1 ? `stage ${stageIndex}/${list.length} (${next.name}): ${next.quorum} approval(s) needed` : 'waiting for the entitlement owner';
      if (stagePurpose === 'request') setStatus('pending_approval', label);
      else setCurrentDetails(renderDetails(state, `${stagePurpose} waiting for approval, ${label}`));
      if (patched('notify-approvers')) notifyApprovers('approval.requested', eligible);

      const current = stage;
      const done = () => rejected || stageApprovals.size >= current.quorum || revokeRequest !== undefined;
      const milestones = [
        { at: next.reminderAfterSeconds === undefined ? Infinity : openedAt + next.reminderAfterSeconds * MS, what: 'remind' as const },
        { at: next.escalateAfterSeconds === undefined ? Infinity : openedAt + next.escalateAfterSeconds * MS, what: 'escalate' as const },
      ]
        .filter((m) => m.at < finalAt)
        .sort((x, y) => x.at - y.at);
      let decided = false;
      for (const m of milestones) {
        decided = await condition(done, Math.max(0, m.at - Date.now()));
        if (decided) break;
        const waiting = current.approverIds.filter((a) => !stageApprovals.has(a));
        if (m.what === 'remind') {
          notifyApprovers('approval.reminder', waiting);
          continue;
        }
        const { approverIds: added } = await bookAs(`escalate stage ${stageNumber}`).escalateStage({
          requestId,
          stage: stageNumber,
          stageName: next.name,
          waitingApproverIds: waiting,
          excludeIds: [input.requesterId, ...approvedBy, ...current.approverIds],
          policyVersion,
          dueAt,
          idempotencyKey: nextKey('escalated'),
        });
        current.approverIds.push(...added);
        state.stage = { number: stageNumber, approverIds: current.approverIds, dueAt };
        if (added.length) notifyApprovers('approval.escalated', added);
      }
      if (!decided) decided = await condition(done, Math.max(0, finalAt - Date.now()));
      // The decision handlers may still be persisting; their rows must exist before we move on.
      await condition(allHandlersFinished);
      if (rejected) return 'rejected';
      if (stageApprovals.size >= current.quorum) continue;
      return decided ? 'withdrawn' : 'expired';
    }
    return 'approved';
  }

  function notifyApprovers(event: 'approval.requested' | 'approval.reminder' | 'approval.escalated', recipientIds: string[]) {
    if (recipientIds.length === 0) return;
    notifier
      .notify({ event, requestId, stage: stageNumber, recipientIds, idempotencyKey: nextKey(event) })
      .catch((err) => log.warn('notification not delivered', { event, requestId, error: describeFailure(err) }));
  }

  /** A mover's access reviewed by their (new) manager; not approved in time → revoked as `mover`. */
  async function review(args: ReviewArgs): Promise<void> {
    const stages = await book.reviewStages({ requestId, subjectId: input.subjectId, requesterId: input.requesterId, deadlineSeconds: args.deadlineSeconds });
    stagePurpose = 'review';
    approvedBy.clear(); // a new decision about the same access
    const outcome = stages.length ? await runStages(stages, 'review', expiresAtMs) : 'no_quorum';
    stage = undefined;
    stageNumber = 0;
    stagePurpose = 'request';
    if (outcome === 'approved' || outcome === 'withdrawn') return;
    await book.closeExtension({ requestId, grantId, outcome: 'refused', reason: `mover review ${outcome === 'no_quorum' ? 'had no eligible reviewer' : outcome}`, idempotencyKey: nextKey('review-refused') });
    revokeRequest ??= { reason: 'mover', actorId: 'review', comment: `not re-approved after a move (${outcome})` };
  }

  /** Re-approval of an extension (policy `extendRequiresApproval`): the lease stays active meanwhile. */
  async function approveExtension(ext: ExtendArgs): Promise<void> {
    const again = await book.evaluatePolicy({ requestId, requesterId: input.requesterId, subjectId: input.subjectId, entitlementId: input.entitlementId, durationSeconds: ext.durationSeconds, purpose: 'extension' });
    let approved = again.effect === 'auto_approve';
    let why = again.reason ?? '';
    if (again.effect === 'route') {
      stagePurpose = 'extension';
      approvedBy.clear(); // a new decision: the four-eyes count starts again
      const outcome = await runStages(stagesOf(again, timing), again.policyVersion, expiresAtMs);
      stage = undefined;
      stageNumber = 0;
      stagePurpose = 'request';
      approved = outcome === 'approved';
      why = outcome === 'no_quorum' ? noQuorumReason : outcome;
    }
    if (!approved) {
      await book.closeExtension({ requestId, grantId, outcome: 'refused', reason: why || 'not approved', idempotencyKey: nextKey('extension-refused') });
      setCurrentDetails(renderDetails(state, `extension not approved (${why || 'not approved'})`));
      return;
    }
    await moveExpiry(ext);
  }

  /** Records the new expiry first, then moves the lease's timer (the lease loop wakes on the change). */
  async function moveExpiry(ext: ExtendArgs): Promise<void> {
    const newExpiry = Date.now() + ext.durationSeconds * MS;
    if (state.credential) {
      // The credential must not end before the lease it belongs to (nor outlive it).
      const renewed = await targetAs('renew the credential for the extension').renewCredential({ ...lease, notAfter: new Date(newExpiry).toISOString(), idempotencyKey: nextKey('credential-renewed') });
      state.credential = renewed ?? { ...state.credential, notAfter: new Date(newExpiry).toISOString() };
    }
    await book.recordExtension({
      requestId,
      grantId,
      actorId: ext.actorId,
      justification: ext.justification,
      ...(ext.httpRequestId ? { httpRequestId: ext.httpRequestId } : {}),
      expiresAt: new Date(newExpiry).toISOString(),
      idempotencyKey: nextKey('extended'),
    });
    expiresAtMs = newExpiry;
    state.expiresAt = new Date(newExpiry).toISOString();
    upsertSearchAttributes([{ key: AccessExpiresAtKey, value: new Date(newExpiry) }]);
    setCurrentDetails(renderDetails(state));
  }

  /**
   * Removes the membership and reads the target back until removal is confirmed. Never
   * returns unverified: past the deadline the lease is flagged `revocation_unverified`,
   * operators are alerted, and read-backs continue with a capped backoff.
   */
  async function removeVerified(why: RevokeReason, opts = { closeLease: true }): Promise<void> {
    const deadline = timing.revokeVerifyDeadlineSeconds;
    const result = await removeUntilVerified(lease, why, timing, {
      attempt: () => void state.removalAttempts++,
      unverified: async (error, errorType) => {
        state.lastError = error;
        log.warn('revocation not verified within deadline', { grantId, deadlineSeconds: deadline });
        setStatus('revocation_unverified', `removal not verified after ${deadline}s: ${error}; retrying`);
        await bookAs('alert: removal not verified by the deadline').markRevocationUnverified({ requestId, grantId, error, errorType, idempotencyKey: nextKey('revocation-unverified') });
      },
      // The operator sees the error in the details and the alert; retries continue.
      stillFailing: (error) => {
        state.lastError = error;
        setCurrentDetails(renderDetails(state, `removal still unverified: ${error}; retrying`));
      },
    });
    state.removalVerifiedAt = result.verifiedAt;
    if (!opts.closeLease) return; // a failed grant: the caller records the failure
    await bookAs('close the lease · removal verified').completeRevocation({
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
  reminderAfterSeconds?: number | undefined;
  escalateAfterSeconds?: number | undefined;
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

/** Markdown shown as "current details" in the Temporal UI. Opaque ids only. */
function renderDetails(s: RequestStateView, note?: string): string {
  const lines = [`**${s.status}**${note ? ` — ${note}` : ''}`];
  if (s.stage && s.status === 'pending_approval') lines.push(`approval stage ${s.stage.number} due ${s.stage.dueAt}`);
  if (s.startAt && s.status === 'scheduled') lines.push(`starts ${s.startAt}`);
  if (s.expiresAt) lines.push(`expires ${s.expiresAt}`);
  if (s.revokeReason) lines.push(`revoke reason: ${s.revokeReason}`);
  if (s.removalAttempts) lines.push(`removal attempts: ${s.removalAttempts}`);
  if (s.removalVerifiedAt) lines.push(`removal verified ${s.removalVerifiedAt}`);
  if (s.credential && (s.status === 'active' || s.status === 'revoking')) lines.push(`${s.credential.kind} credential until ${s.credential.notAfter}`);
  return lines.join('\n\n');
}
