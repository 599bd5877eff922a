import type { ApprovalActivities } from '../activities/index.js';
import { bookkeeping } from './bookkeeping.js';
import type { ApprovalHost, StageOutcome } from './approvals.js';
import type { RequestStateView, RevokeArgs } from './messages.js';

// Two pieces of AccessLifecycle (./lifecycle.ts) that need only its public surface: closing a
// request that was not approved, and the current-details text.

const book = () => bookkeeping<ApprovalActivities>();

type Closing = Pick<ApprovalHost, 'state' | 'setStatus' | 'nextKey'>;

/** Closes a request whose approval ended other than approved (status, and the row with its audit event). */
export async function closeUnapproved(request: Closing, result: Exclude<StageOutcome, { outcome: 'approved' }>, withdrawal: RevokeArgs | undefined): Promise<void> {
  const { requestId } = request.state;
  switch (result.outcome) {
    case 'rejected':
      // The rejecting decision has closed the request already.
      request.setStatus('rejected', 'rejected by approver');
      return;
    case 'no_quorum':
      request.setStatus('rejected', result.reason);
      await book().closeUnapproved({ requestId, outcome: 'rejected', reason: result.reason, idempotencyKey: request.nextKey('no-quorum') });
      return;
    case 'expired':
      request.setStatus('expired_unapproved');
      await book().closeUnapproved({ requestId, outcome: 'expired_unapproved', reason: `approval stage ${result.stageName} timed out`, idempotencyKey: request.nextKey('expired') });
      return;
    case 'withdrawn':
      request.setStatus('cancelled');
      await book().closeUnapproved({
        requestId,
        outcome: 'cancelled',
        reason: withdrawal?.comment ?? 'withdrawn before approval',
        actorId: withdrawal?.actorId,
        idempotencyKey: request.nextKey('cancelled'),
      });
  }
}

/** Markdown shown as "current details" in the Temporal UI. Opaque ids only. */
export function renderDetails(s: RequestStateView, note?: string): string {
  const lines = [`**${s.status}**${note ? ` — ${note}` : ''}`];
  if (s.stage && s.status === 'pending_approval') lines.push(`approval stage ${s.stage.number} due ${s.stage.dueAt}`);
  if (s.startAt && s.status === 'scheduled') lines.push(`starts ${s.startAt}`);
  if (s.expiresAt) lines.push(`expires ${s.expiresAt}`);
  if (s.revokeReason) lines.push(`revoke reason: ${s.revokeReason}`);
  if (s.removalAttempts) lines.push(`removal attempts: ${s.removalAttempts}`);
  if (s.removalVerifiedAt) lines.push(`removal verified ${s.removalVerifiedAt}`);
  if (s.ignoredSignals) lines.push(`invalid signals ignored: ${s.ignoredSignals}`);
  if (s.credential && (s.status === 'active' || s.status === 'revoking')) lines.push(`${s.credential.kind} credential until ${s.credential.notAfter}`);
  return lines.join('\n\n');
}
