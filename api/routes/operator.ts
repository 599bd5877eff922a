import { and, desc, eq, inArray } from 'drizzle-orm';
import { Router, type Request, type Response } from 'express';
import type { Db } from '../../db/client.js';
import { accessRequests, approvals, entitlements, grants, identities, systems } from '../../db/schema.js';
import { hasRole, identityOf, principalOf, requireRole } from '../auth.js';
import { notFound } from '../errors.js';
import { requestIdOf } from '../request-context.js';
import { createEntitlementBody, createIdentityBody, createSystemBody, createTokenBody, idParam, sshPublicKeyBody } from '../schemas.js';
import type { AdminActor, AdminService } from '../services/admin.js';
import { pendingApprovalsOf } from '../services/pending-approvals.js';
import { valid, validate } from '../validate.js';

/** The acting principal and the HTTP request id, for the admin service's audit events. */
export const adminActor = (req: Request, res: Response): AdminActor => ({ principal: principalOf(req), httpRequestId: requestIdOf(res) });

const publicIdentity = (i: typeof identities.$inferSelect) => i;

export function approvalRoutes(db: Db): Router {
  const r = Router();
  r.get('/pending', requireRole('approver'), async (req, res) => {
    const me = identityOf(principalOf(req));
    // The page (/approvals) shows the same selection with names; this keeps the API's fields.
    const rows = (await pendingApprovalsOf(db, me)).map(({ stageName: _s, subjectDisplayName: _d, ...r }) => r);
    res.json({ items: rows });
  });
  return r;
}

export function identityRoutes(db: Db, admin: AdminService): Router {
  const r = Router();

  r.post('/', requireRole('operator'), validate({ body: createIdentityBody }), async (req, res) => {
    const { body } = valid(res, { body: createIdentityBody });
    const row = await admin.createIdentity(adminActor(req, res), body);
    res.status(201).location(`/v1/identities/${row.id}`).json(publicIdentity(row));
  });

  r.get('/:id', requireRole('operator'), validate({ params: idParam }), async (req, res) => {
    const { params } = valid(res, { params: idParam });
    const [row] = await db.select().from(identities).where(eq(identities.id, params.id));
    if (!row) throw notFound('identity');
    res.json(publicIdentity(row));
  });

  // The identity, its owner or an operator (the rule lives in the admin service).
  r.put('/:id/ssh-public-key', validate({ params: idParam, body: sshPublicKeyBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: sshPublicKeyBody });
    res.json(await admin.setSshPublicKey(adminActor(req, res), params.id, body.publicKey));
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

export function catalogRoutes(db: Db, admin: AdminService): { systems: Router; entitlements: Router } {
  const sys = Router();
  sys.post('/', requireRole('operator'), validate({ body: createSystemBody }), async (req, res) => {
    const { body } = valid(res, { body: createSystemBody });
    res.status(201).json(await admin.createSystem(adminActor(req, res), body));
  });

  const ents = Router();
  ents.post('/', requireRole('operator'), validate({ body: createEntitlementBody }), async (req, res) => {
    const { body } = valid(res, { body: createEntitlementBody });
    res.status(201).json(await admin.createEntitlement(adminActor(req, res), body));
  });
  ents.get('/', requireRole('requester', 'approver', 'operator', 'auditor'), async (_req, res) => {
    const rows = await db.select().from(entitlements).orderBy(entitlements.name);
    res.json({ items: rows });
  });
  return { systems: sys, entitlements: ents };
}

export function tokenRoutes(admin: AdminService): Router {
  const r = Router();
  r.post('/', requireRole('operator'), validate({ body: createTokenBody }), async (req, res) => {
    const { body } = valid(res, { body: createTokenBody });
    res.status(201).json(await admin.issueToken(adminActor(req, res), body));
  });
  // Ids, principals, roles and dates: never a token or its hash.
  r.get('/', requireRole('operator'), async (_req, res) => {
    res.json({ items: await admin.listTokens() });
  });
  r.delete('/:id', requireRole('operator'), validate({ params: idParam }), async (req, res) => {
    const { params } = valid(res, { params: idParam });
    res.json(await admin.revokeToken(adminActor(req, res), params.id));
  });
  return r;
}
