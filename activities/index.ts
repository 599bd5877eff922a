import { createAdoptionActivities } from './adoption.js';
import { createApprovalActivities } from './approvals.js';
import { createBreakGlassActivities } from './break-glass.js';
import { createCheckpointActivities } from './checkpoints.js';
import { createCredentialActivities } from './credentials.js';
import type { ActivityDeps } from './deps.js';
import { createHrActivities } from './hr.js';
import { createLeaseActivities } from './lease.js';
import { createMicroReviewActivities } from './micro-reviews.js';
import { classified } from './lease-context.js';
import { createNotificationActivities } from './notifications.js';
import { createReconciliationActivities } from './reconciliation.js';
import { createReviewActivities } from './reviews.js';
import { createSentinelActivities } from './sentinel.js';
import { createServiceDeskActivities } from './service-desk.js';

export type { ActivityDeps } from './deps.js';
export { credentialModeOf } from './lease-context.js';

export type ApprovalActivities = ReturnType<typeof createApprovalActivities>;
export type LeaseActivities = ReturnType<typeof createLeaseActivities>;
export type CredentialActivities = ReturnType<typeof createCredentialActivities>;
export type NotificationActivities = ReturnType<typeof createNotificationActivities>;
export type HrActivities = ReturnType<typeof createHrActivities>;
export type ReconciliationActivities = ReturnType<typeof createReconciliationActivities>;
export type SentinelActivities = ReturnType<typeof createSentinelActivities>;
export type ServiceDeskActivities = ReturnType<typeof createServiceDeskActivities>;
export type ReviewActivities = ReturnType<typeof createReviewActivities>;
export type BreakGlassActivities = ReturnType<typeof createBreakGlassActivities>;
export type MicroReviewActivities = ReturnType<typeof createMicroReviewActivities>;
export type AdoptionActivities = ReturnType<typeof createAdoptionActivities>;
export type CheckpointActivities = ReturnType<typeof createCheckpointActivities>;

/**
 * Every activity the worker registers. The keys are activity type names that running
 * workflows and recorded histories refer to: a slice may move, a name may not change.
 */
export function createActivities(deps: ActivityDeps) {
  // One boundary for every slice: activity errors become Temporal failures in toFailure only.
  return classified({
    ...createApprovalActivities(deps),
    ...createLeaseActivities(deps),
    ...createCredentialActivities(deps),
    ...createNotificationActivities(deps),
    ...createHrActivities(deps),
    ...createReconciliationActivities(deps),
    ...createSentinelActivities(deps),
    ...createServiceDeskActivities(deps),
    ...createReviewActivities(deps),
    ...createBreakGlassActivities(deps),
    ...createMicroReviewActivities(deps),
    ...createAdoptionActivities(deps),
    ...createCheckpointActivities(deps),
  });
}

export type Activities = ReturnType<typeof createActivities>;
