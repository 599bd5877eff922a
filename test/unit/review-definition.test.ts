import { describe, expect, it } from 'vitest';
import { campaignDefinition, commentRequired, deadlineRuleFor, reminderTimes } from '../../activities/domain/reviews/definition.js';
import { campaignWorkflowId } from '../../activities/domain/reviews/open.js';
import { reviewCampaignWorkflowId } from '../../workflows/ids.js';

const base = { name: 'Q4', scope: {}, dueAt: '2026-12-31T00:00:00Z', reviewers: { rule: 'manager', fallbackReviewerId: '7d1c0f7e-3f0a-4a57-9d6e-2a3f9d4b1c11' } };

describe('campaign definition', () => {
  it('fills the defaults: keep and flag at the deadline, no reminders, original approvers allowed', () => {
    const d = campaignDefinition.parse(base);
    expect(d.deadline).toEqual({ rule: 'keep_and_flag', byRiskTier: {}, escalationSeconds: 259_200, afterEscalation: 'keep_and_flag' });
    expect(d.reminders).toEqual({ fractions: [], daysBeforeDue: [] });
    expect(d.reviewers.excludeOriginalApprover).toBe(false);
  });

  it('takes the three reviewer rules and refuses anything else, and a missing fallback', () => {
    for (const rule of ['manager', 'entitlement_owner', 'group:0b6f5f7e-1d2c-4c3b-8a9d-1e2f3a4b5c6d']) expect(campaignDefinition.safeParse({ ...base, reviewers: { ...base.reviewers, rule } }).success).toBe(true);
    for (const rule of ['owner', 'group:', 'group:not-a-uuid', 'security_team']) expect(campaignDefinition.safeParse({ ...base, reviewers: { ...base.reviewers, rule } }).success).toBe(false);
    expect(campaignDefinition.safeParse({ ...base, reviewers: { rule: 'manager' } }).success).toBe(false);
  });

  it('refuses unknown scope keys and a nonHuman other than true', () => {
    expect(campaignDefinition.safeParse({ ...base, scope: { systems: [] } }).success).toBe(false);
    expect(campaignDefinition.safeParse({ ...base, scope: { nonHuman: false } }).success).toBe(false);
    expect(campaignDefinition.safeParse({ ...base, scope: { nonHuman: true, olderThanDays: 90, riskTiers: ['privileged'] } }).success).toBe(true);
  });

  it("applies a risk tier's deadline override, else the campaign's rule", () => {
    const d = campaignDefinition.parse({ ...base, deadline: { rule: 'keep_and_flag', byRiskTier: { privileged: 'revoke', high: 'escalate' } } });
    expect(deadlineRuleFor(d, 'privileged')).toBe('revoke');
    expect(deadlineRuleFor(d, 'high')).toBe('escalate');
    expect(deadlineRuleFor(d, 'low')).toBe('keep_and_flag');
  });

  it('places reminders by fraction of the window and days before due, inside the window, once each, in order', () => {
    const d = campaignDefinition.parse({ ...base, reminders: { fractions: [0.5, 0.9], daysBeforeDue: [1, 30] } });
    const opened = Date.parse('2026-12-01T00:00:00Z');
    const due = Date.parse('2026-12-11T00:00:00Z');
    expect(reminderTimes(d, opened, due).map((t) => new Date(t).toISOString())).toEqual(['2026-12-06T00:00:00.000Z', '2026-12-10T00:00:00.000Z']);
  });

  it('requires a comment for every revoke and for keeping privileged access', () => {
    expect(commentRequired('revoke', 'low')).toBe(true);
    expect(commentRequired('keep', 'privileged')).toBe(true);
    expect(commentRequired('keep', 'high')).toBe(false);
  });

  it('names the workflow as workflows/ids.ts does (the domain layer may not import it)', () => {
    expect(campaignWorkflowId('c-1')).toBe(reviewCampaignWorkflowId('c-1'));
  });
});
