// Workflow ids, one helper per workflow (sandbox-safe: the API, the worker's schedules and the
// workflows import them alike). An id names the thing it runs for, so a start is idempotent.

/** One workflow per access request: the request's whole lifecycle, approval to verified revoke. */
export const accessRequestWorkflowId = (requestId: string) => `access-request/${requestId}`;

/** One long-lived workflow per identity, fed by HR events through signal-with-start. */
export const identityWorkflowId = (identityId: string) => `identity/${identityId}`;

/** One run of one system's reconciliation; `runKey` tells runs apart (`scheduled`, or a fresh id). */
export const reconciliationWorkflowId = (systemId: string, runKey: string) => `reconciliation/${systemId}/${runKey}`;

/** The Temporal Schedule that starts a system's reconciliation runs. */
export const reconciliationScheduleId = (systemId: string) => `reconcile/${systemId}`;

/** The sentinel's Schedule and its runs, one per task queue (the workers it runs on). */
export const sentinelScheduleId = (taskQueue: string) => `sentinel/${taskQueue}`;
export const sentinelWorkflowId = (taskQueue: string, runKey: string) => `sentinel/${taskQueue}/${runKey}`;
/** The audit log's checkpoint Schedule and its runs, one per task queue. */
export const checkpointScheduleId = (taskQueue: string) => `audit-checkpoint/${taskQueue}`;
export const checkpointWorkflowId = (taskQueue: string, runKey: string) => `audit-checkpoint/${taskQueue}/${runKey}`;

/** One long-lived workflow per service desk: its intake, ticket decisions and write-back loop. */
export const serviceDeskWorkflowId = (deskId: string) => `service-desk/${deskId}`;

/** One workflow per access-review campaign (a micro-review is a one-item campaign). */
export const reviewCampaignWorkflowId = (campaignId: string) => `review-campaign/${campaignId}`;

/** A recurring review campaign's Temporal Schedule per task queue (`key`: a digest of its name in the policy), and its runs. */
export const reviewScheduleId = (taskQueue: string, key: string) => `review-schedule/${taskQueue}/${key}`;
export const reviewScheduleWorkflowId = (taskQueue: string, key: string) => `review-schedule/${taskQueue}/${key}/run`;
