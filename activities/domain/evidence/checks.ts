import type { AuditEvent } from '../../../db/schema.js';
import { hashEvent } from '../audit.js';
import type { EvidenceBundle, EvidenceEvent, EvidenceProblem } from './format.js';

// ---- checks shared by the export and the offline verifier ----------------------------------

export const DECISION_ACTIONS = new Set(['request.approved', 'request.rejected', 'approval.recorded', 'extension.approval_recorded', 'extension.rejected', 'review.approval_recorded', 'review.rejected']);

function toHashable(e: EvidenceEvent): Omit<AuditEvent, 'hash'> {
  return { ...e, at: new Date(e.at) };
}

/** Each event's hash recomputed from its fields; the link between events adjacent in seq. */
export function checkEvents(events: EvidenceEvent[]): { problems: EvidenceProblem[]; linksChecked: number } {
  const problems: EvidenceProblem[] = [];
  let linksChecked = 0;
  let prev: EvidenceEvent | undefined;
  for (const e of events) {
    if (hashEvent(toHashable(e)) !== e.hash) {
      problems.push({ code: 'hash_mismatch', seq: e.seq, message: `event seq ${e.seq} (${e.action}): its fields do not hash to its recorded hash; the event was changed` });
    }
    if (prev && e.seq <= prev.seq) problems.push({ code: 'order', seq: e.seq, message: `event seq ${e.seq} follows seq ${prev.seq}: events must be in ascending seq order` });
    if (prev && e.seq === prev.seq + 1) {
      linksChecked++;
      if (e.prevHash !== prev.hash) problems.push({ code: 'link_broken', seq: e.seq, message: `event seq ${e.seq}: prev_hash does not match the hash of seq ${prev.seq}` });
    }
    prev = e;
  }
  return { problems, linksChecked };
}

export type Facts = Pick<EvidenceBundle, 'request' | 'policy' | 'approvals' | 'grant' | 'grantVerification' | 'revocation' | 'removalVerification' | 'events'>;

/**
 * The facts drawn from mutable tables (approvals, grant) must agree with the hash-chained events
 * that recorded them; and every event must concern this request or its grant.
 */
export function checkFacts(b: Facts): EvidenceProblem[] {
  const problems: EvidenceProblem[] = [];
  const bySeq = new Map(b.events.map((e) => [e.seq, e]));
  const grantId = b.grant?.id;
  for (const e of b.events) {
    if (e.requestId !== b.request.id && !(grantId && e.grantId === grantId)) {
      problems.push({ code: 'event_unrelated', seq: e.seq, message: `event seq ${e.seq} concerns neither request ${b.request.id} nor its grant` });
    }
  }
  /** The event a fact cites, when it is in the bundle and of the right kind. */
  const backedBy = (what: string, seq: number | null, actions: (a: string) => boolean): EvidenceEvent | undefined => {
    const e = seq === null ? undefined : bySeq.get(seq);
    if (!e) {
      problems.push({ code: 'fact_unsupported', ...(seq === null ? {} : { seq }), message: `${what}: no hash-chained event${seq === null ? '' : ` seq ${seq}`} in the bundle records it` });
      return undefined;
    }
    if (!actions(e.action)) {
      problems.push({ code: 'fact_mismatch', seq: e.seq, message: `${what}: event seq ${e.seq} is ${e.action}, not the event that records it` });
      return undefined;
    }
    return e;
  };
  const mismatch = (what: string, field: string, e: EvidenceEvent) =>
    problems.push({ code: 'fact_mismatch', seq: e.seq, message: `${what}: ${field} differs from the hash-chained event seq ${e.seq} (${e.action})` });

  for (const a of b.approvals) {
    if (!a.decision) continue;
    const what = `approval of stage ${a.stage} by ${a.approverId}`;
    const e = backedBy(what, a.eventSeq, (x) => DECISION_ACTIONS.has(x));
    if (!e) continue;
    if (e.actorId !== a.approverId) mismatch(what, 'the approver', e);
    if ((e.data as { stage?: unknown }).stage !== a.stage) mismatch(what, 'the stage', e);
    if ((e.reason ?? null) !== (a.comment ?? null)) mismatch(what, 'the comment', e);
    if ((a.decision === 'reject') !== e.action.endsWith('.rejected')) mismatch(what, 'the decision', e);
  }
  for (const r of b.policy.rulesFired) {
    const e = backedBy(`policy rule ${r.rule}`, r.seq, () => true);
    if (e && !((e.data as { rules?: unknown }).rules as unknown[] | undefined)?.includes(r.rule)) mismatch(`policy rule ${r.rule}`, 'the rule', e);
  }
  for (const s of b.policy.stagesOpened) {
    const e = backedBy(`approval stage ${s.stage}`, s.seq, (x) => x.endsWith('.stage_opened'));
    if (e && (e.data as { stage?: unknown }).stage !== s.stage) mismatch(`approval stage ${s.stage}`, 'the stage', e);
  }
  if (b.grantVerification) {
    const e = backedBy('grant verification', b.grantVerification.eventSeq, (x) => x === 'grant.verified');
    if (e && e.grantId !== grantId) mismatch('grant verification', 'the grant', e);
  }
  if (b.revocation) {
    const e = backedBy('revocation request', b.revocation.eventSeq, (x) => x === 'grant.revoke_requested');
    if (e && (e.data as { reason?: unknown }).reason !== b.revocation.reason) mismatch('revocation request', 'the reason', e);
    if (e && e.actorId !== b.revocation.requestedBy) mismatch('revocation request', 'who requested it', e);
  }
  if (b.removalVerification) {
    const rv = b.removalVerification;
    backedBy('removal verification', rv.eventSeq, (x) => x === (rv.outcome === 'removal_verified' ? 'grant.removal_verified' : 'grant.ended_membership_retained'));
  }
  return problems;
}
