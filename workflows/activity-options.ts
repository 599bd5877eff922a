import type { ActivityOptions, LocalActivityOptions } from '@temporalio/workflow';
import type { LifecycleTiming } from './messages.js';

// Activity profiles shared by every workflow, grouped by how the step behaves (sandbox-safe:
// plain option objects). A workflow picks a profile; it never spells out options inline.

/**
 * How soon an attempt on a worker that died is retried elsewhere: every activity on the lease
 * path heartbeats while it runs (activities/lease-context.ts, `classified`), so a crash costs
 * this long, not the start-to-close timeout.
 */
const HEARTBEAT = '10s';

/** Bookkeeping in our own database: fast, idempotent, retried until it lands. */
export const BOOKKEEPING: ActivityOptions = {
  startToCloseTimeout: '15s',
  heartbeatTimeout: HEARTBEAT,
  retry: { initialInterval: '500ms', backoffCoefficient: 2, maximumInterval: '10s' },
};

/**
 * The same bookkeeping as a local activity (workflows/bookkeeping.ts): retried until it lands,
 * in the worker that runs the workflow task. A wait longer than the threshold becomes a durable
 * timer, so a database outage does not hold one workflow task open; a worker that dies mid-write
 * loses the task, and the next worker runs the keyed write again.
 */
export const LOCAL_BOOKKEEPING: LocalActivityOptions = {
  startToCloseTimeout: '15s',
  localRetryThreshold: '10s',
  retry: BOOKKEEPING.retry,
};

/** A write to a target system: idempotent by contract, bounded so a dead target fails the grant. */
export const TARGET_WRITE: ActivityOptions = {
  startToCloseTimeout: '30s',
  heartbeatTimeout: HEARTBEAT,
  scheduleToCloseTimeout: '10m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
};

/** Notifications never hold up a lease: bounded retries, and the lifecycle does not wait for them. */
export const NOTIFICATION: ActivityOptions = {
  startToCloseTimeout: '15s',
  scheduleToCloseTimeout: '15m',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '1m' },
};

/** A short read that waits on other workflows' removals: retried without limit until they are all verified. */
export const AWAIT_REMOVALS: ActivityOptions = {
  startToCloseTimeout: '15s',
  heartbeatTimeout: HEARTBEAT,
  retry: { initialInterval: '250ms', backoffCoefficient: 1.5, maximumInterval: '5s' },
};

/** Listing a whole target system can take a while; the read is idempotent, so it is retried whole. */
export const TARGET_SCAN: ActivityOptions = {
  startToCloseTimeout: '10m',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '2m', maximumAttempts: 5 },
};

/**
 * Removal and read-back within the verify deadline: retried quickly, and cut off at the deadline
 * so the lease can be flagged `revocation_unverified` on time.
 */
export const removalWithinDeadline = (timing: LifecycleTiming): ActivityOptions => ({
  startToCloseTimeout: '30s',
  heartbeatTimeout: HEARTBEAT,
  scheduleToCloseTimeout: `${timing.revokeVerifyDeadlineSeconds}s`,
  retry: {
    initialInterval: '500ms',
    backoffCoefficient: 2,
    maximumInterval: `${Math.max(1, Math.min(10, Math.ceil(timing.revokeVerifyDeadlineSeconds / 4)))}s`,
  },
});

/** Removal and read-back once overdue: no deadline, backoff capped by the lifecycle timing. */
export const removalOverdue = (timing: LifecycleTiming): ActivityOptions => ({
  startToCloseTimeout: '30s',
  heartbeatTimeout: HEARTBEAT,
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: `${timing.verifyMaxIntervalSeconds}s` },
});

/**
 * The same profile with a one-line summary that the Temporal UI shows on the activity (what this
 * step does for the lease). Summaries are fixed phrases and numbers: never names or e-mails.
 */
export const summarized = (options: ActivityOptions, summary: string): ActivityOptions => ({ ...options, summary });

/**
 * The service-desk pump: one long activity that polls the desk and delivers write-backs for a
 * few minutes, heartbeating every round, so a dead worker hands it over within the heartbeat
 * timeout. Failures inside a round (the desk down) are the pump's own business; what escapes it
 * (our database down, a bug) is retried without limit, and the pump alerts a person first.
 */
export const DESK_PUMP: ActivityOptions = {
  startToCloseTimeout: '15m',
  heartbeatTimeout: '20s',
  retry: { initialInterval: '1s', backoffCoefficient: 2, maximumInterval: '30s' },
};
