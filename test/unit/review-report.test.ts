import { randomBytes, randomUUID } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { GENESIS_HASH, hashEvent } from '../../activities/domain/audit.js';
import { evidenceSignerFromSeed, verifyEvidenceBundle } from '../../activities/domain/evidence/index.js';
import type { EvidenceEvent } from '../../activities/domain/evidence/format.js';
import { CHECKPOINT_FORMAT, headLeaf, signedBytes } from '../../activities/domain/checkpoints.js';
import { merkleInclusionPath, merkleRoot } from '../../activities/domain/merkle.js';
import { REVIEW_REPORT_FORMAT, signReviewReport, type ReviewReport } from '../../activities/domain/reviews/report.js';

// The signed review report is checked by the evidence verifier, offline: the signature over the
// canonical JSON, the campaign's stream from its genesis and its head against the signed
// checkpoint, each decision backed by its event, the summary.

const signer = evidenceSignerFromSeed(randomBytes(32));
const campaignId = randomUUID();
const itemId = randomUUID();

const stream = `campaign:${campaignId}`;

function chain(specs: Array<Pick<EvidenceEvent, 'action' | 'actorId' | 'data'>>): EvidenceEvent[] {
  let prevHash = GENESIS_HASH;
  return specs.map((e, i) => {
    const row = { seq: i + 1, idempotencyKey: `k-${i}`, stream, streamSeq: i + 1, hashVersion: 2 as const, at: new Date(Date.UTC(2026, 11, 1, 0, i)), actorType: 'identity', actorId: e.actorId, action: e.action, requestId: null, grantId: null, identityId: null, reason: null, policyVersion: null, data: e.data, prevHash };
    const hash = hashEvent(row);
    prevHash = hash;
    return { ...row, at: row.at.toISOString(), hash };
  });
}

/** The campaign's stream head among a few others', in a checkpoint signed with the report's key. */
function anchored(events: EvidenceEvent[]): ReviewReport['chain'] {
  const last = events.at(-1)!;
  const heads = [{ stream, streamSeq: last.streamSeq, hash: last.hash }, { stream: 'operations', streamSeq: 4, hash: 'c'.repeat(64) }, { stream: 'identity:x', streamSeq: 2, hash: 'd'.repeat(64) }].sort((a, b) => (a.stream < b.stream ? -1 : 1));
  const leaves = heads.map(headLeaf);
  const i = heads.findIndex((h) => h.stream === stream);
  const signed = { format: CHECKPOINT_FORMAT as typeof CHECKPOINT_FORMAT, id: 1, createdAt: '2026-12-01T00:03:00.000Z', treeSize: heads.length, rootHash: merkleRoot(leaves).toString('hex') };
  return {
    checkpoint: { ...signed, signature: signer.sign(signedBytes(signed)), signer: { algorithm: 'Ed25519', publicKey: signer.publicKeyPem, fingerprint: signer.fingerprint } },
    streams: [{ stream, complete: true, head: { streamSeq: last.streamSeq, hash: last.hash }, proof: { checkpointId: 1, head: { streamSeq: last.streamSeq, hash: last.hash }, leafIndex: i, treeSize: heads.length, auditPath: merkleInclusionPath(i, leaves).map((b) => b.toString('hex')) } }],
  };
}

function report(): ReviewReport {
  const events = chain([
    { action: 'review.campaign_opened', actorId: 'client:ops', data: { campaignId, items: 1 } },
    { action: 'review.item_decided', actorId: 'carol', data: { campaignId, itemId, decision: 'revoke' } },
  ]);
  return signReviewReport(
    {
      format: REVIEW_REPORT_FORMAT,
      exportedAt: '2026-12-02T00:00:00.000Z',
      exportedBy: 'client:auditor',
      campaign: { id: campaignId, name: 'Q4', kind: 'campaign', trigger: 'api', status: 'closed', dueAt: '2026-12-31T00:00:00.000Z', createdAt: '2026-12-01T00:00:00.000Z', createdBy: 'client:ops', decidedAt: '2026-12-01T00:01:00.000Z', closedAt: '2026-12-01T00:02:00.000Z', policyVersion: null, definition: {} },
      summary: { items: 1, pending: 0, kept: 0, revoked: 1, skipped: 0, flagged: 0, removalVerified: 1 },
      items: [{ id: itemId, grantId: randomUUID(), identityId: randomUUID(), entitlementId: randomUUID(), riskTier: 'medium', reviewerId: randomUUID(), assignedReviewerId: randomUUID(), status: 'revoked', decidedBy: 'carol', decidedAt: '2026-12-01T00:01:00.000Z', comment: 'moved teams', newExpiresAt: null, flagged: false, escalatedAt: null, lastUsedAt: null, removalVerifiedAt: '2026-12-01T00:01:30.000Z', provenance: { approvals: [] }, decisionEventSeq: 2 }],
      events,
      chain: anchored(events),
      verification: { valid: true, checkedAt: '2026-12-02T00:00:00.000Z', problems: [] },
    },
    signer,
  );
}

const codes = (r: unknown, opts: { publicKey?: string } = {}) => verifyEvidenceBundle(r, opts).problems.map((p) => p.code);

describe('signed review report (offline verification)', () => {
  it('verifies as it was signed, and against the pinned key', () => {
    const r = report();
    expect(verifyEvidenceBundle(r)).toMatchObject({ valid: true, campaignId, events: 2, linksChecked: 2, fingerprint: signer.fingerprint, checkpoint: { id: 1, treeSize: 3 } });
    expect(verifyEvidenceBundle(r, { publicKey: signer.publicKeyPem }).valid).toBe(true);
    expect(codes(r, { publicKey: evidenceSignerFromSeed(randomBytes(32)).publicKeyPem })).toEqual(['key_not_pinned']);
  });

  it('refuses an edited decision: the signature breaks, and the item no longer matches its event', () => {
    const r = report();
    r.items[0]!.status = 'kept';
    r.summary.revoked = 0;
    r.summary.kept = 1;
    expect(codes(r)).toEqual(['signature_invalid', 'fact_mismatch']);
  });

  it('refuses an edited event, a decision without its event, and a summary that does not add up', () => {
    const edited = report();
    edited.events[1]!.actorId = 'mallory';
    expect(codes(edited)).toEqual(expect.arrayContaining(['signature_invalid', 'hash_mismatch']));
    const unbacked = report();
    unbacked.events.pop();
    expect(codes(unbacked)).toEqual(expect.arrayContaining(['fact_unsupported']));
    const sums = report();
    sums.summary.items = 5;
    expect(codes(sums)).toEqual(['signature_invalid', 'summary_mismatch']);
  });

  it('refuses a report whose shape is not the format', () => {
    const r = report() as unknown as Record<string, unknown>;
    delete r.items;
    expect(codes(r)).toEqual(expect.arrayContaining(['schema']));
  });
});
