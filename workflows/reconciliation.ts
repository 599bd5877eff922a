import { proxyActivities, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import type { createActivities } from '../activities/index.js';

type Activities = ReturnType<typeof createActivities>;

// Listing a large target can take a while; the read is idempotent, so retry it whole.
const act = proxyActivities<Activities>({
  startToCloseTimeout: '10m',
  retry: { initialInterval: '5s', backoffCoefficient: 2, maximumInterval: '2m', maximumAttempts: 5 },
});

export interface ReconciliationInput {
  systemId: string;
}

/** One reconciliation run of one system (a Temporal Schedule starts it; operators can too). */
export async function reconciliationWorkflow(input: ReconciliationInput) {
  setCurrentDetails(`reconciling system \`${input.systemId}\``);
  const counts = await act.reconcileSystem({ systemId: input.systemId, runId: workflowInfo().runId });
  setCurrentDetails(
    `**done** — ${counts.memberships} memberships; ${counts.unauthorized_access} unauthorized, ${counts.orphaned_account} orphaned, ` +
      `${counts.failed_revocation} failed revocations, ${counts.missing_grant} missing grants; ${counts.remediated} remediated`,
  );
  return counts;
}

export const reconciliationWorkflowId = (systemId: string, runKey: string) => `reconciliation/${systemId}/${runKey}`;
export const reconciliationScheduleId = (systemId: string) => `reconcile/${systemId}`;
