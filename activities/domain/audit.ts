import { createHash } from 'node:crypto';
import { asc, desc, eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { auditEvents, auditStreams, deskOutbox, ticketLinks, type AuditEvent } from '../../db/schema.js';

/** Anything that can run queries: the db or a transaction. */
export type Tx = Pick<Db, 'select' | 'insert' | 'update' | 'execute'>;

export interface AuditInput {
  idempotencyKey: string;
  /** `temporal`: an unauthenticated action taken on the Temporal side (a signal from the UI or CLI). */
  actorType: 'identity' | 'client' | 'system' | 'workflow' | 'temporal';
  actorId: string;
  action: string;
  requestId?: string | null;
  grantId?: string | null;
  identityId?: string | null;
  reason?: string | null;
  policyVersion?: string | null;
  data?: Record<string, unknown>;
  at?: Date;
  /** The chain to append to; default `streamOf(input)`. */
  stream?: string;
}

export const GENESIS_HASH = '0'.repeat(64);

/** Serialises with sorted keys so the hash does not depend on insertion order. */
export function canonicalJson(v: unknown): string {
  if (v === null || typeof v !== 'object') return JSON.stringify(v ?? null);
  if (v instanceof Date) return JSON.stringify(v.toISOString());
  if (Array.isArray(v)) return `[${v.map(canonicalJson).join(',')}]`;
  const o = v as Record<string, unknown>;
  return `{${Object.keys(o)
    .filter((k) => o[k] !== undefined)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}

type Hashable = Omit<AuditEvent, 'hash'>;

/**
 * The event's hash. Version 2 (streams): sha256 of prev_hash, "\n" and the canonical JSON of
 * `{v: 2, stream, streamSeq, idempotencyKey, at, actorType, actorId, action, requestId, grantId,
 * identityId, reason, policyVersion, data}`; the global `seq` is an id, not part of the chain.
 * Version 1 (the single chain before streams) hashed `seq` in the place of the stream fields.
 */
export function hashEvent(e: Hashable): string {
  const fields = {
    idempotencyKey: e.idempotencyKey,
    at: e.at.toISOString(),
    actorType: e.actorType,
    actorId: e.actorId,
    action: e.action,
    requestId: e.requestId,
    grantId: e.grantId,
    identityId: e.identityId,
    reason: e.reason,
    policyVersion: e.policyVersion,
    data: e.data,
  };
  const body = canonicalJson(e.hashVersion === 1 ? { seq: e.seq, ...fields } : { v: 2, stream: e.stream, streamSeq: e.streamSeq, ...fields });
  return createHash('sha256').update(e.prevHash).update('\n').update(body).digest('hex');
}

/** The stream from before streams existed: one chain, hash version 1. */
export const LEGACY_STREAM = 'legacy';

/**
 * Which chain an event joins: the narrowest thing it is about, so that a request's whole story
 * is one stream (its evidence), a grant without a request (birthright, a review of one) another,
 * and nothing else contends with them.
 */
export function streamOf(e: Pick<AuditInput, 'action' | 'requestId' | 'grantId' | 'identityId' | 'data'>): string {
  const d = e.data ?? {};
  // A review's decisions, escalations and skips are the campaign's story (its signed report).
  if (e.action.startsWith('review.') && typeof d.campaignId === 'string') return `campaign:${d.campaignId}`;
  if (e.requestId) return `request:${e.requestId}`;
  if (e.grantId) return `grant:${e.grantId}`;
  if (typeof d.campaignId === 'string') return `campaign:${d.campaignId}`;
  if (e.identityId) return `identity:${e.identityId}`;
  if (typeof d.systemId === 'string') return `system:${d.systemId}`;
  return 'operations';
}

/**
 * Appends to the event's stream inside the caller's transaction. Idempotent by key: a retried
 * activity that already wrote its event gets the existing row back.
 */
export async function appendAudit(tx: Tx, input: AuditInput): Promise<AuditEvent> {
  return (await appendAuditEvent(tx, input)).event;
}

/**
 * `appendAudit` that also says whether this call wrote the event (`inserted`) or found it from
 * an earlier attempt: effects counted once (metrics, alerts) key off `inserted`, after commit.
 *
 * The stream's head row is locked first (created on the stream's first event): two writers of
 * one stream queue there and can never both link to the same predecessor; writers of other
 * streams never meet. Three statements, no global lock.
 */
export async function appendAuditEvent(tx: Tx, input: AuditInput): Promise<{ event: AuditEvent; inserted: boolean }> {
  const stream = input.stream ?? streamOf(input);
  // A no-op update on conflict: it takes the row lock and returns the head as it is.
  const [head] = (await tx.execute(
    sql`insert into ${auditStreams} (stream, head_seq, head_hash) values (${stream}, 0, ${GENESIS_HASH})
        on conflict (stream) do update set stream = excluded.stream returning head_seq, head_hash`,
  )) as unknown as Array<{ head_seq: number; head_hash: string }>;
  const [existing] = await tx.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, input.idempotencyKey));
  if (existing) return { event: existing, inserted: false };
  const row: Omit<Hashable, 'seq'> = {
    idempotencyKey: input.idempotencyKey,
    stream,
    streamSeq: Number(head!.head_seq) + 1,
    hashVersion: 2,
    at: input.at ?? new Date(),
    actorType: input.actorType,
    actorId: input.actorId,
    action: input.action,
    requestId: input.requestId ?? null,
    grantId: input.grantId ?? null,
    identityId: input.identityId ?? null,
    reason: input.reason ?? null,
    policyVersion: input.policyVersion ?? null,
    data: input.data ?? {},
    prevHash: head!.head_hash,
  };
  const hash = hashEvent({ ...row, seq: 0 });
  const [inserted] = await tx.insert(auditEvents).values({ ...row, hash }).returning();
  await tx.update(auditStreams).set({ headSeq: row.streamSeq, headHash: hash, updatedAt: new Date() }).where(eq(auditStreams.stream, stream));
  if (row.requestId) await queueForTicket(tx, row.requestId, inserted!.seq);
  return { event: inserted!, inserted: true };
}

/**
 * A request that came from a service-desk ticket has every event of its own written back to that
 * ticket: the outbox row commits with the event (so nothing is missed and the lifecycle never waits
 * for the desk), and the audit order is the ticket's order. One indexed statement; no row when
 * the request has no ticket.
 */
async function queueForTicket(tx: Tx, requestId: string, seq: number): Promise<void> {
  await tx.execute(
    sql`insert into ${deskOutbox} (link_id, source, audit_seq) select ${ticketLinks.id}, ${`audit:${seq}`}, ${seq} from ${ticketLinks} where ${ticketLinks.requestId} = ${requestId} and ${ticketLinks.state} = 'linked' on conflict do nothing`,
  );
}

/**
 * Recomputes every stream from the rows: each stream_seq from 1 without gaps, each prev_hash the
 * stream's previous hash, each hash from the fields. The first broken event is named. (Against
 * the signed checkpoints, which also catch a deleted or truncated stream: verifyAuditLog.)
 */
export async function verifyChain(db: Pick<Db, 'select'>): Promise<{ ok: true; length: number; streams: number } | { ok: false; brokenAt: number; stream: string }> {
  const rows = await db.select().from(auditEvents).orderBy(asc(auditEvents.stream), asc(auditEvents.streamSeq));
  let stream: string | undefined;
  let prev = GENESIS_HASH;
  let expected = 1;
  let streams = 0;
  for (const r of rows) {
    if (r.stream !== stream) {
      stream = r.stream;
      prev = GENESIS_HASH;
      expected = 1;
      streams++;
    }
    if (r.streamSeq !== expected || r.prevHash !== prev || hashEvent(r) !== r.hash) return { ok: false, brokenAt: r.seq, stream: r.stream };
    prev = r.hash;
    expected++;
  }
  return { ok: true, length: rows.length, streams };
}
