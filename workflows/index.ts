// The only workflowsPath: every workflow type the worker registers is exported here.
export { accessRequestWorkflow } from './access-request.js';
export { identityWorkflow } from './identity.js';
export { reconciliationWorkflow } from './reconciliation.js';
export { sentinelWorkflow } from './sentinel.js';
export { auditCheckpointWorkflow } from './checkpoint.js';
export { serviceDeskWorkflow } from './service-desk.js';
export { reviewCampaignWorkflow, scheduledReviewCampaignWorkflow } from './review-campaign.js';
