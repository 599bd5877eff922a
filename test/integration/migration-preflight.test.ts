import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MigrationPreflightError, migrateDb } from '../../db/client.js';
import { createTestDatabase, type TestDatabase } from '../helpers/db.js';

/**
 * An install from before migration 0006 may hold two open requests for one subject and
 * entitlement; the unique index that migration adds would stop the upgrade half-way. The
 * preflight names the requests to close and changes nothing. The pre-0006 database is made by
 * dropping the index from a migrated one.
 */
describe('migration preflight', () => {
  let t: TestDatabase;
  const ids: string[] = [];

  beforeAll(async () => {
    t = await createTestDatabase();
    const sql = t.db.$client;
    await sql`drop index access_request_open_uq`;
    const [owner] = await sql<{ id: string }[]>`
      insert into identity (kind, username, display_name) values ('employee', 'preflight-owner', 'Owner') returning id`;
    const [system] = await sql<{ id: string }[]>`
      insert into system (name, kind, config, owner_id) values ('preflight', 'ldap', '{}', ${owner!.id}) returning id`;
    const [ent] = await sql<{ id: string }[]>`
      insert into entitlement (system_id, name, resource, owner_id, default_duration_seconds, max_duration_seconds)
      values (${system!.id}, 'e', 'cn=e', ${owner!.id}, 60, 120) returning id`;
    for (const n of [1, 2]) {
      const [r] = await sql<{ id: string }[]>`
        insert into access_request (requester_id, subject_id, entitlement_id, justification, requested_duration_seconds, status, workflow_id)
        values (${owner!.id}, ${owner!.id}, ${ent!.id}, 'dup', 60, 'active', ${`preflight-${n}`}) returning id`;
      ids.push(r!.id);
    }
  });
  afterAll(async () => t?.drop());

  it('refuses with the duplicate request ids and leaves the database as it was', async () => {
    const err = await migrateDb(t.db).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(MigrationPreflightError);
    const message = (err as Error).message;
    for (const id of ids) expect(message).toContain(id);
    expect(message).toContain('nothing was changed');
    const [idx] = await t.db.$client<{ index: string | null }[]>`select to_regclass('public.access_request_open_uq')::text as index`;
    expect(idx!.index).toBeNull();
  });

  it('passes once all but one of the duplicates is closed', async () => {
    await t.db.$client`update access_request set status = 'cancelled' where id = ${ids[0]!}`;
    await expect(migrateDb(t.db)).resolves.toBeUndefined();
  });
});
