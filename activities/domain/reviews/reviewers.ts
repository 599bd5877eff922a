import type { ReviewerRule } from './definition.js';

/** What reviewer resolution needs to know about one grant under review. */
export interface ReviewSubject {
  holderId: string;
  holderKind: string;
  holderManagerId: string | null;
  /** Non-human identities: the owner answers for them where a person has a manager. */
  holderOwnerId: string | null;
  entitlementOwnerId: string;
  /** Who approved the grant's request (empty for birthright and break-glass). */
  approverIds: string[];
}

export interface ReviewerChoice {
  reviewerId: string;
  /** `rule`: the campaign's rule named them; `fallback`: nobody the rule named was eligible. */
  via: 'rule' | 'fallback';
}

/** Typed domain refusals; the API maps each code to a status. */
export class ReviewRuleError extends Error {
  override name = 'ReviewRuleError';
  constructor(
    readonly code: 'empty_scope' | 'no_eligible_reviewer' | 'self_review' | 'not_reviewer' | 'not_pending' | 'comment_required' | 'grant_not_active' | 'not_found' | 'not_eligible',
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

/** Whom the rule names for this grant, in preference order (a group: every member, least loaded first by the caller). */
export function ruleCandidates(rule: ReviewerRule, s: ReviewSubject, groupMembers: (groupId: string) => string[]): string[] {
  if (rule === 'manager') {
    const human = s.holderKind === 'employee' || s.holderKind === 'contractor';
    return [human ? s.holderManagerId : (s.holderOwnerId ?? s.holderManagerId)].filter((x): x is string => !!x);
  }
  if (rule === 'entitlement_owner') return [s.entitlementOwnerId];
  return groupMembers(rule.slice('group:'.length));
}

/**
 * The one eligibility rule: a reviewer is never the holder (self-review is impossible whoever
 * assigns it: the rule, a delegation, an escalation), never an original approver when the
 * campaign excludes them, and an active identity.
 */
export function isEligibleReviewer(candidate: string, s: Pick<ReviewSubject, 'holderId' | 'approverIds'>, opts: { excludeOriginalApprover: boolean; isActive: (id: string) => boolean }): boolean {
  if (candidate === s.holderId) return false;
  if (opts.excludeOriginalApprover && s.approverIds.includes(candidate)) return false;
  return opts.isActive(candidate);
}

/**
 * Picks the reviewer: the first eligible candidate the rule names (ties among a group go to the
 * member with the fewest items so far), else the fallback if eligible, else nobody.
 */
export function chooseReviewer(
  candidates: string[],
  fallbackReviewerId: string,
  s: ReviewSubject,
  opts: { excludeOriginalApprover: boolean; isActive: (id: string) => boolean; load?: Map<string, number> },
): ReviewerChoice | undefined {
  const load = opts.load ?? new Map<string, number>();
  const eligible = candidates.filter((c) => isEligibleReviewer(c, s, opts));
  const ranked = [...eligible].sort((a, b) => (load.get(a) ?? 0) - (load.get(b) ?? 0) || candidates.indexOf(a) - candidates.indexOf(b));
  const picked = ranked[0];
  if (picked) return { reviewerId: picked, via: 'rule' };
  if (isEligibleReviewer(fallbackReviewerId, s, opts)) return { reviewerId: fallbackReviewerId, via: 'fallback' };
  return undefined;
}
