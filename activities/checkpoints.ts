import { ApplicationFailure } from '@temporalio/activity';
import { createCheckpoint } from './domain/checkpoints.js';
import type { ActivityDeps } from './deps.js';

/** The audit log's signed checkpoints (docs/audit.md), written on a schedule. */
export function createCheckpointActivities(deps: Pick<ActivityDeps, 'db' | 'evidenceSigner'>) {
  return {
    async writeAuditCheckpoint(): Promise<{ checkpointId: number; treeSize: number; created: boolean }> {
      if (!deps.evidenceSigner) throw ApplicationFailure.nonRetryable('no evidence signing key on this worker', 'InvalidConfig');
      const { checkpoint, created } = await createCheckpoint(deps.db, await deps.evidenceSigner());
      return { checkpointId: checkpoint.id, treeSize: checkpoint.treeSize, created };
    },
  };
}
