import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENESIS_HASH, hashEvent } from '../../activities/domain/audit.js';
import { CHECKPOINT_FORMAT, headLeaf, signedBytes, type CheckpointView } from '../../activities/domain/checkpoints.js';
import { EVIDENCE_FORMAT, EVIDENCE_KEY_FILE, evidenceSignerFromSeed, loadEvidenceSigner, signBundle, verifyEvidenceBundle, type EvidenceBundle, type EvidenceEvent } from '../../activities/domain/evidence/index.js';
import { EVIDENCE_FORMAT_V1, type EvidenceBundleV1, type EvidenceEventV1 } from '../../activities/domain/evidence/format.js';
import { merkleInclusionPath, merkleRoot } from '../../activities/domain/merkle.js';

const REQ = '0b6f6c1e-8f7a-4d55-9a55-0a6b6a1e2b3c';
const GRANT = '7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6';
const BOB = '2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6';

/** (Format v1.) A chain of 6 events where seqs 2, 3, 5 and 6 belong to the request (4 is someone else's). */
function chain(): EvidenceEventV1[] {
  const specs = [
    { action: 'catalog.seeded', requestId: null, grantId: null, actorId: 'seed', reason: null, data: {} },
    { action: 'approval.stage_opened', requestId: REQ, grantId: null, actorId: 'accessRequestWorkflow', reason: null, data: { stage: 1, stageName: 'owner', approverIds: [BOB] } },
    { action: 'request.approved', requestId: REQ, grantId: null, actorId: BOB, reason: 'ok for the incident', data: { stage: 1, stageComplete: true } },
    { action: 'request.approved', requestId: 'ffffffff-8f7a-4d55-9a55-0a6b6a1e2b3c', grantId: null, actorId: BOB, reason: null, data: { stage: 1 } },
    { action: 'grant.applied', requestId: REQ, grantId: GRANT, actorId: 'accessRequestWorkflow', reason: null, data: { changed: true } },
    { action: 'grant.verified', requestId: REQ, grantId: GRANT, actorId: 'accessRequestWorkflow', reason: null, data: { expiresAt: '2026-01-01T01:00:00.000Z' } },
  ];
  let prevHash = GENESIS_HASH;
  return specs.map((s, i) => {
    const row = { seq: i + 1, idempotencyKey: `k/${i + 1}`, at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)), actorType: 'workflow', identityId: null, policyVersion: 'pol@1', prevHash, ...s };
    const hash = hashEvent({ ...row, stream: 'legacy', streamSeq: row.seq, hashVersion: 1 });
    prevHash = hash;
    return { ...row, at: row.at.toISOString(), hash };
  });
}

function bundleV1(signer = evidenceSignerFromSeed(Buffer.alloc(32, 7))): EvidenceBundleV1 {
  const all = chain();
  const events = all.filter((e) => e.requestId === REQ);
  const head = all.at(-1)!;
  return signBundle(
    {
      format: EVIDENCE_FORMAT_V1,
      exportedAt: '2026-01-02T00:00:00.000Z',
      exportedBy: 'client:auditor',
      request: {
        id: REQ,
        status: 'active',
        workflowId: `access-request/${REQ}`,
        requesterId: 'a',
        subjectId: 'a',
        entitlementId: 'e',
        entitlement: null,
        justification: 'because',
        durationSeconds: 3600,
        startAt: null,
        ticketRef: null,
        policyVersion: 'pol@1',
        failureReason: null,
        createdAt: '2026-01-01T00:00:00.000Z',
        decidedAt: '2026-01-01T00:00:02.000Z',
      },
      policy: { version: 'pol@1', source: null, publishedAt: null, publishedBy: null, document: null, rulesFired: [], stagesOpened: [{ seq: 2, stage: 1, stageName: 'owner', approverIds: [BOB], policyVersion: 'pol@1' }] },
      approvals: [
        { stage: 1, stageName: 'owner', approverId: BOB, onBehalfOf: null, decision: 'approve', status: 'approved', comment: 'ok for the incident', decidedAt: '2026-01-01T00:00:02.000Z', dueAt: '2026-01-02T00:00:00.000Z', policyVersion: 'pol@1', eventSeq: 3 },
      ],
      grant: { id: GRANT, status: 'active', source: 'request', identityId: 'a', entitlementId: 'e', targetChanged: true, grantedAt: '2026-01-01T00:00:04.000Z', expiresAt: '2026-01-01T01:00:00.000Z' },
      grantVerification: { verifiedAt: '2026-01-01T00:00:05.000Z', expiresAt: '2026-01-01T01:00:00.000Z', eventSeq: 6 },
      revocation: null,
      removalVerification: null,
      credentials: [],
      events,
      chain: { hashAlgorithm: 'sha256', genesisHash: GENESIS_HASH, head: { seq: head.seq, hash: head.hash }, eventSeqs: events.map((e) => e.seq), segment: { fromSeq: 2, toSeq: 6, eventsChecked: 5 } },
      verification: { valid: true, checkedAt: '2026-01-02T00:00:00.000Z', eventsChecked: 5, linksChecked: 4, problems: [] },
    } as unknown as Parameters<typeof signBundle>[0],
    signer,
  ) as unknown as EvidenceBundleV1;
}

const codes = (b: unknown, opts = {}) => verifyEvidenceBundle(b, opts).problems.map((p) => `${p.code}${p.seq ? `@${p.seq}` : ''}`);

describe('evidence bundle format v1 (the single chain, before streams) still verifies offline', () => {
  const bundle = bundleV1;
  it('accepts an untouched bundle, checking hashes and the links of adjacent events only', () => {
    const b = bundle();
    expect(verifyEvidenceBundle(JSON.parse(JSON.stringify(b)))).toMatchObject({ valid: true, problems: [], events: 4, linksChecked: 2, requestId: REQ });
  });

  it('names what changed', () => {
    const b = bundle();
    const edit = (f: (c: EvidenceBundleV1) => void) => {
      const c = structuredClone(b);
      f(c);
      return c;
    };
    expect(codes(edit((c) => (c.events[1]!.actorId = 'mallory')))).toEqual(['signature_invalid', 'hash_mismatch@3', 'fact_mismatch@3']);
    expect(codes(edit((c) => (c.approvals[0]!.comment = 'fine')))).toEqual(['signature_invalid', 'fact_mismatch@3']);
    expect(codes(edit((c) => c.events.splice(2, 1)))).toEqual(['signature_invalid', 'event_missing@5']);
    expect(codes(edit((c) => (c.verification.valid = false)))).toEqual(['signature_invalid', 'export:invalid']);
    // Someone who recomputes a changed event's hash still breaks the link to its successor, and the signature.
    const rehashed = edit((c) => {
      const e = c.events[2]!;
      e.data = { changed: false };
      e.hash = hashEvent({ ...e, stream: 'legacy', streamSeq: e.seq, hashVersion: 1, at: new Date(e.at) });
    });
    expect(codes(rehashed)).toEqual(['signature_invalid', 'link_broken@6']);
    expect(codes({ ...b, events: 'none' })).toEqual(['signature_invalid', 'schema']);
    expect(codes([])).toEqual(['schema']);
  });

  it('pins the signing key', () => {
    const b = bundle();
    const other = evidenceSignerFromSeed(Buffer.alloc(32, 9));
    expect(codes(b, { publicKey: b.signer.publicKey })).toEqual([]);
    expect(codes(b, { publicKey: other.publicKeyPem })).toEqual(['key_not_pinned']);
    // A bundle re-signed by another key verifies on its own, which is why the fingerprint is printed and pinnable.
    const forged = bundle(other);
    expect(codes(forged)).toEqual([]);
    expect(codes(forged, { publicKey: b.signer.publicKey })).toEqual(['key_not_pinned']);
    expect(codes({ ...b, signer: { ...b.signer, fingerprint: other.fingerprint } })).toEqual(['fingerprint_mismatch', 'signature_invalid']);
  });
});

// ---- format v2: per-stream chains, proven against a signed checkpoint ----------------------

const SIGNER = evidenceSignerFromSeed(Buffer.alloc(32, 7));
const REQ_STREAM = `request:${REQ}`;

/** The request's stream (4 events) and its grant's (1 event), each chained from the genesis hash. */
function streams(): EvidenceEvent[] {
  const specs = [
    { stream: REQ_STREAM, action: 'approval.stage_opened', requestId: REQ, grantId: null, actorId: 'accessRequestWorkflow', reason: null, data: { stage: 1, stageName: 'owner', approverIds: [BOB] } },
    { stream: REQ_STREAM, action: 'request.approved', requestId: REQ, grantId: null, actorId: BOB, reason: 'ok for the incident', data: { stage: 1, stageComplete: true } },
    { stream: REQ_STREAM, action: 'grant.applied', requestId: REQ, grantId: GRANT, actorId: 'accessRequestWorkflow', reason: null, data: { changed: true } },
    { stream: `grant:${GRANT}`, action: 'grant.noted', requestId: null, grantId: GRANT, actorId: 'sentinel', reason: null, data: {} },
    { stream: REQ_STREAM, action: 'grant.verified', requestId: REQ, grantId: GRANT, actorId: 'accessRequestWorkflow', reason: null, data: { expiresAt: '2026-01-01T01:00:00.000Z' } },
  ];
  const heads = new Map<string, { n: number; hash: string }>();
  return specs.map((s, i) => {
    const h = heads.get(s.stream) ?? { n: 0, hash: GENESIS_HASH };
    const row = { seq: 10 + i * 3, idempotencyKey: `k/${i + 1}`, streamSeq: h.n + 1, hashVersion: 2 as const, at: new Date(Date.UTC(2026, 0, 1, 0, 0, i)), actorType: 'workflow', identityId: null, policyVersion: 'pol@1', prevHash: h.hash, ...s };
    const hash = hashEvent(row);
    heads.set(s.stream, { n: row.streamSeq, hash });
    return { ...row, at: row.at.toISOString(), hash };
  });
}

/** A checkpoint over these streams and some others', signed; and each of ours with its proof. */
function checkpointOver(events: EvidenceEvent[], others = 5, signer = SIGNER) {
  const last = new Map<string, EvidenceEvent>();
  for (const e of events) last.set(e.stream, e);
  const heads = [...[...last.values()].map((e) => ({ stream: e.stream, streamSeq: e.streamSeq, hash: e.hash })), ...Array.from({ length: others }, (_, i) => ({ stream: `identity:${i}`, streamSeq: i + 1, hash: String(i).repeat(64).slice(0, 64) }))].sort((a, b) => (a.stream < b.stream ? -1 : 1));
  const leaves = heads.map(headLeaf);
  const signed = { format: CHECKPOINT_FORMAT as typeof CHECKPOINT_FORMAT, id: 3, createdAt: '2026-01-01T00:10:00.000Z', treeSize: heads.length, rootHash: merkleRoot(leaves).toString('hex') };
  const checkpoint: CheckpointView = { ...signed, signature: signer.sign(signedBytes(signed)), signer: { algorithm: 'Ed25519', publicKey: signer.publicKeyPem, fingerprint: signer.fingerprint } };
  const proofs = [...last.keys()].sort().map((stream) => {
    const i = heads.findIndex((h) => h.stream === stream);
    return { stream, complete: true, head: { streamSeq: heads[i]!.streamSeq, hash: heads[i]!.hash }, proof: { checkpointId: 3, head: { streamSeq: heads[i]!.streamSeq, hash: heads[i]!.hash }, leafIndex: i, treeSize: heads.length, auditPath: merkleInclusionPath(i, leaves).map((b) => b.toString('hex')) } };
  });
  return { checkpoint, proofs };
}

function bundleV2(signer = SIGNER, mutate: (events: EvidenceEvent[]) => void = () => {}): EvidenceBundle {
  const events = streams();
  const { checkpoint, proofs } = checkpointOver(events, 5, signer);
  mutate(events);
  const v1 = bundleV1(signer);
  const { signer: _s, signature: _sig, format: _f, chain: _c, events: _e, ...facts } = v1;
  return signBundle(
    {
      ...facts,
      format: EVIDENCE_FORMAT,
      approvals: [{ ...facts.approvals[0]!, eventSeq: 13 }],
      policy: { ...facts.policy, stagesOpened: [{ ...facts.policy.stagesOpened[0]!, seq: 10 }] },
      grantVerification: { ...facts.grantVerification!, eventSeq: 22 },
      events,
      chain: { hashAlgorithm: 'sha256', genesisHash: GENESIS_HASH, streams: proofs, checkpoint },
      verification: { valid: true, checkedAt: '2026-01-02T00:00:00.000Z', eventsChecked: 5, linksChecked: 3, problems: [] },
    },
    signer,
  );
}

/** Re-signed after the edit: what a forger holding the key could make, so only the chains and the proofs can catch it. */
const resigned = (b: EvidenceBundle, f: (c: EvidenceBundle) => void) => {
  const c = structuredClone(b);
  f(c);
  const { signature: _x, signer: _y, ...unsigned } = c;
  return signBundle(unsigned, evidenceSignerFromSeed(randomBytes(32)));
};
const codesV2 = (b: unknown) => verifyEvidenceBundle(b).problems.map((p) => p.code);

describe('evidence bundle format v2 (per-stream chains and a signed checkpoint), offline', () => {
  it('verifies each stream from its genesis and its head against the signed root', () => {
    const b = bundleV2();
    expect(verifyEvidenceBundle(JSON.parse(JSON.stringify(b)))).toMatchObject({ valid: true, problems: [], events: 5, linksChecked: 5, requestId: REQ, checkpoint: { id: 3, treeSize: 7 }, unanchored: 0 });
  });

  it('names each kind of tampering, even in a bundle re-signed by another key', () => {
    const b = bundleV2();
    // A changed event: its hash.
    expect(codesV2(resigned(b, (c) => (c.events[1]!.reason = 'fine')))).toEqual(expect.arrayContaining(['hash_mismatch', 'checkpoint_key']));
    // An event dropped from the middle: the gap in its stream.
    expect(codesV2(resigned(b, (c) => c.events.splice(1, 1)))).toEqual(expect.arrayContaining(['event_missing']));
    // The last events dropped and the head restated: the checkpoint saw more.
    const truncated = resigned(b, (c) => {
      c.events = c.events.filter((e) => !(e.stream === REQ_STREAM && e.streamSeq === 4));
      const s = c.chain.streams.find((x) => x.stream === REQ_STREAM)!;
      const last = c.events.filter((e) => e.stream === REQ_STREAM).at(-1)!;
      s.head = { streamSeq: last.streamSeq, hash: last.hash };
    });
    expect(codesV2(truncated)).toEqual(expect.arrayContaining(['stream_truncated']));
    // The whole grant stream removed.
    const deleted = resigned(b, (c) => {
      c.events = c.events.filter((e) => e.stream !== `grant:${GRANT}`);
      c.chain.streams.find((x) => x.stream === `grant:${GRANT}`)!.head = null;
    });
    expect(codesV2(deleted)).toEqual(expect.arrayContaining(['stream_deleted']));
    // A stream's history rewritten with fresh hashes all the way: the checkpoint's leaf no longer matches.
    const rewritten = bundleV2(SIGNER, (events) => {
      let prev = GENESIS_HASH;
      for (const e of events.filter((x) => x.stream === REQ_STREAM)) {
        if (e.streamSeq === 2) e.reason = 'approved without a look';
        e.prevHash = prev;
        e.hash = hashEvent({ ...e, at: new Date(e.at) });
        prev = e.hash;
      }
    });
    expect(codesV2(rewritten)).toEqual(expect.arrayContaining(['head_mismatch']));
    // A proof for another position, and a checkpoint whose root was changed.
    expect(codesV2(resigned(b, (c) => (c.chain.streams[0]!.proof!.leafIndex += 1)))).toEqual(expect.arrayContaining(['proof_invalid']));
    expect(codesV2(resigned(b, (c) => (c.chain.checkpoint!.rootHash = 'a'.repeat(64))))).toEqual(expect.arrayContaining(['checkpoint_signature', 'proof_invalid']));
    // An event of a stream the bundle does not list.
    expect(codesV2(resigned(b, (c) => (c.events[3]!.stream = 'grant:other')))).toEqual(expect.arrayContaining(['event_added']));
  });

  it('costs O(stream + log n): the proof of one stream among 100,000 is 17 hashes', () => {
    const events = streams();
    const { proofs } = checkpointOver(events, 100_000 - 2);
    expect(proofs[0]!.proof.auditPath.length).toBe(Math.ceil(Math.log2(100_000)));
  });
});

describe('evidence signing key', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-evkey-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('is generated once into the data dir (owner-only) and reused; a configured key wins', async () => {
    const a = await loadEvidenceSigner({ dataDir: dir });
    const b = await loadEvidenceSigner({ dataDir: dir });
    expect(b.fingerprint).toBe(a.fingerprint);
    expect((await stat(path.join(dir, EVIDENCE_KEY_FILE))).mode & 0o777).toBe(0o600);
    expect((await readFile(path.join(dir, EVIDENCE_KEY_FILE), 'utf8')).trim()).toMatch(/^[0-9a-f]{64}$/);
    const seed = randomBytes(32).toString('hex');
    const configured = await loadEvidenceSigner({ dataDir: dir, key: seed });
    expect(configured.fingerprint).not.toBe(a.fingerprint);
    expect(configured.fingerprint).toBe(evidenceSignerFromSeed(Buffer.from(seed, 'hex')).fingerprint);
  });
});
