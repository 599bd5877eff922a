import { ScheduleAlreadyRunning, type Client } from '@temporalio/client';
import { reconciliationWorkflow } from '../workflows/index.js';
import { reconciliationScheduleId, reconciliationWorkflowId } from '../workflows/ids.js';
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
