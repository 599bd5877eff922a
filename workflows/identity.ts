import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  isCancellation,
  log,
  patched,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  sleep,
  workflowInfo,
} from '@temporalio/workflow';
import type { HrActivities, LeaseActivities, MicroReviewActivities } from '../activities/index.js';
import {
  type HrEventRef,
  type IdentityInput,
  type IdentityStateView,
  type RevokeReason,
  hrEventSignal,
  identityStateQuery,
  reviewSignal,
  revokeSignal,
} from './messages.js';
import { AWAIT_REMOVALS, NOTIFICATION, TARGET_WRITE } from './activity-options.js';
import { bookkeeping } from './bookkeeping.js';
import { hrEventRefSchema } from './message-schemas.js';
import { describeFailure, failureType, removeUntilVerified } from './removal.js';
import { parseSignal } from './signal-input.js';

// HR bookkeeping, the revocation records of birthright grants (kept by the lease activities), a mover's micro-reviews.
const book = () => bookkeeping<HrActivities & LeaseActivities & MicroReviewActivities>();
const target = proxyActivities<HrActivities>(TARGET_WRITE);
// A leaver is done only when every removal is verified: this read is retried until it is.
const untilRemoved = proxyActivities<HrActivities>(AWAIT_REMOVALS);

// The stuck-leaver alert is bounded like a notification: it never holds up the retries it reports on.
const alerts = proxyActivities<HrActivities>(NOTIFICATION);

type Failure = NonNullable<IdentityStateView['failures']>[number];
const FAILURES_KEPT = 20;

/** Events handled per run before continue-as-new keeps the history bounded. */
const EVENTS_PER_RUN = 100;
const SEEN_KEPT = 200;

/**
 * One long-lived workflow per identity (`identity/<id>`, see ./ids.ts), fed by HR events through
 * signal-with-start. Events apply in effective-time order; a leaver revokes everything the
 * identity holds and waits until every removal is verified; a mover gets new birthright at
 * once, loses what is no longer justified after the policy's grace period, and has each
 * requested grant micro-reviewed by the new manager within that grace; an end date
 * acts as a scheduled leaver.
 */
export async function identityWorkflow(input: IdentityInput): Promise<void> {
  const identity = new IdentityLifecycle(input);
  setHandler(hrEventSignal, (e) => identity.receive(e));
  setHandler(identityStateQuery, () => identity.snapshot());

  for (;;) {
    const now = Date.now();
    const due = identity.takeDue(now);
    if (due) {
      await identity.handle(due);
      continue;
    }
    if (identity.reconcileAt !== undefined && identity.reconcileAt <= now) {
      identity.reconcileAt = undefined;
      await identity.reconcileBirthright(true);
      continue;
    }
    if (identity.contractEndAt !== undefined && identity.contractEndAt <= now) {
      identity.contractEndAt = undefined;
      await identity.endContract();
      continue;
    }
    if (identity.processed >= EVENTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof identityWorkflow>(identity.carriedOver());
    }
    const wakeAt = identity.nextWakeAt();
    const seenArrivals = identity.arrivals;
    identity.details(identity.queue.length ? `next event effective ${identity.queue[0]!.effectiveAt}` : 'waiting for HR events');
    if (wakeAt === Infinity) await condition(() => identity.arrivals !== seenArrivals);
    else await condition(() => identity.arrivals !== seenArrivals, Math.max(0, wakeAt - Date.now()));
  }
}

/** The identity workflow's one state object: the event queue, the timers it waits for, and the steps over them. */
class IdentityLifecycle {
  readonly queue: HrEventRef[];
  /** Event ids already handled (kept across continue-as-new, bounded). */
  private readonly seen: Set<string>;
  /** When a mover's grace period ends and birthright is reconciled again. */
  reconcileAt: number | undefined;
  /** When the contract ends: a leaver HR may not send. */
  contractEndAt: number | undefined;
  arrivals = 0;
  processed = 0;
  private readonly identityId: string;
  private readonly timing: IdentityInput['timing'];
  private readonly view: IdentityStateView;

  constructor(input: IdentityInput) {
    this.identityId = input.identityId;
    this.timing = input.timing;
    this.queue = [...(input.pending ?? [])];
    this.seen = new Set<string>(input.seen ?? []);
    this.reconcileAt = input.reconcileAt;
    this.contractEndAt = input.contractEndAt;
    this.view = { identityId: input.identityId, status: 'unknown', pendingEvents: this.queue, processed: 0 };
  }

  receive(raw: unknown): void {
    const input = parseSignal('hrEvent', hrEventRefSchema, raw, (note) => {
      this.view.ignoredSignals = (this.view.ignoredSignals ?? 0) + 1;
      this.details(note);
    });
    if (!input.ok && !input.legacy) return;
    const e = (input.ok ? input.value : input.raw) as HrEventRef;
    // Redelivery of the same event (HR retries, our own re-signal) is a no-op.
    if (this.seen.has(e.eventId) || this.queue.some((q) => q.eventId === e.eventId)) return;
    this.queue.push(e);
    this.arrivals++;
  }

  snapshot(): IdentityStateView {
    const { reconcileAt, contractEndAt } = this;
    return {
      ...this.view,
      pendingEvents: [...this.queue],
      ...(reconcileAt ? { birthrightReconcileAt: new Date(reconcileAt).toISOString() } : {}),
      ...(contractEndAt ? { contractEndAt: new Date(contractEndAt).toISOString() } : {}),
    };
  }

  details(note: string): void {
    const { failures, ignoredSignals } = this.view;
    const extra = [failures?.length ? `${failures.length} step(s) failed and recorded (see the identityState query)` : '', ignoredSignals ? `${ignoredSignals} invalid signal(s) ignored` : ''].filter(Boolean);
    setCurrentDetails([`**${this.view.status}** — ${note}`, `processed ${this.processed} HR event(s); ${this.queue.length} waiting`, ...extra].join('\n\n'));
  }

  /** The next event in effective-time order, if it is due. */
  takeDue(now: number): HrEventRef | undefined {
    const { queue } = this;
    queue.sort((a, b) => Date.parse(a.effectiveAt) - Date.parse(b.effectiveAt) || a.sequence - b.sequence);
    return queue[0] && Date.parse(queue[0].effectiveAt) <= now ? queue.shift() : undefined;
  }

  nextWakeAt(): number {
    return Math.min(this.queue[0] ? Date.parse(this.queue[0].effectiveAt) : Infinity, this.reconcileAt ?? Infinity, this.contractEndAt ?? Infinity);
  }

  carriedOver(): IdentityInput {
    const { identityId, timing, queue, reconcileAt, contractEndAt } = this;
    return {
      version: 1,
      identityId,
      timing,
      pending: queue,
      seen: [...this.seen].slice(-SEEN_KEPT),
      ...(reconcileAt !== undefined ? { reconcileAt } : {}),
      ...(contractEndAt !== undefined ? { contractEndAt } : {}),
    };
  }

  /** The contract ended: a leaver HR did not send (or has not sent yet), recorded in the inbox. */
  async endContract(): Promise<void> {
    this.queue.push(await book().recordContractEnd({ identityId: this.identityId }));
  }

  async handle(e: HrEventRef): Promise<void> {
    const { identityId, view } = this;
    this.seen.add(e.eventId);
    const r = await book().applyHrEvent({ eventId: e.eventId, identityId });
    this.processed++;
    view.processed = this.processed;
    view.status = r.status;
    view.lastEvent = { eventId: e.eventId, type: e.type, outcome: r.outcome };
    if (r.outcome !== 'applied') {
      this.details(`${e.type} #${e.sequence} ${r.outcome}`);
      return;
    }
    if (e.type === 'leaver') {
      this.reconcileAt = undefined;
      this.contractEndAt = undefined;
      await this.leave(e);
      return;
    }
    this.contractEndAt = r.endDate ? Date.parse(r.endDate) : undefined;
    this.details(`${e.type} #${e.sequence} applied`);
    // A rehire starts clean: accounts unlocked, birthright recomputed from the new attributes.
    if (e.type === 'rehire' || e.type === 'joiner') await this.recorded('enable_accounts', identityId, () => target.enableAccounts({ identityId }));
    const graceSeconds = await this.reconcileBirthright(e.type === 'joiner' || e.type === 'rehire');
    if (e.type === 'mover') {
      if (patched('mover-review-as-micro-review')) {
        // Requested access was justified by the old role: each live grant becomes a micro-review
        // by the new manager (docs/micro-reviews.md), due when the grace ends and revoked by its
        // campaign if still undecided then. Runs recorded before signal the leases instead (below).
        const dueAt = new Date(Date.now() + Math.max(1, graceSeconds) * 1000).toISOString();
        await this.recorded('open_review', identityId, () => book().openMoverReviews({ identityId, eventId: e.eventId, dueAt }));
        return;
      }
      // Requested access was justified by the old role: the new manager re-approves it within the grace period.
      const { requestWorkflowIds } = await book().moverReviewTargets({ identityId });
      await Promise.all(
        requestWorkflowIds.map((id) =>
          getExternalWorkflowHandle(id)
            .signal(reviewSignal, { reason: 'mover', deadlineSeconds: Math.max(1, graceSeconds) })
            .catch((err) => {
              log.warn('request workflow not signalled for review', { workflowId: id, error: describeFailure(err) });
              this.recordFailure('signal_review', id, err);
            }),
        ),
      );
    }
  }

  /** Grants what the attributes justify now; revokes what they no longer do (now, or after the mover grace). */
  async reconcileBirthright(revokeNow: boolean): Promise<number> {
    const { identityId } = this;
    const plan = await book().planBirthright({ identityId });
    if (plan.errors.length) log.warn('birthright rules could not be evaluated', { identityId, errors: plan.errors });
    // One grant failing (its target down past the write's bound) must not fail the others, nor the workflow.
    await Promise.all(
      plan.grant.map((g) =>
        this.recorded(
          'grant_birthright',
          g.grantId,
          () => target.grantBirthright({ identityId, entitlementId: g.entitlementId, grantId: g.grantId, rules: plan.rules, policyVersion: plan.policyVersion }),
          // A grant left `granting` would count as a live justification: it is marked failed.
          (errorType) => book().markBirthrightFailed({ identityId, grantId: g.grantId, errorType }),
        ),
      ),
    );
    if (plan.revoke.length === 0) return plan.graceSeconds;
    if (revokeNow || plan.graceSeconds === 0) {
      await Promise.all(plan.revoke.map((g) => this.revokeBirthright(g, 'mover')));
      return plan.graceSeconds;
    }
    // Movers keep the old access for the grace period; the plan is recomputed when it ends.
    this.reconcileAt = Date.now() + plan.graceSeconds * 1000;
    return plan.graceSeconds;
  }

  /**
   * Runs a target step whose failure is recorded (state, details, a log line with the error
   * type only) instead of failing the identity workflow. Runs recorded before that failed on
   * it, and replay so (no marker).
   */
  private async recorded(step: Failure['step'], ref: string, fn: () => Promise<unknown>, after?: (errorType: string) => Promise<void>): Promise<void> {
    try {
      await fn();
    } catch (err) {
      if (isCancellation(err) || !patched('record-identity-step-failures')) throw err;
      this.recordFailure(step, ref, err);
      await after?.(failureType(err));
    }
  }

  private recordFailure(step: Failure['step'], ref: string, err: unknown): void {
    const failure: Failure = { step, ref, errorType: failureType(err), at: new Date().toISOString() };
    const failures = (this.view.failures ??= []);
    failures.push(failure);
    failures.splice(0, Math.max(0, failures.length - FAILURES_KEPT));
    // Error types and opaque refs only: a connector's message can name a directory account.
    log.warn('identity step failed; recorded, continuing', { identityId: this.identityId, step, ref, errorType: failure.errorType });
    this.details(`${step.replace('_', ' ')} failed for ${ref} (${failure.errorType}); recorded`);
  }

  private async revokeBirthright(g: { grantId: string; entitlementId: string }, reason: RevokeReason): Promise<void> {
    const key = (what: string) => `${workflowInfo().workflowId}/${g.grantId}/${what}`;
    await book().beginRevocation({ grantId: g.grantId, reason, actorId: 'hr', requestedAt: new Date().toISOString(), idempotencyKey: key('revoking') });
    const lease = { grantId: g.grantId, subjectId: this.identityId, entitlementId: g.entitlementId };
    const result = await removeUntilVerified(lease, reason, this.timing, {
      attempt: () => {},
      unverified: (error, errorType) => book().markRevocationUnverified({ grantId: g.grantId, error, errorType, idempotencyKey: key('revocation-unverified') }),
      stillFailing: (error) => this.details(`removal of ${g.grantId} still unverified: ${error}`),
    });
    await book().completeRevocation({ grantId: g.grantId, changed: result.changed, retainedBy: result.retainedBy, verifiedAt: result.verifiedAt, idempotencyKey: key('revoked') });
  }

  /** Revokes everything in parallel, then waits until every removal is verified. */
  private async leave(e: HrEventRef): Promise<void> {
    const { identityId, view } = this;
    const t = await book().leaverTargets({ identityId });
    const leaver: NonNullable<IdentityStateView['leaver']> = { eventId: e.eventId, phase: 'revoking', grants: t.requestWorkflowIds.length + t.birthright.length };
    view.leaver = leaver;
    this.details(`leaver: revoking ${leaver.grants} grant(s)`);
    // The deadline counts from here: a birthright removal that never verifies is as stuck as a request's.
    const stuck = new StuckLeaver(e, leaver, identityId, this.timing);
    const pendingBirthright = new Set(t.birthright.map((g) => g.grantId));
    const removals = async () => {
      await Promise.all([
        // Requested access is revoked by its own lease workflow (which verifies the removal).
        ...t.requestWorkflowIds.map((id) =>
          getExternalWorkflowHandle(id)
            .signal(revokeSignal, { reason: 'leaver', actorId: 'hr', comment: 'leaver' })
            .catch((err) => {
              // Already closed is the usual cause; either way the removal wait below still
              // covers its grant, and the stuck-leaver alert fires if it never ends.
              log.warn('request workflow not signalled (already closed?)', { workflowId: id, error: describeFailure(err) });
              (leaver.unsignalled ??= []).push(id);
              this.recordFailure('signal_revoke', id, err);
            }),
        ),
        ...t.birthright.map((g) => this.revokeBirthright(g, 'leaver').then(() => void pendingBirthright.delete(g.grantId))),
      ]);
      leaver.phase = 'verifying';
      this.details('leaver: waiting for every removal to be verified');
      return untilRemoved.awaitIdentityRemovals({ identityId });
    };
    const { lastVerifiedAt } = await stuck.watch(removals(), () => [...pendingBirthright]);
    leaver.phase = 'disabling';
    const disabled = await stuck.disableAccounts((err) => this.recordFailure('disable_accounts', identityId, err));
    await book().completeLeaver({ eventId: e.eventId, identityId, lastVerifiedAt, disabledSystems: disabled.changed });
    leaver.phase = 'done';
    this.details('leaver: all access removed and verified');
  }
}

/**
 * A leaver's two waits that can go on for ever: every removal verified (the read is retried
 * without limit), and the account disabling (each try bounded, then tried again). Neither gives
 * up; past the deadline each raises the stuck-leaver alert once. Runs recorded before the alert
 * existed wait as they did (no `alert-stuck-leaver` marker: no timer, one disabling call).
 */
class StuckLeaver {
  private readonly sinceMs = Date.now();
  private readonly alertAtMs: number;
  private readonly alerted = new Set<'removals' | 'disable_accounts'>();
  private readonly alerting = patched('alert-stuck-leaver');

  constructor(
    private readonly event: HrEventRef,
    private readonly leaver: NonNullable<IdentityStateView['leaver']>,
    private readonly identityId: string,
    private readonly timing: IdentityInput['timing'],
  ) {
    this.alertAtMs = this.sinceMs + (timing.leaverAlertAfterSeconds ?? timing.revokeVerifyDeadlineSeconds * 2) * 1000;
  }

  /** Waits for the removals; past the deadline alerts once (with the birthright grants still pending) and goes on waiting. */
  async watch<T>(removals: Promise<T>, pendingGrantIds: () => string[]): Promise<T> {
    if (!this.alerting) return removals;
    let settled = false;
    // Settles the flag either way, so a cancelled wait never sits as an unhandled rejection.
    const watched = removals.finally(() => void (settled = true));
    watched.catch(() => undefined);
    if (!(await condition(() => settled, Math.max(0, this.alertAtMs - Date.now())))) this.alert('removals', pendingGrantIds());
    return watched;
  }

  async disableAccounts(failed: (err: unknown) => void): Promise<{ changed: string[] }> {
    if (!this.alerting) return target.disableAccounts({ identityId: this.identityId });
    for (;;) {
      try {
        return await target.disableAccounts({ identityId: this.identityId });
      } catch (err) {
        if (isCancellation(err)) throw err;
        // One system down (each try is bounded by TARGET_WRITE) must not end the leaver: record, alert once late, try again.
        failed(err);
        if (Date.now() >= this.alertAtMs) this.alert('disable_accounts', []);
        await sleep(`${this.timing.verifyMaxIntervalSeconds}s`);
      }
    }
  }

  /** Fire and forget, once per wait: the alert must never hold up the retries it reports on. */
  private alert(stuckOn: 'removals' | 'disable_accounts', pendingGrantIds: string[]): void {
    if (this.alerted.has(stuckOn)) return;
    this.alerted.add(stuckOn);
    const { identityId, event, leaver } = this;
    leaver.alertedAt ??= new Date().toISOString();
    log.warn('leaver stuck past its deadline; alerting', { identityId, eventId: event.eventId, stuckOn });
    alerts
      .alertStuckLeaver({
        identityId,
        eventId: event.eventId,
        pendingGrantIds,
        sinceSeconds: Math.round((Date.now() - this.sinceMs) / 1000),
        idempotencyKey: `${workflowInfo().workflowId}/${event.eventId}/stuck-${stuckOn}`,
      })
      .catch((err) => log.warn('stuck-leaver alert not delivered', { identityId, stuckOn, error: describeFailure(err) }));
  }
}
