import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { and, count, eq, inArray, isNull, min } from 'drizzle-orm';
import { ZodError, type z } from 'zod';
import { SECRET_ENV_PREFIX } from '../../activities/connectors/registry.js';
import { deskKinds, parseDeskConfig } from '../../activities/connectors/service-desk/registry.js';
import { appendAudit, canonicalJson, type Tx } from '../../activities/domain/audit.js';
import type { Db } from '../../db/client.js';
import { deskOutbox, identities, serviceDesks, ticketLinks, type ServiceDesk } from '../../db/schema.js';
import { ensureServiceDeskWorkflow, requestDeskTicketCheck } from '../../temporal/desk-workflows.js';
import type { Config } from '../../temporal/config.js';
import { serviceDeskWorkflowId } from '../../workflows/ids.js';
import { actorRef } from '../auth.js';
import { badRequest, conflict, HttpError, notFound, zodDetails } from '../errors.js';
import type { createServiceDeskBody, updateServiceDeskBody } from '../schemas.js';
import type { AdminActor } from './admin.js';
import { startIdempotently, type StartRetry } from './workflow-start.js';

export interface ServiceDeskServiceDeps {
  db: Db;
  temporal: Pick<Client, 'workflow'>;
  config: Pick<Config, 'TEMPORAL_TASK_QUEUE'>;
  /** How often a loop start is retried before the caller gets 503 (default: the request start's). */
  startRetry?: StartRetry;
}

/** What an operator sees of a desk: its settings (secret *names* only), the loop's health and what is still to be written back. */
export interface ServiceDeskView {
  id: string;
  name: string;
  kind: string;
  config: Record<string, unknown>;
  secretRefs: Record<string, string>;
  ownerId: string;
  cursor: string | null;
  createdAt: Date;
  workflowId: string;
  health: { reachedAt: Date | null; failingSince: Date | null; lastErrorType: string | null; alertedAt: Date | null };
  backlog: { pendingWriteBacks: number; oldestPendingAt: Date | null };
  links: { linked: number; refused: number; closed: number };
}

/** Postgres unique violation → 409 instead of a 500. */
function onUnique(what: string) {
  return (e: unknown): never => {
    const code = (e as { code?: string; cause?: { code?: string } })?.cause?.code ?? (e as { code?: string })?.code;
    if (code === '23505') throw conflict('already_exists', `${what} already exists`);
    throw e;
  };
}

/** The stored form of a desk's config: the adapter's part and the loop's, both parsed (defaults made explicit). */
function parsedConfig(kind: string, config: Record<string, unknown>): Record<string, unknown> {
  try {
    const { adapter, loop } = parseDeskConfig(kind, config);
    return { ...adapter, loop };
  } catch (e) {
    if (e instanceof ZodError) throw badRequest('invalid_config', `invalid ${kind} service desk config`, zodDetails(e));
    throw e;
  }
}

/** Exactly the kind's secrets, each a reference name (the schema already refuses anything shaped like a value). */
function checkSecretRefs(kind: string, refs: Record<string, string>): void {
  const secrets = deskKinds[kind]!.secrets;
  const missing = secrets.filter((name) => !refs[name]);
  if (missing.length) throw badRequest('missing_secret_ref', `secretRefs needs ${missing.join(', ')} for ${kind} desks`);
  const unknown = Object.keys(refs).filter((name) => !secrets.includes(name));
  if (unknown.length) throw badRequest('invalid_secret_ref', `unknown secret names for ${kind}: ${unknown.join(', ')}`);
  for (const name of secrets) {
    if (!refs[name]!.startsWith(SECRET_ENV_PREFIX)) throw badRequest('invalid_secret_ref', `secretRefs.${name} must name an environment variable starting with ${SECRET_ENV_PREFIX}`);
  }
}

/** Top-level config keys whose values differ: what an update changed, without the values. */
const changedKeys = (before: Record<string, unknown>, after: Record<string, unknown>) =>
  [...new Set([...Object.keys(before), ...Object.keys(after)])].filter((k) => canonicalJson(before[k] ?? null) !== canonicalJson(after[k] ?? null)).sort();

const loopUnavailable = (deskId: string, message: string) => new HttpError(503, 'workflow_unavailable', message, { id: deskId });

/**
 * Service desks (issue 12): registration, settings and the loop that follows each desk. Like a
 * system, a desk is non-secret config plus secret references; each change commits with its audit
 * event in the one chain, the token's principal as the actor, and the desk's loop
 * (`serviceDeskWorkflow`) is started only after the commit, so no Temporal call holds a lock.
 */
export function createServiceDeskService(deps: ServiceDeskServiceDeps) {
  const { db, temporal, config } = deps;

  const audit = (tx: Tx, a: AdminActor, action: string, key: string, data: Record<string, unknown>) =>
    appendAudit(tx, {
      idempotencyKey: `admin/${key}`,
      actorType: a.principal.identityId ? 'identity' : 'client',
      actorId: actorRef(a.principal),
      action,
      data: { ...data, httpRequestId: a.httpRequestId },
    });

  async function views(only?: string): Promise<ServiceDeskView[]> {
    const desks = await db.select().from(serviceDesks).where(only ? eq(serviceDesks.id, only) : undefined).orderBy(serviceDesks.name);
    if (desks.length === 0) return [];
    const ids = desks.map((d) => d.id);
    const [pending, links] = await Promise.all([
      db
        .select({ deskId: ticketLinks.deskId, n: count(), oldest: min(deskOutbox.createdAt) })
        .from(deskOutbox)
        .innerJoin(ticketLinks, eq(ticketLinks.id, deskOutbox.linkId))
        .where(and(isNull(deskOutbox.deliveredAt), inArray(ticketLinks.deskId, ids)))
        .groupBy(ticketLinks.deskId),
      db.select({ deskId: ticketLinks.deskId, state: ticketLinks.state, n: count() }).from(ticketLinks).where(inArray(ticketLinks.deskId, ids)).groupBy(ticketLinks.deskId, ticketLinks.state),
    ]);
    const linkCount = (deskId: string, state: 'linked' | 'refused' | 'closed') => links.find((l) => l.deskId === deskId && l.state === state)?.n ?? 0;
    return desks.map((d: ServiceDesk) => {
      const p = pending.find((x) => x.deskId === d.id);
      return {
        id: d.id,
        name: d.name,
        kind: d.kind,
        config: d.config,
        secretRefs: d.secretRefs,
        ownerId: d.ownerId,
        cursor: d.cursor,
        createdAt: d.createdAt,
        workflowId: serviceDeskWorkflowId(d.id),
        health: { reachedAt: d.reachedAt, failingSince: d.failingSince, lastErrorType: d.lastErrorType, alertedAt: d.alertedAt },
        backlog: { pendingWriteBacks: p?.n ?? 0, oldestPendingAt: p?.oldest ?? null },
        links: { linked: linkCount(d.id, 'linked'), refused: linkCount(d.id, 'refused'), closed: linkCount(d.id, 'closed') },
      };
    });
  }

  async function view(id: string): Promise<ServiceDeskView> {
    const [v] = await views(id);
    if (!v) throw notFound('service desk');
    return v;
  }

  return {
    list: () => views(),
    get: view,

    /**
     * Registers a desk and starts its loop. The row and its `service_desk.registered` event
     * commit first; when the loop cannot be started the row stays and the caller gets 503
     * `workflow_unavailable` with the desk's id: check-tickets (signal-with-start) starts it later.
     */
    async register(a: AdminActor, body: z.output<typeof createServiceDeskBody>): Promise<ServiceDeskView> {
      if (!deskKinds[body.kind]) throw badRequest('invalid_kind', `unknown service desk kind ${body.kind}`);
      const stored = parsedConfig(body.kind, body.config);
      checkSecretRefs(body.kind, body.secretRefs);
      const ownerId = body.ownerId ?? a.principal.identityId;
      if (!ownerId) throw badRequest('owner_required', 'ownerId is required when the token belongs to a system client');
      const [owner] = await db.select({ id: identities.id }).from(identities).where(eq(identities.id, ownerId));
      if (!owner) throw badRequest('unknown_reference', `ownerId ${ownerId} does not exist`);
      const row = await db
        .transaction(async (tx) => {
          const [d] = await tx.insert(serviceDesks).values({ name: body.name, kind: body.kind, config: stored, secretRefs: body.secretRefs, ownerId }).returning();
          // secret reference names are configuration; the values never leave the worker
          await audit(tx, a, 'service_desk.registered', `service-desk/${d!.id}/registered`, { deskId: d!.id, kind: d!.kind, ownerId, secretRefs: d!.secretRefs });
          return d!;
        })
        .catch(onUnique('a service desk with this name'));
      try {
        await startIdempotently(() => ensureServiceDeskWorkflow(temporal, config, row.id), deps.startRetry);
      } catch {
        throw loopUnavailable(row.id, 'the service desk was registered, but its loop could not be started; POST /v1/service-desks/{id}/check-tickets starts it');
      }
      return view(row.id);
    },

    /**
     * Replaces the config and/or the secret references, validated as at registration. The loop
     * reads the row each round, so it follows without a restart. A change that changes nothing
     * writes nothing (no event).
     */
    async update(a: AdminActor, id: string, body: z.output<typeof updateServiceDeskBody>): Promise<ServiceDeskView> {
      await db.transaction(async (tx) => {
        const [d] = await tx.select().from(serviceDesks).where(eq(serviceDesks.id, id)).for('update');
        if (!d) throw notFound('service desk');
        const nextConfig = body.config === undefined ? d.config : parsedConfig(d.kind, body.config);
        if (body.secretRefs) checkSecretRefs(d.kind, body.secretRefs);
        const nextRefs = body.secretRefs ?? d.secretRefs;
        const configKeys = changedKeys(d.config, nextConfig);
        const refsChanged = canonicalJson(d.secretRefs) !== canonicalJson(nextRefs);
        if (configKeys.length === 0 && !refsChanged) return;
        await tx.update(serviceDesks).set({ config: nextConfig, secretRefs: nextRefs }).where(eq(serviceDesks.id, d.id));
        // which settings changed, not their values: the row holds those
        await audit(tx, a, 'service_desk.updated', `service-desk/${d.id}/updated/${randomUUID()}`, {
          deskId: d.id,
          configKeys,
          ...(refsChanged ? { secretRefs: nextRefs } : {}),
        });
      });
      return view(id);
    },

    /** Asks the desk's loop to check its tickets now, starting the loop if it is not running. */
    async checkTickets(id: string): Promise<{ id: string; workflowId: string }> {
      const [d] = await db.select({ id: serviceDesks.id }).from(serviceDesks).where(eq(serviceDesks.id, id));
      if (!d) throw notFound('service desk');
      try {
        await startIdempotently(() => requestDeskTicketCheck(temporal, config, d.id), deps.startRetry);
      } catch {
        throw loopUnavailable(d.id, 'the service desk loop could not be reached; retry later');
      }
      return { id: d.id, workflowId: serviceDeskWorkflowId(d.id) };
    },
  };
}

export type ServiceDeskService = ReturnType<typeof createServiceDeskService>;
