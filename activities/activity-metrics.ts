import { ApplicationFailure } from '@temporalio/common';
import type { ActivityExecuteInput, ActivityInboundCallsInterceptor, ActivityInterceptorsFactory, Next } from '@temporalio/worker';
import type { Metrics } from './domain/metrics.js';

/**
 * Times every activity execution by type and outcome (`accessloop_activity_duration_seconds`):
 * the worker's own view of how fast targets and the database answer, beside the SDK's.
 */
export function activityMetricsInterceptor(metrics: Pick<Metrics, 'activityDuration'>): ActivityInterceptorsFactory {
  return (ctx) => {
    const activity = ctx.info.activityType;
    const inbound: ActivityInboundCallsInterceptor = {
      async execute(input: ActivityExecuteInput, next: Next<ActivityInboundCallsInterceptor, 'execute'>) {
        const end = metrics.activityDuration.startTimer({ activity });
        try {
          const result = await next(input);
          end({ outcome: 'ok' });
          return result;
        } catch (err) {
          end({ outcome: err instanceof ApplicationFailure && err.nonRetryable ? 'non_retryable' : 'retryable' });
          throw err;
        }
      },
    };
    return { inbound };
  };
}
