import { expect, it } from 'vitest';
import { type RevokeArgs, UpdateRejection, reviewSignal } from '../../workflows/messages.js';
import { FakeActivities, autoApprove, routeTo, stage } from './fakes.js';
import { type Lease, REQUESTER, describeWorkflows, refusal, requestInput, useWorkflowHarness } from './harness.js';

// The message boundary of accessRequestWorkflow (workflows/message-schemas.ts): an invalid signal
// is dropped and recorded, never a failed workflow task or a failed activity; an invalid update is
// refused as InvalidInput; the subject never approves; extensions without re-approval are capped.

const { run } = useWorkflowHarness();

/** Workflow tasks that failed (a throwing handler fails every retry of its task). */
async function failedTasks(lease: Lease): Promise<number> {
  return (await lease.history()).filter((e) => e.workflowTaskFailedEventAttributes).length;
}

describeWorkflows('the message boundary', () => {
  it('revoke signals with an unknown reason or no input are ignored and recorded; the lease still ends at its expiry', () => {
    const t = { leaseSeconds: 3 };
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: t.leaseSeconds }));
      await lease.waitForStatus('active');
      // What the Temporal UI lets anyone send: a capitalised reason the database enum does not know, and nothing at all.
      await lease.revoke({ reason: 'Manual', actorId: 'someone' } as unknown as RevokeArgs);
      await lease.handle.signal('revoke');
      await lease.handle.signal(reviewSignal, { reason: 'mover', deadlineSeconds: -1 });

      const seen = await lease.waitForState('three signals ignored', (s) => s.ignoredSignals === 3);
      expect(seen.status).toBe('active');
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', revokeReason: 'expired', ignoredSignals: 3 });
      expect(fake.inputsOf('beginRevocation')).toEqual([expect.objectContaining({ reason: 'expired', actorId: 'system' })]);
      expect(fake.inputsOf('beginRevocation')[0]).not.toHaveProperty('signalActorClaimed');
      expect(fake.calls.filter((c) => c.failed)).toEqual([]);
      expect(fake.count('reviewStages')).toBe(0);
      expect(await failedTasks(lease)).toBe(0);
    });
  });

  it('a valid revoke from the Temporal UI (no reason, no actor) still revokes, as a manual revoke whose actor is a claim', () => {
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForStatus('active');
      await lease.revoke({} as RevokeArgs);
      expect(await lease.result()).toMatchObject({ status: 'revoked', revokeReason: 'manual' });
      expect(fake.inputsOf('beginRevocation')).toEqual([expect.objectContaining({ reason: 'manual', actorId: 'temporal-ui', signalActorClaimed: true })]);
      expect(await failedTasks(lease)).toBe(0);
    });
  });

  it('a revoke claiming an actor passes the claim on, flagged, for the activity to attribute', () => {
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'sentinel', actorId: 'operator-7', comment: 'found stale' });
      expect(await lease.result()).toMatchObject({ status: 'revoked', revokeReason: 'sentinel' });
      expect(fake.inputsOf('beginRevocation')).toEqual([expect.objectContaining({ reason: 'sentinel', actorId: 'operator-7', signalActorClaimed: true })]);
    });
  });

  it('malformed updates are refused as InvalidInput and leave nothing in history', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', ['a'])]) });
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      expect(await refusal(lease.decide({ approverId: 'a', decision: 'maybe' } as never))).toBe(UpdateRejection.InvalidInput);
      expect(await refusal(lease.decide(undefined as never))).toBe(UpdateRejection.InvalidInput);
      expect(await lease.acceptedUpdates()).toEqual([]);
      await lease.decide({ approverId: 'a', decision: 'approve' });
      await lease.waitForStatus('active');
      expect(await refusal(lease.extend({ actorId: REQUESTER, durationSeconds: 60 } as never))).toBe(UpdateRejection.InvalidInput);
      expect((await lease.acceptedUpdates()).map((u) => u.name)).toEqual(['decide']);
      expect(await failedTasks(lease)).toBe(0);
    });
  });
});

describeWorkflows('the beneficiary never approves', () => {
  it('the subject is left off the stage and refused by the validator; the other approver decides', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', ['subject-1', 'a'])]) });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ subjectId: 'subject-1' }));
      const open = await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      expect(open.stage?.approverIds).toEqual(['a']);
      await r.untilCalled('openApprovalStage');
      expect(fake.inputsOf('openApprovalStage')[0]).toMatchObject({ approverIds: ['a'] });
      expect(await refusal(lease.decide({ approverId: 'subject-1', decision: 'approve' }))).toBe(UpdateRejection.SelfApproval);
      await lease.decide({ approverId: 'a', decision: 'approve' });
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      await lease.result();
    });
  });

  it('a stage only the subject could approve ends the request as rejected, with the reason', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', ['subject-1'])]) });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ subjectId: 'subject-1' }));
      const result = await lease.result();
      expect(result.status).toBe('rejected');
      expect(fake.count('openApprovalStage')).toBe(0);
      expect(fake.inputsOf('closeUnapproved')).toEqual([expect.objectContaining({ outcome: 'rejected', reason: expect.stringMatching(/other than the requester and the subject/) })]);
    });
  });

  it('escalation never adds the subject', () => {
    const fake = new FakeActivities({
      evaluatePolicy: () => routeTo([stage('owner', ['a'], { escalateAfterSeconds: 1, timeoutSeconds: 30 })]),
      // A resolver that gets it wrong: the engine does not rely on it.
      escalateStage: () => ({ approverIds: ['subject-1', 'b'] }),
    });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ subjectId: 'subject-1' }));
      await r.untilCalled('escalateStage');
      expect(fake.inputsOf('escalateStage')[0]?.excludeIds).toEqual(expect.arrayContaining([REQUESTER, 'subject-1']));
      const escalated = await lease.waitForState('escalated', (s) => (s.stage?.approverIds.length ?? 0) > 1);
      expect(escalated.stage?.approverIds).toEqual(['a', 'b']);
      expect(await refusal(lease.decide({ approverId: 'subject-1', decision: 'approve' }))).toBe(UpdateRejection.SelfApproval);
      await lease.decide({ approverId: 'b', decision: 'approve' });
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      await lease.result();
    });
  });
});

describeWorkflows('extensions without re-approval', () => {
  it('may not run the lease past its grant + the policy maximum, however many there are', () => {
    const t = { maxSeconds: 20, leaseSeconds: 10, firstExtensionSeconds: 15, waitMs: 2000, secondExtensionSeconds: 19 };
    const fake = new FakeActivities({ evaluatePolicy: () => autoApprove({ maxDurationSeconds: t.maxSeconds }) });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: t.leaseSeconds }));
      // Granted just after the target verified it (workflow time): the cap is at most this + the maximum.
      const grantedAt = Date.parse((await lease.waitForStatus('active')).grantedAt!);

      await lease.extend({ actorId: REQUESTER, durationSeconds: t.firstExtensionSeconds, justification: 'still migrating' });
      await r.sleep(t.waitMs);
      // Within the maximum counted from now, but past grant + maximum: refused.
      const again = () => lease.extend({ actorId: REQUESTER, durationSeconds: t.secondExtensionSeconds, justification: 'and again' });
      expect(await refusal(again())).toBe(UpdateRejection.OutsidePolicy);
      const why = await again().catch((err: { cause?: { message?: string } }) => err.cause?.message);
      expect(why).toMatch(/without re-approval this lease ends by .* at the latest \(20 seconds after it was granted\)/);
      const { expiresAt } = await lease.state();
      expect(Date.parse(expiresAt!)).toBeLessThanOrEqual(grantedAt + t.maxSeconds * 1000);
      expect(fake.count('recordExtension')).toBe(1);

      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      await lease.result();
    });
  });
});
