import { condition, defineQuery, defineUpdate, proxyActivities, setHandler } from '@temporalio/workflow';

// The baseline for the overhead ratio: the same shape as an access request up to "grant
// verified" (start → approval update → a target write → a read-back) with no-op activities,
// no database and no policy. It runs on the same server, in the same run, as accessloop.
export interface MinimalActivities {
  grant(id: string): Promise<boolean>;
  verify(id: string): Promise<boolean>;
}
const act = proxyActivities<MinimalActivities>({ startToCloseTimeout: '10s' });

export const minimalApprove = defineUpdate<string, [string]>('decide');
export const minimalState = defineQuery<string>('state');

export async function minimalLeaseWorkflow(id: string): Promise<void> {
  let status = 'pending_approval';
  setHandler(minimalState, () => status);
  setHandler(minimalApprove, (approver) => {
    status = 'granting';
    return approver;
  });
  await condition(() => status === 'granting');
  await act.grant(id);
  await act.verify(id);
  status = 'active';
  // The lease itself is not part of the measured path; end here.
}
