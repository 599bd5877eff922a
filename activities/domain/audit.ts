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
 * streams never meet. No global lock.
 *
 * Two statements: the head (locked), then one that inserts the event, moves the head and queues
 * the event for the request's ticket. A retry of an event already written conflicts on its
 * idempotency key, changes nothing, and reads the earlier row back (a third statement, on
 * retries only). The key is checked by the insert, not by a select before it: an insert sees a
 * concurrent writer's committed row, where a select's snapshot could predate it.
 *
 * A request that came from a service-desk ticket has every event of its own written back to
 * that ticket: the outbox row commits with the event (so nothing is missed and the lifecycle
 * never waits for the desk), and the audit order is the ticket's order; no row when the request
 * has no linked ticket.
 */
export async function appendAuditEvent(tx: Tx, input: AuditInput): Promise<{ event: AuditEvent; inserted: boolean }> {
  const stream = input.stream ?? streamOf(input);
  // A no-op update on conflict: it takes the row lock and returns the head as it is.
  const [head] = (await tx.execute(
    sql`insert into ${auditStreams} (stream, head_seq, head_hash) values (${stream}, 0, ${GENESIS_HASH})
        on conflict (stream) do update set stream = excluded.stream returning head_seq, head_hash`,
  )) as unknown as Array<{ head_seq: number; head_hash: string }>;
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
    // As jsonb gives it back (no undefined members, dates as strings), so the event returned
    // here hashes the same as the row read later.
    data: input.data ? (JSON.parse(JSON.stringify(input.data)) as Record<string, unknown>) : {},
    prevHash: head!.head_hash,
  };
  const hash = hashEvent({ ...row, seq: 0 });
  const e = auditEvents;
  const [written] = (await tx.execute(sql`
    with ins as (
      insert into ${e} (${sql.identifier(e.idempotencyKey.name)}, ${sql.identifier(e.stream.name)}, ${sql.identifier(e.streamSeq.name)}, ${sql.identifier(e.hashVersion.name)},
        ${sql.identifier(e.at.name)}, ${sql.identifier(e.actorType.name)}, ${sql.identifier(e.actorId.name)}, ${sql.identifier(e.action.name)}, ${sql.identifier(e.requestId.name)},
        ${sql.identifier(e.grantId.name)}, ${sql.identifier(e.identityId.name)}, ${sql.identifier(e.reason.name)}, ${sql.identifier(e.policyVersion.name)}, ${sql.identifier(e.data.name)},
        ${sql.identifier(e.prevHash.name)}, ${sql.identifier(e.hash.name)})
      values (${row.idempotencyKey}, ${stream}, ${row.streamSeq}, ${row.hashVersion}, ${row.at.toISOString()}::timestamptz, ${row.actorType}, ${row.actorId}, ${row.action},
        ${row.requestId}::uuid, ${row.grantId}::uuid, ${row.identityId}::uuid, ${row.reason}, ${row.policyVersion}, ${JSON.stringify(row.data)}::jsonb, ${row.prevHash}, ${hash})
      on conflict (${sql.identifier(e.idempotencyKey.name)}) do nothing
      returning ${sql.identifier(e.seq.name)} as seq
    ),
    head as (
      update ${auditStreams} set head_seq = ${row.streamSeq}, head_hash = ${hash}, updated_at = now()
      where stream = ${stream} and exists (select 1 from ins)
    ),
    ticket as (
      insert into ${deskOutbox} (link_id, source, audit_seq)
      select ${ticketLinks.id}, 'audit:' || ins.seq, ins.seq from ${ticketLinks}, ins
      where ${ticketLinks.requestId} = ${row.requestId}::uuid and ${ticketLinks.state} = 'linked'
      on conflict do nothing
    )
    select seq from ins`)) as unknown as Array<{ seq: string | number }>;
  if (!written) {
    const [existing] = await tx.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, input.idempotencyKey));
    if (!existing) throw new Error(`audit event ${input.idempotencyKey}: neither written nor found`);
    return { event: existing, inserted: false };
  }
  return { event: { ...row, seq: Number(written.seq), hash }, inserted: true };
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
