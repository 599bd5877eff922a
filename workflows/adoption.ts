import { isCancellation, log, proxyActivities } from '@temporalio/workflow';
import type { AdoptionActivities } from '../activities/index.js';
import { BOOKKEEPING, summarized } from './activity-options.js';
import type { RevokeArgs } from './messages.js';
import { describeFailure } from './removal.js';

const book = (summary: string) => proxyActivities<AdoptionActivities>(summarized(BOOKKEEPING, summary));

/** What the steps need of the lease's state object (AccessLifecycle, ./lifecycle.ts). */
export interface AdoptionHost {
  nextKey(what: string): string;
  details(note?: string): void;
  /** Ends the lease from within (the workflow's own decision, not a signal's claim). */
  endLease(args: RevokeArgs): void;
}

type Lease = { requestId: string; grantId: string; subjectId: string; entitlementId: string };

/**
 * The adopted branch of a lease (docs/micro-reviews.md): reconciliation found the membership with
 * no grant and the policy asks for a review rather than a finding. Approvals are skipped (the
 * access exists already); once the lease holds it, its micro-review opens, and the review decides:
 * keep → the lease runs on; revoke, or undecided at the deadline → the usual verified removal.
 * Access nobody can review is not left standing: it is removed (reason `reconciliation`).
 */
export class AdoptionSteps {
  constructor(
    private readonly host: AdoptionHost,
    private readonly lease: Lease & { findingId: string },
  ) {}

  /** The grant row is a `discovered` one from the start; the finding points at it. */
  async skipApprovals(): Promise<boolean> {
    this.host.details('adopted by reconciliation: approvals skipped, the membership exists already');
    await book('adopted: approvals skipped').recordAdoption({ ...this.lease, idempotencyKey: this.host.nextKey('adopted') });
    return true;
  }

  /** The lease holds the membership: its review opens now, or the access goes. */
  async held(): Promise<void> {
    let why: string | undefined;
    try {
      const r = await book('adopted: open its micro-review').openAdoptionReview({ ...this.lease, idempotencyKey: this.host.nextKey('adoption-review') });
      if ('campaignId' in r) {
        this.host.details('adopted by reconciliation: under review');
        return;
      }
      // Under review already (a retried start) is fine; anything else leaves nobody to vouch for it.
      if (r.skipped === 'already_open') return;
      why = r.skipped === 'self' ? 'only its holder could review it' : `its review could not open (${r.skipped})`;
    } catch (err) {
      if (isCancellation(err)) throw err;
      why = `its review could not open: ${describeFailure(err)}`;
    }
    log.warn('adopted access removed: no review', { requestId: this.lease.requestId, why });
    this.host.endLease({ reason: 'reconciliation', actorId: 'reconciliationWorkflow', comment: `unexplained access removed: ${why}` });
  }
}
