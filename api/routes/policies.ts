import { and, eq } from 'drizzle-orm';
import express, { Router } from 'express';
import { PolicyError, type PolicyService } from '../../activities/domain/policy/service.js';
import type { Db } from '../../db/client.js';
import { accessRequests, approvals, entitlements, identities } from '../../db/schema.js';
import { hasRole, principalOf, requireRole, type Principal } from '../auth.js';
import { HttpError, badRequest, notFound } from '../errors.js';
import { createDelegationBody, createGroupBody, explainParams, explainQuery, idParam, setMembersBody } from '../schemas.js';
import type { AdminService } from '../services/admin.js';
import { valid, validate } from '../validate.js';
import { adminActor } from './operator.js';

/**
 * Policy routes. PUT takes the document as text (YAML or JSON) so problems can name lines;
 * it is mounted before the JSON body parser for that reason.
 */
export function policyRoutes(db: Db, policies: PolicyService, admin: AdminService, bodyLimit: string): Router {
  const r = Router();

  r.put('/', requireRole('operator'), express.text({ type: () => true, limit: bodyLimit }), async (req, res) => {
    const text = typeof req.body === 'string' ? req.body : '';
    if (!text.trim()) throw badRequest('invalid_policy', 'send the policy document (YAML or JSON) as the request body');
    const out = await admin.publishPolicy(adminActor(req, res), text, `api:${req.get('content-type') ?? 'text'}`);
    res.status(out.changed ? 201 : 200).json(out);
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
    // 404, not 403: a refusal must not confirm that the subject exists.
    if (!(await mayExplainFor(db, p, subjectId))) throw notFound('subject');
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
        // The same refusal a submission would get (403 no_eligible_approver), named by stage.
        ...(d.effect === 'deny' && d.noEligibleApprover ? { noEligibleApprover: d.noEligibleApprover } : {}),
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

/**
 * Whether the principal may see a dry run for this subject. The answer lists the subject's held
 * and pending access (through SoD reasons), so only those with a reason to know may: operators,
 * auditors, the subject, whoever may request for them (manager, sponsor, owner), and approvers
 * with a task open on one of the subject's requests.
 */
async function mayExplainFor(db: Db, p: Principal, subjectId: string): Promise<boolean> {
  if (hasRole(p, 'operator', 'auditor')) return true;
  const me = p.identityId;
  if (!me) return false;
  if (me === subjectId) return true;
  const [subject] = await db
    .select({ managerId: identities.managerId, sponsorId: identities.sponsorId, ownerId: identities.ownerId })
    .from(identities)
    .where(eq(identities.id, subjectId));
  if (!subject) return false;
  if (hasRole(p, 'requester') && [subject.managerId, subject.sponsorId, subject.ownerId].includes(me)) return true;
  if (!hasRole(p, 'approver')) return false;
  const [assigned] = await db
    .select({ id: approvals.id })
    .from(approvals)
    .innerJoin(accessRequests, eq(accessRequests.id, approvals.requestId))
    .where(and(eq(approvals.approverId, me), eq(approvals.status, 'pending'), eq(accessRequests.subjectId, subjectId)))
    .limit(1);
  return !!assigned;
}

// Groups and delegations change who may approve: the admin service audits every change.
export function groupRoutes(admin: AdminService): Router {
  const r = Router();
  r.post('/', requireRole('operator'), validate({ body: createGroupBody }), async (req, res) => {
    const { body } = valid(res, { body: createGroupBody });
    res.status(201).json(await admin.createGroup(adminActor(req, res), body));
  });
  r.put('/:id/members', requireRole('operator'), validate({ params: idParam, body: setMembersBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: setMembersBody });
    res.json(await admin.setGroupMembers(adminActor(req, res), params.id, body.identityIds));
  });
  return r;
}

export function delegationRoutes(admin: AdminService): Router {
  const r = Router();
  r.post('/', requireRole('approver', 'operator'), validate({ body: createDelegationBody }), async (req, res) => {
    const { body } = valid(res, { body: createDelegationBody });
    res.status(201).json(await admin.createDelegation(adminActor(req, res), body));
  });
  r.delete('/:id', requireRole('approver', 'operator'), validate({ params: idParam }), async (req, res) => {
    const { params } = valid(res, { params: idParam });
    await admin.endDelegation(adminActor(req, res), params.id);
    res.status(204).end();
  });
  return r;
}

export { HttpError };
