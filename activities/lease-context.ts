import { ApplicationFailure } from '@temporalio/activity';
import { eq } from 'drizzle-orm';
import { ZodError } from 'zod';
import type { Db } from '../db/client.js';
import { accessRequests, entitlements, identities, type Entitlement, type Identity, type RequestStatus, type System } from '../db/schema.js';
import { ConnectorError, type Connector, type Membership } from './connectors/types.js';
import type { ActivityDeps } from './deps.js';

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

/** Maps connector errors onto Temporal's retry semantics with stable types. */
export function toFailure(err: unknown): unknown {
  if (err instanceof ConnectorError) {
    return err.retryable
      ? ApplicationFailure.retryable(err.message, err.type)
      : ApplicationFailure.nonRetryable(err.message, err.type);
  }
  if (err instanceof ZodError) return ApplicationFailure.nonRetryable(`invalid system configuration: ${err.issues.map((i) => i.message).join('; ')}`, 'InvalidConfig');
  return err;
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

export async function setRequestStatus(tx: Pick<Db, 'update'>, requestId: string | undefined, status: RequestStatus, extra: Partial<typeof accessRequests.$inferInsert> = {}) {
  if (!requestId) return;
  await tx.update(accessRequests).set({ status, updatedAt: new Date(), ...extra }).where(eq(accessRequests.id, requestId));
}

export async function loadLease(db: Pick<Db, 'select'>, l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>) {
  const [identity] = await db.select().from(identities).where(eq(identities.id, l.subjectId));
  if (!identity) throw notFound('identity');
  const [entitlement] = await db.select().from(entitlements).where(eq(entitlements.id, l.entitlementId));
  if (!entitlement) throw notFound('entitlement');
  return { identity, entitlement };
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
    const { identity, entitlement } = await loadLease(db, l);
    let kind = 'unknown';
    try {
      const { connector, accountFor, system } = await connectors.forSystem(entitlement.systemId);
      kind = system.kind;
      const result = await fn({ connector, m: { account: accountFor(identity), resource: entitlement.resource }, identity, entitlement, system });
      metrics.targetCalls.inc({ kind, op, outcome: 'ok' });
      return result;
    } catch (err) {
      metrics.targetCalls.inc({ kind, op, outcome: err instanceof ConnectorError ? err.type : 'error' });
      throw toFailure(err);
    }
  }

  /** One target operation on a lease's membership. */
  function onTarget<T>(l: Pick<LeaseRef, 'subjectId' | 'entitlementId'>, op: string, fn: (c: Connector, m: Membership) => Promise<T>): Promise<T> {
    return onLease(l, op, ({ connector, m }) => fn(connector, m));
  }

  return { onLease, onTarget };
}
