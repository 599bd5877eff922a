import { ApplicationFailure, condition, isCancellation, log, patched, proxyActivities, setCurrentDetails, upsertSearchAttributes, workflowInfo } from '@temporalio/workflow';
import type { ApprovalActivities, CredentialActivities, LeaseActivities } from '../activities/index.js';
import { TARGET_WRITE, summarized } from './activity-options.js';
import { bookkeeping } from './bookkeeping.js';
import { type ApprovalHost, Approvals, stagesOf } from './approvals.js';
import type { AccessRequestInput, CredentialView, ExtendArgs, ExtendResult, RequestState, RequestStateView, ReviewArgs, RevokeArgs, RevokeReason, RotateArgs, ShortenArgs } from './messages.js';
import { UpdateRejection } from './messages.js';
import { extendArgsSchema, reviewArgsSchema, revokeArgsSchema, rotateArgsSchema, shortenArgsSchema } from './message-schemas.js';
import { parseSignal, parseUpdate } from './signal-input.js';
import { AdoptionSteps } from './adoption.js';
import { BreakGlassSteps } from './break-glass.js';
import { closeUnapproved, renderDetails } from './lifecycle-steps.js';
import { Mutex } from './mutex.js';
import { describeFailure, removeUntilVerified } from './removal.js';
import { AccessExpiresAtKey, AccessStateKey } from './search-attributes.js';
import { UpdatableTimer } from './timer.js';

const book = () => bookkeeping<ApprovalActivities & LeaseActivities>();
/** Steps an operator looks for in the UI get a summary line. */
const bookAs = (summary: string) => bookkeeping<ApprovalActivities & LeaseActivities>(summary);
const targetAs = (summary: string) => proxyActivities<LeaseActivities & CredentialActivities>(summarized(TARGET_WRITE, summary));

const MS = 1000;

/**
 * The one state object of an access request's workflow, and the phases over it: policy and
 * approval stages → scheduled start → grant → lease → revoke. The workflow function wires the
 * messages to it and runs the phases in order; what a phase or a handler knows lives here.
 */
export class AccessLifecycle implements ApprovalHost {
  readonly state: RequestStateView;
  readonly approvals: Approvals;
  /** The lease's expiry: set by the verified grant, moved by extensions. */
  private readonly expiry = new UpdatableTimer(0);
  /** Extending (which renews the credential) and rotating both write the lease's credential: one at a time. */
  private readonly credentialLock = new Mutex();
  private readonly lease: { requestId: string; grantId: string; subjectId: string; entitlementId: string };
  /**
   * The first revoke (before the grant: a withdrawal); open stages and the lease end on it.
   * `claimed`: the actor came from a signal, which anyone with Temporal access can send, so
   * it is a claim the revocation activity attributes only if the API attested it.
   */
  private revokeRequest: (RevokeArgs & { claimed?: boolean }) | undefined;
  /** When the grant was first verified on the target: without re-approval, no extension runs a lease past this + the policy's maximum. */
  private grantVerifiedAtMs: number | undefined;
  /** A mover review, and an extension sent back for approval: both wait for the lease loop to run them. */
  private pendingReview: ReviewArgs | undefined;
  private pendingExtension: ExtendArgs | undefined;
  /** From the policy: extensions go back through approval stages. */
  private extendRequiresApproval = false;
  /** The policy's cap on a lease (and on each extension); the requested duration until the policy is known. */
  private maxDurationSeconds: number;
  private transitions = 0;
  /** Set only for a confirmed break-glass (docs/break-glass.md); no earlier run has it, so it needs no patch marker. */
  private readonly breakGlass: BreakGlassSteps | undefined;
  /** Set only for access reconciliation adopted (docs/micro-reviews.md); likewise new, so unpatched. */
  private readonly adoption: AdoptionSteps | undefined;

  constructor(private readonly input: AccessRequestInput) {
    const { requestId, grantId } = input;
    this.lease = { requestId, grantId, subjectId: input.subjectId, entitlementId: input.entitlementId };
    this.state = { requestId, status: 'pending_approval', removalAttempts: 0 };
    this.maxDurationSeconds = input.durationSeconds;
    this.approvals = new Approvals(requestId, this);
    this.breakGlass = input.breakGlass ? new BreakGlassSteps(this, { ...this.lease, timing: input.timing }) : undefined;
    this.adoption = input.adopted ? new AdoptionSteps(this, { ...this.lease, adopted: input.adopted }) : undefined;
  }

  get requesterId(): string {
    return this.input.requesterId;
  }

  get subjectId(): string {
    return this.input.subjectId;
  }

  get revokeRequested(): boolean {
    return this.revokeRequest !== undefined;
  }

  /** Idempotency key for the n-th audited transition of this run: stable across activity retries and replays. */
  nextKey(what: string): string {
    return `${workflowInfo().workflowId}/${++this.transitions}/${what}`;
  }

  setStatus(status: RequestState, note?: string): void {
    this.state.status = status;
    upsertSearchAttributes([{ key: AccessStateKey, value: status }]);
    setCurrentDetails(renderDetails(this.state, note));
  }

  details(note?: string): void {
    setCurrentDetails(renderDetails(this.state, note));
  }

  // ---- messages ----------------------------------------------------------------------------------

  requestRevoke(raw: unknown): void {
    const input = parseSignal('revoke', revokeArgsSchema, raw, (note) => this.ignoredSignal(note));
    if (!input.ok && !input.legacy) return;
    const args = (input.ok ? input.value : input.raw) as RevokeArgs;
    // First revoke wins; later ones (a second click, a leaver after a manual revoke) change nothing.
    if (!this.revokeRequest) this.revokeRequest = { reason: args.reason ?? 'manual', actorId: args.actorId ?? 'temporal-ui', comment: args.comment, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}), claimed: true };
  }

  requestReview(raw: unknown): void {
    const input = parseSignal('review', reviewArgsSchema, raw, (note) => this.ignoredSignal(note));
    if (!input.ok && !input.legacy) return;
    const args = (input.ok ? input.value : input.raw) as ReviewArgs;
    // Only an active lease is reviewed, and one review at a time.
    if (!this.pendingReview && this.state.status === 'active') this.pendingReview = args;
  }

  /** The workflow's own end of the lease (an adoption nobody can review); like a signal, the first revoke wins. */
  endLease(args: RevokeArgs): void {
    if (!this.revokeRequest) this.revokeRequest = args;
  }

  private ignoredSignal(note: string): void {
    this.state.ignoredSignals = (this.state.ignoredSignals ?? 0) + 1;
    this.details(note);
  }

  /** Without re-approval no extension runs a lease past its verified grant + the policy's maximum (before the grant: from now). */
  private beyondCap(durationSeconds: number): string | undefined {
    if (this.extendRequiresApproval) return undefined;
    const capMs = (this.grantVerifiedAtMs ?? Date.now()) + this.maxDurationSeconds * MS;
    if (Date.now() + durationSeconds * MS <= capMs) return undefined;
    return `without re-approval this lease ends by ${new Date(capMs).toISOString()} at the latest (${this.maxDurationSeconds} seconds after it was granted); a longer extension needs a new request`;
  }

  validateExtend(raw: ExtendArgs): void {
    const args = parseUpdate('extend', extendArgsSchema, raw);
    const { state } = this;
    if ((state.status !== 'active' && state.status !== 'granting') || this.revokeRequest) {
      throw ApplicationFailure.nonRetryable(`request is ${state.status}, not active`, UpdateRejection.NotActive);
    }
    if (this.pendingExtension || (this.approvals.isOpen && state.status === 'active')) {
      throw ApplicationFailure.nonRetryable('an extension is already waiting for approval', UpdateRejection.NotActive);
    }
    if (!Number.isInteger(args.durationSeconds) || args.durationSeconds <= 0 || args.durationSeconds > this.maxDurationSeconds) {
      throw ApplicationFailure.nonRetryable(`duration must be between 1 and ${this.maxDurationSeconds} seconds`, UpdateRejection.OutsidePolicy);
    }
    if (Date.now() + args.durationSeconds * MS <= this.expiry.deadline) {
      throw ApplicationFailure.nonRetryable('an extension must move the expiry later; revoke to end access sooner', UpdateRejection.OutsidePolicy);
    }
    const capped = this.beyondCap(args.durationSeconds);
    if (capped) throw ApplicationFailure.nonRetryable(capped, UpdateRejection.OutsidePolicy);
  }

  async extend(args: ExtendArgs): Promise<ExtendResult> {
    // The API may see the grant verified (the DB row) a moment before this workflow does.
    await condition(() => this.state.status !== 'granting');
    if (this.state.status !== 'active' || this.revokeRequest) {
      throw ApplicationFailure.nonRetryable(`request is ${this.state.status}, not active`, UpdateRejection.NotActive);
    }
    // Accepted while granting, the cap is known only now. Runs recorded before the cap took an
    // accepted extension as it came: they replay without the check (no marker).
    const capped = this.beyondCap(args.durationSeconds);
    if (capped && patched('cap-lease-total')) throw ApplicationFailure.nonRetryable(capped, UpdateRejection.OutsidePolicy);
    if (this.extendRequiresApproval) {
      // Policy wants a fresh approval: the lease loop runs the stages; the expiry moves only if approved.
      this.pendingExtension = { actorId: args.actorId, durationSeconds: args.durationSeconds, justification: args.justification, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}) };
      return { expiresAt: this.state.expiresAt!, pendingApproval: true };
    }
    await this.moveExpiry(args);
    return { expiresAt: this.state.expiresAt! };
  }

  validateShorten(raw: ShortenArgs): void {
    const args = parseUpdate('shorten', shortenArgsSchema, raw);
    // While a review or a re-approval is open, its stage deadline was fixed from the old expiry:
    // refused, as an extension is, rather than accepted and not enforced until the stage ends.
    if (this.state.status !== 'active' || this.revokeRequest || this.pendingExtension || this.pendingReview || this.approvals.isOpen) {
      throw ApplicationFailure.nonRetryable(`request is ${this.state.status}, not active`, UpdateRejection.NotActive);
    }
    const at = Date.parse(args.expiresAt);
    if (!(at > Date.now())) throw ApplicationFailure.nonRetryable('the new end must be in the future; revoke to end access now', UpdateRejection.OutsidePolicy);
    if (at >= this.expiry.deadline) throw ApplicationFailure.nonRetryable('a shortening must move the expiry earlier; extend to move it later', UpdateRejection.OutsidePolicy);
  }

  /** An earlier end needs no approval: access only shrinks. The credential's validity shrinks with it. */
  async shorten(args: ShortenArgs): Promise<ExtendResult> {
    const at = Date.parse(args.expiresAt);
    if (this.state.status !== 'active' || this.revokeRequest || !(at > Date.now()) || at >= this.expiry.deadline) {
      throw ApplicationFailure.nonRetryable(`request is ${this.state.status}, or the end moved meanwhile`, UpdateRejection.NotActive);
    }
    await this.moveExpiry({ actorId: args.actorId, justification: args.justification, durationSeconds: 0, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}) }, at);
    return { expiresAt: this.state.expiresAt! };
  }

  validateRotate(raw: RotateArgs): void {
    if (!raw?.actorId) throw ApplicationFailure.nonRetryable('actorId is required', UpdateRejection.NotEligible);
    parseUpdate('rotateCredential', rotateArgsSchema, raw);
    if (this.state.status !== 'active' || this.revokeRequest) {
      throw ApplicationFailure.nonRetryable(`request is ${this.state.status}, not active`, UpdateRejection.NotActive);
    }
    if (!this.state.credential) throw ApplicationFailure.nonRetryable('this lease has no credential to rotate', UpdateRejection.NoCredential);
  }

  rotateCredential(args: RotateArgs): Promise<CredentialView> {
    return this.credentialExclusive(async () => {
      const rotated = await targetAs('rotate the credential on the target').rotateCredential({ ...this.lease, actorId: args.actorId, ...(args.httpRequestId ? { httpRequestId: args.httpRequestId } : {}), idempotencyKey: this.nextKey('credential-rotated') });
      this.state.credential = rotated;
      this.details('credential rotated');
      return rotated;
    });
  }

  /**
   * Runs a credential write under the lock. Runs that began before the lock existed let an
   * overlapping extend and rotate interleave, and their histories record that order: replaying
   * them must not wait, so they skip the lock (the marker is written once, by new runs).
   */
  private credentialExclusive<T>(fn: () => Promise<T>): Promise<T> {
    return patched('serialise-credential-writes') ? this.credentialLock.runExclusive(fn) : fn();
  }

  // ---- phases ------------------------------------------------------------------------------------

  /** Policy, then its approval stages. Not approved: the request is closed and this returns false. */
  async approve(): Promise<boolean> {
    const { requestId } = this.input;
    if (this.breakGlass) return this.breakGlass.skipApprovals();
    if (this.adoption) return this.adoption.skipApprovals();
    this.details('evaluating policy');
    const policy = await bookAs('evaluate the approval policy').evaluatePolicy({
      requestId,
      requesterId: this.input.requesterId,
      subjectId: this.input.subjectId,
      entitlementId: this.input.entitlementId,
      durationSeconds: this.input.durationSeconds,
    });
    this.state.policyVersion = policy.policyVersion;
    this.maxDurationSeconds = policy.maxDurationSeconds;
    const stages = stagesOf(policy, this.input.timing);

    if (policy.effect === 'deny' || (policy.effect === undefined && stages.length === 0)) {
      const reason = policy.reason ?? 'no eligible approver';
      await book().closeUnapproved({ requestId, outcome: 'rejected', reason, fired: policy.fired, idempotencyKey: this.nextKey('no-approver') });
      this.setStatus('rejected', reason);
      return false;
    }
    if (policy.effect === 'auto_approve') {
      await book().recordAutoApproval({ requestId, policyVersion: policy.policyVersion, reason: policy.reason ?? 'policy', fired: policy.fired ?? [], idempotencyKey: this.nextKey('auto-approved') });
    }
    this.extendRequiresApproval = policy.extendRequiresApproval === true;
    const result = await this.approvals.run(stages, { purpose: 'request', policyVersion: policy.policyVersion, fired: policy.fired });
    if (result.outcome !== 'approved') {
      await closeUnapproved(this, result, this.revokeRequest);
      return false;
    }
    this.approvals.close();
    return true;
  }

  /** An optional start time: approved now, granted later. Withdrawn meanwhile: closed, and this returns false. */
  async awaitStart(): Promise<boolean> {
    const { requestId, startAt } = this.input;
    if (!startAt || Date.parse(startAt) <= Date.now()) return true;
    this.state.startAt = startAt;
    this.setStatus('scheduled', `access starts ${startAt}`);
    await book().recordScheduled({ requestId, startAt, idempotencyKey: this.nextKey('scheduled') });
    const withdrawn = await condition(() => this.revokeRequest !== undefined, Date.parse(startAt) - Date.now());
    if (!withdrawn) return true;
    this.setStatus('cancelled', 'withdrawn before the start time');
    await book().closeUnapproved({ requestId, outcome: 'cancelled', reason: this.revokeRequest?.comment ?? 'withdrawn before the start time', actorId: this.revokeRequest?.actorId, idempotencyKey: this.nextKey('cancelled') });
    return false;
  }

  /** Grants and reads the grant back. A grant that fails is removed (verified) and marked failed: false. */
  async grant(): Promise<boolean> {
    const { requestId, grantId, durationSeconds } = this.input;
    this.setStatus('granting');
    try {
      const granted = await targetAs('grant on the target').grantAccess({ ...this.lease, idempotencyKey: this.nextKey('granted') });
      if (granted.credential) this.state.credential = granted.credential;
      this.expiry.deadline = Date.now() + durationSeconds * MS;
      const verified = await targetAs('read the grant back from the target').verifyGranted({
        ...this.lease,
        expiresAt: new Date(this.expiry.deadline).toISOString(),
        idempotencyKey: this.nextKey('grant-verified'),
      });
      // The expiry counts from the moment the target reported the grant done (above, before the
      // read-back), not from the verification. verifyGranted stores that expiry with the verified
      // grant and returns it; a retried call that finds the grant verified already returns the
      // stored one, so the timer always follows the database row.
      this.expiry.deadline = Date.parse(verified.expiresAt);
      this.grantVerifiedAtMs = Date.parse(verified.verifiedAt);
    } catch (err) {
      if (isCancellation(err)) throw err;
      // A grant we could not complete must not leave half-access behind: remove and verify, then fail.
      this.state.lastError = describeFailure(err);
      await this.removeVerified('manual', { closeLease: false });
      this.setStatus('failed', this.state.lastError);
      await book().markFailed({ requestId, grantId, reason: this.state.lastError, idempotencyKey: this.nextKey('failed') });
      return false;
    }
    this.state.grantedAt = new Date().toISOString();
    this.state.expiresAt = new Date(this.expiry.deadline).toISOString();
    upsertSearchAttributes([{ key: AccessExpiresAtKey, value: new Date(this.expiry.deadline) }]);
    this.setStatus('active');
    if (this.breakGlass) await this.breakGlass.used();
    if (this.adoption) await this.adoption.held();
    return true;
  }

  /** The lease: sleeps until expiry or a revoke, running extensions and reviews as they come; returns why it ends. */
  async holdLease(): Promise<RevokeReason> {
    for (;;) {
      const woke = await this.expiry.wait(() => this.revokeRequest !== undefined || this.pendingExtension !== undefined || this.pendingReview !== undefined);
      if (woke === 'expired' || this.revokeRequest !== undefined) break;
      if (this.pendingExtension) {
        await this.approveExtension(this.pendingExtension);
        this.pendingExtension = undefined;
      } else if (this.pendingReview) {
        await this.review(this.pendingReview);
        this.pendingReview = undefined;
      }
      if (this.revokeRequest !== undefined) break;
    }
    return this.revokeRequest?.reason ?? 'expired';
  }

  /** Revokes, and returns only once the removal is verified on the target. */
  async revoke(reason: RevokeReason): Promise<void> {
    const { state, revokeRequest: by } = this;
    state.revokeReason = reason;
    state.revokeRequestedAt = new Date(by ? Date.now() : this.expiry.deadline).toISOString();
    this.setStatus('revoking');
    await bookAs(`revoke requested · ${reason}`).beginRevocation({
      requestId: this.input.requestId,
      grantId: this.input.grantId,
      reason,
      actorId: by?.actorId ?? 'system',
      comment: by?.comment,
      ...(by?.httpRequestId ? { httpRequestId: by.httpRequestId } : {}),
      // The activity attributes a claimed actor only where the API attested the request.
      ...(by?.claimed ? { signalActorClaimed: true } : {}),
      requestedAt: state.revokeRequestedAt,
      idempotencyKey: this.nextKey('revoking'),
    });
    await this.removeVerified(reason);
    if (this.breakGlass) await this.breakGlass.ended();
  }

  // ---- steps -------------------------------------------------------------------------------------

  /** A mover's access reviewed by their (new) manager; not approved in time → revoked as `mover`. */
  private async review(args: ReviewArgs): Promise<void> {
    const { requestId, grantId } = this.input;
    const stages = await book().reviewStages({ requestId, subjectId: this.input.subjectId, requesterId: this.input.requesterId, deadlineSeconds: args.deadlineSeconds });
    const { outcome } = stages.length ? await this.approvals.run(stages, { purpose: 'review', policyVersion: 'review', deadlineMs: this.expiry.deadline }) : { outcome: 'no_quorum' as const };
    this.approvals.close();
    if (outcome === 'approved' || outcome === 'withdrawn') return;
    await book().closeExtension({ requestId, grantId, outcome: 'refused', reason: `mover review ${outcome === 'no_quorum' ? 'had no eligible reviewer' : outcome}`, idempotencyKey: this.nextKey('review-refused') });
    this.revokeRequest ??= { reason: 'mover', actorId: 'review', comment: `not re-approved after a move (${outcome})` };
  }

  /** Re-approval of an extension (policy `extendRequiresApproval`): the lease stays active meanwhile. */
  private async approveExtension(ext: ExtendArgs): Promise<void> {
    const { requestId, grantId } = this.input;
    const again = await book().evaluatePolicy({ requestId, requesterId: this.input.requesterId, subjectId: this.input.subjectId, entitlementId: this.input.entitlementId, durationSeconds: ext.durationSeconds, purpose: 'extension' });
    let approved = again.effect === 'auto_approve';
    let why = again.reason ?? '';
    if (again.effect === 'route') {
      const result = await this.approvals.run(stagesOf(again, this.input.timing), { purpose: 'extension', policyVersion: again.policyVersion, deadlineMs: this.expiry.deadline });
      this.approvals.close();
      approved = result.outcome === 'approved';
      why = result.outcome === 'no_quorum' ? result.reason : result.outcome;
    }
    if (!approved) {
      await book().closeExtension({ requestId, grantId, outcome: 'refused', reason: why || 'not approved', idempotencyKey: this.nextKey('extension-refused') });
      this.details(`extension not approved (${why || 'not approved'})`);
      return;
    }
    await this.moveExpiry(ext);
  }

  /** Records the new expiry first, then moves the lease's timer (the lease loop wakes on the change). */
  private moveExpiry(ext: ExtendArgs, at?: number): Promise<void> {
    return this.credentialExclusive(async () => {
      const newExpiry = at ?? Date.now() + ext.durationSeconds * MS;
      if (this.state.credential) {
        // The credential must not end before the lease it belongs to (nor outlive it).
        const renewed = await targetAs('renew the credential for the extension').renewCredential({ ...this.lease, notAfter: new Date(newExpiry).toISOString(), idempotencyKey: this.nextKey('credential-renewed') });
        this.state.credential = renewed ?? { ...this.state.credential, notAfter: new Date(newExpiry).toISOString() };
      }
      await book().recordExtension({
        requestId: this.input.requestId,
        grantId: this.input.grantId,
        actorId: ext.actorId,
        justification: ext.justification,
        ...(ext.httpRequestId ? { httpRequestId: ext.httpRequestId } : {}),
        expiresAt: new Date(newExpiry).toISOString(),
        ...(at !== undefined ? { shortened: true } : {}),
        idempotencyKey: this.nextKey(at !== undefined ? 'shortened' : 'extended'),
      });
      this.expiry.deadline = newExpiry;
      this.state.expiresAt = new Date(newExpiry).toISOString();
      upsertSearchAttributes([{ key: AccessExpiresAtKey, value: new Date(newExpiry) }]);
      this.details();
    });
  }

  /**
   * Removes the membership and reads the target back until removal is confirmed. Never
   * returns unverified: past the deadline the lease is flagged `revocation_unverified`,
   * operators are alerted, and read-backs continue with a capped backoff.
   */
  private async removeVerified(why: RevokeReason, opts = { closeLease: true }): Promise<void> {
    const { requestId, grantId, timing } = this.input;
    const { state } = this;
    const deadline = timing.revokeVerifyDeadlineSeconds;
    const result = await removeUntilVerified(this.lease, why, timing, {
      attempt: () => void state.removalAttempts++,
      unverified: async (error, errorType) => {
        state.lastError = error;
        log.warn('revocation not verified within deadline', { grantId, deadlineSeconds: deadline });
        this.setStatus('revocation_unverified', `removal not verified after ${deadline}s: ${error}; retrying`);
        await bookAs('alert: removal not verified by the deadline').markRevocationUnverified({ requestId, grantId, error, errorType, idempotencyKey: this.nextKey('revocation-unverified') });
      },
      // The operator sees the error in the details and the alert; retries continue.
      stillFailing: (error) => {
        state.lastError = error;
        this.details(`removal still unverified: ${error}; retrying`);
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
      idempotencyKey: this.nextKey('revoked'),
    });
    state.lastError = undefined;
    this.setStatus('revoked');
  }
}
