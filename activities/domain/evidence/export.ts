import { and, asc, desc, eq, gt, inArray, or } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import { accessRequests, approvals, auditEvents, auditStreams, credentials, entitlements, grants, policyVersions, systems, type AuditEvent } from '../../../db/schema.js';
import { GENESIS_HASH, hashEvent, LEGACY_STREAM } from '../audit.js';
import { createCheckpoint, latestCheckpoint, proveStreams, uncheckpointed, type StreamProof } from '../checkpoints.js';
import { DEFAULT_POLICY } from '../policy/evaluate.js';
import { policyVersionOfDocument } from '../policy/load.js';
import { checkFacts, checkStreams, type Facts } from './checks.js';
import { buildFacts, credentialFacts, iso, type ExportRows } from './facts.js';
import { EVIDENCE_FORMAT, EVIDENCE_HASH_ALGORITHM, type EvidenceBundle, type EvidenceEvent, type EvidenceProblem, type StreamProofView, type Unsigned } from './format.js';
import { signBundle, type EvidenceSigner } from './signing.js';

// ---- export -------------------------------------------------------------------------------

type Reader = Pick<Db, 'select' | 'selectDistinctOn'>;
const SEGMENT_PAGE = 2000;

/**
 * (Pre-stream events only.) Re-verifies the legacy chain from `fromStreamSeq` to its head, from
 * the database rows: every hash recomputed, every link, no missing stream_seq. Only this
 * request's legacy events are in the bundle, so this is the API's word, as it was in format v1.
 */
async function verifyLegacySegment(tx: Reader, fromStreamSeq: number) {
  const problems: EvidenceProblem[] = [];
  let prev: { streamSeq: number; hash: string } | undefined = { streamSeq: 0, hash: GENESIS_HASH };
  if (fromStreamSeq > 1) {
    [prev] = await tx.select({ streamSeq: auditEvents.streamSeq, hash: auditEvents.hash }).from(auditEvents).where(and(eq(auditEvents.stream, LEGACY_STREAM), eq(auditEvents.streamSeq, fromStreamSeq - 1)));
    if (!prev) problems.push({ code: 'seq_gap', message: `legacy stream_seq ${fromStreamSeq - 1}, the predecessor of this bundle's first legacy event, is missing` });
  }
  let cursor = fromStreamSeq - 1;
  let checked = 0;
  for (;;) {
    const rows = await tx.select().from(auditEvents).where(and(eq(auditEvents.stream, LEGACY_STREAM), gt(auditEvents.streamSeq, cursor))).orderBy(asc(auditEvents.streamSeq)).limit(SEGMENT_PAGE);
    for (const r of rows) {
      if (prev && r.streamSeq !== prev.streamSeq + 1) problems.push({ code: 'seq_gap', seq: r.seq, message: `legacy events ${prev.streamSeq + 1}–${r.streamSeq - 1} are missing` });
      else if (prev && r.prevHash !== prev.hash) problems.push({ code: 'link_broken', seq: r.seq, message: `legacy seq ${r.seq}: prev_hash does not match the hash of the event before it` });
      if (hashEvent(r) !== r.hash) problems.push({ code: 'hash_mismatch', seq: r.seq, message: `legacy seq ${r.seq}: the stored row does not hash to its recorded hash; it was changed after it was written` });
      prev = r;
      checked++;
    }
    if (rows.length < SEGMENT_PAGE) break;
    cursor = rows[rows.length - 1]!.streamSeq;
  }
  return { problems, checked, toStreamSeq: prev?.streamSeq ?? 0 };
}

async function policyRecord(tx: Reader, version: string | null) {
  if (!version) return { source: null, publishedAt: null, publishedBy: null, document: null };
  const [row] = await tx.select().from(policyVersions).where(eq(policyVersions.version, version)).orderBy(desc(policyVersions.id)).limit(1);
  if (row) return { source: row.source, publishedAt: iso(row.createdAt), publishedBy: row.createdBy, document: row.document };
  if (version === policyVersionOfDocument(DEFAULT_POLICY)) return { source: 'built-in default', publishedAt: null, publishedBy: null, document: DEFAULT_POLICY as unknown as Record<string, unknown> };
  return { source: null, publishedAt: null, publishedBy: null, document: null };
}

const toEvent = (r: AuditEvent): EvidenceEvent => ({
  seq: r.seq,
  idempotencyKey: r.idempotencyKey,
  stream: r.stream,
  streamSeq: r.streamSeq,
  hashVersion: r.hashVersion === 1 ? 1 : 2,
  at: r.at.toISOString(),
  actorType: r.actorType,
  actorId: r.actorId,
  action: r.action,
  requestId: r.requestId,
  grantId: r.grantId,
  identityId: r.identityId,
  reason: r.reason,
  policyVersion: r.policyVersion,
  data: r.data,
  prevHash: r.prevHash,
  hash: r.hash,
});

/** The streams a request's story is in: its own, and its grant's (events about the grant alone). */
const streamsOf = (requestId: string, grantId: string | undefined) => [`request:${requestId}`, ...(grantId ? [`grant:${grantId}`] : [])];

/** The request's rows, or undefined for an unknown request; all read through the caller's snapshot. */
async function readRows(tx: Reader, requestId: string): Promise<ExportRows | undefined> {
  const [req] = await tx.select().from(accessRequests).where(eq(accessRequests.id, requestId));
  if (!req) return undefined;
  const [[ent], approvalRows, [grant]] = await Promise.all([
    tx
      .select({ name: entitlements.name, resource: entitlements.resource, riskTier: entitlements.riskTier, systemId: entitlements.systemId, systemKind: systems.kind })
      .from(entitlements)
      .innerJoin(systems, eq(systems.id, entitlements.systemId))
      .where(eq(entitlements.id, req.entitlementId)),
    tx.select().from(approvals).where(eq(approvals.requestId, req.id)).orderBy(asc(approvals.stage), asc(approvals.createdAt), asc(approvals.approverId)),
    tx.select().from(grants).where(eq(grants.requestId, req.id)),
  ]);
  const [eventRows, credentialRows, policy] = await Promise.all([
    // Its streams whole, and its events from before streams (the legacy chain).
    tx
      .select()
      .from(auditEvents)
      .where(
        or(
          inArray(auditEvents.stream, streamsOf(req.id, grant?.id)),
          and(eq(auditEvents.stream, LEGACY_STREAM), grant ? or(eq(auditEvents.requestId, req.id), eq(auditEvents.grantId, grant.id)) : eq(auditEvents.requestId, req.id)),
        ),
      )
      .orderBy(asc(auditEvents.seq)),
    grant ? tx.select().from(credentials).where(eq(credentials.grantId, grant.id)).orderBy(asc(credentials.issuedAt)) : Promise.resolve([]),
    policyRecord(tx, req.policyVersion),
  ]);
  return { req, ent, approvalRows, grant, events: eventRows.map(toEvent), credentialRows, policy };
}

/** Everything about one request, read in one consistent snapshot, verified, not yet signed. */
async function collect(tx: Reader, requestId: string, exportedBy: string, now: Date): Promise<Unsigned | undefined> {
  const rows = await readRows(tx, requestId);
  if (!rows) return undefined;
  return assemble(tx, buildFacts(rows), credentialFacts(rows.credentialRows), exportedBy, now);
}

/**
 * Streams' events as read from the database, re-verified (the offline verifier's checks, plus the
 * head rows: an event removed from a stream's end leaves its head row ahead of it) and proven
 * against the latest checkpoint. `names`: the complete streams; the legacy chain joins when some
 * of the events are from before streams. Shared with the review report.
 */
export async function proveStreamsOf(tx: Reader, names: string[], events: EvidenceEvent[]) {
  const all = events.some((e) => e.stream === LEGACY_STREAM) ? [...names, LEGACY_STREAM] : names;
  const headRows = await tx.select().from(auditStreams).where(inArray(auditStreams.stream, all));
  const headOf = new Map(headRows.map((h) => [h.stream, h]));
  const checkpoint = (await latestCheckpoint(tx)) ?? null;
  const proofs = checkpoint ? await proveStreams(tx, checkpoint.id, all) : new Map<string, StreamProof>();
  const streams: StreamProofView[] = all
    .map((stream) => {
      const last = events.filter((e) => e.stream === stream).at(-1);
      const h = headOf.get(stream);
      const head = stream === LEGACY_STREAM ? (h ? { streamSeq: h.headSeq, hash: h.headHash } : null) : last ? { streamSeq: last.streamSeq, hash: last.hash } : null;
      const p = proofs.get(stream);
      return { stream, complete: stream !== LEGACY_STREAM, head, proof: p ? { checkpointId: p.checkpointId, head: p.head, leafIndex: p.leafIndex, treeSize: p.treeSize, auditPath: p.auditPath } : null };
    })
    // A stream that never had an event (a lease whose events all name its request has no grant stream) is left out.
    .filter((s) => s.head || s.proof || headOf.has(s.stream));
  const checked = checkStreams(events, streams, checkpoint);
  const problems: EvidenceProblem[] = [...checked.problems];
  for (const s of streams) {
    const h = headOf.get(s.stream);
    if (s.complete && h && h.headSeq > 0 && (s.head?.streamSeq ?? 0) < h.headSeq) {
      problems.push({ code: s.head ? 'stream_truncated' : 'stream_deleted', message: `stream ${s.stream}: its head row says ${h.headSeq} events, ${s.head?.streamSeq ?? 0} are left` });
    }
  }
  return { streams, checkpoint, problems, linksChecked: checked.linksChecked };
}

/** Makes a checkpoint first when the latest does not hold these streams as they are now. */
export async function checkpointCovering(db: Db, signer: EvidenceSigner, streams: string[]): Promise<void> {
  if ((await uncheckpointed(db, [...streams, LEGACY_STREAM])).length) await createCheckpoint(db, signer);
}

/**
 * The facts with each stream re-verified from the database rows (the same checks the offline
 * verifier runs, plus the head rows), and each stream's proof against the latest checkpoint.
 */
async function assemble(tx: Reader, facts: Facts, issuedCredentials: EvidenceBundle['credentials'], exportedBy: string, now: Date): Promise<Unsigned> {
  const { events } = facts;
  const { streams, checkpoint, problems, linksChecked } = await proveStreamsOf(tx, streamsOf(facts.request.id, facts.grant?.id ?? undefined), events);
  let legacySegment: { fromStreamSeq: number; toStreamSeq: number; eventsChecked: number } | undefined;
  const legacy = events.filter((e) => e.stream === LEGACY_STREAM);
  if (legacy.length) {
    const seg = await verifyLegacySegment(tx, legacy[0]!.streamSeq);
    problems.push(...seg.problems);
    legacySegment = { fromStreamSeq: legacy[0]!.streamSeq, toStreamSeq: seg.toStreamSeq, eventsChecked: seg.checked };
  }
  problems.push(...checkFacts(facts));
  return {
    format: EVIDENCE_FORMAT,
    exportedAt: now.toISOString(),
    exportedBy,
    ...facts,
    credentials: issuedCredentials,
    chain: { hashAlgorithm: EVIDENCE_HASH_ALGORITHM, genesisHash: GENESIS_HASH, streams, checkpoint, ...(legacySegment ? { legacySegment } : {}) },
    verification: {
      valid: problems.length === 0,
      checkedAt: new Date().toISOString(),
      eventsChecked: events.length + (legacySegment?.eventsChecked ?? 0),
      linksChecked,
      problems,
    },
  };
}

/**
 * The request's evidence bundle, or undefined for an unknown request. Read in one
 * repeatable-read snapshot so the events, the facts and the head agree with each other.
 */
export async function exportEvidence(db: Db, signer: EvidenceSigner, requestId: string, opts: { exportedBy: string; now?: Date }): Promise<EvidenceBundle | undefined> {
  // A checkpoint that holds the request's streams as they are now, made first if the latest does not.
  const [req] = await db.select({ id: accessRequests.id }).from(accessRequests).where(eq(accessRequests.id, requestId));
  if (!req) return undefined;
  const [g] = await db.select({ id: grants.id }).from(grants).where(eq(grants.requestId, requestId));
  await checkpointCovering(db, signer, streamsOf(requestId, g?.id));
  const unsigned = await db.transaction((tx) => collect(tx, requestId, opts.exportedBy, opts.now ?? new Date()), { isolationLevel: 'repeatable read', accessMode: 'read only' });
  return unsigned ? signBundle(unsigned, signer) : undefined;
}
