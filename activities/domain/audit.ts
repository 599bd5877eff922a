import { createHash } from 'node:crypto';
import { asc, desc, eq, sql } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { auditEvents, deskOutbox, ticketLinks, type AuditEvent } from '../../db/schema.js';

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

export function hashEvent(e: Hashable): string {
  const body = canonicalJson({
    seq: e.seq,
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
  });
  return createHash('sha256').update(e.prevHash).update('\n').update(body).digest('hex');
}

// One global chain: appends are serialised by a transaction-scoped advisory lock so two
// writers can never both link to the same predecessor.
const CHAIN_LOCK = 0x616363657373; // "access"

/**
 * Appends to the chain inside the caller's transaction. Idempotent by key: a retried
 * activity that already wrote its event gets the existing row back.
 */
export async function appendAudit(tx: Tx, input: AuditInput): Promise<AuditEvent> {
  return (await appendAuditEvent(tx, input)).event;
}

/**
 * `appendAudit` that also says whether this call wrote the event (`inserted`) or found it from
 * an earlier attempt: effects counted once (metrics, alerts) key off `inserted`, after commit.
 */
export async function appendAuditEvent(tx: Tx, input: AuditInput): Promise<{ event: AuditEvent; inserted: boolean }> {
  await tx.execute(sql`select pg_advisory_xact_lock(${CHAIN_LOCK})`);
  const [existing] = await tx.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, input.idempotencyKey));
  if (existing) return { event: existing, inserted: false };
  const [last] = await tx.select({ seq: auditEvents.seq, hash: auditEvents.hash }).from(auditEvents).orderBy(desc(auditEvents.seq)).limit(1);
  const row: Hashable = {
    seq: (last?.seq ?? 0) + 1,
    idempotencyKey: input.idempotencyKey,
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
    prevHash: last?.hash ?? GENESIS_HASH,
  };
  const [inserted] = await tx.insert(auditEvents).values({ ...row, hash: hashEvent(row) }).returning();
  if (row.requestId) await queueForTicket(tx, row.requestId, row.seq);
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

/** Recomputes the whole chain; returns the first broken seq, or null when intact. */
export async function verifyChain(db: Pick<Db, 'select'>): Promise<{ ok: true; length: number } | { ok: false; brokenAt: number }> {
  const rows = await db.select().from(auditEvents).orderBy(asc(auditEvents.seq));
  let prev = GENESIS_HASH;
  for (const [i, r] of rows.entries()) {
    if (r.seq !== i + 1 || r.prevHash !== prev || hashEvent(r) !== r.hash) return { ok: false, brokenAt: r.seq };
    prev = r.hash;
  }
  return { ok: true, length: rows.length };
}
