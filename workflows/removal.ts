import { ActivityFailure, ApplicationFailure, isCancellation, proxyActivities, sleep } from '@temporalio/workflow';
import type { LeaseActivities } from '../activities/index.js';
import { removalOverdue, removalWithinDeadline, summarized } from './activity-options.js';
import type { LifecycleTiming, RevokeReason } from './messages.js';

type Removal = Awaited<ReturnType<LeaseActivities['removeAndVerify']>>;

export interface RemovalHooks {
  /** Called before every read-back attempt. */
  attempt(): void;
  /** The deadline passed unverified: flag it (state, alert, audit). Retries continue afterwards. */
  unverified(error: string, errorType: string): Promise<void>;
  /** A later attempt failed too (shown to operators while retries continue). */
  stillFailing(error: string): void;
}

/**
 * Removes a membership and reads the target back until removal is confirmed. Never returns
 * unverified: past the deadline the hooks flag it and read-backs continue with a capped backoff,
 * and even non-retryable target errors (e.g. PermissionDenied) only pause before the next try.
 */
export async function removeUntilVerified(
  lease: { requestId?: string | undefined; grantId: string; subjectId: string; entitlementId: string },
  reason: RevokeReason,
  timing: LifecycleTiming,
  hooks: RemovalHooks,
): Promise<Removal> {
  const firstPhase = proxyActivities<LeaseActivities>(summarized(removalWithinDeadline(timing), `remove from the target and read back · ${reason}`));
  const overdue = proxyActivities<LeaseActivities>(summarized(removalOverdue(timing), `overdue: remove and read back again · ${reason}`));
  const attempt = { ...lease, reason };
  try {
    hooks.attempt();
    return await firstPhase.removeAndVerify(attempt);
  } catch (err) {
    if (isCancellation(err)) throw err;
    await hooks.unverified(describeFailure(err), failureType(err));
  }
  for (;;) {
    try {
      hooks.attempt();
      return await overdue.removeAndVerify(attempt);
    } catch (err) {
      if (isCancellation(err)) throw err;
      hooks.stillFailing(describeFailure(err));
      await sleep(`${timing.verifyMaxIntervalSeconds}s`);
    }
  }
}

function rootOf(err: unknown): unknown {
  let e: unknown = err;
  while (e instanceof ActivityFailure && e.cause) e = e.cause;
  return e;
}

export function failureType(err: unknown): string {
  const e = rootOf(err);
  return e instanceof ApplicationFailure ? (e.type ?? 'ApplicationFailure') : e instanceof Error ? e.name : 'unknown';
}

export function describeFailure(err: unknown): string {
  const e = rootOf(err);
  if (e instanceof ApplicationFailure) return `${e.type ?? 'Error'}: ${e.message}`;
  return e instanceof Error ? e.message : String(e);
}
