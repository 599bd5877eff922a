import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { GENESIS_HASH, hashEvent } from '../../activities/domain/audit.js';
import {
  EVIDENCE_FORMAT,
  EVIDENCE_KEY_FILE,
  evidenceSignerFromSeed,
  loadEvidenceSigner,
  signBundle,
  verifyEvidenceBundle,
  type EvidenceBundle,
  type EvidenceEvent,
} from '../../activities/domain/evidence/index.js';

const REQ = '0b6f6c1e-8f7a-4d55-9a55-0a6b6a1e2b3c';
const GRANT = '7d1e2f3a-4b5c-4d6e-8f70-8192a3b4c5d6';
const BOB = '2c3d4e5f-6a7b-4c8d-9e0f-a1b2c3d4e5f6';

/** A chain of 6 events where seqs 2, 3, 5 and 6 belong to the request (4 is someone else's). */
function chain(): EvidenceEvent[] {
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
    const hash = hashEvent(row);
    prevHash = hash;
    return { ...row, at: row.at.toISOString(), hash };
  });
}

function bundle(signer = evidenceSignerFromSeed(Buffer.alloc(32, 7))): EvidenceBundle {
  const all = chain();
  const events = all.filter((e) => e.requestId === REQ);
  const head = all.at(-1)!;
  return signBundle(
    {
      format: EVIDENCE_FORMAT,
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
    },
    signer,
  );
}

const codes = (b: unknown, opts = {}) => verifyEvidenceBundle(b, opts).problems.map((p) => `${p.code}${p.seq ? `@${p.seq}` : ''}`);

describe('evidence bundle verification (offline)', () => {
  it('accepts an untouched bundle, checking hashes and the links of adjacent events only', () => {
    const b = bundle();
    expect(verifyEvidenceBundle(JSON.parse(JSON.stringify(b)))).toMatchObject({ valid: true, problems: [], events: 4, linksChecked: 2, requestId: REQ });
  });

  it('names what changed', () => {
    const b = bundle();
    const edit = (f: (c: EvidenceBundle) => void) => {
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
      e.hash = hashEvent({ ...e, at: new Date(e.at) });
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
