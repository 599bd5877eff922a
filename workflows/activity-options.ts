import type { ActivityOptions } from '@temporalio/workflow';

// Activity profiles shared by every workflow (sandbox-safe: plain option objects).

/** Bookkeeping in our own database: fast, idempotent, retried until it lands. */
export const BOOKKEEPING: ActivityOptions = {
  startToCloseTimeout: '15s',
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' },
};

/** A write to a target system: idempotent by contract, bounded so a dead target fails the grant. */
export const TARGET_WRITE: ActivityOptions = {
  startToCloseTimeout: '30s',
  scheduleToCloseTimeout: '10m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
};

/**
 * The same profile with a one-line summary that the Temporal UI shows on the activity (what this
 * step does for the lease). Summaries are fixed phrases and numbers: never names or e-mails.
 */
export const summarized = (options: ActivityOptions, summary: string): ActivityOptions => ({ ...options, summary });
