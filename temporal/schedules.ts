import { ScheduleAlreadyRunning, type Client } from '@temporalio/client';
import { auditCheckpointWorkflow, reconciliationWorkflow, sentinelWorkflow } from '../workflows/index.js';
import { checkpointScheduleId, checkpointWorkflowId, reconciliationScheduleId, reconciliationWorkflowId, sentinelScheduleId, sentinelWorkflowId } from '../workflows/ids.js';
import type { SentinelInput } from '../workflows/sentinel.js';
import { SystemRefKey } from '../workflows/search-attributes.js';
import type { Config } from './config.js';

/** A Temporal Schedule per system that runs reconciliation every ACCESSLOOP_RECONCILE_INTERVAL_MINUTES. Idempotent. */
export async function ensureReconcileSchedule(client: Client, config: Config, systemId: string): Promise<void> {
  try {
    await client.schedule.create({
      scheduleId: reconciliationScheduleId(systemId),
      spec: { intervals: [{ every: `${config.ACCESSLOOP_RECONCILE_INTERVAL_MINUTES}m` }] },
      action: {
        type: 'startWorkflow',
        workflowType: reconciliationWorkflow,
        args: [{ systemId }],
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        workflowId: reconciliationWorkflowId(systemId, 'scheduled'),
        typedSearchAttributes: [{ key: SystemRefKey, value: systemId }],
        staticSummary: 'Scheduled reconciliation',
      },
      policies: { overlap: 'SKIP' },
    });
  } catch (e) {
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
  }
}

/**
 * The sentinel's Schedule (every ACCESSLOOP_SENTINEL_INTERVAL_SECONDS). Updated in place when it
 * exists, so a changed interval or grace takes effect on the next start.
 */
export async function ensureSentinelSchedule(client: Client, config: Config): Promise<void> {
  const spec = { intervals: [{ every: `${config.ACCESSLOOP_SENTINEL_INTERVAL_SECONDS}s` }] };
  const action = {
    type: 'startWorkflow' as const,
    workflowType: sentinelWorkflow,
    args: [{ v: 1 as const, graceSeconds: config.ACCESSLOOP_SENTINEL_GRACE_SECONDS, revokeDeadlineSeconds: config.ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS, workflowDescribeBatch: config.ACCESSLOOP_SENTINEL_WORKFLOW_DESCRIBE_BATCH }] as [SentinelInput],
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    workflowId: sentinelWorkflowId(config.TEMPORAL_TASK_QUEUE, 'scheduled'),
    // A run whose workers are gone must not hold the schedule (overlap SKIP) forever.
    workflowExecutionTimeout: '10m',
    staticSummary: 'Sentinel',
  };
  try {
    await client.schedule.create({ scheduleId: sentinelScheduleId(config.TEMPORAL_TASK_QUEUE), spec, action, policies: { overlap: 'SKIP' } });
  } catch (e) {
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
    await client.schedule.getHandle(sentinelScheduleId(config.TEMPORAL_TASK_QUEUE)).update((prev) => ({ ...prev, spec, action }));
  }
}

/** The audit log's checkpoint Schedule (every ACCESSLOOP_CHECKPOINT_INTERVAL_SECONDS), updated in place when it exists. */
export async function ensureCheckpointSchedule(client: Client, config: Config): Promise<void> {
  const spec = { intervals: [{ every: `${config.ACCESSLOOP_CHECKPOINT_INTERVAL_SECONDS}s` }] };
  const action = {
    type: 'startWorkflow' as const,
    workflowType: auditCheckpointWorkflow,
    args: [] as [],
    taskQueue: config.TEMPORAL_TASK_QUEUE,
    workflowId: checkpointWorkflowId(config.TEMPORAL_TASK_QUEUE, 'scheduled'),
    workflowExecutionTimeout: '10m',
    staticSummary: 'Audit checkpoint',
  };
  try {
    await client.schedule.create({ scheduleId: checkpointScheduleId(config.TEMPORAL_TASK_QUEUE), spec, action, policies: { overlap: 'SKIP' } });
  } catch (e) {
    if (!(e instanceof ScheduleAlreadyRunning)) throw e;
    await client.schedule.getHandle(checkpointScheduleId(config.TEMPORAL_TASK_QUEUE)).update((prev) => ({ ...prev, spec, action }));
  }
}
