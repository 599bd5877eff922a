import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessRequests, auditEvents, grants } from '../../db/schema.js';
import { startStack, type Stack } from '../helpers/stack.js';

// Importing existing access (docs/import.md) on the real stack: leases through the API, the
// memberships read from slapd with ldapsearch, the expiry's removal verified there too.
let s: Stack;
let tok: Record<string, string>;
let ids: Stack['catalog']['identities'];
let ent: Record<string, string>;

const inSeconds = (n: number) => new Date(Date.now() + n * 1000).toISOString();
const importLeases = (token: string | undefined, body: unknown) => s.call('POST', '/v1/access-requests/import', token, body);
const requestCount = async () => (await s.tdb.db.select({ n: sql<number>`count(*)::int` }).from(accessRequests))[0]!.n;

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = s.catalog.identities;
  ent = { ...s.catalog.entitlements };
});
afterAll(async () => {
  await s?.stop();
});

describe('importing existing access', () => {
  it('brings each item under a lease with its own expiry, answers refusals per item, and removes it at the end (ldapsearch)', async () => {
    const why = 'migrated from the old access tool, ticket CHG-42';
    const items = [
      { subjectId: ids.alice, entitlementId: ent.engineering, expiresAt: inSeconds(8), justification: why, ticketRef: 'CHG-42' },
      { subjectId: ids.dave, entitlementId: ent['finance-readers'], expiresAt: inSeconds(3600), justification: why },
      { subjectId: '00000000-0000-4000-8000-000000000000', entitlementId: ent.engineering, expiresAt: inSeconds(3600), justification: why },
      { subjectId: ids.carol, entitlementId: ent.engineering, expiresAt: inSeconds(365 * 86400), justification: why },
      { subjectId: ids.bob, entitlementId: ent.engineering, expiresAt: inSeconds(3), justification: why },
    ];
    const r = await importLeases(tok.operator, { items });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    const results = r.body.results as Array<{ index: number; status: string; id?: string; error?: { code: string } }>;
    expect(results.map((x) => [x.index, x.status, x.error?.code])).toEqual([
      [0, 'imported', undefined],
      [1, 'imported', undefined],
      [2, 'error', 'not_found'],
      [3, 'error', 'outside_policy'],
      [4, 'error', 'invalid_expiry'],
    ]);
    expect(r.body.imported).toBe(2);
    const [alice, dave] = [results[0]!.id!, results[1]!.id!];

    // Leases like any other: active, granted on the target (ldapsearch), their origin recorded.
    const view = await s.waitForStatus(alice, ['active']);
    expect(view).toMatchObject({ imported: true, adopted: false, subjectId: ids.alice, ticketRef: 'CHG-42' });
    await s.waitForStatus(dave, ['active']);
    const members = await s.ldapMembers('engineering');
    expect(members).toContain(s.userDn('alice'));
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('dave'));
    const [g] = await s.tdb.db.select().from(grants).where(eq(grants.requestId, alice));
    expect(g!.source).toBe('imported');
    // The evidence names the operator who imported it, not the holder.
    const [submitted] = await s.tdb.db.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, `request/${alice}/submitted`));
    expect(submitted).toMatchObject({ actorType: 'client', actorId: 'client:demo-operator' });
    expect(await s.tdb.db.select({ a: auditEvents.action }).from(auditEvents).where(and(eq(auditEvents.requestId, alice), eq(auditEvents.action, 'request.imported')))).toHaveLength(1);

    // The same access again is refused while the first lease is open.
    const twice = await importLeases(tok.operator, { items: [items[1]] });
    expect(twice.body.results[0]).toMatchObject({ status: 'error', error: { code: 'duplicate_request' } });

    // The expiry it was given ends it: removed and read back from slapd.
    const ended = await s.waitForStatus(alice, ['revoked'], 40_000);
    expect(ended.removalVerifiedAt).toBeTruthy();
    expect(ended.grant).toMatchObject({ revokeReason: 'expired' });
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    await s.call('POST', `/v1/access-requests/${dave}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(dave, ['revoked']);
  });

  it('is for operators only, and a malformed batch is refused whole with nothing written', async () => {
    const before = await requestCount();
    const item = { subjectId: ids.alice, entitlementId: ent.engineering, expiresAt: inSeconds(3600), justification: 'migrated from the old access tool' };
    expect((await importLeases(tok.alice, { items: [item] })).status).toBe(403);
    expect((await importLeases(tok.operator, { items: [] })).status).toBe(400);
    expect((await importLeases(tok.operator, { items: [{ ...item, expiresAt: 'tomorrow' }] })).status).toBe(400);
    expect((await importLeases(tok.operator, { items: [item, { ...item, justification: 'x' }] })).status).toBe(400);
    expect(await requestCount()).toBe(before);
  });
});
