import { ApplicationFailure, allHandlersFinished, condition, log, patched, proxyActivities } from '@temporalio/workflow';
import type { ApprovalActivities, NotificationActivities } from '../activities/index.js';
import { NOTIFICATION } from './activity-options.js';
import { bookkeeping } from './bookkeeping.js';
import { type AccessRequestInput, type DecisionArgs, type DecisionResult, type RequestState, type RequestStateView, UpdateRejection } from './messages.js';
import { decisionArgsSchema } from './message-schemas.js';
import { describeFailure } from './removal.js';
import { parseUpdate } from './signal-input.js';

/** Steps an operator looks for in the UI get a summary line. */
const bookAs = (summary: string) => bookkeeping<ApprovalActivities>(summary);
const notifier = proxyActivities<NotificationActivities>(NOTIFICATION);

const MS = 1000;

export interface ApprovalStage {
  name: string;
  quorum: number;
  timeoutSeconds: number;
  reminderAfterSeconds?: number | undefined;
  escalateAfterSeconds?: number | undefined;
  requireComment: boolean;
  approverIds: string[];
  onBehalfOf: Record<string, string>;
}

/** What a run of stages decides: the request itself, an extension of its lease, or a mover's review of it. */
export type ApprovalPurpose = 'request' | 'extension' | 'review';

export interface StageRun {
  purpose: ApprovalPurpose;
  policyVersion: string;
  /** Cuts every stage short: an extension or a review must be decided before the lease it is about runs out. */
  deadlineMs?: number;
  /** The policy rules that fired, recorded with the first stage. */
  fired?: string[] | undefined;
}

export type StageOutcome =
  | { outcome: 'approved' | 'rejected' | 'withdrawn' }
  | { outcome: 'expired'; stageName: string }
  | { outcome: 'no_quorum'; reason: string };

/** What the approval engine needs from the request it runs for. */
export interface ApprovalHost {
  readonly state: RequestStateView;
  readonly requesterId: string;
  /** The beneficiary: never an approver of their own access, at any stage or for any purpose. */
  readonly subjectId: string;
  /** A revoke (a withdrawal, before the grant) ends the open stage. */
  readonly revokeRequested: boolean;
  nextKey(what: string): string;
  setStatus(status: RequestState, note?: string): void;
  details(note?: string): void;
}

/** The stage decisions are taken on now. */
interface OpenStage {
  /** Eligible approvers only; escalation adds to them. */
  readonly stage: ApprovalStage;
  /** Row/link number: keeps counting across runs (approval rows are unique per number). */
  readonly number: number;
  /** Position within the run (from 1) and the run's length. */
  readonly index: number;
  readonly count: number;
  readonly purpose: ApprovalPurpose;
  readonly approvals: Set<string>;
  rejected: boolean;
  /** The stage's approval rows are committed; decisions are recorded only after that. */
  recorded: boolean;
}

const decided = (open: OpenStage) => open.rejected || open.approvals.size >= open.stage.quorum;

/**
 * Approval stages in order: approval rows, a notification (with signed action links, minted in
 * the activity), an optional reminder and escalation, and a final timeout. Owns the open stage,
 * its quorum and the four-eyes rule; the `decide` update's validator and handler live here.
 */
export class Approvals {
  private open: OpenStage | undefined;
  private lastNumber = 0;
  /** Everyone who approved any stage of this run: four eyes means two people. */
  private readonly approvedBy = new Set<string>();

  constructor(
    private readonly requestId: string,
    private readonly host: ApprovalHost,
  ) {}

  /** A stage is open (possibly already decided, until its run moves on). */
  get isOpen(): boolean {
    return this.open !== undefined;
  }

  /** No stage is open any more: every later decision is refused. */
  close(): void {
    this.open = undefined;
  }

  /** The `decide` validator: who may decide the open stage (a refused decision leaves no trace in history). */
  validate(raw: DecisionArgs): void {
    const args = parseUpdate('decide', decisionArgsSchema, raw);
    const open = this.open;
    // Not `recorded`: the rows commit before the workflow hears back, and an approver who
    // already sees the task must be accepted; the handler waits for the stage write.
    if (!open || decided(open)) {
      throw ApplicationFailure.nonRetryable(`request is ${this.host.state.status}, with no approval open`, UpdateRejection.NotPending);
    }
    if (this.host.revokeRequested) {
      // Withdrawn (or revoked): the open stage is ending and its close is being recorded; a
      // decision accepted now would be written after the cancellation and claim `granting`.
      // Replay-safe: validators do not run for updates a history already accepted.
      throw ApplicationFailure.nonRetryable(`request is ${this.host.state.status} and being withdrawn, with no approval open`, UpdateRejection.NotPending);
    }
    if (args.stage !== undefined && args.stage !== open.number) {
      // An action link is bound to the stage it was sent for.
      throw ApplicationFailure.nonRetryable(`this approval is for stage ${args.stage}; stage ${open.number} is open`, UpdateRejection.NotPending);
    }
    if (args.approverId === this.host.requesterId) {
      throw ApplicationFailure.nonRetryable('the requester cannot approve their own request', UpdateRejection.SelfApproval);
    }
    if (args.approverId === this.host.subjectId) {
      throw ApplicationFailure.nonRetryable('the subject cannot approve their own access', UpdateRejection.SelfApproval);
    }
    if (this.approvedBy.has(args.approverId)) {
      throw ApplicationFailure.nonRetryable('an approver decides once per request (four eyes means two people)', UpdateRejection.NotEligible);
    }
    if (!open.stage.approverIds.includes(args.approverId)) {
      throw ApplicationFailure.nonRetryable('not an assigned approver of the open stage', UpdateRejection.NotEligible);
    }
    if (open.stage.requireComment && args.decision === 'approve' && !args.comment?.trim()) {
      throw ApplicationFailure.nonRetryable(`stage ${open.stage.name} is an exception: approving it requires a comment that justifies it`, UpdateRejection.OutsidePolicy);
    }
  }

  /** Counts the decision at once (the stage may close on it), then records it after the stage's rows. */
  async decide(args: DecisionArgs): Promise<DecisionResult> {
    const open = this.open!;
    if (args.decision === 'approve') {
      open.approvals.add(args.approverId);
      this.approvedBy.add(args.approverId);
    } else open.rejected = true;
    const complete = decided(open);
    const { state } = this.host;
    state.decision = { approverId: args.approverId, decision: args.decision, at: new Date().toISOString() };
    // Approvers are known (validator passed) before their rows are written; never let the
    // decision's write overtake the stage's.
    await condition(() => open.recorded);
    const finalStage = open.index === open.count;
    await bookAs(`record ${args.decision} · stage ${open.number}`).recordDecision({
      requestId: this.requestId,
      stage: open.number,
      approverId: args.approverId,
      decision: args.decision,
      comment: args.comment,
      policyVersion: state.policyVersion ?? 'unknown',
      stageComplete: complete,
      finalStage,
      ...(open.purpose !== 'request' ? { purpose: open.purpose } : {}),
      ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}),
      idempotencyKey: this.host.nextKey(`decision-${args.decision}`),
    });
    // An extension or a review decides about a lease that stays active either way.
    if (open.purpose !== 'request') return { status: open.rejected || (complete && finalStage) ? 'active' : 'pending_approval' };
    if (open.rejected) return { status: 'rejected' };
    return { status: complete && finalStage ? 'granting' : 'pending_approval' };
  }

  /**
   * Runs the stages in order; each is a new decision (the four-eyes count starts again). The
   * stage stays open after the run: the caller closes it once it has acted on the outcome.
   */
  async run(list: ApprovalStage[], { purpose, policyVersion, deadlineMs = Infinity, fired }: StageRun): Promise<StageOutcome> {
    this.approvedBy.clear();
    for (const [i, next] of list.entries()) {
      // Someone who approved an earlier stage cannot approve this one too.
      const eligible = next.approverIds.filter((a) => !this.approvedBy.has(a) && a !== this.host.requesterId && !this.isSubject(a));
      if (eligible.length < next.quorum) {
        return { outcome: 'no_quorum', reason: `stage ${next.name} cannot reach its quorum of ${next.quorum} with distinct approvers other than the requester and the subject` };
      }
      const open: OpenStage = {
        stage: { ...next, approverIds: eligible },
        number: ++this.lastNumber,
        index: i + 1,
        count: list.length,
        purpose,
        approvals: new Set(),
        rejected: false,
        recorded: false,
      };
      this.open = open;
      const outcome = await this.runStage(open, next, { policyVersion, deadlineMs, fired: i === 0 ? fired : undefined });
      if (outcome !== 'approved') return outcome === 'expired' ? { outcome, stageName: next.name } : { outcome };
    }
    return { outcome: 'approved' };
  }

  private async runStage(
    open: OpenStage,
    next: ApprovalStage,
    { policyVersion, deadlineMs, fired }: { policyVersion: string; deadlineMs: number; fired: string[] | undefined },
  ): Promise<'approved' | 'rejected' | 'withdrawn' | 'expired'> {
    const { state } = this.host;
    const { stage: current, number, purpose } = open;
    const eligible = current.approverIds;
    const openedAt = Date.now();
    const finalAt = Math.min(openedAt + next.timeoutSeconds * MS, deadlineMs);
    const dueAt = new Date(finalAt).toISOString();
    // Eligible from this point: anyone who can see the task (the rows below) must pass the validator.
    state.stage = { number, approverIds: eligible, dueAt };
    await bookAs(`open approval stage ${number} · quorum ${next.quorum}`).openApprovalStage({
      requestId: this.requestId,
      stage: number,
      stageName: next.name,
      approverIds: eligible,
      onBehalfOf: next.onBehalfOf,
      policyVersion,
      dueAt,
      ...(purpose !== 'request' ? { purpose } : {}),
      ...(fired ? { fired } : {}),
      idempotencyKey: this.host.nextKey('stage-opened'),
    });
    open.recorded = true;
    const label = open.count > 1 ? `stage ${open.index}/${open.count} (${next.name}): ${next.quorum} approval(s) needed` : 'waiting for the entitlement owner';
    if (purpose === 'request') this.host.setStatus('pending_approval', label);
    else this.host.details(`${purpose} waiting for approval, ${label}`);
    if (patched('notify-approvers')) this.notify('approval.requested', number, eligible);

    const done = () => decided(open) || this.host.revokeRequested;
    const milestones = [
      { at: next.reminderAfterSeconds === undefined ? Infinity : openedAt + next.reminderAfterSeconds * MS, what: 'remind' as const },
      { at: next.escalateAfterSeconds === undefined ? Infinity : openedAt + next.escalateAfterSeconds * MS, what: 'escalate' as const },
    ]
      .filter((m) => m.at < finalAt)
      .sort((x, y) => x.at - y.at);
    let woke = false;
    for (const m of milestones) {
      woke = await condition(done, Math.max(0, m.at - Date.now()));
      if (woke) break;
      const waiting = current.approverIds.filter((a) => !open.approvals.has(a));
      if (m.what === 'remind') {
        this.notify('approval.reminder', number, waiting);
        continue;
      }
      const { approverIds: added } = await bookAs(`escalate stage ${number}`).escalateStage({
        requestId: this.requestId,
        stage: number,
        stageName: next.name,
        waitingApproverIds: waiting,
        excludeIds: [this.host.requesterId, this.host.subjectId, ...this.approvedBy, ...current.approverIds],
        policyVersion,
        dueAt,
        idempotencyKey: this.host.nextKey('escalated'),
      });
      // The activity excludes them too; the engine does not rely on it.
      current.approverIds.push(...added.filter((a) => a !== this.host.requesterId && a !== this.host.subjectId));
      state.stage = { number, approverIds: current.approverIds, dueAt };
      if (added.length) this.notify('approval.escalated', number, added);
    }
    if (!woke) woke = await condition(done, Math.max(0, finalAt - Date.now()));
    // The decision handlers may still be persisting; their rows must exist before we move on.
    await condition(allHandlersFinished);
    if (open.rejected) return 'rejected';
    if (open.approvals.size >= current.quorum) return 'approved';
    return woke ? 'withdrawn' : 'expired';
  }

  /**
   * Runs recorded before the subject was excluded may have opened a stage for them: they replay
   * as they ran (no marker). The marker is written only where the subject is on a stage.
   */
  private isSubject(approverId: string): boolean {
    return approverId === this.host.subjectId && patched('exclude-subject-approver');
  }

  /** Fire and forget: a notification never holds up the stage. */
  private notify(event: 'approval.requested' | 'approval.reminder' | 'approval.escalated', stage: number, recipientIds: string[]): void {
    if (recipientIds.length === 0) return;
    const { requestId } = this;
    notifier
      .notify({ event, requestId, stage, recipientIds, idempotencyKey: this.host.nextKey(event) })
      .catch((err) => log.warn('notification not delivered', { event, requestId, error: describeFailure(err) }));
  }
}

type PolicyResult = Awaited<ReturnType<ApprovalActivities['evaluatePolicy']>>;

/**
 * Stages from the policy decision. Histories recorded before multi-stage policies carried only
 * `approverIds`; they become one owner stage, so those runs replay and continue unchanged.
 */
export function stagesOf(p: PolicyResult & { approverIds?: string[]; approvalTimeoutSeconds?: number }, timing: AccessRequestInput['timing']): ApprovalStage[] {
  const dflt = timing.defaultApprovalTimeoutSeconds;
  if (p.stages) return p.stages.map((s) => ({ ...s, timeoutSeconds: s.timeoutSeconds ?? dflt }));
  if (p.effect === 'auto_approve' || p.effect === 'deny' || !p.approverIds?.length) return [];
  return [{ name: 'owner', quorum: 1, timeoutSeconds: p.approvalTimeoutSeconds ?? dflt, requireComment: false, approverIds: p.approverIds, onBehalfOf: {} }];
}
