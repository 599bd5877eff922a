/**
 * Several replicas starting at once against one fresh Postgres: migrations run once, in turn
 * under the advisory lock, and a replica told not to migrate (ACCESSLOOP_MIGRATE=skip) refuses
 * a database whose schema is behind, naming the command that fixes it.
 */
import { randomBytes } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import postgres from 'postgres';
import { afterAll, describe, expect, inject, it } from 'vitest';
import { assertMigrated, closeDb, createDb, migrateDb, migrationsFolder, MigrationsPendingError } from '../../db/client.js';
import { loadConfig } from '../../temporal/config.js';
import { createLogger } from '../../temporal/logger.js';
import { startRuntime } from '../../temporal/runtime.js';
import { adminUrl } from '../helpers/db.js';

const REPLICAS = 4;
const created: string[] = [];

/** An empty database (createTestDatabase would migrate it). */
async function emptyDatabase(): Promise<string> {
  const name = `accessloop_t_${randomBytes(5).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } finally {
    await admin.end();
  }
  created.push(name);
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  return url.toString();
}

async function journalEntries(): Promise<number> {
  const journal = JSON.parse(await readFile(path.join(migrationsFolder, 'meta', '_journal.json'), 'utf8')) as { entries: unknown[] };
  return journal.entries.length;
}

afterAll(async () => {
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  for (const name of created) await admin.unsafe(`drop database if exists ${name} with (force)`);
  await admin.end();
});

describe('migrations across replicas', () => {
  it(`${REPLICAS} replicas migrating one fresh database at once all succeed, and each migration is applied once`, async () => {
    const url = await emptyDatabase();
    // pools like the runtime's (10) and like `npm run db:migrate` (1): both lock paths
    const dbs = Array.from({ length: REPLICAS }, (_, i) => createDb(url, { max: i === 0 ? 1 : 10 }));
    try {
      const results = await Promise.allSettled(dbs.map((db) => migrateDb(db)));
      expect(results.filter((r) => r.status === 'rejected')).toEqual([]);
      const rows = await dbs[0]!.$client<{ hash: string }[]>`select hash from drizzle.__drizzle_migrations`;
      expect(rows).toHaveLength(await journalEntries());
      expect(new Set(rows.map((r) => r.hash)).size).toBe(rows.length);
      // the lock is released: nothing waits for it, and another run still finds nothing to do
      await migrateDb(dbs[1]!);
      expect(await dbs[0]!.$client`select hash from drizzle.__drizzle_migrations`).toHaveLength(rows.length);
      await expect(assertMigrated(dbs[2]!)).resolves.toBeUndefined();
    } finally {
      await Promise.all(dbs.map((db) => closeDb(db)));
    }
  });

  it('a replica with ACCESSLOOP_MIGRATE=skip refuses a database whose schema is behind, naming npm run db:migrate', async () => {
    const url = await emptyDatabase();
    const dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-migrate-skip-'));
    const start = () =>
      startRuntime({
        config: loadConfig({
          TEMPORAL_ADDRESS: inject('temporalAddress'),
          DATABASE_URL: url,
          TEMPORAL_TASK_QUEUE: `test-${randomBytes(4).toString('hex')}`,
          ACCESSLOOP_DATA_DIR: dataDir,
          ACCESSLOOP_DEMO: 'false',
          ACCESSLOOP_MIGRATE: 'skip',
          PORT: '0',
        }),
        log: createLogger('silent'),
        api: false,
        worker: false,
        say: () => {},
      });
    const db = createDb(url, { max: 2 });
    try {
      // nothing applied: not even drizzle's table exists
      const fresh = await start().catch((e: unknown) => e);
      expect(fresh).toBeInstanceOf(MigrationsPendingError);
      expect((fresh as Error).message).toMatch(/0 of \d+ migrations applied[\s\S]*npm run db:migrate/);
      expect(await db.$client`select to_regclass('public.access_request')::text as t`).toEqual([{ t: null }]);

      // one migration behind (as after deploying a version with a new migration)
      await migrateDb(db);
      await db.$client`delete from drizzle.__drizzle_migrations where id = (select max(id) from drizzle.__drizzle_migrations)`;
      const behind = await start().catch((e: unknown) => e);
      expect(behind).toBeInstanceOf(MigrationsPendingError);
      expect((behind as Error).message).toContain(`${(await journalEntries()) - 1} of ${await journalEntries()} migrations applied`);
      expect((behind as Error).message).toContain('npm run db:migrate');
    } finally {
      await closeDb(db);
      await rm(dataDir, { recursive: true, force: true });
    }
  });
});
