import { isCancellation, log } from '@temporalio/workflow';
import type { AdoptionActivities } from '../activities/index.js';
import { bookkeeping } from './bookkeeping.js';
import type { AccessRequestInput, RevokeArgs } from './messages.js';
import { describeFailure } from './removal.js';

const book = (summary: string) => bookkeeping<AdoptionActivities>(summary);

/** What the steps need of the lease's state object (AccessLifecycle, ./lifecycle.ts). */
export interface AdoptionHost {
  nextKey(what: string): string;
  details(note?: string): void;
  /** Ends the lease from within (the workflow's own decision, not a signal's claim). */
  endLease(args: RevokeArgs): void;
}

type Lease = { requestId: string; grantId: string; subjectId: string; entitlementId: string };
type Adopted = NonNullable<AccessRequestInput['adopted']>;

/**
 * The adopted branch of a lease: access that exists already, brought under a lease with its
 * approvals skipped, from one of two places.
 * - Reconciliation found the membership with no grant and the policy asks for a review
 *   (docs/micro-reviews.md): once the lease holds it, its micro-review opens, and the review
 *   decides: keep → the lease runs on; revoke, or undecided at the deadline → the usual verified
 *   removal. Access nobody can review is not left standing: it is removed (reason `reconciliation`).
 * - An operator imported it (docs/import.md): the lease runs to the expiry the import gave it.
 */
export class AdoptionSteps {
  constructor(
    private readonly host: AdoptionHost,
    private readonly lease: Lease & { adopted: Adopted },
  ) {}

  /** The grant row is a `discovered` (or `imported`) one from the start; a finding points at it. */
  async skipApprovals(): Promise<boolean> {
    const { adopted, ...lease } = this.lease;
    this.host.details(adopted.from === 'import' ? 'imported: approvals skipped, the access exists already' : 'adopted by reconciliation: approvals skipped, the membership exists already');
    await book(adopted.from === 'import' ? 'imported: approvals skipped' : 'adopted: approvals skipped').recordAdoption({ ...lease, ...adopted, idempotencyKey: this.host.nextKey('adopted') });
    return true;
  }

  /** The lease holds the membership: an adopted one's review opens now, or the access goes. */
  async held(): Promise<void> {
    const { adopted, ...lease } = this.lease;
    if (adopted.from !== 'reconciliation') return;
    let why: string | undefined;
    try {
      const r = await book('adopted: open its micro-review').openAdoptionReview({ ...lease, findingId: adopted.findingId, idempotencyKey: this.host.nextKey('adoption-review') });
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
