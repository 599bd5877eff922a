import {
  allHandlersFinished,
  condition,
  continueAsNew,
  getExternalWorkflowHandle,
  log,
  proxyActivities,
  setCurrentDetails,
  setHandler,
  workflowInfo,
} from '@temporalio/workflow';
import type { HrActivities, LeaseActivities } from '../activities/index.js';
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
import { AWAIT_REMOVALS, BOOKKEEPING, TARGET_WRITE } from './activity-options.js';
import { describeFailure, removeUntilVerified } from './removal.js';

// HR bookkeeping, and the revocation records of birthright grants (kept by the lease activities).
const book = proxyActivities<HrActivities & LeaseActivities>(BOOKKEEPING);
const target = proxyActivities<HrActivities>(TARGET_WRITE);
// A leaver is done only when every removal is verified: this read is retried until it is.
const untilRemoved = proxyActivities<HrActivities>(AWAIT_REMOVALS);

/** Events handled per run before continue-as-new keeps the history bounded. */
const EVENTS_PER_RUN = 100;
const SEEN_KEPT = 200;

/**
 * One long-lived workflow per identity (`identity/<id>`, see ./ids.ts), fed by HR events through
 * signal-with-start. Events apply in effective-time order; a leaver revokes everything the
 * identity holds and waits until every removal is verified; a mover gets new birthright at
 * once and loses what is no longer justified after the policy's grace period; an end date
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

  receive(e: HrEventRef): void {
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
    setCurrentDetails(`**${this.view.status}** — ${note}\n\nprocessed ${this.processed} HR event(s); ${this.queue.length} waiting`);
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
    this.queue.push(await book.recordContractEnd({ identityId: this.identityId }));
  }

  async handle(e: HrEventRef): Promise<void> {
    const { identityId, view } = this;
    this.seen.add(e.eventId);
    const r = await book.applyHrEvent({ eventId: e.eventId, identityId });
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
    if (e.type === 'rehire' || e.type === 'joiner') await target.enableAccounts({ identityId });
    const graceSeconds = await this.reconcileBirthright(e.type === 'joiner' || e.type === 'rehire');
    if (e.type === 'mover') {
      // Requested access was justified by the old role: the new manager re-approves it within the grace period.
      const { requestWorkflowIds } = await book.moverReviewTargets({ identityId });
      await Promise.all(
        requestWorkflowIds.map((id) =>
          getExternalWorkflowHandle(id)
            .signal(reviewSignal, { reason: 'mover', deadlineSeconds: Math.max(1, graceSeconds) })
            .catch((err) => log.warn('request workflow not signalled for review', { workflowId: id, error: describeFailure(err) })),
        ),
      );
    }
  }

  /** Grants what the attributes justify now; revokes what they no longer do (now, or after the mover grace). */
  async reconcileBirthright(revokeNow: boolean): Promise<number> {
    const { identityId } = this;
    const plan = await book.planBirthright({ identityId });
    if (plan.errors.length) log.warn('birthright rules could not be evaluated', { identityId, errors: plan.errors });
    await Promise.all(plan.grant.map((g) => target.grantBirthright({ identityId, entitlementId: g.entitlementId, grantId: g.grantId, rules: plan.rules, policyVersion: plan.policyVersion })));
    if (plan.revoke.length === 0) return plan.graceSeconds;
    if (revokeNow || plan.graceSeconds === 0) {
      await Promise.all(plan.revoke.map((g) => this.revokeBirthright(g, 'mover')));
      return plan.graceSeconds;
    }
    // Movers keep the old access for the grace period; the plan is recomputed when it ends.
    this.reconcileAt = Date.now() + plan.graceSeconds * 1000;
    return plan.graceSeconds;
  }

  private async revokeBirthright(g: { grantId: string; entitlementId: string }, reason: RevokeReason): Promise<void> {
    const key = (what: string) => `${workflowInfo().workflowId}/${g.grantId}/${what}`;
    await book.beginRevocation({ grantId: g.grantId, reason, actorId: 'hr', requestedAt: new Date().toISOString(), idempotencyKey: key('revoking') });
    const lease = { grantId: g.grantId, subjectId: this.identityId, entitlementId: g.entitlementId };
    const result = await removeUntilVerified(lease, reason, this.timing, {
      attempt: () => {},
      unverified: (error, errorType) => book.markRevocationUnverified({ grantId: g.grantId, error, errorType, idempotencyKey: key('revocation-unverified') }),
      stillFailing: (error) => this.details(`removal of ${g.grantId} still unverified: ${error}`),
    });
    await book.completeRevocation({ grantId: g.grantId, changed: result.changed, retainedBy: result.retainedBy, verifiedAt: result.verifiedAt, idempotencyKey: key('revoked') });
  }

  /** Revokes everything in parallel, then waits until every removal is verified. */
  private async leave(e: HrEventRef): Promise<void> {
    const { identityId, view } = this;
    const t = await book.leaverTargets({ identityId });
    const leaver: NonNullable<IdentityStateView['leaver']> = { eventId: e.eventId, phase: 'revoking', grants: t.requestWorkflowIds.length + t.birthright.length };
    view.leaver = leaver;
    this.details(`leaver: revoking ${leaver.grants} grant(s)`);
    await Promise.all([
      // Requested access is revoked by its own lease workflow (which verifies the removal).
      ...t.requestWorkflowIds.map((id) =>
        getExternalWorkflowHandle(id)
          .signal(revokeSignal, { reason: 'leaver', actorId: 'hr', comment: 'leaver' })
          .catch((err) => log.warn('request workflow not signalled (already closed?)', { workflowId: id, error: describeFailure(err) })),
      ),
      ...t.birthright.map((g) => this.revokeBirthright(g, 'leaver')),
    ]);
    leaver.phase = 'verifying';
    this.details('leaver: waiting for every removal to be verified');
    const { lastVerifiedAt } = await untilRemoved.awaitIdentityRemovals({ identityId });
    const disabled = await target.disableAccounts({ identityId });
    await book.completeLeaver({ eventId: e.eventId, identityId, lastVerifiedAt, disabledSystems: disabled.changed });
    leaver.phase = 'done';
    this.details('leaver: all access removed and verified');
  }
}
