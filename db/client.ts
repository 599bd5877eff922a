import { readFile } from 'node:fs/promises';
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

/**
 * Applies pending migrations. Replicas starting together take turns under a Postgres advisory
 * lock: drizzle reads the last applied migration before its transaction, so two unlocked runs
 * would both apply the same one. The one after the first finds nothing to do.
 */
export async function migrateDb(db: Db): Promise<void> {
  await withMigrationLock(db, async () => {
    await preflight(db);
    await migrate(db, { migrationsFolder });
  });
}

/**
 * Session-level, so it is held on one connection: a reserved one, while the migrations run on
 * the pool's others. A one-connection pool (the embedded PGlite, `npm run db:migrate`) has no
 * other: the lock is taken on that connection, which then runs the migrations itself.
 */
async function withMigrationLock(db: Db, fn: () => Promise<void>): Promise<void> {
  const pool = db.$client;
  const session = pool.options.max > 1 ? await pool.reserve() : pool;
  try {
    await session`select pg_advisory_lock(hashtextextended(${MIGRATION_LOCK_NAME}, 0))`;
    try {
      await fn();
    } finally {
      await session`select pg_advisory_unlock(hashtextextended(${MIGRATION_LOCK_NAME}, 0))`;
    }
  } finally {
    if (session !== pool) (session as postgres.ReservedSql).release();
  }
}

const MIGRATION_LOCK_NAME = 'accessloop:migrate';

/** Thrown at start with ACCESSLOOP_MIGRATE=skip when the database lacks committed migrations. */
export class MigrationsPendingError extends Error {
  override name = 'MigrationsPendingError';
}

/**
 * For a replica that must not migrate: the database has every committed migration (drizzle's
 * own table against the journal drizzle-kit wrote), or this names the command that applies them.
 */
export async function assertMigrated(db: Db): Promise<void> {
  const journal = JSON.parse(await readFile(`${migrationsFolder}/meta/_journal.json`, 'utf8')) as { entries: unknown[] };
  const sql = db.$client;
  // two queries: a statement naming a missing table fails at parse time, whatever its branches
  const [table] = await sql<{ name: string | null }[]>`select to_regclass('drizzle.__drizzle_migrations')::text as name`;
  const [row] = table?.name ? await sql<{ applied: number }[]>`select count(*)::int as applied from drizzle.__drizzle_migrations` : [];
  const applied = row?.applied ?? 0;
  if (applied < journal.entries.length) {
    throw new MigrationsPendingError(
      `the database schema is behind this version: ${applied} of ${journal.entries.length} migrations applied, and ` +
        'ACCESSLOOP_MIGRATE=skip keeps this process from applying them. Run `npm run db:migrate` (with this DATABASE_URL), then start again.',
    );
  }
}

export async function closeDb(db: Db): Promise<void> {
  await db.$client.end({ timeout: 5 });
}
