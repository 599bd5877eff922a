import { expect, it } from 'vitest';
import { FakeActivities, laggingRemoval } from './fakes.js';
import { TEST_TIMING, describeWorkflows, requestInput, useWorkflowHarness } from './harness.js';

// Revocation of accessRequestWorkflow: removal is read back until verified, and the lease closes
// only then (removeUntilVerified: "never returns unverified").

const { run } = useWorkflowHarness();

describeWorkflows('revocation', () => {
  it('a removal not verified by the deadline turns revocation_unverified (one alert), keeps retrying, and closes once verified', () => {
    const t = { ...TEST_TIMING, revokeVerifyDeadlineSeconds: 2, verifyMaxIntervalSeconds: 1 };
    const target = laggingRemoval();
    const fake = new FakeActivities({ removeAndVerify: target.removeAndVerify });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ timing: t }));
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'manual', actorId: 'operator', comment: 'offboarding' });

      const unverified = await lease.waitForStatus('revocation_unverified', { timeoutMs: (t.revokeVerifyDeadlineSeconds + 10) * 1000 });
      expect(unverified).toMatchObject({ revokeReason: 'manual', lastError: expect.stringContaining('membership still present') });
      expect(unverified.removalVerifiedAt).toBeUndefined();
      await r.untilCalled('markRevocationUnverified');
      expect(fake.inputsOf('markRevocationUnverified')).toEqual([expect.objectContaining({ grantId: lease.input.grantId, errorType: 'TargetUnavailable' })]);

      // Past the deadline the read-backs go on (capped backoff) without another alert or a close.
      const failedSoFar = fake.count('removeAndVerify');
      await r.untilCalled('removeAndVerify', failedSoFar + 2, { timeoutMs: (t.verifyMaxIntervalSeconds * 2 + 10) * 1000 });
      expect((await lease.state()).status).toBe('revocation_unverified');
      expect(fake.count('markRevocationUnverified')).toBe(1);
      expect(fake.count('completeRevocation')).toBe(0);

      target.heal();
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', removalVerifiedAt: target.verifiedAt });
      expect(result.lastError).toBeUndefined();
      expect(fake.inputsOf('completeRevocation')).toEqual([expect.objectContaining({ grantId: lease.input.grantId, verifiedAt: target.verifiedAt })]);
      // Closed only after the first read-back that succeeded, never before.
      const firstVerified = fake.calls.findIndex((c) => c.name === 'removeAndVerify' && !c.failed);
      const closed = fake.calls.findIndex((c) => c.name === 'completeRevocation');
      expect(firstVerified).toBeGreaterThan(fake.calls.findIndex((c) => c.name === 'markRevocationUnverified'));
      expect(closed).toBeGreaterThan(firstVerified);
    });
  });

  it('a removal verified within the deadline closes the lease without an alert', () => {
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'leaver', actorId: 'hr' });
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', revokeReason: 'leaver' });
      expect(result.removalVerifiedAt).toBeDefined();
      expect(fake.inputsOf('beginRevocation')).toEqual([expect.objectContaining({ reason: 'leaver', actorId: 'hr' })]);
      expect(fake.count('markRevocationUnverified')).toBe(0);
      expect(fake.count('completeRevocation')).toBe(1);
    });
  });
});
