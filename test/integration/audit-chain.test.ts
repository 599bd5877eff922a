import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit, verifyChain } from '../../activities/domain/audit.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t?.drop();
});

describe('hash-chained audit log on real Postgres', () => {
  it('stays one unbroken chain under concurrent writers', async () => {
    await Promise.all(
      Array.from({ length: 40 }, (_, i) =>
        t.db.transaction((tx) => appendAudit(tx, { idempotencyKey: `c/${i}`, actorType: 'system', actorId: 'test', action: 'test.concurrent', data: { i } })),
      ),
    );
    expect(await verifyChain(t.db)).toEqual({ ok: true, length: 40 });
  });

  it('is idempotent per key: a retried activity does not append twice', async () => {
    const a = await t.db.transaction((tx) => appendAudit(tx, { idempotencyKey: 'retry/1', actorType: 'workflow', actorId: 'wf', action: 'grant.applied' }));
    const b = await t.db.transaction((tx) => appendAudit(tx, { idempotencyKey: 'retry/1', actorType: 'workflow', actorId: 'wf', action: 'grant.applied' }));
    expect(b.seq).toBe(a.seq);
    expect(await verifyChain(t.db)).toEqual({ ok: true, length: 41 });
  });

  it('detects an edited event', async () => {
    await t.db.execute(sql`update audit_event set actor_id = 'someone-else' where seq = 7`);
    expect(await verifyChain(t.db)).toEqual({ ok: false, brokenAt: 7 });
  });
});
