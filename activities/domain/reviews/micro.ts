import type { Client } from '@temporalio/client';
import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';
import { and, eq, inArray } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import { entitlements, grants, reviewCampaigns, reviewItems } from '../../../db/schema.js';
import type { reviewCampaignWorkflow } from '../../../workflows/review-campaign.js';
import { campaignDefinition, reviewOutlivesGrant, type DeadlineRule } from './definition.js';
import { CAMPAIGN_WORKFLOW_TYPE, openCampaign } from './open.js';
import { ReviewRuleError } from './reviewers.js';

export type MicroReviewTrigger = 'mover' | 'unauthorized_access' | 'review_interval' | 'policy_change' | 'break_glass';

export interface MicroReviewInput {
  grantId: string;
  trigger: MicroReviewTrigger;
  /** Who reviews; default: the holder's manager (the owner for a non-human identity). */
  reviewerId?: string;
  /** Reviews when the reviewer is not eligible (the holder, inactive), and escalations; default: the entitlement's owner. */
  fallbackReviewerId?: string;
  dueAt: Date;
  /** Short, opaque (an incident or policy ref): recorded on the audit event, not in workflow history. */
  reason: string;
  deadlineRule?: DeadlineRule;
}

export type MicroReviewResult = { campaignId: string; itemId: string } | { skipped: 'self' | 'grant_not_active' | 'already_open' };

export interface MicroReviewDeps {
  db: Db;
  /** Given: the campaign's workflow is started (idempotent on its id). */
  temporal?: Pick<Client, 'workflow'>;
  /** The worker's task queue (config.TEMPORAL_TASK_QUEUE); default: env TEMPORAL_TASK_QUEUE, then `accessloop`. */
  taskQueue?: string;
  /** Who opens it, for the audit trail (default: `system:micro-review`). */
  actor?: { actorType: 'identity' | 'client' | 'system' | 'workflow'; actorId: string };
  policyVersion?: string | null;
}

/** Starts a campaign's workflow; "already started" is success, so a retry is harmless. */
export async function startCampaignWorkflow(temporal: Pick<Client, 'workflow'>, taskQueue: string, campaign: { id: string; workflowId: string }): Promise<void> {
  try {
    await temporal.workflow.start<typeof reviewCampaignWorkflow>(CAMPAIGN_WORKFLOW_TYPE, { workflowId: campaign.workflowId, taskQueue, args: [{ version: 1, campaignId: campaign.id }] });
  } catch (e) {
    if (!(e instanceof WorkflowExecutionAlreadyStartedError)) throw e;
  }
}

/**
 * Opens a one-item review (kind `micro`) of one live grant, for an event that makes the access
 * worth a second look. Skips, writing nothing, when the grant is not live, when it already has a
 * pending review, or when the only possible reviewer is its holder.
 */
export async function openMicroReview(deps: MicroReviewDeps, input: MicroReviewInput): Promise<MicroReviewResult> {
  const { db } = deps;
  const [g] = await db
    .select({ id: grants.id, status: grants.status, holderId: grants.identityId, ownerId: entitlements.ownerId })
    .from(grants)
    .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
    .where(eq(grants.id, input.grantId));
  // A break-glass use is reviewed even when its lease already ended (a short one can end first).
  if (!g || (g.status !== 'active' && !reviewOutlivesGrant(input.trigger))) return { skipped: 'grant_not_active' };
  const [open] = await db
    .select({ id: reviewItems.id })
    .from(reviewItems)
    .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
    .where(and(eq(reviewItems.grantId, g.id), eq(reviewItems.status, 'pending'), inArray(reviewCampaigns.status, ['open', 'closing'])))
    .limit(1);
  if (open) return { skipped: 'already_open' };
  const fallbackReviewerId = input.fallbackReviewerId ?? g.ownerId;
  const definition = campaignDefinition.parse({
    name: `micro-review: ${input.trigger}`,
    scope: {},
    dueAt: input.dueAt.toISOString(),
    reviewers: { rule: 'manager', fallbackReviewerId },
    deadline: { rule: input.deadlineRule ?? 'keep_and_flag' },
  });
  let opened;
  try {
    opened = await openCampaign(db, {
      definition,
      kind: 'micro',
      trigger: input.trigger,
      actor: deps.actor ?? { actorType: 'system', actorId: 'micro-review' },
      policyVersion: deps.policyVersion ?? null,
      grantIds: [g.id],
      includeEnded: reviewOutlivesGrant(input.trigger),
      preferredReviewerId: input.reviewerId,
      reason: input.reason,
      now: new Date(),
    });
  } catch (e) {
    if (e instanceof ReviewRuleError && e.code === 'empty_scope') return { skipped: 'grant_not_active' };
    // Nobody but the holder could review it (the reviewer and the fallback are the holder).
    if (e instanceof ReviewRuleError && e.code === 'no_eligible_reviewer' && (input.reviewerId === g.holderId || fallbackReviewerId === g.holderId)) return { skipped: 'self' };
    throw e;
  }
  const { campaign, items } = opened;
  if (deps.temporal) await startCampaignWorkflow(deps.temporal, deps.taskQueue ?? process.env.TEMPORAL_TASK_QUEUE ?? 'accessloop', campaign);
  return { campaignId: campaign.id, itemId: items[0]!.id };
}
