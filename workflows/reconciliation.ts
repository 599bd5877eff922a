import { proxyActivities, setCurrentDetails, workflowInfo } from '@temporalio/workflow';
import type { ReconciliationActivities } from '../activities/index.js';
import { TARGET_SCAN } from './activity-options.js';

const scan = proxyActivities<ReconciliationActivities>(TARGET_SCAN);

export interface ReconciliationInput {
  systemId: string;
}

/** One reconciliation run of one system (a Temporal Schedule starts it; operators can too). */
export async function reconciliationWorkflow(input: ReconciliationInput) {
  setCurrentDetails(`reconciling system \`${input.systemId}\``);
  const counts = await scan.reconcileSystem({ systemId: input.systemId, runId: workflowInfo().runId });
  setCurrentDetails(
    `**done** — ${counts.memberships} memberships; ${counts.unauthorized_access} unauthorized, ${counts.orphaned_account} orphaned, ` +
      `${counts.failed_revocation} failed revocations, ${counts.missing_grant} missing grants; ${counts.remediated} remediated` +
      (counts.adopted ? `, ${counts.adopted} adopted under review` : ''),
  );
  return counts;
}
