import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { closeDb, createDb, migrateDb, type Db } from '../../db/client.js';

/** The machine's Postgres (trust auth); CI starts it. Override with TEST_DATABASE_URL. */
export const adminUrl = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';

export interface TestDatabase {
  url: string;
  name: string;
  db: Db;
  drop(): Promise<void>;
}

/** A fresh database per test file, migrated with the committed migrations, dropped afterwards. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `accessloop_t_${randomBytes(5).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  try {
    await admin.unsafe(`create database ${name}`);
  } catch (e) {
    await admin.end();
    throw new Error(`cannot create a test database on ${adminUrl.replace(/\/\/[^@]*@/, '//…@')} (${(e as Error).message}); start PostgreSQL or set TEST_DATABASE_URL`);
  }
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${name}`;
  const db = createDb(url.toString(), { max: 5 });
  await migrateDb(db);
  return {
    url: url.toString(),
    name,
    db,
    async drop() {
      await closeDb(db);
      const a = postgres(adminUrl, { max: 1, onnotice: () => {} });
      await a.unsafe(`drop database if exists ${name} with (force)`);
      await a.end();
    },
  };
}
