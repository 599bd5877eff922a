import { describe, expect, it } from 'vitest';
import { describeAuditEvent, finalStateOf, renderWriteBack, type WriteBackItem } from '../../activities/domain/desk-writeback.js';
import type { AuditEvent } from '../../db/schema.js';

// Event shapes as the activities write them (activities/approvals.ts, lease.ts, sentinel.ts,
// api/services/submission.ts); seq and hashes are filler, the renderer never reads them.
const REQUEST = '0b6c1f0e-5d7a-4a53-9a77-2f6f0d7c9e11';
const GRANT = '5f0c2a61-8b3e-4f0a-b1c4-7d2e9a6b3c22';
const OTHER_GRANT = '9a1d7e33-2c4b-4e6f-8a0b-1c2d3e4f5a66';
const SUBJECT = '3c9e2b7a-1f4d-4c8e-9b6a-5d4c3b2a1f00';
const ALICE = 'a11ce000-0000-4000-8000-000000000001';
const BOB = 'b0b00000-0000-4000-8000-000000000002';
const ENTITLEMENT = 'e0000000-0000-4000-8000-0000000000e1';
const EVIDENCE = 'https://accessloop.example.test/v1/access-requests/0b6c1f0e/evidence';
const NAMES = { [ALICE]: 'alice', [BOB]: 'bob', [ENTITLEMENT]: 'payments-db read' };
const BY_WORKFLOW = { actorType: 'workflow', actorId: 'accessRequestWorkflow' };

let seq = 100;
function ev(action: string, at: string, fields: Partial<AuditEvent> = {}): AuditEvent {
  seq++;
  return {
    seq,
    idempotencyKey: `access-request/${REQUEST}/${seq}`,
    stream: `request:${REQUEST}`,
    streamSeq: seq,
    hashVersion: 2,
    at: new Date(at),
    ...BY_WORKFLOW,
    action,
    requestId: REQUEST,
    grantId: null,
    identityId: null,
    reason: null,
    policyVersion: null,
    data: {},
    prevHash: 'a'.repeat(64),
    hash: 'b'.repeat(64),
    ...fields,
  };
}

let outboxId = 0;
const item = (event: AuditEvent): WriteBackItem => ({ outboxId: ++outboxId, text: null, event });
const reply = (text: string): WriteBackItem => ({ outboxId: ++outboxId, text, event: null });
const render = (...events: Array<AuditEvent | WriteBackItem>) =>
  renderWriteBack(
    events.map((e) => ('outboxId' in e ? e : item(e))),
    { requestId: REQUEST, evidenceUrl: EVIDENCE, names: NAMES },
  );
const linesOf = (text: string) => text.split('\n');

const submitted = () =>
  ev('request.submitted', '2026-03-02T09:00:00.250Z', {
    actorType: 'identity',
    actorId: ALICE,
    identityId: SUBJECT,
    reason: 'quarterly close, see ticket',
    data: { entitlementId: ENTITLEMENT, durationSeconds: 4 * 3600, httpRequestId: 'req-1' },
  });
const stageOpened = () =>
  ev('approval.stage_opened', '2026-03-02T09:00:01.900Z', {
    policyVersion: 'v7',
    data: { stage: 1, stageName: 'owner', approverIds: [BOB], onBehalfOf: {}, dueAt: '2026-03-03T09:00:01.000Z', rules: ['prod-needs-owner', 'high-risk'] },
  });
const approved = () =>
  ev('request.approved', '2026-03-02T09:12:30.123Z', {
    actorType: 'identity',
    actorId: BOB,
    policyVersion: 'v7',
    reason: 'ok for the close, ping me at bob@example.com',
    data: { stage: 1, stageComplete: true, httpRequestId: 'req-2' },
  });
const applied = () => ev('grant.applied', '2026-03-02T09:12:31.000Z', { grantId: GRANT, identityId: SUBJECT, data: { changed: true } });
const verified = () => ev('grant.verified', '2026-03-02T09:12:33.456Z', { grantId: GRANT, identityId: SUBJECT, data: { expiresAt: '2026-03-02T13:12:31.000Z' } });
const revokeRequested = (reason = 'expired', fields: Partial<AuditEvent> = {}) =>
  ev('grant.revoke_requested', '2026-03-02T13:12:31.000Z', { grantId: GRANT, reason, data: { reason }, ...fields });
const unverified = () =>
  ev('grant.revocation_unverified', '2026-03-02T13:17:31.000Z', {
    grantId: GRANT,
    // What describeFailure makes of a connector error: its message names the account and the SQL.
    reason: 'TargetUnavailable: REVOKE "payments_read" FROM "alice.smith@example.com" failed: connection refused 10.0.0.7',
  });
const removed = (at = '2026-03-02T13:20:02.789Z') =>
  ev('grant.removal_verified', at, { grantId: GRANT, identityId: SUBJECT, reason: 'expired', data: { changed: true, retainedBy: null, timeToRevokeMs: 451789 } });

describe('describeAuditEvent', () => {
  it('starts with the event time in UTC to the second and says what happened', () => {
    expect(describeAuditEvent(submitted(), NAMES)).toBe('2026-03-02T09:00:00Z Request submitted by alice for payments-db read for 4 h.');
    // A time given with an offset is still written in UTC.
    expect(describeAuditEvent(ev('grant.applied', '2026-03-02T10:12:31.999+01:00', { data: { changed: true } }))).toBe('2026-03-02T09:12:31Z Access granted on the target.');
  });

  it('names the policy version and the rules that fired', () => {
    expect(describeAuditEvent(ev('request.auto_approved', '2026-03-02T09:00:02Z', { policyVersion: 'v7', reason: 'low-risk read access', data: { rules: ['low-risk-auto'] } }))).toBe(
      '2026-03-02T09:00:02Z Approved automatically by policy v7: low-risk read access; rules fired: low-risk-auto.',
    );
    expect(describeAuditEvent(stageOpened(), NAMES)).toBe(
      '2026-03-02T09:00:01Z Approval stage 1 (owner) opened by policy v7; rules fired: prod-needs-owner, high-risk; waiting for bob until 2026-03-03T09:00:01Z.',
    );
    // A policy deny is closed by the workflow, with the rules but without a stage.
    expect(describeAuditEvent(ev('request.rejected', '2026-03-02T09:00:02Z', { reason: 'contractors may not hold production write access', data: { rules: ['no-contractor-write'] } }))).toBe(
      '2026-03-02T09:00:02Z Rejected by policy: contractors may not hold production write access; rules fired: no-contractor-write.',
    );
  });

  it('says who approved or rejected each stage, and when', () => {
    const partial = ev('approval.recorded', '2026-03-02T09:05:00Z', { actorType: 'identity', actorId: ALICE, policyVersion: 'v7', data: { stage: 1, stageComplete: false } });
    const stageDone = ev('approval.recorded', '2026-03-02T09:06:00Z', { actorType: 'identity', actorId: ALICE, policyVersion: 'v7', data: { stage: 1, stageComplete: true } });
    const rejected = ev('request.rejected', '2026-03-02T09:07:00Z', { actorType: 'identity', actorId: BOB, policyVersion: 'v7', reason: 'not for this quarter', data: { stage: 2, stageComplete: true } });
    expect(describeAuditEvent(partial, NAMES)).toBe('2026-03-02T09:05:00Z alice approved stage 1; the stage needs more approvals.');
    expect(describeAuditEvent(stageDone, NAMES)).toBe('2026-03-02T09:06:00Z alice approved stage 1; the next stage follows.');
    expect(describeAuditEvent(approved(), NAMES)).toBe('2026-03-02T09:12:30Z bob approved stage 1: the request is approved (policy v7).');
    expect(describeAuditEvent(rejected, NAMES)).toBe('2026-03-02T09:07:00Z bob rejected stage 2: the request is rejected.');
    // Without a name the approver is its id, never anything more personal.
    expect(describeAuditEvent(rejected)).toBe(`2026-03-02T09:07:00Z ${BOB} rejected stage 2: the request is rejected.`);
  });

  it('says access was granted, read back at T with its expiry, and extended', () => {
    expect(describeAuditEvent(applied())).toBe('2026-03-02T09:12:31Z Access granted on the target.');
    expect(describeAuditEvent(verified())).toBe('2026-03-02T09:12:33Z Access read back from the target and verified; it expires at 2026-03-02T13:12:31Z.');
    const extended = ev('grant.extended', '2026-03-02T12:00:00Z', {
      actorType: 'identity',
      actorId: ALICE,
      grantId: GRANT,
      reason: 'close runs late',
      data: { from: '2026-03-02T13:12:31.000Z', to: '2026-03-02T17:12:31.000Z', httpRequestId: 'req-3' },
    });
    expect(describeAuditEvent(extended, NAMES)).toBe('2026-03-02T12:00:00Z Lease extended by alice from 2026-03-02T13:12:31Z to 2026-03-02T17:12:31Z.');
  });

  it('says why access is revoked, from the revoke reason and not the revoker\'s comment', () => {
    expect(describeAuditEvent(revokeRequested())).toBe('2026-03-02T13:12:31Z Access is being revoked: the lease expired (by accessloop).');
    const byHand = revokeRequested('manual', { actorType: 'identity', actorId: ALICE, reason: 'call me on +44 20 7946 0000 if this breaks', data: { reason: 'manual', httpRequestId: 'req-9' } });
    expect(describeAuditEvent(byHand, NAMES)).toBe('2026-03-02T13:12:31Z Access is being revoked: revoked by hand (by alice).');
    expect(describeAuditEvent(revokeRequested('ticket'))).toContain('the ticket was rejected or deleted');
  });

  it('says the removal was verified at T, or that the membership stays for another grant', () => {
    expect(describeAuditEvent(removed())).toBe('2026-03-02T13:20:02Z Access removed; removal verified on the target at 2026-03-02T13:20:02Z.');
    const retained = ev('grant.ended_membership_retained', '2026-03-02T13:20:05Z', { grantId: GRANT, reason: 'expired', data: { changed: false, retainedBy: OTHER_GRANT, timeToRevokeMs: 1200 } });
    expect(describeAuditEvent(retained)).toBe(
      `2026-03-02T13:20:05Z Access of this request ended, verified at 2026-03-02T13:20:05Z; the membership stays because another active grant (${OTHER_GRANT}) still justifies it.`,
    );
    const bySentinel = ev('grant.removal_verified', '2026-03-02T14:00:00Z', { actorType: 'system', actorId: 'sentinel', grantId: GRANT, reason: 'sentinel', data: { findingId: 'f-1', retainedBy: null } });
    expect(describeAuditEvent(bySentinel)).toBe('2026-03-02T14:00:00Z Access removed by the sentinel; removal verified on the target at 2026-03-02T14:00:00Z.');
  });

  it('says clearly that an unverified removal is not verified and keeps the ticket open, with the failure type only', () => {
    const line = describeAuditEvent(unverified());
    expect(line).toBe(
      '2026-03-02T13:17:31Z Removal NOT verified yet (TargetUnavailable): the target still shows the access or could not be read. accessloop keeps retrying; the ticket stays open.',
    );
  });

  it('describes failed, expired, withdrawn and cancelled requests', () => {
    expect(describeAuditEvent(ev('request.failed', '2026-03-02T09:13:00Z', { grantId: GRANT, reason: 'GrantNotVerified: membership not yet visible on the target' }))).toBe(
      '2026-03-02T09:13:00Z Failed: access could not be granted (GrantNotVerified); nothing is left on the target.',
    );
    const notStarted = ev('request.failed', '2026-03-02T09:00:01Z', { actorType: 'system', actorId: 'api', reason: 'the workflow could not be started', data: { cause: 'workflow_start_failed', error: 'Error', httpRequestId: 'r' } });
    expect(describeAuditEvent(notStarted)).toBe('2026-03-02T09:00:01Z Failed: the request could not be started; no access was granted.');
    expect(describeAuditEvent(ev('request.expired_unapproved', '2026-03-03T09:00:02Z', { reason: 'approval stage owner timed out' }))).toBe(
      '2026-03-03T09:00:02Z Closed: the approval expired before a decision (approval stage owner timed out).',
    );
    const withdrawn = ev('request.cancelled', '2026-03-02T09:30:00Z', { actorType: 'identity', actorId: ALICE, reason: 'found another way, my manager Carol Jones agreed' });
    expect(describeAuditEvent(withdrawn, NAMES)).toBe('2026-03-02T09:30:00Z Withdrawn by alice before access was granted.');
  });

  it('writes an unknown action back by name instead of dropping it', () => {
    const line = describeAuditEvent(ev('grant.quarantined', '2026-03-02T10:00:00Z', { actorType: 'system', actorId: 'api', data: { secret: 'x' } }));
    expect(line).toBe('2026-03-02T10:00:00Z grant.quarantined (by accessloop).');
  });

  it('never dumps data, and withholds e-mails and tokens that reach it through names or reasons', () => {
    const token = `al_${'Zx9'.repeat(15)}`;
    const e = ev('grant.applied', '2026-03-02T09:12:31Z', {
      grantId: GRANT,
      data: { changed: true, credentialId: 'cred-1', password: 'hunter2-S3cret!', token, contact: 'alice.smith@example.com', sql: 'GRANT payments_read TO "alice"' },
    });
    const line = describeAuditEvent(e);
    for (const leaked of ['hunter2', token, 'alice.smith@example.com', 'GRANT payments_read', 'cred-1', '{', 'password']) expect(line).not.toContain(leaked);

    const named = describeAuditEvent(approved(), { [BOB]: 'Bob <bob.builder@example.com>' });
    expect(named).not.toContain('bob.builder@example.com');
    expect(named).toContain('[e-mail withheld]');
    const tokenInReason = describeAuditEvent(ev('request.auto_approved', '2026-03-02T09:00:02Z', { policyVersion: 'v7', reason: `approved with ${token}`, data: { rules: [] } }));
    expect(tokenInReason).not.toContain(token);
  });

  it('keeps a long line under 300 characters', () => {
    const line = describeAuditEvent(ev('request.auto_approved', '2026-03-02T09:00:02Z', { policyVersion: 'v7', reason: 'x'.repeat(290), data: { rules: ['a', 'b'] } }));
    expect(line.length).toBeLessThan(300);
    expect(line.startsWith('2026-03-02T09:00:02Z Approved automatically by policy v7: xxx')).toBe(true);
  });
});

describe('finalStateOf', () => {
  it('resolves on verified removal and rejects on rejection, expiry, failure and withdrawal', () => {
    expect(finalStateOf({ action: 'grant.removal_verified', data: {} })).toBe('resolved');
    expect(finalStateOf({ action: 'grant.ended_membership_retained', data: { retainedBy: OTHER_GRANT } })).toBe('resolved');
    for (const action of ['request.rejected', 'request.expired_unapproved', 'request.failed', 'request.cancelled']) expect(finalStateOf({ action, data: {} })).toBe('rejected');
    // An unverified removal, a refused extension and the ordinary steps change no state by themselves.
    for (const action of ['grant.revocation_unverified', 'extension.rejected', 'extension.refused', 'grant.verified', 'request.approved', 'grant.revoke_requested']) {
      expect(finalStateOf({ action, data: {} })).toBeUndefined();
    }
  });
});

describe('renderWriteBack', () => {
  it('keeps approval steps alone as an internal note for the desk staff', () => {
    const wb = render(stageOpened(), approved());
    expect(wb.visibility).toBe('internal');
    expect(wb.state).toBeUndefined();
  });

  it('writes one line per item, in order, to the requester when it says the request was taken in and access works', () => {
    const wb = render(submitted(), stageOpened(), approved(), applied(), verified());
    expect(linesOf(wb.text)).toEqual([
      '2026-03-02T09:00:00Z Request submitted by alice for payments-db read for 4 h.',
      '2026-03-02T09:00:01Z Approval stage 1 (owner) opened by policy v7; rules fired: prod-needs-owner, high-risk; waiting for bob until 2026-03-03T09:00:01Z.',
      '2026-03-02T09:12:30Z bob approved stage 1: the request is approved (policy v7).',
      '2026-03-02T09:12:31Z Access granted on the target.',
      '2026-03-02T09:12:33Z Access read back from the target and verified; it expires at 2026-03-02T13:12:31Z.',
    ]);
    expect(wb.visibility).toBe('requester');
    expect(wb.state).toBeUndefined();
    expect('state' in wb).toBe(false);
    // The approver's comment is free text: it stays in accessloop.
    expect(wb.text).not.toContain('bob@example.com');
  });

  it('resolves with the verified removal, to the requester, ending with the evidence link', () => {
    const wb = render(revokeRequested(), removed());
    expect(wb.state).toBe('resolved');
    expect(wb.visibility).toBe('requester');
    expect(linesOf(wb.text)).toEqual([
      '2026-03-02T13:12:31Z Access is being revoked: the lease expired (by accessloop).',
      '2026-03-02T13:20:02Z Access removed; removal verified on the target at 2026-03-02T13:20:02Z.',
      `Evidence: ${EVIDENCE}`,
    ]);
  });

  it('resolves when the membership is retained by another grant', () => {
    const wb = render(revokeRequested(), ev('grant.ended_membership_retained', '2026-03-02T13:20:05Z', { grantId: GRANT, data: { changed: false, retainedBy: OTHER_GRANT } }));
    expect(wb.state).toBe('resolved');
    expect(linesOf(wb.text).at(-1)).toBe(`Evidence: ${EVIDENCE}`);
  });

  it('keeps the ticket open on an unverified removal, without an evidence link', () => {
    const wb = render(revokeRequested(), unverified());
    expect(wb.state).toBe('open');
    expect(wb.visibility).toBe('requester');
    expect(wb.text).toContain('Removal NOT verified yet');
    expect(wb.text).toContain('the ticket stays open');
    expect(wb.text).not.toContain('Evidence:');
    // The connector's message names the account, the statement and a host: none of it is posted.
    for (const leaked of ['alice.smith', 'REVOKE', '10.0.0.7', 'payments_read']) expect(wb.text).not.toContain(leaked);
  });

  it('lets the last deciding event win: unverified, then verified, resolves', () => {
    const wb = render(revokeRequested(), unverified(), removed());
    expect(wb.state).toBe('resolved');
    const lines = linesOf(wb.text);
    expect(lines).toHaveLength(4);
    expect(lines[0]).toContain('Access is being revoked');
    expect(lines[1]).toContain('Removal NOT verified yet');
    expect(lines[2]).toContain('removal verified on the target at 2026-03-02T13:20:02Z');
    expect(lines[3]).toBe(`Evidence: ${EVIDENCE}`);
  });

  it('lets the last deciding event win: a verified removal followed by an unverified one stays open', () => {
    const wb = render(removed('2026-03-02T13:00:00Z'), unverified());
    expect(wb.state).toBe('open');
    expect(wb.text).not.toContain('Evidence:');
  });

  it('rejects a failed grant even after its removal was unverified on the way', () => {
    const failed = ev('request.failed', '2026-03-02T09:40:00Z', { grantId: GRANT, reason: 'GrantNotVerified: membership not yet visible on the target' });
    const wb = render(applied(), unverified(), failed);
    expect(wb.state).toBe('rejected');
    expect(wb.visibility).toBe('requester');
    expect(linesOf(wb.text).at(-1)).toBe(`Evidence: ${EVIDENCE}`);
    expect(linesOf(wb.text).at(-2)).toContain('Failed: access could not be granted (GrantNotVerified)');
  });

  it('rejects a rejection, an expired approval and a withdrawal, each with the evidence link', () => {
    const rejected = ev('request.rejected', '2026-03-02T09:07:00Z', { actorType: 'identity', actorId: BOB, policyVersion: 'v7', data: { stage: 1, stageComplete: true } });
    const expired = ev('request.expired_unapproved', '2026-03-03T09:00:02Z', { reason: 'approval stage owner timed out' });
    const withdrawn = ev('request.cancelled', '2026-03-02T09:30:00Z', { actorType: 'identity', actorId: ALICE, reason: 'withdrawn before approval' });
    for (const closing of [rejected, expired, withdrawn]) {
      const wb = render(stageOpened(), closing);
      expect(wb.state).toBe('rejected');
      expect(wb.visibility).toBe('requester');
      expect(linesOf(wb.text)).toHaveLength(3);
      expect(linesOf(wb.text)[2]).toBe(`Evidence: ${EVIDENCE}`);
    }
  });

  it('renders a ready reply as its text, for the requester, without changing the state', () => {
    const wb = render(reply('Not accepted: the first line must be /approve or /reject, and you are not an approver of this request.'), applied());
    expect(linesOf(wb.text)).toEqual([
      'Not accepted: the first line must be /approve or /reject, and you are not an approver of this request.',
      '2026-03-02T09:12:31Z Access granted on the target.',
    ]);
    expect(wb.visibility).toBe('requester');
    expect(wb.state).toBeUndefined();
    // One line per item, even when the reply was written over several.
    expect(linesOf(render(reply('Not accepted.\nAsk an approver.')).text)).toEqual(['Not accepted. Ask an approver.']);
  });

  it('keeps an unknown action in its place in the post', () => {
    const wb = render(applied(), ev('grant.quarantined', '2026-03-02T09:12:32Z', { data: { token: 'al_notreallyatoken_but_looks_like_one' } }), verified());
    expect(linesOf(wb.text)[1]).toBe('2026-03-02T09:12:32Z grant.quarantined (by accessloop).');
    expect(wb.text).not.toContain('al_notreally');
  });

  it('caps a long batch under 3500 characters, keeping the first line, the final state line and the link', () => {
    const escalations = Array.from({ length: 60 }, (_, i) =>
      ev('approval.escalated', `2026-03-02T10:${String(i).padStart(2, '0')}:00Z`, {
        policyVersion: 'v7',
        data: { stage: 1, waiting: [BOB], added: [ALICE, BOB, `manager-${i}-${'m'.repeat(40)}`, `lead-${i}-${'l'.repeat(40)}`] },
      }),
    );
    const wb = render(submitted(), ...escalations, revokeRequested(), removed());
    const lines = linesOf(wb.text);
    expect(wb.text.length).toBeLessThan(3500);
    for (const line of lines) expect(line.length).toBeLessThan(300);
    expect(lines[0]).toBe('2026-03-02T09:00:00Z Request submitted by alice for payments-db read for 4 h.');
    expect(lines.at(-2)).toBe('2026-03-02T13:20:02Z Access removed; removal verified on the target at 2026-03-02T13:20:02Z.');
    expect(lines.at(-1)).toBe(`Evidence: ${EVIDENCE}`);
    expect(wb.state).toBe('resolved');
    const gaps = lines.filter((l) => l.includes('left out'));
    expect(gaps).toHaveLength(1);
    const [, left, requestId] = /^… (\d+) lines left out here; request ([0-9a-f-]+) in accessloop has the full history …$/.exec(gaps[0]!) ?? [];
    expect(requestId).toBe(REQUEST);
    // Every event is either shown or counted.
    expect(lines.length - 2 + Number(left)).toBe(1 + escalations.length + 2);
    // The latest lines are kept, just before the end.
    expect(lines.at(-3)).toBe('2026-03-02T13:12:31Z Access is being revoked: the lease expired (by accessloop).');
  });

  it('keeps the line that decided the state when later lines would crowd it out', () => {
    const later = Array.from({ length: 40 }, (_, i) => ev('grant.quarantined'.padEnd(250, 'x'), `2026-03-02T14:${String(i).padStart(2, '0')}:00Z`));
    const wb = render(submitted(), removed(), ...later);
    const lines = linesOf(wb.text);
    expect(wb.text.length).toBeLessThan(3500);
    expect(wb.state).toBe('resolved');
    expect(lines[0]).toContain('Request submitted');
    expect(lines[1]).toContain('removal verified on the target');
    expect(lines.at(-1)).toBe(`Evidence: ${EVIDENCE}`);
    expect(lines.at(-2)).toContain('2026-03-02T14:39:00Z');
    expect(lines.filter((l) => l.includes('left out'))).toHaveLength(1);
  });

  it('renders an empty batch as empty text', () => {
    expect(renderWriteBack([], { requestId: REQUEST, evidenceUrl: EVIDENCE })).toEqual({ text: '', visibility: 'internal' });
  });
});
