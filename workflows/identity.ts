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
import type { createActivities } from '../activities/index.js';
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
import { BOOKKEEPING, TARGET_WRITE } from './activity-options.js';
import { describeFailure, removeUntilVerified } from './removal.js';

type Activities = ReturnType<typeof createActivities>;

const book = proxyActivities<Activities>(BOOKKEEPING);
const target = proxyActivities<Activities>(TARGET_WRITE);
// A leaver is done only when every removal is verified: this read is retried until it is.
const untilRemoved = proxyActivities<Activities>({
  startToCloseTimeout: '15s',
  retry: { initialInterval: '250ms', backoffCoefficient: 1.5, maximumInterval: '5s' },
});

/** Events handled per run before continue-as-new keeps the history bounded. */
const EVENTS_PER_RUN = 100;
const SEEN_KEPT = 200;

/**
 * One long-lived workflow per identity (`identity/<id>`), fed by HR events through
 * signal-with-start. Events apply in effective-time order; a leaver revokes everything the
 * identity holds and waits until every removal is verified; a mover gets new birthright at
 * once and loses what is no longer justified after the policy's grace period; an end date
 * acts as a scheduled leaver.
 */
export async function identityWorkflow(input: IdentityInput): Promise<void> {
  const { identityId, timing } = input;
  const queue: HrEventRef[] = [...(input.pending ?? [])];
  const seen = new Set<string>(input.seen ?? []);
  let reconcileAt = input.reconcileAt;
  let contractEndAt = input.contractEndAt;
  let arrivals = 0;
  let processed = 0;
  const view: IdentityStateView = { identityId, status: 'unknown', pendingEvents: queue, processed: 0 };

  setHandler(hrEventSignal, (e) => {
    // Redelivery of the same event (HR retries, our own re-signal) is a no-op.
    if (seen.has(e.eventId) || queue.some((q) => q.eventId === e.eventId)) return;
    queue.push(e);
    arrivals++;
  });
  setHandler(identityStateQuery, () => ({
    ...view,
    pendingEvents: [...queue],
    ...(reconcileAt ? { birthrightReconcileAt: new Date(reconcileAt).toISOString() } : {}),
    ...(contractEndAt ? { contractEndAt: new Date(contractEndAt).toISOString() } : {}),
  }));

  const details = (note: string) => setCurrentDetails(`**${view.status}** — ${note}\n\nprocessed ${processed} HR event(s); ${queue.length} waiting`);

  for (;;) {
    const now = Date.now();
    queue.sort((a, b) => Date.parse(a.effectiveAt) - Date.parse(b.effectiveAt) || a.sequence - b.sequence);
    const due = queue[0] && Date.parse(queue[0].effectiveAt) <= now ? queue.shift() : undefined;
    if (due) {
      await handle(due);
      continue;
    }
    if (reconcileAt !== undefined && reconcileAt <= now) {
      reconcileAt = undefined;
      await reconcileBirthright(true);
      continue;
    }
    if (contractEndAt !== undefined && contractEndAt <= now) {
      contractEndAt = undefined;
      // The contract ended: a leaver HR did not send (or has not sent yet), recorded in the inbox.
      queue.push(await book.recordContractEnd({ identityId }));
      continue;
    }
    if (processed >= EVENTS_PER_RUN || workflowInfo().continueAsNewSuggested) {
      await condition(allHandlersFinished);
      await continueAsNew<typeof identityWorkflow>({
        version: 1,
        identityId,
        timing,
        pending: queue,
        seen: [...seen].slice(-SEEN_KEPT),
        ...(reconcileAt !== undefined ? { reconcileAt } : {}),
        ...(contractEndAt !== undefined ? { contractEndAt } : {}),
      });
    }
    const wakeAt = Math.min(queue[0] ? Date.parse(queue[0].effectiveAt) : Infinity, reconcileAt ?? Infinity, contractEndAt ?? Infinity);
    const seenArrivals = arrivals;
    details(queue.length ? `next event effective ${queue[0]!.effectiveAt}` : 'waiting for HR events');
    if (wakeAt === Infinity) await condition(() => arrivals !== seenArrivals);
    else await condition(() => arrivals !== seenArrivals, Math.max(0, wakeAt - Date.now()));
  }

  async function handle(e: HrEventRef): Promise<void> {
    seen.add(e.eventId);
    const r = await book.applyHrEvent({ eventId: e.eventId, identityId });
    processed++;
    view.processed = processed;
    view.status = r.status;
    view.lastEvent = { eventId: e.eventId, type: e.type, outcome: r.outcome };
    if (r.outcome !== 'applied') {
      details(`${e.type} #${e.sequence} ${r.outcome}`);
      return;
    }
    if (e.type === 'leaver') {
      reconcileAt = undefined;
      contractEndAt = undefined;
      await leave(e);
      return;
    }
    contractEndAt = r.endDate ? Date.parse(r.endDate) : undefined;
    details(`${e.type} #${e.sequence} applied`);
    // A rehire starts clean: accounts unlocked, birthright recomputed from the new attributes.
    if (e.type === 'rehire' || e.type === 'joiner') await target.enableAccounts({ identityId });
    const graceSeconds = await reconcileBirthright(e.type === 'joiner' || e.type === 'rehire');
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
  async function reconcileBirthright(revokeNow: boolean): Promise<number> {
    const plan = await book.planBirthright({ identityId });
    if (plan.errors.length) log.warn('birthright rules could not be evaluated', { identityId, errors: plan.errors });
    await Promise.all(plan.grant.map((g) => target.grantBirthright({ identityId, entitlementId: g.entitlementId, grantId: g.grantId, rules: plan.rules, policyVersion: plan.policyVersion })));
    if (plan.revoke.length === 0) return plan.graceSeconds;
    if (revokeNow || plan.graceSeconds === 0) {
      await Promise.all(plan.revoke.map((g) => revokeBirthright(g, 'mover')));
      return plan.graceSeconds;
    }
    // Movers keep the old access for the grace period; the plan is recomputed when it ends.
    reconcileAt = Date.now() + plan.graceSeconds * 1000;
    return plan.graceSeconds;
  }

  async function revokeBirthright(g: { grantId: string; entitlementId: string }, reason: RevokeReason): Promise<void> {
    const key = (what: string) => `${workflowInfo().workflowId}/${g.grantId}/${what}`;
    await book.beginRevocation({ grantId: g.grantId, reason, actorId: 'hr', requestedAt: new Date().toISOString(), idempotencyKey: key('revoking') });
    const lease = { grantId: g.grantId, subjectId: identityId, entitlementId: g.entitlementId };
    const result = await removeUntilVerified(lease, reason, timing, {
      attempt: () => {},
      unverified: (error, errorType) => book.markRevocationUnverified({ grantId: g.grantId, error, errorType, idempotencyKey: key('revocation-unverified') }),
      stillFailing: (error) => details(`removal of ${g.grantId} still unverified: ${error}`),
    });
    await book.completeRevocation({ grantId: g.grantId, changed: result.changed, retainedBy: result.retainedBy, verifiedAt: result.verifiedAt, idempotencyKey: key('revoked') });
  }

  /** Revokes everything in parallel, then waits until every removal is verified. */
  async function leave(e: HrEventRef): Promise<void> {
    const t = await book.leaverTargets({ identityId });
    view.leaver = { eventId: e.eventId, phase: 'revoking', grants: t.requestWorkflowIds.length + t.birthright.length };
    details(`leaver: revoking ${view.leaver.grants} grant(s)`);
    await Promise.all([
      // Requested access is revoked by its own lease workflow (which verifies the removal).
      ...t.requestWorkflowIds.map((id) =>
        getExternalWorkflowHandle(id)
          .signal(revokeSignal, { reason: 'leaver', actorId: 'hr', comment: 'leaver' })
          .catch((err) => log.warn('request workflow not signalled (already closed?)', { workflowId: id, error: describeFailure(err) })),
      ),
      ...t.birthright.map((g) => revokeBirthright(g, 'leaver')),
    ]);
    view.leaver.phase = 'verifying';
    details('leaver: waiting for every removal to be verified');
    const { lastVerifiedAt } = await untilRemoved.awaitIdentityRemovals({ identityId });
    const disabled = await target.disableAccounts({ identityId });
    await book.completeLeaver({ eventId: e.eventId, identityId, lastVerifiedAt, disabledSystems: disabled.changed });
    view.leaver.phase = 'done';
    details('leaver: all access removed and verified');
  }
}
