import { z } from 'zod';

/** Risk tiers, as the database enum. */
export const riskTiers = ['low', 'medium', 'high', 'privileged'] as const;
export type RiskTier = (typeof riskTiers)[number];

export const deadlineRules = ['keep_and_flag', 'revoke', 'escalate'] as const;
export type DeadlineRule = (typeof deadlineRules)[number];

const groupRef = z.string().regex(/^group:[0-9a-f-]{36}$/i, 'a group reference is group:<uuid>');

/** Which grants a campaign reviews. Every filter narrows; an empty object means every live grant. */
export const campaignScope = z
  .object({
    systemIds: z.array(z.uuid()).min(1).optional(),
    entitlementIds: z.array(z.uuid()).min(1).optional(),
    riskTiers: z.array(z.enum(riskTiers)).min(1).optional(),
    /** The manager's direct reports. */
    managerId: z.uuid().optional(),
    /** Only non-human holders (service accounts, API keys, workloads, AI agents). */
    nonHuman: z.literal(true).optional(),
    /** Only grants older than this. */
    olderThanDays: z.number().int().positive().optional(),
    /** Leave out grants younger than this (just approved: reviewing them again is noise). */
    excludeGrantedWithinDays: z.number().int().positive().optional(),
  })
  .strict();
export type CampaignScope = z.output<typeof campaignScope>;

export const reviewerRule = z.union([z.literal('manager'), z.literal('entitlement_owner'), groupRef]);
export type ReviewerRule = z.output<typeof reviewerRule>;

export const reviewerSpec = z
  .object({
    rule: reviewerRule,
    /** Reviews what the rule leaves without an eligible reviewer, and what is escalated. */
    fallbackReviewerId: z.uuid(),
    /** Whoever approved the grant does not certify it again. */
    excludeOriginalApprover: z.boolean().default(false),
  })
  .strict();

export const reminderSpec = z
  .object({
    /** Fractions of the review window elapsed (0.5: half-way). */
    fractions: z.array(z.number().gt(0).lt(1)).max(10).default([]),
    /** Days before the due date. */
    daysBeforeDue: z.array(z.number().positive()).max(10).default([]),
  })
  .strict();

export const deadlineSpec = z
  .object({
    rule: z.enum(deadlineRules).default('keep_and_flag'),
    /** Per risk tier, e.g. `{ privileged: 'revoke' }`. */
    byRiskTier: z.partialRecord(z.enum(riskTiers), z.enum(deadlineRules)).default({}),
    /** `escalate`: the fallback reviewer gets this long past the due date... */
    escalationSeconds: z.number().int().positive().default(3 * 86_400),
    /** ...then this rule applies to what is still undecided. */
    afterEscalation: z.enum(['keep_and_flag', 'revoke']).default('keep_and_flag'),
  })
  .strict();

/** The campaign definition as the API takes it and `review_campaign.definition` stores it. */
export const campaignDefinition = z
  .object({
    name: z.string().min(1).max(200),
    scope: campaignScope,
    dueAt: z.iso.datetime({ offset: true }),
    reviewers: reviewerSpec,
    reminders: reminderSpec.default({ fractions: [], daysBeforeDue: [] }),
    deadline: deadlineSpec.default({ rule: 'keep_and_flag', byRiskTier: {}, escalationSeconds: 3 * 86_400, afterEscalation: 'keep_and_flag' }),
  })
  .strict();
export type CampaignDefinition = z.output<typeof campaignDefinition>;
export type CampaignDefinitionInput = z.input<typeof campaignDefinition>;

/** The deadline rule for an item of a tier: the tier's override, else the campaign's. */
export function deadlineRuleFor(def: Pick<CampaignDefinition, 'deadline'>, tier: RiskTier): DeadlineRule {
  return def.deadline.byRiskTier[tier] ?? def.deadline.rule;
}

/** Reminder instants (ms), ascending, strictly between opening and the due date. */
export function reminderTimes(def: Pick<CampaignDefinition, 'reminders'>, openedAtMs: number, dueAtMs: number): number[] {
  const span = dueAtMs - openedAtMs;
  const at = [...def.reminders.fractions.map((f) => openedAtMs + f * span), ...def.reminders.daysBeforeDue.map((d) => dueAtMs - d * 86_400_000)];
  return [...new Set(at.filter((t) => t > openedAtMs && t < dueAtMs).map(Math.round))].sort((a, b) => a - b);
}

/** Privileged access is never kept without a reason written down. */
export const commentRequired = (decision: 'keep' | 'revoke', tier: RiskTier) => decision === 'revoke' || tier === 'privileged';

/**
 * A post-use review of a break-glass is about the use, so it outlives the lease: its item is
 * decided even after the grant ended (a revoke then only records that the use was not justified;
 * the removal it waits for is the lease's own). Every other review of an ended grant is moot.
 */
export const reviewOutlivesGrant = (trigger: string) => trigger === 'break_glass';
