import { type ActivityInterfaceFor, patched, proxyActivities, proxyLocalActivities } from '@temporalio/workflow';
import { BOOKKEEPING, LOCAL_BOOKKEEPING, summarized } from './activity-options.js';

/**
 * Patch marker of the move of bookkeeping into the workflow task (issue 14). Runs recorded
 * before it scheduled every write in our own database as an activity; they replay so, and any
 * write they reach live afterwards runs locally.
 */
export const LOCAL_BOOKKEEPING_PATCH = 'bookkeeping-as-local-activities';

/**
 * Proxies for bookkeeping in our own database: short, idempotent (keyed) writes and reads.
 * They run as local activities, inside the workflow task that asked for them: no activity task
 * for the server to queue and dispatch, and no second workflow task to hear the result. What
 * reaches a target, or waits on one, stays a scheduled activity (heartbeats, its own timeouts,
 * any worker may take it).
 */
export function bookkeeping<A extends object>(summary?: string): ActivityInterfaceFor<A> {
  if (patched(LOCAL_BOOKKEEPING_PATCH)) return proxyLocalActivities<A>(summary ? { ...LOCAL_BOOKKEEPING, summary } : LOCAL_BOOKKEEPING);
  return proxyActivities<A>(summary ? summarized(BOOKKEEPING, summary) : BOOKKEEPING);
}
