import { describe, expect, it } from 'vitest';
import { chooseReviewer, isEligibleReviewer, ruleCandidates, type ReviewSubject } from '../../activities/domain/reviews/reviewers.js';

const subject = (over: Partial<ReviewSubject> = {}): ReviewSubject => ({ holderId: 'alice', holderKind: 'employee', holderManagerId: 'carol', holderOwnerId: null, entitlementOwnerId: 'bob', approverIds: ['bob'], ...over });
const everyoneActive = { excludeOriginalApprover: false, isActive: () => true };

describe('reviewer resolution', () => {
  it("names the manager, the owner of a non-human identity, the entitlement's owner, or a group's members", () => {
    expect(ruleCandidates('manager', subject(), () => [])).toEqual(['carol']);
    expect(ruleCandidates('manager', subject({ holderKind: 'service_account', holderOwnerId: 'olga' }), () => [])).toEqual(['olga']);
    expect(ruleCandidates('entitlement_owner', subject(), () => [])).toEqual(['bob']);
    expect(ruleCandidates('group:g-1', subject(), (id) => (id === 'g-1' ? ['x', 'y'] : []))).toEqual(['x', 'y']);
  });

  it('never picks the holder, whoever names them: the rule, or the fallback', () => {
    const own = subject({ entitlementOwnerId: 'alice' });
    expect(chooseReviewer(['alice'], 'erin', own, everyoneActive)).toEqual({ reviewerId: 'erin', via: 'fallback' });
    expect(chooseReviewer(['alice'], 'alice', own, everyoneActive)).toBeUndefined();
    expect(isEligibleReviewer('alice', own, everyoneActive)).toBe(false);
  });

  it('skips the original approver when the campaign excludes them', () => {
    expect(chooseReviewer(['bob'], 'erin', subject(), everyoneActive)).toEqual({ reviewerId: 'bob', via: 'rule' });
    expect(chooseReviewer(['bob'], 'erin', subject(), { ...everyoneActive, excludeOriginalApprover: true })).toEqual({ reviewerId: 'erin', via: 'fallback' });
    expect(chooseReviewer(['bob'], 'bob', subject(), { ...everyoneActive, excludeOriginalApprover: true })).toBeUndefined();
  });

  it('skips inactive identities and, among a group, picks the least loaded eligible member', () => {
    const isActive = (id: string) => id !== 'x';
    const load = new Map([['y', 3], ['z', 1]]);
    expect(chooseReviewer(['x', 'y', 'z', 'alice'], 'erin', subject(), { excludeOriginalApprover: false, isActive, load })).toEqual({ reviewerId: 'z', via: 'rule' });
    expect(chooseReviewer([], 'erin', subject(), everyoneActive)).toEqual({ reviewerId: 'erin', via: 'fallback' });
  });
});
