import { createPublicKey, verify, type KeyObject } from 'node:crypto';
import { canonicalJson } from '../audit.js';
import { checkEvents, checkFacts, checkStreams } from './checks.js';
import { EVIDENCE_FORMAT_V1, evidenceBundleSchema, evidenceBundleSchemaV1, type EvidenceProblem } from './format.js';
import { keyFingerprint } from './signing.js';
import { checkReviewReport, REVIEW_REPORT_FORMAT, REVIEW_REPORT_FORMAT_V1 } from '../reviews/report.js';

// ---- offline verification -----------------------------------------------------------------

export interface EvidenceVerification {
  valid: boolean;
  problems: EvidenceProblem[];
  requestId?: string;
  /** Set when the file is a signed access-review report (activities/domain/reviews/report.ts). */
  campaignId?: string;
  fingerprint?: string;
  events: number;
  linksChecked: number;
  /** Format v1: the global chain's head when exported. */
  head?: { seq: number; hash: string };
  /** Format v2: the signed checkpoint the streams are proven against, and events after it (linked, not yet anchored). */
  checkpoint?: { id: number; createdAt: string; treeSize: number };
  unanchored?: number;
}

function checkSignature(raw: Record<string, unknown>, pinnedKey: string | undefined, problems: EvidenceProblem[]): string | undefined {
  const signer = raw.signer as { publicKey?: unknown; fingerprint?: unknown } | undefined;
  if (typeof signer?.publicKey !== 'string' || typeof raw.signature !== 'string') return undefined;
  let key: KeyObject;
  try {
    key = createPublicKey(signer.publicKey);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('not an Ed25519 key');
  } catch (e) {
    problems.push({ code: 'signer_invalid', message: `signer.publicKey is not an Ed25519 public key (${(e as Error).message})` });
    return undefined;
  }
  const fingerprint = keyFingerprint(key);
  if (signer.fingerprint !== fingerprint) problems.push({ code: 'fingerprint_mismatch', message: `signer.fingerprint ${String(signer.fingerprint)} is not the fingerprint of the embedded key (${fingerprint})` });
  if (pinnedKey !== undefined) {
    let pinned: string | undefined;
    try {
      pinned = keyFingerprint(pinnedKey);
    } catch (e) {
      problems.push({ code: 'pinned_key_invalid', message: `the pinned public key cannot be read (${(e as Error).message})` });
    }
    if (pinned && pinned !== fingerprint) problems.push({ code: 'key_not_pinned', message: `the bundle is signed by ${fingerprint}, not by the pinned key ${pinned}` });
  }
  const { signature, ...rest } = raw;
  let ok = false;
  try {
    ok = verify(null, Buffer.from(canonicalJson(rest), 'utf8'), key, Buffer.from(signature as string, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) problems.push({ code: 'signature_invalid', message: 'the signature does not match the content: the bundle was changed after it was exported' });
  return fingerprint;
}

/**
 * Verifies an exported bundle with nothing but the bundle (and optionally a pinned public key):
 * schema, signature, every event hash, adjacency links, the event list against the signed
 * seqs, facts against events, and the API's own findings at export time.
 */
export function verifyEvidenceBundle(input: unknown, opts: { publicKey?: string } = {}): EvidenceVerification {
  const problems: EvidenceProblem[] = [];
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return { valid: false, problems: [{ code: 'schema', message: 'the bundle is not a JSON object' }], events: 0, linksChecked: 0 };
  }
  const raw = input as Record<string, unknown>;
  const fingerprint = checkSignature(raw, opts.publicKey, problems);
  if (raw.format === REVIEW_REPORT_FORMAT || raw.format === REVIEW_REPORT_FORMAT_V1) {
    const rr = checkReviewReport(raw);
    problems.push(...rr.problems);
    const r = rr.report;
    const anchor = r && 'head' in r.chain ? { head: r.chain.head } : r && 'checkpoint' in r.chain && r.chain.checkpoint ? { checkpoint: { id: r.chain.checkpoint.id, createdAt: r.chain.checkpoint.createdAt, treeSize: r.chain.checkpoint.treeSize } } : {};
    return {
      valid: problems.length === 0,
      problems,
      ...(r ? { campaignId: r.campaign.id } : {}),
      ...anchor,
      ...(rr.unanchored !== undefined ? { unanchored: rr.unanchored } : {}),
      ...(fingerprint ? { fingerprint } : {}),
      events: r?.events.length ?? 0,
      linksChecked: rr.linksChecked,
    };
  }
  if (raw.format === EVIDENCE_FORMAT_V1) return verifyV1(raw, problems, fingerprint);
  const parsed = evidenceBundleSchema.safeParse(raw);
  if (!parsed.success) {
    for (const i of parsed.error.issues) problems.push({ code: 'schema', message: `${i.path.join('.') || '(bundle)'}: ${i.message}` });
    return { valid: false, problems, ...(fingerprint ? { fingerprint } : {}), events: 0, linksChecked: 0 };
  }
  const b = parsed.data;
  const st = checkStreams(b.events, b.chain.streams, b.chain.checkpoint);
  problems.push(...st.problems);
  const cp = b.chain.checkpoint;
  // The checkpoint is signed with the evidence key: the same one that signed the bundle (and the pinned one, if any).
  if (cp && fingerprint && cp.signer.fingerprint !== fingerprint) problems.push({ code: 'checkpoint_key', message: `checkpoint ${cp.id} is signed by ${cp.signer.fingerprint}, the bundle by ${fingerprint}` });
  for (let i = 1; i < b.events.length; i++) {
    if (b.events[i]!.seq <= b.events[i - 1]!.seq) problems.push({ code: 'order', seq: b.events[i]!.seq, message: `event seq ${b.events[i]!.seq} follows seq ${b.events[i - 1]!.seq}: events must be in ascending seq order` });
  }
  problems.push(...checkFacts(b));
  exportFindings(b.verification, problems);
  return {
    valid: problems.length === 0,
    problems,
    requestId: b.request.id,
    ...(fingerprint ? { fingerprint } : {}),
    events: b.events.length,
    linksChecked: st.linksChecked,
    ...(cp ? { checkpoint: { id: cp.id, createdAt: cp.createdAt, treeSize: cp.treeSize } } : {}),
    unanchored: st.unanchored,
  };
}

/** What the API itself found at export, carried into the verdict. */
function exportFindings(v: { valid: boolean; problems: EvidenceProblem[] }, problems: EvidenceProblem[]): void {
  if (v.valid) return;
  for (const p of v.problems) problems.push({ ...p, code: `export:${p.code}`, message: `at export the API found: ${p.message}` });
  if (v.problems.length === 0) problems.push({ code: 'export:invalid', message: 'the API marked this bundle invalid at export' });
}

/** Format v1 (the single chain, before streams): bundles auditors already hold still verify. */
function verifyV1(raw: Record<string, unknown>, problems: EvidenceProblem[], fingerprint: string | undefined): EvidenceVerification {
  const parsed = evidenceBundleSchemaV1.safeParse(raw);
  if (!parsed.success) {
    for (const i of parsed.error.issues) problems.push({ code: 'schema', message: `${i.path.join('.') || '(bundle)'}: ${i.message}` });
    return { valid: false, problems, ...(fingerprint ? { fingerprint } : {}), events: 0, linksChecked: 0 };
  }
  const b = parsed.data;
  const ev = checkEvents(b.events);
  problems.push(...ev.problems);

  const present = new Set(b.events.map((e) => e.seq));
  const listed = new Set(b.chain.eventSeqs);
  for (const seq of b.chain.eventSeqs) if (!present.has(seq)) problems.push({ code: 'event_missing', seq, message: `event seq ${seq} is listed in chain.eventSeqs but missing from events` });
  for (const e of b.events) if (!listed.has(e.seq)) problems.push({ code: 'event_added', seq: e.seq, message: `event seq ${e.seq} is not listed in chain.eventSeqs` });
  const lastSeq = b.events.at(-1)?.seq ?? 0;
  if (b.chain.head.seq < lastSeq) problems.push({ code: 'head_behind', message: `chain head seq ${b.chain.head.seq} is before the last event (seq ${lastSeq})` });
  if (b.events[0] && b.chain.segment.fromSeq > b.events[0].seq) problems.push({ code: 'segment', message: `the verified segment starts at seq ${b.chain.segment.fromSeq}, after the first event (seq ${b.events[0].seq})` });

  problems.push(...checkFacts(b));
  exportFindings(b.verification, problems);
  return {
    valid: problems.length === 0,
    problems,
    requestId: b.request.id,
    ...(fingerprint ? { fingerprint } : {}),
    events: b.events.length,
    linksChecked: ev.linksChecked,
    head: b.chain.head,
  };
}

/** One line per problem, for people. */
export function formatEvidenceProblems(problems: EvidenceProblem[]): string {
  return problems.map((p) => `  - ${p.seq !== undefined ? `[seq ${p.seq}] ` : ''}${p.code}: ${p.message}`).join('\n');
}
