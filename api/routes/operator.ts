import { createHash } from 'node:crypto';
import { and, desc, eq, inArray, sql } from 'drizzle-orm';
import { Router } from 'express';
import { ZodError } from 'zod';
import { connectorKinds, SECRET_ENV_PREFIX } from '../../activities/connectors/registry.js';
import { appendAudit } from '../../activities/domain/audit.js';
import { requestIdOf } from '../request-context.js';
import type { Db } from '../../db/client.js';
import { accessRequests, apiTokens, approvals, entitlements, grants, identities, systems } from '../../db/schema.js';
import { hashToken, newToken } from '../../activities/domain/tokens.js';
import { actorRef, hasRole, identityOf, principalOf, requireRole } from '../auth.js';
import { badRequest, conflict, notFound, zodDetails } from '../errors.js';
import { createEntitlementBody, createIdentityBody, createSystemBody, createTokenBody, idParam, sshPublicKeyBody } from '../schemas.js';
import { valid, validate } from '../validate.js';

/** Postgres unique violation → 409 instead of a 500. */
function onUnique(what: string) {
  return (e: unknown): never => {
    const code = (e as { code?: string; cause?: { code?: string } })?.cause?.code ?? (e as { code?: string })?.code;
    if (code === '23505') throw conflict('already_exists', `${what} already exists`);
    throw e;
  };
}

async function mustExist(db: Db, id: string | undefined, what: string) {
  if (!id) return;
  const [row] = await db.select({ id: identities.id }).from(identities).where(eq(identities.id, id));
  if (!row) throw badRequest('unknown_reference', `${what} ${id} does not exist`);
}

const publicIdentity = (i: typeof identities.$inferSelect) => i;

export function approvalRoutes(db: Db): Router {
  const r = Router();
  r.get('/pending', requireRole('approver'), async (req, res) => {
    const me = identityOf(principalOf(req));
    const rows = await db
      .select({
        requestId: approvals.requestId,
        stage: approvals.stage,
        dueAt: approvals.dueAt,
        createdAt: approvals.createdAt,
        policyVersion: approvals.policyVersion,
        subjectId: accessRequests.subjectId,
        requesterId: accessRequests.requesterId,
        justification: accessRequests.justification,
        durationSeconds: accessRequests.requestedDurationSeconds,
        ticketRef: accessRequests.ticketRef,
        entitlementId: entitlements.id,
        entitlementName: entitlements.name,
        riskTier: entitlements.riskTier,
      })
      .from(approvals)
      .innerJoin(accessRequests, eq(accessRequests.id, approvals.requestId))
      .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
      // 'active' too: an extension that policy sends back for approval.
      .where(and(eq(approvals.approverId, me), eq(approvals.status, 'pending'), inArray(accessRequests.status, ['pending_approval', 'active'])))
      .orderBy(approvals.dueAt);
    res.json({ items: rows });
  });
  return r;
}

export function identityRoutes(db: Db): Router {
  const r = Router();

  r.post('/', requireRole('operator'), validate({ body: createIdentityBody }), async (req, res) => {
    const { body } = valid(res, { body: createIdentityBody });
    await mustExist(db, body.managerId, 'managerId');
    await mustExist(db, body.ownerId, 'ownerId');
    await mustExist(db, body.sponsorId, 'sponsorId');
    const [row] = await db
      .insert(identities)
      .values({ ...body, endDate: body.endDate ? new Date(body.endDate) : null })
      .returning()
      .catch(onUnique('an identity with this username or externalId'));
    res.status(201).location(`/v1/identities/${row!.id}`).json(publicIdentity(row!));
  });

  r.get('/:id', requireRole('operator'), validate({ params: idParam }), async (req, res) => {
    const { params } = valid(res, { params: idParam });
    const [row] = await db.select().from(identities).where(eq(identities.id, params.id));
    if (!row) throw notFound('identity');
    res.json(publicIdentity(row));
  });

  /**
   * The key SSH certificates are issued for. The person themselves, the owner of a non-human
   * identity, or an operator may set it; only the public half ever reaches us.
   */
  r.put('/:id/ssh-public-key', validate({ params: idParam, body: sshPublicKeyBody }), async (req, res) => {
    const p = principalOf(req);
    const { params, body } = valid(res, { params: idParam, body: sshPublicKeyBody });
    const [who] = await db.select().from(identities).where(eq(identities.id, params.id));
    const mayWrite = hasRole(p, 'operator') || (p.identityId !== null && (p.identityId === who?.id || p.identityId === who?.ownerId));
    if (!who || !mayWrite) throw notFound('identity');
    const fingerprint = `SHA256:${createHash('sha256').update(Buffer.from(body.publicKey.split(' ')[1]!, 'base64')).digest('base64').replace(/=+$/, '')}`;
    await db.transaction(async (tx) => {
      await tx
        .update(identities)
        .set({ attributes: sql`${identities.attributes} || ${JSON.stringify({ sshPublicKey: body.publicKey })}::jsonb`, updatedAt: new Date() })
        .where(eq(identities.id, who.id));
      await appendAudit(tx, {
        idempotencyKey: `ssh-key/${who.id}/${fingerprint}/${Date.now()}`,
        actorType: p.identityId ? 'identity' : 'client',
        actorId: actorRef(p),
        action: 'identity.ssh_key_set',
        identityId: who.id,
        data: { fingerprint, httpRequestId: requestIdOf(res) },
      });
    });
    res.json({ identityId: who.id, fingerprint });
  });

  r.get('/:id/access', validate({ params: idParam }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: idParam });
    if (!hasRole(p, 'operator', 'auditor') && p.identityId !== params.id) throw notFound('identity');
    const [who] = await db.select({ id: identities.id }).from(identities).where(eq(identities.id, params.id));
    if (!who) throw notFound('identity');
    const rows = await db
      .select({ g: grants, e: entitlements, s: { id: systems.id, name: systems.name, kind: systems.kind }, r: { justification: accessRequests.justification, requesterId: accessRequests.requesterId, ticketRef: accessRequests.ticketRef, policyVersion: accessRequests.policyVersion } })
      .from(grants)
      .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
      .innerJoin(systems, eq(systems.id, entitlements.systemId))
      .leftJoin(accessRequests, eq(accessRequests.id, grants.requestId))
      .where(and(eq(grants.identityId, params.id), inArray(grants.status, ['granting', 'active', 'revoking', 'revocation_unverified'])))
      .orderBy(desc(grants.createdAt));
    const approvers = rows.length
      ? await db
          .select({ requestId: approvals.requestId, approverId: approvals.approverId, decidedAt: approvals.decidedAt, policyVersion: approvals.policyVersion })
          .from(approvals)
          .where(and(inArray(approvals.requestId, rows.map((x) => x.g.requestId).filter((x): x is string => !!x)), eq(approvals.status, 'approved')))
      : [];
    res.json({
      identityId: params.id,
      grants: rows.map(({ g, e, s, r: rq }) => ({
        grantId: g.id,
        status: g.status,
        entitlement: { id: e.id, name: e.name, resource: e.resource, riskTier: e.riskTier },
        system: s,
        grantedAt: g.grantedAt,
        expiresAt: g.expiresAt,
        provenance: {
          source: g.source,
          requestId: g.requestId,
          requesterId: rq?.requesterId ?? null,
          justification: rq?.justification ?? null,
          ticketRef: rq?.ticketRef ?? null,
          policyVersion: rq?.policyVersion ?? null,
          approvals: approvers.filter((a) => a.requestId === g.requestId).map(({ approverId, decidedAt }) => ({ approverId, decidedAt })),
        },
      })),
    });
  });
  return r;
}

export function catalogRoutes(db: Db, hooks: { onSystemCreated?: (systemId: string) => Promise<void> } = {}): { systems: Router; entitlements: Router } {
  const sys = Router();
  sys.post('/', requireRole('operator'), validate({ body: createSystemBody }), async (req, res) => {
    const { body } = valid(res, { body: createSystemBody });
    const kind = connectorKinds[body.kind]!;
    let config: unknown;
    try {
      config = kind.parseConfig(body.config);
    } catch (e) {
      if (e instanceof ZodError) throw badRequest('invalid_config', `invalid ${body.kind} config`, zodDetails(e));
      throw e;
    }
    for (const name of kind.secrets) {
      const ref = body.secretRefs[name];
      if (!ref) throw badRequest('missing_secret_ref', `secretRefs.${name} is required for ${body.kind} systems`);
      if (!ref.startsWith(SECRET_ENV_PREFIX)) throw badRequest('invalid_secret_ref', `secretRefs.${name} must name an environment variable starting with ${SECRET_ENV_PREFIX}`);
    }
    const unknown = Object.keys(body.secretRefs).filter((k) => !kind.secrets.includes(k));
    if (unknown.length) throw badRequest('invalid_secret_ref', `unknown secret names for ${body.kind}: ${unknown.join(', ')}`);
    await mustExist(db, body.ownerId, 'ownerId');
    const [row] = await db
      .insert(systems)
      .values({ name: body.name, kind: body.kind, config: config as Record<string, unknown>, secretRefs: body.secretRefs, ownerId: body.ownerId })
      .returning()
      .catch(onUnique('a system with this name'));
    await hooks.onSystemCreated?.(row!.id);
    res.status(201).json(row);
  });

  const ents = Router();
  ents.post('/', requireRole('operator'), validate({ body: createEntitlementBody }), async (req, res) => {
    const { body } = valid(res, { body: createEntitlementBody });
    const [system] = await db.select({ id: systems.id, kind: systems.kind }).from(systems).where(eq(systems.id, body.systemId));
    if (!system) throw badRequest('unknown_reference', `systemId ${body.systemId} does not exist`);
    // `credential` is not a free attribute: it decides what a grant issues.
    if (body.attributes.credential !== undefined && !(body.attributes.credential === 'password' && system.kind === 'postgres')) {
      throw badRequest('invalid_credential', 'attributes.credential must be "password", on a postgres system (SSH CA grants are always certificates)');
    }
    await mustExist(db, body.ownerId, 'ownerId');
    const [row] = await db.insert(entitlements).values(body).returning().catch(onUnique('an entitlement for this resource on this system'));
    res.status(201).json(row);
  });
  ents.get('/', requireRole('requester', 'approver', 'operator', 'auditor'), async (_req, res) => {
    const rows = await db.select().from(entitlements).orderBy(entitlements.name);
    res.json({ items: rows });
  });
  return { systems: sys, entitlements: ents };
}

export function tokenRoutes(db: Db): Router {
  const r = Router();
  r.post('/', requireRole('operator'), validate({ body: createTokenBody }), async (req, res) => {
    const p = principalOf(req);
    const { body } = valid(res, { body: createTokenBody });
    const isClient = body.principalId.startsWith('client:');
    if (!isClient) {
      const [who] = await db.select({ status: identities.status }).from(identities).where(eq(identities.id, body.principalId));
      if (!who) throw badRequest('unknown_reference', `identity ${body.principalId} does not exist`);
      if (who.status !== 'active') throw conflict('identity_inactive', 'tokens are issued to active identities only');
    }
    const token = newToken();
    const [row] = await db
      .insert(apiTokens)
      .values({
        tokenHash: hashToken(token),
        identityId: isClient ? null : body.principalId,
        clientName: isClient ? body.principalId.slice('client:'.length) : null,
        roles: [...new Set(body.roles)],
        description: body.description ?? null,
        createdBy: actorRef(p),
        expiresAt: body.expiresInSeconds ? new Date(Date.now() + body.expiresInSeconds * 1000) : null,
      })
      .returning({ id: apiTokens.id, roles: apiTokens.roles, expiresAt: apiTokens.expiresAt });
    // Shown once; only its hash is stored.
    res.status(201).json({ id: row!.id, token, principalId: body.principalId, roles: row!.roles, expiresAt: row!.expiresAt });
  });
  return r;
}
