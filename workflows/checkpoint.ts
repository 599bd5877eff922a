import { proxyActivities, setCurrentDetails } from '@temporalio/workflow';
import type { CheckpointActivities } from '../activities/index.js';

// Short and bounded: the next scheduled run is the retry (overlap SKIP).
const audit = proxyActivities<CheckpointActivities>({
  startToCloseTimeout: '2m',
  retry: { initialInterval: '2s', backoffCoefficient: 2, maximumInterval: '20s', maximumAttempts: 3 },
});

/**
 * One signed checkpoint of the audit log (a Temporal Schedule starts it every
 * ACCESSLOOP_CHECKPOINT_INTERVAL_SECONDS): the Merkle root over every stream's head, signed with
 * the evidence key. Nothing new since the last one: nothing written.
 */
export async function auditCheckpointWorkflow(): Promise<{ checkpointId: number; treeSize: number; created: boolean }> {
  const r = await audit.writeAuditCheckpoint();
  setCurrentDetails(r.created ? `checkpoint **${r.checkpointId}** over ${r.treeSize} streams` : `nothing new since checkpoint ${r.checkpointId}`);
  return r;
}
