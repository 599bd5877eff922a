import { createPublicKey, verify } from 'node:crypto';
import { and, asc, desc, inArray, lte, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { auditCheckpointHeads, auditCheckpoints, auditEvents, auditStreams, type AuditEvent } from '../../db/schema.js';
import { canonicalJson, GENESIS_HASH, hashEvent } from './audit.js';
import { keyFingerprint, type EvidenceSigner } from './evidence/signing.js';
import { merkleInclusionPath, merkleLeafHash, merkleRoot } from './merkle.js';

// Signed checkpoints over the audit streams (docs/audit.md): on a schedule (and on demand at an
// evidence export), a Merkle tree over every stream's head, its root signed with the evidence key.
// A stream's inclusion proof ties its head to a signed root in O(log n), so a bundle verifies in
// O(stream + log n) however long the rest of the log is; and a checkpoint remembers each
// stream's length, so a stream deleted or cut short afterwards is caught.

export const CHECKPOINT_FORMAT = 'accessloop.checkpoint/v1';
type Reader = Pick<Db, 'select' | 'selectDistinctOn'>;
/** Checkpoints are written one at a time (each extends the last); appends never take this lock. */
const CHECKPOINT_LOCK = 0x636b7074; // "ckpt"

export interface StreamHead {
  stream: string;
  streamSeq: number;
  hash: string;
}

/** What a checkpoint signs. */
export interface SignedCheckpoint {
  format: typeof CHECKPOINT_FORMAT;
  id: number;
  createdAt: string;
  treeSize: number;
  rootHash: string;
}

export interface CheckpointView extends SignedCheckpoint {
  signature: string;
  signer: { algorithm: 'Ed25519'; publicKey: string; fingerprint: string };
}

/** A stream head as a leaf: the canonical JSON of `{stream, streamSeq, hash}`, hashed as an RFC 9162 leaf. */
export const headLeaf = (h: StreamHead) => merkleLeafHash(canonicalJson({ stream: h.stream, streamSeq: h.streamSeq, hash: h.hash }));

/** Leaves in one fixed order: by stream name in code-unit order (never a database collation). */
export const byStream = (a: { stream: string }, b: { stream: string }) => (a.stream < b.stream ? -1 : a.stream > b.stream ? 1 : 0);

export const signedBytes = (c: SignedCheckpoint) =>
  Buffer.from(canonicalJson({ format: c.format, id: c.id, createdAt: c.createdAt, treeSize: c.treeSize, rootHash: c.rootHash }), 'utf8');

/** The signature over a checkpoint, checked against the key it names. */
export function checkpointSignatureValid(c: CheckpointView): boolean {
  try {
    const key = createPublicKey(c.signer.publicKey);
    if (keyFingerprint(key) !== c.signer.fingerprint) return false;
    return verify(null, signedBytes(c), key, Buffer.from(c.signature, 'base64'));
  } catch {
    return false;
  }
}

const toView = (row: typeof auditCheckpoints.$inferSelect): CheckpointView => ({
  format: CHECKPOINT_FORMAT,
  id: row.id,
  createdAt: row.createdAt.toISOString(),
  treeSize: row.treeSize,
  rootHash: row.rootHash,
  signature: row.signature,
  signer: { algorithm: 'Ed25519', publicKey: row.publicKey, fingerprint: row.keyFingerprint },
});

/** Every stream's head as checkpoint `id` saw it (the last change recorded at or before it), in leaf order. */
export async function headsAt(db: Reader, id: number): Promise<StreamHead[]> {
  const rows = await db
    .selectDistinctOn([auditCheckpointHeads.stream], { stream: auditCheckpointHeads.stream, streamSeq: auditCheckpointHeads.streamSeq, hash: auditCheckpointHeads.headHash })
    .from(auditCheckpointHeads)
    .where(lte(auditCheckpointHeads.checkpointId, id))
    .orderBy(asc(auditCheckpointHeads.stream), desc(auditCheckpointHeads.checkpointId));
  return rows.sort(byStream);
}

/** The latest `limit` checkpoints, newest first. */
export async function listCheckpoints(db: Pick<Db, 'select'>, limit: number): Promise<CheckpointView[]> {
  return (await db.select().from(auditCheckpoints).orderBy(desc(auditCheckpoints.id)).limit(limit)).map(toView);
}

export async function latestCheckpoint(db: Pick<Db, 'select'>): Promise<CheckpointView | undefined> {
  const [row] = await db.select().from(auditCheckpoints).orderBy(desc(auditCheckpoints.id)).limit(1);
  return row ? toView(row) : undefined;
}

/**
 * Writes a checkpoint of every stream's head now, signed; or returns the latest when no stream
 * moved since. Heads are read in one statement (one snapshot), so the tree is of one moment;
 * appends committing meanwhile go into the next one.
 */
export async function createCheckpoint(db: Db, signer: EvidenceSigner, now = new Date()): Promise<{ checkpoint: CheckpointView; created: boolean }> {
  return db.transaction(async (tx) => {
    await tx.execute(sql`select pg_advisory_xact_lock(${CHECKPOINT_LOCK})`);
    const [prevRow] = await tx.select().from(auditCheckpoints).orderBy(desc(auditCheckpoints.id)).limit(1);
    const heads = (await tx.select({ stream: auditStreams.stream, streamSeq: auditStreams.headSeq, hash: auditStreams.headHash }).from(auditStreams).where(sql`${auditStreams.headSeq} > 0`)).sort(byStream);
    const before = prevRow ? new Map((await headsAt(tx, prevRow.id)).map((h) => [h.stream, h])) : new Map<string, StreamHead>();
    const changed = heads.filter((h) => before.get(h.stream)?.streamSeq !== h.streamSeq || before.get(h.stream)?.hash !== h.hash);
    if (prevRow && changed.length === 0 && heads.length === before.size) return { checkpoint: toView(prevRow), created: false };
    const signed: SignedCheckpoint = {
      format: CHECKPOINT_FORMAT,
      id: (prevRow?.id ?? 0) + 1,
      createdAt: now.toISOString(),
      treeSize: heads.length,
      rootHash: merkleRoot(heads.map(headLeaf)).toString('hex'),
    };
    const signature = signer.sign(signedBytes(signed));
    const [row] = await tx
      .insert(auditCheckpoints)
      .values({ id: signed.id, createdAt: now, treeSize: signed.treeSize, rootHash: signed.rootHash, keyFingerprint: signer.fingerprint, publicKey: signer.publicKeyPem, signature })
      .returning();
    for (let i = 0; i < changed.length; i += 1000) {
      await tx.insert(auditCheckpointHeads).values(changed.slice(i, i + 1000).map((h) => ({ checkpointId: signed.id, stream: h.stream, streamSeq: h.streamSeq, headHash: h.hash })));
    }
    return { checkpoint: toView(row!), created: true };
  });
}

export interface StreamProof {
  checkpointId: number;
  /** The stream's head as the checkpoint saw it: the leaf. */
  head: { streamSeq: number; hash: string };
  leafIndex: number;
  treeSize: number;
  /** Sibling hashes from the leaf up, hex. */
  auditPath: string[];
}

/** Inclusion proofs of these streams' heads in checkpoint `checkpointId` (streams it does not hold are absent). */
export async function proveStreams(db: Reader, checkpointId: number, streams: string[]): Promise<Map<string, StreamProof>> {
  const heads = await headsAt(db, checkpointId);
  const leaves = heads.map(headLeaf);
  const index = new Map(heads.map((h, i) => [h.stream, i]));
  const out = new Map<string, StreamProof>();
  for (const s of streams) {
    const i = index.get(s);
    if (i === undefined) continue;
    out.set(s, {
      checkpointId,
      head: { streamSeq: heads[i]!.streamSeq, hash: heads[i]!.hash },
      leafIndex: i,
      treeSize: heads.length,
      auditPath: merkleInclusionPath(i, leaves).map((b) => b.toString('hex')),
    });
  }
  return out;
}

export interface AuditLogProblem {
  code: string;
  stream?: string;
  seq?: number;
  checkpointId?: number;
  message: string;
}

/**
 * The whole log against itself and its checkpoints, from the database: every stream's chain
 * (hashes, links, stream_seq without gaps, head row), every checkpoint's signature and root, every
 * checkpointed head still present with the same hash (a stream deleted or truncated after it was
 * checkpointed is named), and the checkpoints against each other (a later one never forgets or
 * rewinds a stream). Empty `problems`: intact.
 */
export async function verifyAuditLog(db: Reader, opts: { publicKey?: string } = {}): Promise<{ ok: boolean; problems: AuditLogProblem[]; events: number; streams: number; checkpoints: number }> {
  const problems: AuditLogProblem[] = [];
  const rows = await db.select().from(auditEvents).orderBy(asc(auditEvents.stream), asc(auditEvents.streamSeq));
  const byStreamRows = new Map<string, AuditEvent[]>();
  for (const r of rows) byStreamRows.set(r.stream, [...(byStreamRows.get(r.stream) ?? []), r]);
  for (const [stream, evs] of byStreamRows) {
    let prev = { streamSeq: 0, hash: GENESIS_HASH };
    for (const r of evs) {
      // A gap is named once; the chain is then followed on from the event after it.
      if (r.streamSeq !== prev.streamSeq + 1) problems.push({ code: 'seq_gap', stream, seq: r.seq, message: `stream ${stream}: events ${prev.streamSeq + 1}–${r.streamSeq - 1} are missing before stream_seq ${r.streamSeq}` });
      else if (r.prevHash !== prev.hash) problems.push({ code: 'link_broken', stream, seq: r.seq, message: `stream ${stream}: seq ${r.seq}'s prev_hash is not the hash of the stream's previous event` });
      if (hashEvent(r) !== r.hash) problems.push({ code: 'hash_mismatch', stream, seq: r.seq, message: `stream ${stream}: seq ${r.seq} (${r.action}) does not hash to its recorded hash; it was changed after it was written` });
      prev = r;
    }
  }
  const heads = await db.select().from(auditStreams);
  for (const h of heads) {
    const evs = byStreamRows.get(h.stream) ?? [];
    const last = evs.at(-1);
    if (h.headSeq > 0 && !last) problems.push({ code: 'stream_deleted', stream: h.stream, message: `stream ${h.stream}: its head row says ${h.headSeq} events, none is left` });
    else if (last && (last.streamSeq !== h.headSeq || last.hash !== h.headHash)) problems.push({ code: 'head_mismatch', stream: h.stream, message: `stream ${h.stream}: the head row (${h.headSeq}) does not match its last event (${last.streamSeq})` });
  }

  const checkpoints = (await db.select().from(auditCheckpoints).orderBy(asc(auditCheckpoints.id))).map(toView);
  const seen = new Map<string, { streamSeq: number; hash: string; checkpointId: number }>();
  for (const c of checkpoints) {
    if (!checkpointSignatureValid(c)) problems.push({ code: 'checkpoint_signature', checkpointId: c.id, message: `checkpoint ${c.id}: the signature does not verify` });
    if (opts.publicKey !== undefined && keyFingerprint(opts.publicKey) !== c.signer.fingerprint) problems.push({ code: 'checkpoint_key', checkpointId: c.id, message: `checkpoint ${c.id}: signed by ${c.signer.fingerprint}, not the pinned key` });
    const leaves = await headsAt(db, c.id);
    if (leaves.length !== c.treeSize || merkleRoot(leaves.map(headLeaf)).toString('hex') !== c.rootHash) {
      problems.push({ code: 'checkpoint_root', checkpointId: c.id, message: `checkpoint ${c.id}: its recorded heads do not give its signed root` });
    }
    for (const l of leaves) {
      const before = seen.get(l.stream);
      if (before && (l.streamSeq < before.streamSeq || (l.streamSeq === before.streamSeq && l.hash !== before.hash))) {
        problems.push({ code: 'checkpoint_conflict', stream: l.stream, checkpointId: c.id, message: `checkpoints ${before.checkpointId} and ${c.id} disagree on stream ${l.stream} (${before.streamSeq} → ${l.streamSeq})` });
      }
      seen.set(l.stream, { ...l, checkpointId: c.id });
    }
  }
  // Each stream as the latest checkpoint saw it must still be there, unchanged up to that point.
  for (const [stream, h] of seen) {
    const evs = byStreamRows.get(stream);
    if (!evs?.length) {
      problems.push({ code: 'stream_deleted', stream, checkpointId: h.checkpointId, message: `stream ${stream}: checkpoint ${h.checkpointId} holds ${h.streamSeq} events of it; none is left` });
      continue;
    }
    const at = evs.find((e) => e.streamSeq === h.streamSeq);
    if (!at && evs.at(-1)!.streamSeq < h.streamSeq) {
      problems.push({ code: 'stream_truncated', stream, checkpointId: h.checkpointId, message: `stream ${stream}: checkpoint ${h.checkpointId} holds ${h.streamSeq} events, ${evs.at(-1)!.streamSeq} are left` });
    } else if (at && at.hash !== h.hash) {
      problems.push({ code: 'checkpoint_mismatch', stream, seq: at.seq, checkpointId: h.checkpointId, message: `stream ${stream}: event ${h.streamSeq} is not the one checkpoint ${h.checkpointId} signed; history was rewritten` });
    }
  }
  return { ok: problems.length === 0, problems, events: rows.length, streams: byStreamRows.size, checkpoints: checkpoints.length };
}

/** Streams whose current head the latest checkpoint does not hold yet. */
export async function uncheckpointed(tx: Reader, streams: string[]): Promise<string[]> {
  if (streams.length === 0) return [];
  const latest = await latestCheckpoint(tx);
  const current = await tx.select().from(auditStreams).where(inArray(auditStreams.stream, streams));
  if (!latest) return current.filter((c) => c.headSeq > 0).map((c) => c.stream);
  const rows = await tx
    .selectDistinctOn([auditCheckpointHeads.stream], { stream: auditCheckpointHeads.stream, streamSeq: auditCheckpointHeads.streamSeq })
    .from(auditCheckpointHeads)
    .where(and(inArray(auditCheckpointHeads.stream, streams), lte(auditCheckpointHeads.checkpointId, latest.id)))
    .orderBy(asc(auditCheckpointHeads.stream), desc(auditCheckpointHeads.checkpointId));
  const held = new Map(rows.map((r) => [r.stream, r.streamSeq]));
  return current.filter((c) => c.headSeq > 0 && held.get(c.stream) !== c.headSeq).map((c) => c.stream);
}
