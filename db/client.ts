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

/** Thrown before any migration runs when the database holds data a migration would refuse. */
export class MigrationPreflightError extends Error {
  override name = 'MigrationPreflightError';
}

/**
 * Migration 0006 adds `access_request_open_uq` (one open request per subject and entitlement).
 * A database from before it that already holds duplicates would stop half-way with a bare
 * unique violation; this says which requests to close instead, before anything is applied.
 */
async function preflight(db: Db): Promise<void> {
  const sql = db.$client;
  const [state] = await sql<{ table: string | null; index: string | null }[]>`
    select to_regclass('public.access_request')::text as table,
           to_regclass('public.access_request_open_uq')::text as index`;
  if (!state?.table || state.index) return;
  const duplicates = await sql<{ subject_id: string; entitlement_id: string; ids: string[] }[]>`
    select subject_id, entitlement_id, array_agg(id::text order by created_at) as ids
    from access_request
    where status::text in ('pending_approval','scheduled','granting','active','revoking','revocation_unverified')
    group by subject_id, entitlement_id having count(*) > 1`;
  if (duplicates.length === 0) return;
  const list = duplicates.map((d) => d.ids.join(', ')).join('; ');
  throw new MigrationPreflightError(
    `cannot add the one-open-request-per-subject-and-entitlement index: ${duplicates.length} ` +
      `subject/entitlement pair(s) have several open requests (${list}). Withdraw, reject or ` +
      'revoke all but one of each (POST /v1/access-requests/:id/revoke), then migrate again; nothing was changed.',
  );
}

export async function migrateDb(db: Db): Promise<void> {
  await preflight(db);
  await migrate(db, { migrationsFolder });
}

export async function closeDb(db: Db): Promise<void> {
  await db.$client.end({ timeout: 5 });
}
