import { randomBytes } from 'node:crypto';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appendAudit, appendAuditEvent, verifyChain } from '../../activities/domain/audit.js';
import { createCheckpoint, headsAt, verifyAuditLog } from '../../activities/domain/checkpoints.js';
import { evidenceSignerFromSeed } from '../../activities/domain/evidence/signing.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

// The audit log on real Postgres: per-stream chains under concurrent writers, signed checkpoints
// over every stream's head, and the verifier naming each kind of tampering.
const signer = evidenceSignerFromSeed(randomBytes(32));
const append = (db: TestDatabase['db'], key: string, stream: string, i = 0) =>
  db.transaction((tx) => appendAudit(tx, { idempotencyKey: key, actorType: 'system', actorId: 'test', action: 'test.concurrent', stream, data: { i } }));
const codes = async (db: TestDatabase['db']) => (await verifyAuditLog(db)).problems.map((p) => `${p.code}:${p.stream ?? ''}`);

let t: TestDatabase;
beforeAll(async () => {
  t = await createTestDatabase();
});
afterAll(async () => {
  await t?.drop();
});

describe('per-stream audit chains on real Postgres', () => {
  it('keeps every stream one unbroken chain under concurrent writers, on different streams and on the same one', async () => {
    await Promise.all([
      ...Array.from({ length: 30 }, (_, i) => append(t.db, `many/${i}`, `request:many-${i % 10}`, i)),
      ...Array.from({ length: 30 }, (_, i) => append(t.db, `one/${i}`, 'request:one', i)),
    ]);
    expect(await verifyChain(t.db)).toEqual({ ok: true, length: 60, streams: 11 });
    const one = (await t.db.execute(sql`select stream_seq from audit_event where stream = 'request:one' order by stream_seq`)) as unknown as Array<{ stream_seq: number }>;
    expect(one.map((r) => r.stream_seq)).toEqual(Array.from({ length: 30 }, (_, i) => i + 1));
  });

  it('is idempotent per key: a retried activity does not append twice', async () => {
    const a = await append(t.db, 'retry/1', 'request:one');
    const b = await append(t.db, 'retry/1', 'request:one');
    expect(b.seq).toBe(a.seq);
    expect(b.streamSeq).toBe(31);
    expect(await verifyChain(t.db)).toMatchObject({ ok: true, length: 61 });
  });

  it('writes an event once when two attempts with the same key race, and both get that event back, equal to the row', async () => {
    const key = 'race/1';
    const attempt = () =>
      t.db.transaction((tx) => appendAuditEvent(tx, { idempotencyKey: key, actorType: 'system', actorId: 'test', action: 'test.race', stream: 'request:one', data: { at: new Date(0), gone: undefined, n: 1 } }));
    const results = await Promise.all([attempt(), attempt(), attempt()]);
    expect(results.filter((r) => r.inserted)).toHaveLength(1);
    expect(new Set(results.map((r) => r.event.seq)).size).toBe(1);
    const rows = (await t.db.execute(sql`select seq from audit_event where idempotency_key = ${key}`)) as unknown as unknown[];
    expect(rows).toHaveLength(1);
    // The event handed back by the writer is the one a reader gets: same fields, same hash.
    const written = results.find((r) => r.inserted)!.event;
    const reread = results.find((r) => !r.inserted)!.event;
    expect(written).toEqual(reread);
    expect(written.data).toEqual({ at: new Date(0).toISOString(), n: 1 });
    expect(await verifyChain(t.db)).toMatchObject({ ok: true, length: 62 });
  });

  it('checkpoints every stream head, signed; an unchanged log writes no new checkpoint; only changed heads are stored again', async () => {
    const first = await createCheckpoint(t.db, signer);
    expect(first).toMatchObject({ created: true, checkpoint: { id: 1, treeSize: 11, signer: { fingerprint: signer.fingerprint } } });
    expect((await createCheckpoint(t.db, signer)).created).toBe(false);
    await append(t.db, 'later/1', 'request:many-3');
    const second = await createCheckpoint(t.db, signer);
    expect(second.checkpoint).toMatchObject({ id: 2, treeSize: 11 });
    const stored = (await t.db.execute(sql`select count(*)::int as n from audit_checkpoint_head where checkpoint_id = 2`)) as unknown as Array<{ n: number }>;
    expect(stored[0]!.n).toBe(1);
    expect((await headsAt(t.db, 2)).find((h) => h.stream === 'request:many-3')!.streamSeq).toBe(4);
    expect(await verifyAuditLog(t.db, { publicKey: signer.publicKeyPem })).toMatchObject({ ok: true, problems: [], events: 63, streams: 11, checkpoints: 2 });
  });

  it('names each kind of tampering: an edited event, a removed one, a truncated stream, a deleted stream, checkpoints that disagree', async () => {
    // Each case on a fresh database of its own, so one does not mask another.
    const cases: Array<[string, (db: TestDatabase['db']) => Promise<unknown>, string[]]> = [
      ['edited', (db) => db.execute(sql`update audit_event set actor_id = 'someone-else' where stream = 'request:a' and stream_seq = 2`), ['hash_mismatch:request:a']],
      ['removed from the middle', (db) => db.execute(sql`delete from audit_event where stream = 'request:a' and stream_seq = 2`), ['seq_gap:request:a']],
      [
        'truncated (head row rewound too)',
        async (db) => {
          await db.execute(sql`delete from audit_event where stream = 'request:a' and stream_seq = 4`);
          await db.execute(sql`update audit_stream set head_seq = 3, head_hash = (select hash from audit_event where stream = 'request:a' and stream_seq = 3) where stream = 'request:a'`);
        },
        ['stream_truncated:request:a'],
      ],
      [
        'deleted whole (head row too)',
        async (db) => {
          await db.execute(sql`delete from audit_event where stream = 'request:b'`);
          await db.execute(sql`delete from audit_stream where stream = 'request:b'`);
        },
        ['stream_deleted:request:b'],
      ],
      [
        'checkpoints disagree',
        (db) => db.execute(sql`update audit_checkpoint_head set stream_seq = 3, head_hash = ${'e'.repeat(64)} where checkpoint_id = 2 and stream = 'request:a'`),
        ['checkpoint_root:', 'checkpoint_conflict:request:a', 'checkpoint_mismatch:request:a'],
      ],
    ];
    for (const [name, tamper, expected] of cases) {
      const d = await createTestDatabase();
      try {
        for (let i = 0; i < 3; i++) await append(d.db, `a/${i}`, 'request:a', i);
        await append(d.db, 'b/0', 'request:b');
        await createCheckpoint(d.db, signer);
        await append(d.db, 'a/3', 'request:a', 3);
        await append(d.db, 'c/0', 'request:c');
        await createCheckpoint(d.db, signer);
        expect(await codes(d.db), `${name}: intact before`).toEqual([]);
        await tamper(d.db);
        expect((await codes(d.db)).sort(), name).toEqual(expected.sort());
      } finally {
        await d.drop();
      }
    }
  }, 120_000);
});
