import { expect, it } from 'vitest';
import { UpdateRejection } from '../../workflows/messages.js';
import { FakeActivities, deny, routeTo, stage } from './fakes.js';
import { REQUESTER, describeWorkflows, refusal, useWorkflowHarness } from './harness.js';

// Approval stages of accessRequestWorkflow: quorum, four eyes, reminders, escalation, timeouts.

const { run } = useWorkflowHarness();

describeWorkflows('approval stages', () => {
  it('a stage with quorum 2 needs two distinct approvers: one approval leaves it pending, the second grants', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owners', ['a', 'b', 'c'], { quorum: 2 })]) });
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);

      expect(await lease.decide({ approverId: 'a', decision: 'approve' })).toEqual({ status: 'pending_approval' });
      // The same person twice is still one approval.
      expect(await refusal(lease.decide({ approverId: 'a', decision: 'approve' }))).toBe(UpdateRejection.NotEligible);
      expect((await lease.state()).status).toBe('pending_approval');
      expect(fake.count('grantAccess')).toBe(0);

      expect(await lease.decide({ approverId: 'b', decision: 'approve' })).toEqual({ status: 'granting' });
      await lease.waitForStatus('active');
      expect(fake.inputsOf('recordDecision').map((d) => [d.approverId, d.stageComplete])).toEqual([
        ['a', false],
        ['b', true],
      ]);
      expect(fake.count('grantAccess')).toBe(1);

      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      expect((await lease.result()).status).toBe('revoked');
    });
  });

  it('four eyes: the requester, a non-assigned approver and an approver of an earlier stage are refused, leaving no trace', () => {
    const fake = new FakeActivities({
      evaluatePolicy: () => routeTo([stage('manager', [REQUESTER, 'a', 'b']), stage('owner', ['a', 'c'])]),
    });
    return run(fake, async (r) => {
      const lease = await r.start();
      const first = await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      expect(first.stage?.approverIds).toEqual(['a', 'b']);

      expect(await refusal(lease.decide({ approverId: REQUESTER, decision: 'approve' }))).toBe(UpdateRejection.SelfApproval);
      expect(await refusal(lease.decide({ approverId: 'outsider', decision: 'approve' }))).toBe(UpdateRejection.NotEligible);
      // Refused in the validator: no decision written, nothing in history.
      expect(fake.count('recordDecision')).toBe(0);
      expect(await lease.acceptedUpdates()).toEqual([]);

      expect(await lease.decide({ approverId: 'a', decision: 'approve' })).toEqual({ status: 'pending_approval' });
      const second = await lease.waitForState('stage 2 open', (s) => s.stage?.number === 2);
      expect(second.stage?.approverIds).toEqual(['c']);
      expect(await refusal(lease.decide({ approverId: 'a', decision: 'approve' }))).toBe(UpdateRejection.NotEligible);
      // An action link minted for stage 1 does not decide stage 2.
      expect(await refusal(lease.decide({ approverId: 'c', decision: 'approve', stage: 1 }))).toBe(UpdateRejection.NotPending);

      expect(await lease.decide({ approverId: 'c', decision: 'approve', stage: 2 })).toEqual({ status: 'granting' });
      await lease.waitForStatus('active');
      expect(fake.inputsOf('recordDecision').map((d) => [d.stage, d.approverId])).toEqual([
        [1, 'a'],
        [2, 'c'],
      ]);
      const accepted = await lease.acceptedUpdates();
      expect(accepted.map((u) => [u.name, (u.args[0] as { approverId: string }).approverId])).toEqual([
        ['decide', 'a'],
        ['decide', 'c'],
      ]);
    });
  });

  it('reminds the waiting approvers, then escalates, and an escalated approver can approve', () => {
    const t = { reminderAfterSeconds: 2, escalateAfterSeconds: 3, timeoutSeconds: 20 };
    const fake = new FakeActivities({
      evaluatePolicy: () => routeTo([stage('owners', ['a', 'b', 'c'], { quorum: 2, ...t })]),
      escalateStage: () => ({ approverIds: ['manager-m'] }),
    });
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      await lease.decide({ approverId: 'a', decision: 'approve' });

      await r.untilCalled('escalateStage', 1, { timeoutMs: (t.escalateAfterSeconds + 5) * 1000 });
      const escalated = await lease.waitForState('the escalated approver on the stage', (s) => !!s.stage?.approverIds.includes('manager-m'));
      expect(escalated.stage?.approverIds).toEqual(['a', 'b', 'c', 'manager-m']);
      await r.until('the escalation notice', () => fake.inputsOf('notify').some((n) => n.event === 'approval.escalated'));

      const notices = fake.calls.filter((c) => c.name === 'notify' || c.name === 'escalateStage');
      expect(notices.map((c) => (c.name === 'notify' ? [(c.input as { event: string }).event, (c.input as { recipientIds: string[] }).recipientIds] : [c.name]))).toEqual([
        ['approval.requested', ['a', 'b', 'c']],
        // Only those who have not approved yet are reminded.
        ['approval.reminder', ['b', 'c']],
        ['escalateStage'],
        ['approval.escalated', ['manager-m']],
      ]);
      const [escalation] = fake.inputsOf('escalateStage');
      expect(escalation?.waitingApproverIds).toEqual(['b', 'c']);
      expect(escalation?.excludeIds).toEqual(expect.arrayContaining([REQUESTER, 'a', 'b', 'c']));
      // The reminder waited for its timer (opened → reminded), it was not sent with the request (wall clock).
      const opened = fake.calls.find((c) => c.name === 'openApprovalStage')!.startedAt;
      const reminded = fake.calls.find((c) => c.name === 'notify' && (c.input as { event: string }).event === 'approval.reminder')!.startedAt;
      expect(reminded - opened).toBeGreaterThanOrEqual(t.reminderAfterSeconds * 1000 - 500);

      expect(await lease.decide({ approverId: 'manager-m', decision: 'approve' })).toEqual({ status: 'granting' });
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      await lease.result();
    });
  });

  it('an approval that times out ends expired_unapproved and closes the request as such', () => {
    const t = { timeoutSeconds: 2 };
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', ['a'], t)]) });
    return run(fake, async (r) => {
      const lease = await r.start();
      const result = await lease.result();
      expect(result.status).toBe('expired_unapproved');
      expect(fake.inputsOf('closeUnapproved')).toEqual([expect.objectContaining({ requestId: lease.input.requestId, outcome: 'expired_unapproved' })]);
      expect(fake.count('grantAccess')).toBe(0);
      const opened = fake.calls.find((c) => c.name === 'openApprovalStage')!;
      const closed = fake.calls.find((c) => c.name === 'closeUnapproved')!;
      // The stage ran its full timeout before closing (wall clock).
      expect(closed.startedAt - opened.startedAt).toBeGreaterThanOrEqual(t.timeoutSeconds * 1000 - 500);
      expect(fake.inputsOf('openApprovalStage')[0]?.dueAt).toBe(result.stage?.dueAt);
    });
  });

  it('a rejection ends the request: later stages never open and nothing is granted', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('manager', ['a', 'b']), stage('owner', ['c'])]) });
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      expect(await lease.decide({ approverId: 'b', decision: 'reject', comment: 'not needed' })).toEqual({ status: 'rejected' });
      expect((await lease.result()).status).toBe('rejected');
      // The decision closes the stage's other tasks (stageComplete) and the request.
      expect(fake.inputsOf('recordDecision')).toEqual([expect.objectContaining({ approverId: 'b', decision: 'reject', stageComplete: true })]);
      expect(fake.count('openApprovalStage')).toBe(1);
      expect(fake.count('grantAccess')).toBe(0);
    });
  });

  it('a revoke while approval is pending withdraws the request (cancelled, by whom and why)', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', ['a'])]) });
    return run(fake, async (r) => {
      const lease = await r.start();
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      await lease.revoke({ reason: 'manual', actorId: REQUESTER, comment: 'no longer needed' });
      expect((await lease.result()).status).toBe('cancelled');
      expect(fake.inputsOf('closeUnapproved')).toEqual([expect.objectContaining({ outcome: 'cancelled', actorId: REQUESTER, reason: 'no longer needed' })]);
      expect(fake.count('grantAccess')).toBe(0);
    });
  });

  it('a denying policy, or a stage no one but the requester could approve, rejects without granting', () => {
    const denied = new FakeActivities({ evaluatePolicy: () => deny('subject is not active') });
    const noQuorum = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', [REQUESTER, 'a'], { quorum: 2 })]) });
    return Promise.all([
      run(denied, async (r) => {
        const lease = await r.start();
        expect((await lease.result()).status).toBe('rejected');
        expect(denied.inputsOf('closeUnapproved')).toEqual([expect.objectContaining({ outcome: 'rejected', reason: 'subject is not active' })]);
        expect(denied.count('openApprovalStage') + denied.count('grantAccess')).toBe(0);
      }),
      run(noQuorum, async (r) => {
        const lease = await r.start();
        expect((await lease.result()).status).toBe('rejected');
        expect(noQuorum.inputsOf('closeUnapproved')).toEqual([expect.objectContaining({ outcome: 'rejected', reason: expect.stringMatching(/cannot reach its quorum of 2/) })]);
        expect(noQuorum.count('openApprovalStage') + noQuorum.count('grantAccess')).toBe(0);
      }),
    ]);
  });
});
