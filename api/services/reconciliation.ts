import { randomUUID } from 'node:crypto';
import type { WorkflowClient } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { systems } from '../../db/schema.js';
import type { Config } from '../../temporal/config.js';
import { reconciliationWorkflow } from '../../workflows/index.js';
import { reconciliationWorkflowId } from '../../workflows/ids.js';
import { SystemRefKey } from '../../workflows/search-attributes.js';
import { notFound } from '../errors.js';

export interface ReconciliationServiceDeps {
  db: Pick<Db, 'select'>;
  temporal: { workflow: Pick<WorkflowClient, 'start'> };
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>;
}

/** On-demand reconciliation (the per-system Temporal Schedule runs the same workflow on its own). */
export function createReconciliationService({ db, temporal, config }: ReconciliationServiceDeps) {
  return {
    /** Starts a run for one system now and returns the workflow to watch. */
    async runNow(systemId: string): Promise<{ workflowId: string }> {
      const [system] = await db.select({ id: systems.id }).from(systems).where(eq(systems.id, systemId));
      if (!system) throw notFound('system');
      // A fresh run key per call: two operators asking at once get two runs, each with its own findings.
      const workflowId = reconciliationWorkflowId(system.id, randomUUID());
      await temporal.workflow.start(reconciliationWorkflow, {
        workflowId,
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [{ systemId: system.id }],
        typedSearchAttributes: [{ key: SystemRefKey, value: system.id }],
        staticSummary: 'On-demand reconciliation',
      });
      return { workflowId };
    },
  };
}

export type ReconciliationService = ReturnType<typeof createReconciliationService>;
