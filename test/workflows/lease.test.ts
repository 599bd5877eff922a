import { ApplicationFailure } from '@temporalio/common';
import { expect, it } from 'vitest';
import type { CredentialView } from '../../workflows/messages.js';
import { FakeActivities, autoApprove, delay, routeTo, stage, type Call } from './fakes.js';
import { REQUESTER, describeWorkflows, requestInput, useWorkflowHarness } from './harness.js';

// The lease of accessRequestWorkflow: start time, grant, expiry, extensions and credentials.

const { run } = useWorkflowHarness();

/** Initial request approved by `a`; an extension goes back to `a` (a new decision, so eligible again). */
const extensionNeedsApproval = (extensionStageTimeoutSeconds: number) =>
  new FakeActivities({
    evaluatePolicy: (input) =>
      input.purpose === 'extension'
        ? routeTo([stage('owner', ['a'], { timeoutSeconds: extensionStageTimeoutSeconds })], { extendRequiresApproval: true })
        : routeTo([stage('owner', ['a'])], { extendRequiresApproval: true }),
  });

describeWorkflows('the lease', () => {
  it('is granted, verified, and revoked as expired when its time runs out', () => {
    const t = { leaseSeconds: 2 };
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: t.leaseSeconds }));
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', revokeReason: 'expired', revokeRequestedAt: result.expiresAt });
      expect(Date.parse(result.expiresAt!) - Date.parse(result.grantedAt!)).toBeLessThanOrEqual(t.leaseSeconds * 1000);
      expect(fake.names()).toEqual(['evaluatePolicy', 'recordAutoApproval', 'grantAccess', 'verifyGranted', 'beginRevocation', 'removeAndVerify', 'completeRevocation']);
      expect(fake.inputsOf('beginRevocation')[0]).toMatchObject({ reason: 'expired', actorId: 'system' });
    });
  });

  it('keeps its bookkeeping in the workflow task: database writes are local activities, only target steps are scheduled', () => {
    const fake = new FakeActivities({ evaluatePolicy: () => routeTo([stage('owner', ['a'])]) });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: 1 }));
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      await lease.decide({ approverId: 'a', decision: 'approve' });
      await lease.result();
      const events = await lease.history();
      const scheduled = events.flatMap((e) => (e.activityTaskScheduledEventAttributes ? [e.activityTaskScheduledEventAttributes.activityType?.name] : []));
      // The approvers' notification is fire-and-forget and may be slow (mail): it stays scheduled too.
      expect(scheduled.sort()).toEqual(['grantAccess', 'notify', 'removeAndVerify', 'verifyGranted']);
      // Local activities leave a marker each, with the patch marker that switched them on for new runs.
      const markers = events.flatMap((e) => (e.markerRecordedEventAttributes ? [e.markerRecordedEventAttributes.markerName] : []));
      expect(markers.filter((m) => m === 'core_local_activity')).toHaveLength(['evaluatePolicy', 'openApprovalStage', 'recordDecision', 'beginRevocation', 'completeRevocation'].length);
      expect(markers).toContain('core_patch');
      expect(fake.names()).toEqual(expect.arrayContaining(['evaluatePolicy', 'openApprovalStage', 'recordDecision', 'grantAccess', 'verifyGranted', 'beginRevocation', 'removeAndVerify', 'completeRevocation']));
    });
  });

  it('an extension whose re-approval is still open when the lease ends: cut short at the expiry, refused, revoked as expired', () => {
    const t = { leaseSeconds: 3, extensionStageTimeoutSeconds: 60 };
    const fake = extensionNeedsApproval(t.extensionStageTimeoutSeconds);
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: t.leaseSeconds }));
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      await lease.decide({ approverId: 'a', decision: 'approve' });
      const { expiresAt } = await lease.waitForStatus('active');

      expect(await lease.extend({ actorId: REQUESTER, durationSeconds: 600, justification: 'still migrating' })).toEqual({ expiresAt, pendingApproval: true });
      await r.untilCalled('openApprovalStage', 2);
      // The stage's own timeout (60 s) is cut to the lease's end: it cannot outlive what it extends.
      expect(fake.inputsOf('openApprovalStage')[1]).toMatchObject({ purpose: 'extension', dueAt: expiresAt });

      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', revokeReason: 'expired', expiresAt, revokeRequestedAt: expiresAt });
      expect(fake.inputsOf('closeExtension')).toEqual([expect.objectContaining({ outcome: 'refused', reason: 'expired' })]);
      expect(fake.count('recordExtension')).toBe(0);
      const order = fake.names();
      expect(order.indexOf('closeExtension')).toBeLessThan(order.indexOf('beginRevocation'));
    });
  });

  it('an extension approved before the lease ends moves the expiry, and the old expiry passes without a revoke', () => {
    const t = { leaseSeconds: 3, extensionSeconds: 600 };
    const fake = extensionNeedsApproval(60);
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: t.leaseSeconds }));
      await lease.waitForState('stage 1 open', (s) => s.stage?.number === 1);
      await lease.decide({ approverId: 'a', decision: 'approve' });
      const { expiresAt: before } = await lease.waitForStatus('active');

      await lease.extend({ actorId: REQUESTER, durationSeconds: t.extensionSeconds, justification: 'still migrating' });
      await lease.waitForState('extension stage open', (s) => s.stage?.number === 2);
      expect(await lease.decide({ approverId: 'a', decision: 'approve' })).toEqual({ status: 'active' });
      const moved = await lease.waitForState('the expiry moved', (s) => s.expiresAt !== before);
      expect(Date.parse(moved.expiresAt!) - Date.parse(before!)).toBeGreaterThan((t.extensionSeconds - t.leaseSeconds) * 1000);
      await r.untilCalled('recordExtension');
      expect(fake.inputsOf('recordExtension')).toEqual([expect.objectContaining({ expiresAt: moved.expiresAt, actorId: REQUESTER })]);

      // Past the old expiry (wall clock).
      await r.sleep(Math.max(0, Date.parse(before!) - Date.now()) + 1000);
      expect((await lease.state()).status).toBe('active');
      expect(fake.count('beginRevocation')).toBe(0);

      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      expect(await lease.result()).toMatchObject({ status: 'revoked', revokeReason: 'manual' });
    });
  });

  // The workflow runs update handlers concurrently; two that rewrite the lease's credential on the
  // target must be serialised, or a renewal can re-issue over (and revoke) a freshly rotated one.
  it.each([
    { first: 'extend' as const, slow: 'renewCredential' as const },
    { first: 'rotate' as const, slow: 'rotateCredential' as const },
  ])('extend and rotate do not interleave on the target ($first arrives first)', ({ first, slow }) => {
    const t = { slowMs: 1500, fastMs: 200 };
    const issued = (id: string, notAfter: string): CredentialView => ({ id, kind: 'ssh_certificate', notAfter });
    const fake = new FakeActivities({
      grantAccess: () => ({ changed: true, credential: issued('cert-granted', new Date(Date.now() + 60_000).toISOString()) }),
      renewCredential: async (input) => {
        await delay(slow === 'renewCredential' ? t.slowMs : t.fastMs);
        return issued('cert-renewed', input.notAfter);
      },
      rotateCredential: async () => {
        await delay(slow === 'rotateCredential' ? t.slowMs : t.fastMs);
        return issued('cert-rotated', new Date(Date.now() + 60_000).toISOString());
      },
    });
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: 60 }));
      await lease.waitForStatus('active');
      const extend = () => lease.extend({ actorId: REQUESTER, durationSeconds: 600, justification: 'longer' });
      const rotate = () => lease.rotate({ actorId: REQUESTER });

      // The second arrives while the first is on the target.
      const one = first === 'extend' ? extend() : rotate();
      await r.untilCalled(slow);
      const two = first === 'extend' ? rotate() : extend();
      await Promise.all([one, two]);

      const ops = fake.calls.filter((c) => c.name === 'renewCredential' || c.name === 'rotateCredential');
      const lastDone = ops.reduce<Call | undefined>((a, c) => (a && (a.endedAt ?? 0) >= (c.endedAt ?? 0) ? a : c), undefined);
      const state = await lease.state();
      expect({
        overlapping: fake.overlaps(['renewCredential', 'rotateCredential']).map(([a, b]) => `${a.name} ∥ ${b.name}`),
        credential: state.credential,
      }).toEqual({ overlapping: [], credential: lastDone?.result });

      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      await lease.result();
    });
  });

  it('a scheduled start is approved now and granted only at the start time', () => {
    const t = { startInMs: 2000 };
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const startAt = new Date(Date.now() + t.startInMs).toISOString();
      const lease = await r.start(requestInput({ startAt }));
      expect(await lease.waitForStatus('scheduled')).toMatchObject({ startAt });
      await r.untilCalled('recordScheduled');
      expect(fake.inputsOf('recordScheduled')).toEqual([expect.objectContaining({ startAt })]);
      expect(fake.count('grantAccess')).toBe(0);

      await r.untilCalled('grantAccess', 1, { timeoutMs: t.startInMs + 10_000 });
      // Not granted before the start time (wall clock).
      expect(fake.calls.find((c) => c.name === 'grantAccess')!.startedAt).toBeGreaterThanOrEqual(Date.parse(startAt));
      await lease.waitForStatus('active');
      await lease.revoke({ reason: 'manual', actorId: 'operator' });
      await lease.result();
    });
  });

  it('a scheduled request revoked before its start time is cancelled without a grant', () => {
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ startAt: new Date(Date.now() + 600_000).toISOString() }));
      await lease.waitForStatus('scheduled');
      await lease.revoke({ reason: 'manual', actorId: REQUESTER, comment: 'plans changed' });
      expect((await lease.result()).status).toBe('cancelled');
      expect(fake.inputsOf('closeUnapproved')).toEqual([expect.objectContaining({ outcome: 'cancelled', actorId: REQUESTER, reason: 'plans changed' })]);
      expect(fake.count('grantAccess')).toBe(0);
    });
  });

  it('a grant the target refuses leaves no half-access: removed and verified, then failed', () => {
    const fake = new FakeActivities({
      grantAccess: () => {
        throw ApplicationFailure.nonRetryable('group does not exist', 'NoSuchResource');
      },
    });
    return run(fake, async (r) => {
      const lease = await r.start();
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'failed', lastError: expect.stringContaining('NoSuchResource') });
      expect(result.removalVerifiedAt).toBeDefined();
      expect(fake.inputsOf('removeAndVerify')).toEqual([expect.objectContaining({ reason: 'manual', grantId: lease.input.grantId })]);
      expect(fake.inputsOf('markFailed')).toEqual([expect.objectContaining({ reason: expect.stringContaining('group does not exist') })]);
      expect(fake.count('verifyGranted') + fake.count('completeRevocation')).toBe(0);
    });
  });

  it('adopted by reconciliation: no approvals, its micro-review opens once the grant is verified, then the usual expiry', () => {
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: 2, adopted: { from: 'reconciliation', findingId: 'finding-1' } }));
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', revokeReason: 'expired' });
      expect(fake.names()).toEqual(['recordAdoption', 'grantAccess', 'verifyGranted', 'openAdoptionReview', 'beginRevocation', 'removeAndVerify', 'completeRevocation']);
      expect(fake.inputsOf('openAdoptionReview')[0]).toMatchObject({ findingId: 'finding-1' });
    });
  });

  it('adopted access nobody can review is removed at once (reason reconciliation), never left standing', () => {
    const cases = [
      new FakeActivities({ openAdoptionReview: () => ({ skipped: 'self' }) }),
      new FakeActivities({
        openAdoptionReview: () => {
          throw ApplicationFailure.nonRetryable('nobody eligible', 'Review_no_eligible_reviewer');
        },
      }),
    ];
    return Promise.all(
      cases.map((fake) =>
        run(fake, async (r) => {
          const lease = await r.start(requestInput({ durationSeconds: 3600, adopted: { from: 'reconciliation', findingId: 'finding-2' } }));
          const result = await lease.result();
          expect(result).toMatchObject({ status: 'revoked', revokeReason: 'reconciliation' });
          expect(fake.inputsOf('beginRevocation')[0]).toMatchObject({ reason: 'reconciliation', actorId: 'reconciliationWorkflow' });
          expect(fake.count('evaluatePolicy')).toBe(0);
        }),
      ),
    );
  });

  it('imported by an operator: no approvals, no review, the expiry it was given', () => {
    const fake = new FakeActivities();
    return run(fake, async (r) => {
      const lease = await r.start(requestInput({ durationSeconds: 2, adopted: { from: 'import' } }));
      const result = await lease.result();
      expect(result).toMatchObject({ status: 'revoked', revokeReason: 'expired' });
      expect(fake.names()).toEqual(['recordAdoption', 'grantAccess', 'verifyGranted', 'beginRevocation', 'removeAndVerify', 'completeRevocation']);
      expect(fake.inputsOf('recordAdoption')[0]).toMatchObject({ from: 'import' });
    });
  });
});
