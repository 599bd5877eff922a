/**
 * The service-desk outbox is fed by the audit chain itself (issue 12): every event of a request
 * linked to a ticket gets an outbox row in the event's own transaction, in chain order; an
 * unlinked request, a refused ticket and a rolled-back transaction get none. Checked with SQL on
 * a fresh database.
 */
import { randomUUID } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit } from '../../activities/domain/audit.js';
import { accessRequests, entitlements, identities, serviceDesks, systems, ticketLinks } from '../../db/schema.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
let deskId: string;
let ownerId: string;
let entitlementId: string;

beforeAll(async () => {
  t = await createTestDatabase();
  const [owner] = await t.db.insert(identities).values({ kind: 'employee', username: 'owner', displayName: 'Owner' }).returning();
  ownerId = owner!.id;
  const [system] = await t.db.insert(systems).values({ name: 'dir', kind: 'ldap', config: {}, ownerId }).returning();
  const [ent] = await t.db.insert(entitlements).values({ systemId: system!.id, name: 'Group', resource: 'cn=g', ownerId, defaultDurationSeconds: 60, maxDurationSeconds: 600 }).returning();
  entitlementId = ent!.id;
  const [desk] = await t.db.insert(serviceDesks).values({ name: 'rt', kind: 'rt', config: { url: 'http://127.0.0.1:1', queue: 'Access requests' }, ownerId }).returning();
  deskId = desk!.id;
});
afterAll(async () => {
  await t?.drop();
});

async function request(): Promise<string> {
  const [subject] = await t.db.insert(identities).values({ kind: 'employee', username: `u${randomUUID().slice(0, 8)}`, displayName: 'Subject' }).returning();
  const [r] = await t.db
    .insert(accessRequests)
    .values({ requesterId: subject!.id, subjectId: subject!.id, entitlementId, justification: 'j', requestedDurationSeconds: 60, workflowId: `wf/${randomUUID()}` })
    .returning();
  return r!.id;
}

const event = (requestId: string | null, action: string) => ({ idempotencyKey: randomUUID(), actorType: 'workflow' as const, actorId: 'wf', action, requestId });

async function outbox(requestId: string): Promise<Array<{ source: string; auditSeq: number; action: string }>> {
  const rows = await t.db.execute<{ source: string; audit_seq: string; action: string }>(
    sql`select o.source, o.audit_seq, e.action from desk_outbox o join ticket_link l on l.id = o.link_id join audit_event e on e.seq = o.audit_seq where l.request_id = ${requestId} order by o.id`,
  );
  return [...rows].map((r) => ({ source: r.source, auditSeq: Number(r.audit_seq), action: r.action }));
}

describe('the service-desk outbox, fed by the audit chain', () => {
  it('queues every event of a linked request, in chain order, in the event’s own transaction', async () => {
    const linked = await request();
    const unlinked = await request();
    // The link commits with the request's first event, as intake does.
    await t.db.transaction(async (tx) => {
      await tx.insert(ticketLinks).values({ deskId, ticketRef: '101', requestId: linked, state: 'linked' });
      await appendAudit(tx, event(linked, 'request.submitted'));
    });
    for (const action of ['approval.decided', 'grant.applied', 'grant.verified']) await t.db.transaction((tx) => appendAudit(tx, event(linked, action)));
    await t.db.transaction((tx) => appendAudit(tx, event(unlinked, 'request.submitted')));
    await t.db.transaction((tx) => appendAudit(tx, event(null, 'token.issued')));

    const rows = await outbox(linked);
    expect(rows.map((r) => r.action)).toEqual(['request.submitted', 'approval.decided', 'grant.applied', 'grant.verified']);
    expect(rows.map((r) => r.auditSeq)).toEqual([...rows.map((r) => r.auditSeq)].sort((a, b) => a - b));
    expect(rows.every((r) => r.source === `audit:${r.auditSeq}`)).toBe(true);
    expect(await outbox(unlinked)).toEqual([]);
  });

  it('queues nothing for a rolled-back event, a retried event or a refused ticket', async () => {
    const linked = await request();
    await t.db.insert(ticketLinks).values({ deskId, ticketRef: '102', requestId: linked, state: 'linked' });
    await expect(
      t.db.transaction(async (tx) => {
        await appendAudit(tx, event(linked, 'grant.applied'));
        throw new Error('rolled back');
      }),
    ).rejects.toThrow('rolled back');
    const once = event(linked, 'grant.verified');
    await t.db.transaction((tx) => appendAudit(tx, once));
    await t.db.transaction((tx) => appendAudit(tx, once)); // an activity retry: same key, no second event
    expect((await outbox(linked)).map((r) => r.action)).toEqual(['grant.verified']);

    const refused = await request();
    await t.db.insert(ticketLinks).values({ deskId, ticketRef: '103', requestId: refused, state: 'refused', refusal: 'unknown_entitlement' });
    await t.db.transaction((tx) => appendAudit(tx, event(refused, 'request.submitted')));
    expect(await outbox(refused)).toEqual([]);
  });

  it('links a ticket once per desk, and a request to one ticket', async () => {
    const r = await request();
    await t.db.insert(ticketLinks).values({ deskId, ticketRef: '104', requestId: r, state: 'linked' });
    await expect(t.db.insert(ticketLinks).values({ deskId, ticketRef: '104', state: 'refused' })).rejects.toThrow();
    await expect(t.db.insert(ticketLinks).values({ deskId, ticketRef: '105', requestId: r, state: 'linked' })).rejects.toThrow();
  });
});
