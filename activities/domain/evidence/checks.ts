import type { AuditEvent } from '../../../db/schema.js';
import { GENESIS_HASH, hashEvent } from '../audit.js';
import { checkpointSignatureValid, headLeaf, type CheckpointView } from '../checkpoints.js';
import { merkleRootFromPath } from '../merkle.js';
import type { EvidenceBundle, EvidenceEvent, EvidenceEventV1, EvidenceProblem, StreamProofView } from './format.js';

// ---- checks shared by the export and the offline verifier ----------------------------------

export const DECISION_ACTIONS = new Set(['request.approved', 'request.rejected', 'approval.recorded', 'extension.approval_recorded', 'extension.rejected', 'review.approval_recorded', 'review.rejected']);

/** A v1 event (no stream fields) is the pre-stream chain's: hash version 1. */
function toHashable(e: EvidenceEvent | EvidenceEventV1): Omit<AuditEvent, 'hash'> {
  return 'stream' in e ? { ...e, at: new Date(e.at) } : { ...e, stream: 'legacy', streamSeq: e.seq, hashVersion: 1, at: new Date(e.at) };
}

/** (Format v1, the single chain.) Each event's hash recomputed from its fields; the link between events adjacent in seq. */
export function checkEvents(events: EvidenceEventV1[]): { problems: EvidenceProblem[]; linksChecked: number } {
  const problems: EvidenceProblem[] = [];
  let linksChecked = 0;
  let prev: EvidenceEventV1 | undefined;
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
type AnyFacts = Omit<Facts, 'events'> & { events: EvidenceEventV1[] };

export interface StreamsCheck {
  problems: EvidenceProblem[];
  linksChecked: number;
  /** Events after the checkpointed head: linked to the anchored ones, not yet in a signed root. */
  unanchored: number;
}

/**
 * (Format v2.) Every event's hash; each stream's chain from its first event (complete streams:
 * streamSeq 1, 2, … from the genesis hash, ending at the stated head; the partial legacy chain:
 * links where adjacent); each stream's checkpointed head present and unchanged, and its audit
 * path leading to the checkpoint's signed root. O(events + streams × log n).
 */
export function checkStreams(events: EvidenceEvent[], streams: StreamProofView[], checkpoint: CheckpointView | null): StreamsCheck {
  const problems: EvidenceProblem[] = [];
  let linksChecked = 0;
  let unanchored = 0;
  const byStream = new Map<string, EvidenceEvent[]>();
  for (const e of events) {
    if (hashEvent(toHashable(e)) !== e.hash) {
      problems.push({ code: 'hash_mismatch', seq: e.seq, message: `event seq ${e.seq} (${e.action}): its fields do not hash to its recorded hash; the event was changed` });
    }
    byStream.set(e.stream, [...(byStream.get(e.stream) ?? []), e]);
  }
  const listed = new Set(streams.map((s) => s.stream));
  for (const [stream, evs] of byStream) {
    if (!listed.has(stream)) for (const e of evs) problems.push({ code: 'event_added', seq: e.seq, message: `event seq ${e.seq} belongs to stream ${stream}, which the bundle does not list` });
  }
  if (checkpoint && !checkpointSignatureValid(checkpoint)) problems.push({ code: 'checkpoint_signature', message: `checkpoint ${checkpoint.id}: its signature does not verify` });
  for (const s of streams) {
    const evs = [...(byStream.get(s.stream) ?? [])].sort((a, b) => a.streamSeq - b.streamSeq);
    const at = new Map(evs.map((e) => [e.streamSeq, e]));
    if (s.complete) {
      evs.forEach((e, i) => {
        if (e.streamSeq !== i + 1) {
          if (i === 0 || evs[i - 1]!.streamSeq !== e.streamSeq - 1) problems.push({ code: 'event_missing', seq: e.seq, message: `stream ${s.stream}: event ${i === 0 ? 1 : evs[i - 1]!.streamSeq + 1} is missing before stream_seq ${e.streamSeq}` });
          return;
        }
        linksChecked++;
        if (e.prevHash !== (i === 0 ? GENESIS_HASH : evs[i - 1]!.hash)) problems.push({ code: 'link_broken', seq: e.seq, message: `stream ${s.stream}: event ${e.streamSeq}'s prev_hash is not the hash of the one before it` });
      });
      const last = evs.at(-1);
      if (!s.head && last) problems.push({ code: 'head_mismatch', stream: s.stream, message: `stream ${s.stream}: events are present, the bundle states no head` });
      if (s.head && (!last || last.streamSeq !== s.head.streamSeq || last.hash !== s.head.hash)) {
        problems.push({ code: 'head_mismatch', message: `stream ${s.stream}: its stated head (event ${s.head.streamSeq}) is not its last event in the bundle (${last ? last.streamSeq : 'none'}); events were left out or added` });
      }
    } else {
      for (const e of evs) {
        const before = at.get(e.streamSeq - 1);
        if (!before) continue;
        linksChecked++;
        if (e.prevHash !== before.hash) problems.push({ code: 'link_broken', seq: e.seq, message: `stream ${s.stream}: event ${e.streamSeq}'s prev_hash is not the hash of the one before it` });
      }
    }
    if (!s.proof) {
      if (evs.length) problems.push({ code: 'unanchored', message: `stream ${s.stream}: no checkpoint holds it` });
      continue;
    }
    const p = s.proof;
    if (!checkpoint || p.checkpointId !== checkpoint.id || p.treeSize !== checkpoint.treeSize) {
      problems.push({ code: 'proof_invalid', message: `stream ${s.stream}: its proof is for checkpoint ${p.checkpointId} of ${p.treeSize} streams, not the bundle's checkpoint` });
      continue;
    }
    const root = merkleRootFromPath(p.leafIndex, p.treeSize, headLeaf({ stream: s.stream, ...p.head }), p.auditPath.map((h) => Buffer.from(h, 'hex')));
    if (!root || root.toString('hex') !== checkpoint.rootHash) {
      problems.push({ code: 'proof_invalid', message: `stream ${s.stream}: its audit path does not lead to checkpoint ${checkpoint.id}'s signed root` });
      continue;
    }
    const anchor = at.get(p.head.streamSeq);
    if (s.complete && evs.length === 0) problems.push({ code: 'stream_deleted', message: `stream ${s.stream}: checkpoint ${p.checkpointId} holds ${p.head.streamSeq} events of it; none is here` });
    else if (s.complete && !anchor && (evs.at(-1)?.streamSeq ?? 0) < p.head.streamSeq) problems.push({ code: 'stream_truncated', message: `stream ${s.stream}: checkpoint ${p.checkpointId} holds ${p.head.streamSeq} events, ${evs.at(-1)?.streamSeq ?? 0} are here` });
    else if (anchor && anchor.hash !== p.head.hash) problems.push({ code: 'checkpoint_mismatch', seq: anchor.seq, message: `stream ${s.stream}: event ${p.head.streamSeq} is not the one checkpoint ${p.checkpointId} signed` });
    if (s.head) unanchored += Math.max(0, s.head.streamSeq - p.head.streamSeq);
  }
  return { problems, linksChecked, unanchored };
}

/**
 * The facts drawn from mutable tables (approvals, grant) must agree with the hash-chained events
 * that recorded them; and every event must concern this request or its grant.
 */
export function checkFacts(b: AnyFacts): EvidenceProblem[] {
  const problems: EvidenceProblem[] = [];
  const bySeq = new Map(b.events.map((e) => [e.seq, e]));
  const grantId = b.grant?.id;
  for (const e of b.events) {
    if (e.requestId !== b.request.id && !(grantId && e.grantId === grantId)) {
      problems.push({ code: 'event_unrelated', seq: e.seq, message: `event seq ${e.seq} concerns neither request ${b.request.id} nor its grant` });
    }
  }
  /** The event a fact cites, when it is in the bundle and of the right kind. */
  const backedBy = (what: string, seq: number | null, actions: (a: string) => boolean): EvidenceEventV1 | undefined => {
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
  const mismatch = (what: string, field: string, e: EvidenceEventV1) =>
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
