import { and, eq, inArray } from 'drizzle-orm';
import express, { Router } from 'express';
import { PolicyError, type PolicyService } from '../../activities/domain/policy/service.js';
import type { Db } from '../../db/client.js';
import { approverGroupMembers, approverGroups, delegations, entitlements, identities } from '../../db/schema.js';
import { actorRef, hasRole, identityOf, principalOf, requireRole } from '../auth.js';
import { HttpError, badRequest, conflict, forbidden, notFound } from '../errors.js';
import { createDelegationBody, createGroupBody, explainParams, explainQuery, idParam, setMembersBody } from '../schemas.js';
import { valid, validate } from '../validate.js';

/**
 * Policy routes. PUT takes the document as text (YAML or JSON) so problems can name lines;
 * it is mounted before the JSON body parser for that reason.
 */
export function policyRoutes(db: Db, policies: PolicyService, bodyLimit: string): Router {
  const r = Router();

  r.put('/', requireRole('operator'), express.text({ type: () => true, limit: bodyLimit }), async (req, res) => {
    const text = typeof req.body === 'string' ? req.body : '';
    if (!text.trim()) throw badRequest('invalid_policy', 'send the policy document (YAML or JSON) as the request body');
    try {
      const out = await policies.publish(text, `api:${req.get('content-type') ?? 'text'}`, actorRef(principalOf(req)));
      res.status(out.changed ? 201 : 200).json(out);
    } catch (e) {
      if (e instanceof PolicyError) throw badRequest('invalid_policy', e.message, e.problems);
      throw e;
    }
  });

  r.get('/active', requireRole('operator', 'auditor'), async (_req, res) => {
    const row = await policies.activeRecord();
    res.json({ version: row.version, source: row.source, createdBy: row.createdBy, createdAt: row.createdAt, document: row.document });
  });

  // A dry run: what a request would need, and why, before anyone asks.
  r.get('/:entitlementId/explain', validate({ params: explainParams, query: explainQuery }), async (req, res) => {
    const p = principalOf(req);
    const { params, query } = valid(res, { params: explainParams, query: explainQuery });
    const me = p.identityId;
    const subjectId = query.subjectId ?? me;
    if (!subjectId) throw badRequest('invalid_request', 'subjectId is required for client tokens');
    if (!hasRole(p, 'operator', 'auditor', 'approver')) {
      const [subject] = await db.select({ managerId: identities.managerId }).from(identities).where(eq(identities.id, subjectId));
      if (!hasRole(p, 'requester') || (subjectId !== me && subject?.managerId !== me)) throw forbidden('you may explain requests for yourself or your reports');
    }
    const [ent] = await db.select({ id: entitlements.id, d: entitlements.defaultDurationSeconds }).from(entitlements).where(eq(entitlements.id, params.entitlementId));
    if (!ent) throw notFound('entitlement');
    try {
      const d = await policies.decide({
        requesterId: me ?? subjectId,
        subjectId,
        entitlementId: ent.id,
        durationSeconds: query.durationSeconds ?? ent.d,
        justification: '(explain)',
      });
      res.json({
        policyVersion: d.policyVersion,
        policy: d.policy,
        effect: d.effect,
        ...(d.effect !== 'route' ? { reason: d.reason } : {}),
        maxDurationSeconds: d.maxDurationSeconds,
        rules: d.fired,
        stages:
          d.effect === 'route'
            ? d.stages.map((s) => ({ name: s.name, quorum: s.quorum, requireComment: s.requireComment, timeoutSeconds: s.timeoutSeconds ?? null, approvers: s.approvers }))
            : [],
      });
    } catch (e) {
      if (e instanceof PolicyError && e.code === 'not_found') throw notFound('subject');
      throw e;
    }
  });
  return r;
}

async function assertIdentities(db: Db, ids: string[]) {
  if (ids.length === 0) return;
  const found = await db.select({ id: identities.id }).from(identities).where(inArray(identities.id, ids));
  const missing = ids.filter((id) => !found.some((f) => f.id === id));
  if (missing.length) throw badRequest('unknown_reference', `identities do not exist: ${missing.join(', ')}`);
}

export function groupRoutes(db: Db): Router {
  const r = Router();
  r.post('/', requireRole('operator'), validate({ body: createGroupBody }), async (req, res) => {
    const { body } = valid(res, { body: createGroupBody });
    await assertIdentities(db, body.memberIds);
    const group = await db.transaction(async (tx) => {
      const [g] = await tx
        .insert(approverGroups)
        .values({ name: body.name })
        .returning()
        .catch((e) => {
          if ((e as { cause?: { code?: string } }).cause?.code === '23505' || (e as { code?: string }).code === '23505') throw conflict('already_exists', 'a group with this name exists');
          throw e;
        });
      if (body.memberIds.length) await tx.insert(approverGroupMembers).values([...new Set(body.memberIds)].map((identityId) => ({ groupId: g!.id, identityId })));
      return g!;
    });
    res.status(201).json({ ...group, ref: `group:${group.id}`, memberIds: body.memberIds });
  });
  r.put('/:id/members', requireRole('operator'), validate({ params: idParam, body: setMembersBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: setMembersBody });
    const [g] = await db.select().from(approverGroups).where(eq(approverGroups.id, params.id));
    if (!g) throw notFound('group');
    await assertIdentities(db, body.identityIds);
    await db.transaction(async (tx) => {
      await tx.delete(approverGroupMembers).where(eq(approverGroupMembers.groupId, g.id));
      if (body.identityIds.length) await tx.insert(approverGroupMembers).values([...new Set(body.identityIds)].map((identityId) => ({ groupId: g.id, identityId })));
    });
    res.json({ id: g.id, ref: `group:${g.id}`, memberIds: body.identityIds });
  });
  return r;
}

export function delegationRoutes(db: Db): Router {
  const r = Router();
  r.post('/', requireRole('approver', 'operator'), validate({ body: createDelegationBody }), async (req, res) => {
    const p = principalOf(req);
    const { body } = valid(res, { body: createDelegationBody });
    const delegatorId = body.delegatorId ?? identityOf(p);
    if (delegatorId !== p.identityId && !hasRole(p, 'operator')) throw forbidden('you may delegate only your own approval tasks');
    if (delegatorId === body.delegateId) throw badRequest('invalid_request', 'cannot delegate to yourself');
    const people = await db.select({ id: identities.id, status: identities.status }).from(identities).where(inArray(identities.id, [delegatorId, body.delegateId]));
    if (people.length !== 2) throw badRequest('unknown_reference', 'delegator or delegate does not exist');
    if (people.some((x) => x.status !== 'active')) throw conflict('identity_inactive', 'delegator and delegate must both be active');
    const [row] = await db
      .insert(delegations)
      .values({
        delegatorId,
        delegateId: body.delegateId,
        startsAt: body.startsAt ? new Date(body.startsAt) : new Date(),
        endsAt: new Date(body.endsAt),
        reason: body.reason ?? null,
        createdBy: actorRef(p),
      })
      .returning();
    res.status(201).json(row);
  });
  r.delete('/:id', requireRole('approver', 'operator'), validate({ params: idParam }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: idParam });
    const [d] = await db.select().from(delegations).where(eq(delegations.id, params.id));
    if (!d || (d.delegatorId !== p.identityId && !hasRole(p, 'operator'))) throw notFound('delegation');
    await db.update(delegations).set({ revokedAt: new Date() }).where(and(eq(delegations.id, d.id)));
    res.status(204).end();
  });
  return r;
}

export { HttpError };
