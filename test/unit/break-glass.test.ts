/** The break-glass settings and confirmation rules (activities/domain/break-glass.ts), without servers. */
import { randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { breakGlassSettings, confirmationMatches, hashConfirmation, invokeBreakGlassBody, newConfirmation, putBreakGlassBody, settingsOf } from '../../activities/domain/break-glass.js';

const group = () => `group:${randomUUID()}`;

describe('break-glass settings', () => {
  it('fill the defaults: 24 h post-use review by the owner, one hour cooldown', () => {
    const s = breakGlassSettings.parse({ invokers: group(), maxDurationSeconds: 900 });
    expect(s).toMatchObject({ maxDurationSeconds: 900, cooldownSeconds: 3600, postUseReviewHours: 24, reviewer: 'entitlement_owner' });
    expect(s.notify).toBeUndefined();
  });

  it('refuse what is not a group reference, a cap that is not a positive integer, unknown fields', () => {
    expect(breakGlassSettings.safeParse({ invokers: 'admins', maxDurationSeconds: 900 }).success).toBe(false);
    expect(breakGlassSettings.safeParse({ invokers: group(), maxDurationSeconds: 0 }).success).toBe(false);
    expect(breakGlassSettings.safeParse({ invokers: group(), maxDurationSeconds: 1.5 }).success).toBe(false);
    expect(breakGlassSettings.safeParse({ invokers: group(), maxDurationSeconds: 900, reviewer: 'manager' }).success).toBe(false);
    expect(breakGlassSettings.safeParse({ invokers: group(), maxDurationSeconds: 900, approvers: [] }).success).toBe(false);
  });

  it('PUT body: allowed:true needs the settings, allowed:false needs nothing else', () => {
    expect(putBreakGlassBody.safeParse({ allowed: false }).success).toBe(true);
    expect(putBreakGlassBody.safeParse({ allowed: true }).success).toBe(false);
    expect(putBreakGlassBody.safeParse({ allowed: true, invokers: group(), maxDurationSeconds: 60 }).success).toBe(true);
  });

  it('are read only where break-glass is allowed and the stored JSON still parses', () => {
    const stored = { invokers: group(), maxDurationSeconds: 60 };
    expect(settingsOf({ breakGlassAllowed: false, breakGlass: stored })).toBeUndefined();
    expect(settingsOf({ breakGlassAllowed: true, breakGlass: { maxDurationSeconds: 60 } })).toBeUndefined();
    expect(settingsOf({ breakGlassAllowed: true, breakGlass: stored })).toMatchObject(stored);
  });
});

describe('the invoke body', () => {
  const base = { entitlementId: randomUUID(), durationSeconds: 60, incidentRef: 'INC-1', justification: 'the database is down' };
  it('requires both an incident reference and a justification', () => {
    expect(invokeBreakGlassBody.safeParse(base).success).toBe(true);
    for (const k of ['incidentRef', 'justification'] as const) {
      const { [k]: _gone, ...rest } = base;
      expect(invokeBreakGlassBody.safeParse(rest).success, k).toBe(false);
    }
    expect(invokeBreakGlassBody.safeParse({ ...base, justification: 'short' }).success).toBe(false);
    expect(invokeBreakGlassBody.safeParse({ ...base, incidentRef: 'has spaces in it' }).success).toBe(false);
  });
});

describe('confirmations', () => {
  it('are random, stored as a sha256 only, and matched in constant time', () => {
    const a = newConfirmation();
    const b = newConfirmation();
    expect(a.secret).not.toBe(b.secret);
    expect(a.hash).toBe(hashConfirmation(a.secret));
    expect(a.hash).toMatch(/^[0-9a-f]{64}$/);
    expect(a.hash).not.toContain(a.secret);
    expect(confirmationMatches(a.secret, a.hash)).toBe(true);
    expect(confirmationMatches(b.secret, a.hash)).toBe(false);
  });
});
