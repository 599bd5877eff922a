import { ApplicationFailure, Context } from '@temporalio/activity';
import { and, eq, gt, notInArray, or, sql } from 'drizzle-orm';
import { DrizzleQueryError } from 'drizzle-orm/errors';
import postgres from 'postgres';
import { ZodError } from 'zod';
import type { Db } from '../db/client.js';
import { accessRequests, entitlements, grants, identities, systems, type Entitlement, type Grant, type Identity, type RequestStatus, type System } from '../db/schema.js';
import { ConnectorError, type Connector, type Membership } from './connectors/types.js';
import type { ActivityDeps } from './deps.js';
import { ReviewRuleError } from './domain/reviews/reviewers.js';

export interface Keyed {
  idempotencyKey: string;
}
/** Transitions an API call caused carry its HTTP request id into the audit event (joins logs and audit). */
export interface FromApi {
  httpRequestId?: string | undefined;
}
export const apiRef = (i: FromApi) => (i.httpRequestId ? { httpRequestId: i.httpRequestId } : {});
export interface LeaseRef {
  /** Absent for birthright grants (no request: the HR rule is the justification). */
  requestId?: string | undefined;
  grantId: string;
  subjectId: string;
  entitlementId: string;
}

/** Transitions the workflow makes on its own (expiry, verification, stage timing). */
export const BY_WORKFLOW = { actorType: 'workflow', actorId: 'accessRequestWorkflow' } as const;

export const notFound = (what: string) => ApplicationFailure.nonRetryable(`${what} not found`, 'NotFound');

/**
 * What a PostgreSQL error means for a retry, by SQLSTATE class. Data exceptions (22: a bad enum
 * value, a malformed uuid), integrity violations (23) and syntax/access-rule errors (42: a schema
 * that does not match the code) fail the same way every time, so retrying them would only strand
 * the lease; connection, resource and transaction-conflict errors (08, 53, 57, 40) and anything
 * unknown pass once the database recovers.
 */
const PG_NON_RETRYABLE: Record<string, { type: string; phrase: string }> = {
  '22': { type: 'InvalidInput', phrase: 'a value was rejected by the database' },
  '23': { type: 'ConstraintViolation', phrase: 'a database constraint was violated' },
  '42': { type: 'InvalidQuery', phrase: 'the database refused the query' },
};

/** The PostgresError in an error's cause chain; a drizzle query error without one is the connection failing. */
function databaseCause(err: unknown): { code: string | undefined; server: boolean; constraint?: string } | undefined {
  let e: unknown = err;
  for (let depth = 0; e instanceof Error && depth < 5; depth++) {
    // The constraint's name is schema, not data: it says which rule failed without the values.
    if (e instanceof postgres.PostgresError) return { code: e.code, server: true, ...(e.constraint_name ? { constraint: e.constraint_name } : {}) };
    e = e.cause;
  }
  if (!(err instanceof DrizzleQueryError)) return undefined;
  const code = (err.cause as { code?: unknown } | undefined)?.code;
  return { code: typeof code === 'string' ? code : undefined, server: false };
}

/**
 * Maps activity errors onto Temporal's retry semantics with stable types: connector errors by
 * their closed type, configuration errors, and database errors by SQLSTATE class. Database
 * failure messages are built from the code and a fixed phrase only: the driver's message and
 * drizzle's ("Failed query: … params: …") can carry SQL parameters, i.e. personal data, and
 * failures end up in workflow history.
 */
export function toFailure(err: unknown, zodMeans: 'InvalidConfig' | 'InvalidInput' = 'InvalidInput'): unknown {
  if (err instanceof ApplicationFailure) return err;
  if (err instanceof ConnectorError) {
    return err.retryable
      ? ApplicationFailure.retryable(err.message, err.type)
      : ApplicationFailure.nonRetryable(err.message, err.type);
  }
  // A review rule refusing (nobody eligible, empty scope) gives the same answer on every retry.
  if (err instanceof ReviewRuleError) return ApplicationFailure.nonRetryable(err.message, `Review_${err.code}`);
  if (err instanceof ZodError) {
    // Around a target, a schema error is the system's stored configuration; elsewhere, the input.
    const what = zodMeans === 'InvalidConfig' ? 'invalid system configuration' : 'invalid input';
    return ApplicationFailure.nonRetryable(`${what}: ${err.issues.map((i) => i.message).join('; ')}`, zodMeans);
  }
  const db = databaseCause(err);
  if (db) {
    const rule = db.server && db.code ? PG_NON_RETRYABLE[db.code.slice(0, 2)] : undefined;
    if (rule) return ApplicationFailure.nonRetryable(`${rule.phrase} (SQLSTATE ${db.code}${db.constraint ? `, constraint ${db.constraint}` : ''})`, rule.type);
    return ApplicationFailure.retryable(`database unavailable or busy (${db.server ? 'SQLSTATE ' : ''}${db.code ?? 'no code'})`, 'DatabaseUnavailable');
  }
  return err;
}

type ActivityFns = Record<string, (...args: never[]) => Promise<unknown>>;

/**
 * Wraps every activity of a factory so its errors go through `toFailure`: the one place where
 * an activity's error becomes a Temporal failure, whichever factory it came from.
 */
export function classified<T extends ActivityFns>(activities: T): T {
  const out: Record<string, unknown> = {};
  for (const [name, fn] of Object.entries(activities)) {
    out[name] = async (...args: never[]) => {
      const stopHeartbeat = heartbeatWhileRunning();
      try {
        return await fn(...args);
      } catch (err) {
        throw toFailure(err);
      } finally {
        stopHeartbeat();
      }
    };
  }
  return out as T;
}

/**
 * Heartbeats while the activity runs, when its options set a heartbeat timeout. A worker that
 * dies (SIGKILL, a lost node) stops heartbeating, so Temporal retries its in-flight attempts
 * elsewhere after the heartbeat timeout (10 s) instead of the whole start-to-close timeout (up to
 * 30 s for a target write): a revoke caught in a crash resumes that much sooner. Short
 * activities finish before the first beat and send none.
 */
function heartbeatWhileRunning(): () => void {
  let ctx: Context;
  try {
    ctx = Context.current();
  } catch {
    return () => {}; // called directly (tests, tools), not as an activity
  }
  const timeoutMs = ctx.info.heartbeatTimeoutMs;
  if (!timeoutMs) return () => {};
  const beat = setInterval(() => ctx.heartbeat(), Math.max(1000, Math.floor(timeoutMs / 3)));
  return () => clearInterval(beat);
}

/**
 * Whether a grant of this entitlement issues a credential: SSH CA grants are certificates;
 * a PostgreSQL entitlement with `attributes.credential = "password"` makes the subject (a
 * service account) a login role with a generated password for the lease.
 */
export function credentialModeOf(system: Pick<System, 'kind'>, entitlement: Pick<Entitlement, 'attributes'>): 'password' | 'certificate' | undefined {
  if (system.kind === 'ssh_ca') return 'certificate';
  if (entitlement.attributes?.credential === 'password') return 'password';
  return undefined;
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** API actors are identity ids or `client:<name>`; the workflow itself is `system`; anything else came from a Temporal UI signal. */
export function actorTypeOf(actorId: string): 'identity' | 'client' | 'workflow' {
  if (actorId === 'system') return 'workflow';
  return UUID.test(actorId) ? 'identity' : 'client';
}

/**
 * States a request or grant never leaves. A late activity attempt (one Temporal already timed out,
 * whose queries were queued through a database restart and ran afterwards) must not reopen what
 * a newer attempt closed: a revoked request shown `active` again would block every new request
 * for that subject and entitlement, and a revoked grant shown open would hold a leaver forever.
 * The database refuses such a transition too (migration 0007, a trigger); these conditions make
 * the ordinary writers skip it quietly instead of failing on it.
 */
export const FINAL_REQUEST_STATES = ['rejected', 'expired_unapproved', 'cancelled', 'revoked', 'failed'] as const satisfies readonly RequestStatus[];
export const FINAL_GRANT_STATES = ['revoked', 'failed'] as const satisfies readonly Grant['status'][];

export async function setRequestStatus(tx: Pick<Db, 'update'>, requestId: string | undefined, status: RequestStatus, extra: Partial<typeof accessRequests.$inferInsert> = {}) {
  if (!requestId) return;
  await tx
    .update(accessRequests)
    .set({ status, updatedAt: new Date(), ...extra })
    .where(and(eq(accessRequests.id, requestId), notInArray(accessRequests.status, [...FINAL_REQUEST_STATES])));
}

/** Locks the grant row for this transaction; undefined when it is gone or already in a final state (nothing left to change). */
export async function lockOpenGrant(tx: Pick<Db, 'select'>, grantId: string): Promise<Grant | undefined> {
  const [g] = await tx.select().from(grants).where(eq(grants.id, grantId)).for('update');
  return g && !(FINAL_GRANT_STATES as readonly string[]).includes(g.status) ? g : undefined;
}

/** The subject, the entitlement and its system in one query; on a miss, which of them is missing. */
export async function loadLease(db: Pick<Db, 'select'>, l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>): Promise<{ identity: Identity; entitlement: Entitlement; system: System }> {
  const [row] = await db
    .select({ identity: identities, entitlement: entitlements, system: systems })
    .from(identities)
    .innerJoin(entitlements, eq(entitlements.id, l.entitlementId))
    .innerJoin(systems, eq(systems.id, entitlements.systemId))
    .where(eq(identities.id, l.subjectId));
  if (row) return row;
  const [identity] = await db.select({ id: identities.id }).from(identities).where(eq(identities.id, l.subjectId));
  if (!identity) throw notFound('identity');
  const [entitlement] = await db.select({ id: entitlements.id }).from(entitlements).where(eq(entitlements.id, l.entitlementId));
  if (!entitlement) throw notFound('entitlement');
  throw notFound('system');
}

export interface LeaseContext {
  connector: Connector;
  m: Membership;
  identity: Identity;
  entitlement: Entitlement;
  system: System;
}

/** Target operations on a lease, counted per system kind, operation and outcome. */
export function createLeaseTargets({ db, connectors, metrics }: Pick<ActivityDeps, 'db' | 'connectors' | 'metrics'>) {
  /** Resolves the connector, the membership and the catalog rows for a lease, then runs target operations. */
  async function onLease<T>(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>, op: string, fn: (ctx: LeaseContext) => Promise<T>): Promise<T> {
    const { identity, entitlement, system: row } = await loadLease(db, l);
    let kind = 'unknown';
    try {
      const { connector, accountFor, system } = await connectors.forSystem(entitlement.systemId, row);
      kind = system.kind;
      const result = await fn({ connector, m: { account: accountFor(identity), resource: entitlement.resource }, identity, entitlement, system });
      metrics.targetCalls.inc({ kind, op, outcome: 'ok' });
      return result;
    } catch (err) {
      metrics.targetCalls.inc({ kind, op, outcome: err instanceof ConnectorError ? err.type : 'error' });
      throw toFailure(err, 'InvalidConfig');
    }
  }

  /** One target operation on a lease's membership. */
  function onTarget<T>(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>, op: string, fn: (c: Connector, m: Membership) => Promise<T>): Promise<T> {
    return onLease(l, op, ({ connector, m }) => fn(connector, m));
  }

  return { onLease, onTarget };
}

/**
 * A grant still `granting` counts as a live justification only this long after its row was
 * written: longer than a grant's bounded target write (TARGET_WRITE, 10 min) plus its read-back.
 * Within it, the grant is genuinely in flight (its workflow will make it `active`, or mark it
 * `failed` and remove it itself); past it, it is stuck and justifies nothing. `failed`, `revoking`
 * and every ended state never count.
 */
export const GRANT_IN_FLIGHT_SECONDS = 15 * 60;

/** The same rule on a loaded row (see GRANT_IN_FLIGHT_SECONDS). */
export function isLiveJustification(g: { status: string; createdAt: Date }, now = Date.now()): boolean {
  return g.status === 'active' || (g.status === 'granting' && now - g.createdAt.getTime() < GRANT_IN_FLIGHT_SECONDS * 1000);
}

/** The SQL condition "this grant justifies its membership now" (see GRANT_IN_FLIGHT_SECONDS). */
export const justifiesMembership = () =>
  or(eq(grants.status, 'active'), and(eq(grants.status, 'granting'), gt(grants.createdAt, sql`now() - make_interval(secs => ${GRANT_IN_FLIGHT_SECONDS})`)))!;

/** Advisory-lock class for memberships (two-int form: its own key space, apart from the audit chain's lock). */
const MEMBERSHIP_LOCK_CLASS = 0x6d656d62; // "memb"

export type LockedTx = Parameters<Parameters<Db['transaction']>[0]>[0];

/**
 * Runs `fn` in a transaction holding a per-membership advisory lock (system, account, resource),
 * so "does another grant still justify this membership?" and the target call that acts on the
 * answer are one step against a concurrent grant or removal of the same membership. Everything
 * inside must use `tx` (the embedded database serves one connection), and stay short: the
 * connector calls inside have their own timeouts.
 */
export async function withMembershipLock<T>(db: Pick<Db, 'transaction'>, ctx: Pick<LeaseContext, 'system' | 'm'>, fn: (tx: LockedTx) => Promise<T>): Promise<T> {
  return db.transaction(async (tx) => {
    const key = `${ctx.system.id}\n${ctx.m.account}\n${ctx.m.resource}`;
    await tx.execute(sql`select pg_advisory_xact_lock(${MEMBERSHIP_LOCK_CLASS}, hashtext(${key}))`);
    return fn(tx);
  });
}

/** The attempt number when running as an activity (1-based), undefined when called directly. */
export function activityAttempt(): number | undefined {
  try {
    return Context.current().info.attempt;
  } catch {
    return undefined;
  }
}
