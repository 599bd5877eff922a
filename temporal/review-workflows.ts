import { createHash } from 'node:crypto';
import { ScheduleAlreadyRunning, type Client } from '@temporalio/client';
import { inArray } from 'drizzle-orm';
import type { PolicyDocument } from '../activities/domain/policy/schema.js';
import type { Db } from '../db/client.js';
import { reviewCampaigns } from '../db/schema.js';
import { reviewScheduleId, reviewScheduleWorkflowId } from '../workflows/ids.js';
import { reviewCampaignWorkflow, scheduledReviewCampaignWorkflow } from '../workflows/index.js';
import type { ScheduledReviewInput } from '../workflows/review-campaign.js';
import type { Config } from './config.js';

/**
 * At boot: every open (or closing) review campaign has its workflow. A campaign whose workflow
 * start was lost (the API crashed between commit and start, or a micro-review was opened where
 * no Temporal client was at hand) is picked up here; a running one is kept (`USE_EXISTING`).
 */
export async function ensureReviewCampaignWorkflows(client: Pick<Client, 'workflow'>, config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>, db: Pick<Db, 'select'>): Promise<number> {
  const open = await db.select({ id: reviewCampaigns.id, workflowId: reviewCampaigns.workflowId }).from(reviewCampaigns).where(inArray(reviewCampaigns.status, ['open', 'closing']));
  for (const c of open) {
    await client.workflow.start(reviewCampaignWorkflow, { workflowId: c.workflowId, taskQueue: config.TEMPORAL_TASK_QUEUE, args: [{ version: 1, campaignId: c.id }], workflowIdConflictPolicy: 'USE_EXISTING', staticSummary: 'Access review campaign' });
  }
  return open.length;
}

/** Schedule ids name a digest of the campaign's name, never the name itself. */
const scheduleKey = (name: string) => createHash('sha256').update(name).digest('hex').slice(0, 16);

/**
 * One Temporal Schedule per recurring campaign of the policy (`reviews.campaigns`), every
 * `everyDays`; changed entries are updated in place, entries no longer in the policy have their
 * schedule deleted. Idempotent: run at boot and after each policy publication.
 */
export async function ensureReviewSchedules(client: Pick<Client, 'schedule'>, config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>, document: PolicyDocument): Promise<string[]> {
  const queue = config.TEMPORAL_TASK_QUEUE;
  const wanted = new Map((document.reviews?.campaigns ?? []).map((c) => [reviewScheduleId(queue, scheduleKey(c.name)), c]));
  for (const [scheduleId, c] of wanted) {
    const key = scheduleKey(c.name);
    const spec = { intervals: [{ every: `${c.everyDays}d` }] };
    const action = {
      type: 'startWorkflow' as const,
      workflowType: scheduledReviewCampaignWorkflow,
      args: [{ version: 1, name: c.name }] as [ScheduledReviewInput],
      taskQueue: queue,
      workflowId: reviewScheduleWorkflowId(queue, key),
      workflowExecutionTimeout: '10m',
      staticSummary: 'Recurring access review',
    };
    try {
      await client.schedule.create({ scheduleId, spec, action, policies: { overlap: 'SKIP' } });
    } catch (e) {
      if (!(e instanceof ScheduleAlreadyRunning)) throw e;
      await client.schedule.getHandle(scheduleId).update((prev) => ({ ...prev, spec, action }));
    }
  }
  for await (const s of client.schedule.list()) {
    if (s.scheduleId.startsWith(reviewScheduleId(queue, '')) && !wanted.has(s.scheduleId)) await client.schedule.getHandle(s.scheduleId).delete();
  }
  return [...wanted.keys()];
}
