import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus instruments, one registry per process (API and worker share it in `npm start`). */
export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'accessloop_' });
  return {
    registry,
    timeToRevoke: new Histogram({
      name: 'accessloop_time_to_revoke_seconds',
      help: 'From expiry or revoke request to verified removal from the target',
      labelNames: ['reason'],
      buckets: [0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60, 300, 900, 3600],
      registers: [registry],
    }),
    revocationsUnverified: new Counter({
      name: 'accessloop_revocations_unverified_total',
      help: 'Revocations whose removal was not verified within the deadline (alert on any increase)',
      registers: [registry],
    }),
    targetCalls: new Counter({
      name: 'accessloop_target_calls_total',
      help: 'Connector calls by kind, operation and outcome',
      labelNames: ['kind', 'op', 'outcome'],
      registers: [registry],
    }),
    httpRequests: new Counter({
      name: 'accessloop_http_requests_total',
      help: 'API requests by route and status',
      labelNames: ['route', 'status'],
      registers: [registry],
    }),
    httpDuration: new Histogram({
      name: 'accessloop_http_request_duration_seconds',
      help: 'API request duration by route, method and status',
      labelNames: ['route', 'method', 'status'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
      registers: [registry],
    }),
    approvalHumanWait: new Histogram({
      name: 'accessloop_approval_human_wait_seconds',
      help: 'From request to its final decision (approved or rejected)',
      labelNames: ['outcome'],
      buckets: [1, 10, 60, 300, 900, 3600, 4 * 3600, 24 * 3600, 3 * 24 * 3600],
      registers: [registry],
    }),
    approvalSystemPart: new Histogram({
      name: 'accessloop_approval_system_seconds',
      help: 'From the last approval to the grant verified on the target (the part we control)',
      buckets: [0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60],
      registers: [registry],
    }),
    removals: new Counter({
      name: 'accessloop_removals_total',
      help: 'Completed revocations, by whether they were automated (expiry, leaver, mover, reconciliation) and verified on the target',
      labelNames: ['reason', 'automated', 'verified'],
      registers: [registry],
    }),
    sentinelFindings: new Counter({
      name: 'accessloop_sentinel_findings_total',
      help: 'Findings the sentinel alerted on, once per finding, by kind (alert on any increase)',
      labelNames: ['kind'],
      registers: [registry],
    }),
    leaverRemovalsOverdue: new Counter({
      name: 'accessloop_leaver_removals_overdue_total',
      help: 'Leavers whose removals were not all verified by the deadline (alert on any increase)',
      registers: [registry],
    }),
    exceptions: new Counter({
      name: 'accessloop_exceptions_total',
      help: 'Events that need a human: revocation_unverified, leaver_removals_overdue, escalation, sod_exception',
      labelNames: ['kind'],
      registers: [registry],
    }),
    activityDuration: new Histogram({
      name: 'accessloop_activity_duration_seconds',
      help: 'Activity executions by type and outcome (ok, retryable, non_retryable)',
      labelNames: ['activity', 'outcome'],
      buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
      registers: [registry],
    }),
  };
}

/** Revocation reasons that no person had to act on. */
export const AUTOMATED_REVOKE_REASONS: readonly string[] = ['expired', 'leaver', 'mover', 'reconciliation', 'sentinel'];

export type Metrics = ReturnType<typeof createMetrics>;
