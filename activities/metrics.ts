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
  };
}

export type Metrics = ReturnType<typeof createMetrics>;
