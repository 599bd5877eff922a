import { isCancellation, log, proxyActivities } from '@temporalio/workflow';
import type { BreakGlassActivities, NotificationActivities } from '../activities/index.js';
import { NOTIFICATION, removalOverdue, summarized } from './activity-options.js';
import { bookkeeping } from './bookkeeping.js';
import type { AccessRequestInput, RequestStateView } from './messages.js';
import { describeFailure } from './removal.js';

const book = (summary: string) => bookkeeping<BreakGlassActivities>(summary);
/** The forced rotation retries like an overdue removal (no deadline): the secret the invoker saw must not outlive the lease. */
const onTarget = (timing: AccessRequestInput['timing'], summary: string) => proxyActivities<BreakGlassActivities>(summarized(removalOverdue(timing), summary));
const notices = proxyActivities<NotificationActivities>(NOTIFICATION);
const noticeOnDesk = (summary: string) => proxyActivities<BreakGlassActivities>(summarized(NOTIFICATION, summary));

/** What the steps need of the lease's state object (AccessLifecycle, ./lifecycle.ts). */
export interface BreakGlassHost {
  readonly state: RequestStateView;
  nextKey(what: string): string;
  details(note?: string): void;
}

type Lease = { requestId: string; grantId: string; subjectId: string; entitlementId: string };

/**
 * The break-glass branch of a lease (docs/break-glass.md), at three points of the usual
 * lifecycle: approvals skipped; once access is verified, the use audited, everyone told and the
 * post-use review opened; once the removal is verified, the forced credential rotation. Nothing
 * here holds up the lease: the notice is fire-and-forget and the review is awaited only at the end.
 */
export class BreakGlassSteps {
  /** The post-use review being opened and the incident ticket's comment: the lease does not wait for them, the close does. */
  private readonly pending: Array<Promise<unknown>> = [];

  constructor(
    private readonly host: BreakGlassHost,
    private readonly lease: Lease & { timing: AccessRequestInput['timing'] },
  ) {}

  /** Confirmed by an invoker: no approval stages; the grant row is a `break_glass` one. */
  async skipApprovals(): Promise<boolean> {
    this.host.details('break-glass: approvals skipped, granting at once');
    await book('break-glass: approvals skipped').recordBreakGlass({ ...this.ref(), idempotencyKey: this.host.nextKey('break-glass') });
    return true;
  }

  /** Access is verified: the use is audited, everyone is told at once, and the post-use review opens. */
  async used(): Promise<void> {
    const { requestId, grantId } = this.lease;
    let used: Awaited<ReturnType<BreakGlassActivities['breakGlassUsed']>>;
    try {
      used = await book('break-glass used: audit and recipients').breakGlassUsed({ ...this.ref(), idempotencyKey: this.host.nextKey('break-glass-used') });
    } catch (err) {
      // Only a non-retryable failure lands here; the lease must still run to its verified end.
      if (isCancellation(err)) throw err;
      log.warn('break-glass use not recorded', { requestId, error: describeFailure(err) });
      used = { recipientIds: [], details: {} };
    }
    if (used.recipientIds.length) {
      notices
        .notify({ event: 'break_glass.used', requestId, grantId, recipientIds: used.recipientIds, details: used.details, idempotencyKey: this.host.nextKey('break_glass.used') })
        .catch((err) => log.warn('break-glass notice not delivered', { requestId, error: describeFailure(err) }));
    }
    this.pending.push(
      book('break-glass: open the post-use review')
        .openPostUseReview({ ...this.ref(), idempotencyKey: this.host.nextKey('post-use-review') })
        .catch((err) => log.warn('post-use review not opened', { requestId, error: describeFailure(err) })),
      // Bounded like a notification: a desk that is down must not keep the lease workflow open.
      noticeOnDesk('break-glass used: comment on the incident ticket')
        .commentOnIncident({ ...this.ref(), idempotencyKey: this.host.nextKey('incident-comment') })
        .catch((err) => log.warn('incident ticket not told', { requestId, error: describeFailure(err) })),
    );
  }

  /** The lease ended and its removal is verified: a login credential still in use elsewhere gets a fresh secret. */
  async ended(): Promise<void> {
    try {
      const rotated = await onTarget(this.lease.timing, 'break-glass ended: force a credential rotation').rotateAfterBreakGlass({ ...this.ref(), idempotencyKey: this.host.nextKey('break-glass-rotated') });
      this.host.details(rotated.rotated ? 'break-glass ended: credential rotated' : `break-glass ended: ${rotated.why}`);
    } catch (err) {
      // Non-retryable (a misconfigured system): the lease is closed already; the operator sees it here and in the log.
      if (isCancellation(err)) throw err;
      this.host.state.lastError = describeFailure(err);
      this.host.details(`break-glass ended: credential rotation failed: ${this.host.state.lastError}`);
      log.warn('break-glass credential rotation failed', { requestId: this.lease.requestId, error: this.host.state.lastError });
    }
    await Promise.all(this.pending);
  }

  private ref(): Lease {
    const { requestId, grantId, subjectId, entitlementId } = this.lease;
    return { requestId, grantId, subjectId, entitlementId };
  }
}
