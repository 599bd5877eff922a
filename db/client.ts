import { fileURLToPath } from 'node:url';
import { drizzle } from 'drizzle-orm/postgres-js';
import { migrate } from 'drizzle-orm/postgres-js/migrator';
import postgres from 'postgres';
import * as schema from './schema.js';

export type Db = ReturnType<typeof drizzle<typeof schema>> & { $client: postgres.Sql };

export interface DbOptions {
  /** Pool size; PGlite served over a socket takes one connection at a time. */
  max?: number;
}

export function createDb(url: string, opts: DbOptions = {}): Db {
  const client = postgres(url, {
    max: opts.max ?? 10,
    // Postgres NOTICEs (e.g. "relation already exists, skipping") are not our logs.
    onnotice: () => {},
    connect_timeout: 10,
  });
  return drizzle({ client, schema }) as Db;
}

export const migrationsFolder = fileURLToPath(new URL('./migrations', import.meta.url));

export async function migrateDb(db: Db): Promise<void> {
  await migrate(db, { migrationsFolder });
}

export async function closeDb(db: Db): Promise<void> {
  await db.$client.end({ timeout: 5 });
}
