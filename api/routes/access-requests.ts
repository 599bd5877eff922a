import { and, asc, desc, eq, inArray, lt, or } from 'drizzle-orm';
import { Router } from 'express';
import type { Db } from '../../db/client.js';
import { accessRequests, approvals, auditEvents, grants, ticketLinks } from '../../db/schema.js';
import { deliverOnce, type CredentialVault } from '../../activities/domain/vault.js';
import { requestIdOf } from '../request-context.js';
import { hasRole, identityOf, principalOf, requireRole, type Principal } from '../auth.js';
import { HttpError, notFound } from '../errors.js';
import { isParty, type AccessRequestService } from '../services/access-requests.js';
import { FINAL_REQUEST_STATUSES, createAccessRequestBody, decisionBody, extendBody, idParam, importLeasesBody, listRequestsQuery, requestReadQuery, revokeBody } from '../schemas.js';
import { waitForRequest, type RequestWatch } from '../services/request-watch.js';
import { valid, validate } from '../validate.js';

export interface RouteDeps {
  /** Reads, and the credential's one-time delivery (deliverOnce owns that rule); every other change goes through the service. */
  db: Db;
  requests: AccessRequestService;
  vault: CredentialVault;
  /** Wakes long polls on a change; without it a long poll answers at once. */
  watch?: RequestWatch | undefined;
}

/** The access-request API: reads answer here; every change is one call into the request service. */
export function accessRequestRoutes({ db, requests, vault, watch }: RouteDeps): Router {
  const r = Router();
  const { loadRequest } = requests;

  async function isAssignedApprover(p: Principal, requestId: string): Promise<boolean> {
    if (!p.identityId || !hasRole(p, 'approver')) return false;
    const rows = await db
      .select({ id: approvals.id })
      .from(approvals)
      .where(and(eq(approvals.requestId, requestId), eq(approvals.approverId, p.identityId)))
      .limit(1);
    return rows.length > 0;
  }

  r.post('/', requireRole('requester'), validate({ body: createAccessRequestBody }), async (req, res) => {
    const { body } = valid(res, { body: createAccessRequestBody });
    const created = await requests.submit({ principal: principalOf(req), body, httpRequestId: requestIdOf(res) });
    res.status(202).location(`/v1/access-requests/${created.id}`).json(created);
  });

  r.post('/import', requireRole('operator'), validate({ body: importLeasesBody }), async (req, res) => {
    const { body } = valid(res, { body: importLeasesBody });
    res.json(await requests.importLeases({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, body));
  });

  // Operators and auditors see everything; others see requests they are party to or assigned to decide.
  r.get('/', validate({ query: listRequestsQuery }), async (req, res) => {
    const p = principalOf(req);
    const { query } = valid(res, { query: listRequestsQuery });
    const filters = [
      query.status ? eq(accessRequests.status, query.status) : undefined,
      query.subjectId ? eq(accessRequests.subjectId, query.subjectId) : undefined,
      query.entitlementId ? eq(accessRequests.entitlementId, query.entitlementId) : undefined,
    ];
    if (query.before) {
      const [at, id] = query.before.split('|') as [string, string];
      filters.push(or(lt(accessRequests.createdAt, new Date(at)), and(eq(accessRequests.createdAt, new Date(at)), lt(accessRequests.id, id))));
    }
    if (!hasRole(p, 'operator', 'auditor')) {
      const me = identityOf(p);
      const assigned = db.select({ id: approvals.requestId }).from(approvals).where(eq(approvals.approverId, me));
      filters.push(or(eq(accessRequests.requesterId, me), eq(accessRequests.subjectId, me), hasRole(p, 'approver') ? inArray(accessRequests.id, assigned) : undefined));
    }
    const rows = await db
      .select()
      .from(accessRequests)
      .where(and(...filters))
      .orderBy(desc(accessRequests.createdAt), desc(accessRequests.id))
      .limit(query.limit + 1);
    const page = rows.slice(0, query.limit);
    const last = page[page.length - 1];
    res.json({
      items: page.map((r) => ({ id: r.id, status: r.status, subjectId: r.subjectId, requesterId: r.requesterId, entitlementId: r.entitlementId, ticketRef: r.ticketRef, createdAt: r.createdAt, decidedAt: r.decidedAt })),
      nextCursor: rows.length > query.limit && last ? `${last.createdAt.toISOString()}|${last.id}` : null,
    });
  });

  r.get('/:id', validate({ params: idParam, query: requestReadQuery }), async (req, res) => {
    const p = principalOf(req);
    const { params, query } = valid(res, { params: idParam, query: requestReadQuery });
    let row = await loadRequest(params.id);
    const allowed = hasRole(p, 'operator', 'auditor') || (hasRole(p, 'requester') && isParty(p, row)) || (await isAssignedApprover(p, row.id));
    if (!allowed) throw notFound('access request'); // do not reveal that it exists
    if (query.waitFor) {
      // A long poll, only once the caller may see the request: it answers at the status, at a final one, or at the timeout.
      const want = query.waitFor;
      const gone = new AbortController();
      res.on('close', () => gone.abort());
      row = await waitForRequest(watch, row.id, () => loadRequest(row.id), (r) => want.includes(r.status) || FINAL_REQUEST_STATUSES.includes(r.status), (query.waitSeconds ?? 20) * 1000, gone.signal);
      if (gone.signal.aborted) return;
    }
    const [stageRows, [grant], timeline, [ticket]] = await Promise.all([
      db.select().from(approvals).where(eq(approvals.requestId, row.id)).orderBy(asc(approvals.stage), asc(approvals.createdAt)),
      db.select().from(grants).where(eq(grants.requestId, row.id)),
      db.select().from(auditEvents).where(eq(auditEvents.requestId, row.id)).orderBy(asc(auditEvents.seq)),
      db
        .select({ deskId: ticketLinks.deskId, ticketRef: ticketLinks.ticketRef, state: ticketLinks.state, deliveredThrough: ticketLinks.deliveredThrough, closedAt: ticketLinks.closedAt, finalState: ticketLinks.finalState })
        .from(ticketLinks)
        .where(eq(ticketLinks.requestId, row.id)),
    ]);
    res.json({
      id: row.id,
      status: row.status,
      workflowId: row.workflowId,
      requesterId: row.requesterId,
      subjectId: row.subjectId,
      entitlementId: row.entitlementId,
      justification: row.justification,
      durationSeconds: row.requestedDurationSeconds,
      startAt: row.startAt,
      ticketRef: row.ticketRef,
      /** Break-glass (docs/break-glass.md): approvals were skipped; the grant's source says so once it exists. */
      breakGlass: grant?.source === 'break_glass' || timeline.some((t) => t.action === 'break_glass.confirmed'),
      /** Adopted by reconciliation (docs/micro-reviews.md): nobody requested it; its micro-review decides whether it stays. */
      adopted: grant?.source === 'discovered',
      /** Existing access an operator imported (docs/import.md): decided elsewhere, audited as the import. */
      imported: grant?.source === 'imported',
      /** Set when the request came from a service-desk ticket: where the story is written back. */
      ticket: ticket ?? null,
      policyVersion: row.policyVersion,
      failureReason: row.failureReason,
      createdAt: row.createdAt,
      decidedAt: row.decidedAt,
      stages: stageRows.map((a) => ({
        stage: a.stage,
        name: a.stageName,
        approverId: a.approverId,
        onBehalfOf: a.onBehalfOf,
        status: a.status,
        comment: a.comment,
        dueAt: a.dueAt,
        decidedAt: a.decidedAt,
      })),
      grant: grant
        ? {
            id: grant.id,
            status: grant.status,
            grantedAt: grant.grantedAt,
            grantVerifiedAt: grant.grantVerifiedAt,
            expiresAt: grant.expiresAt,
            revokeReason: grant.revokeReason,
            revokeRequestedAt: grant.revokeRequestedAt,
            revokedAt: grant.revokedAt,
            removalVerifiedAt: grant.removalVerifiedAt,
          }
        : null,
      expiresAt: grant?.expiresAt ?? null,
      removalVerifiedAt: grant?.removalVerifiedAt ?? null,
      timeline: timeline.map((t) => ({ seq: t.seq, at: t.at, action: t.action, actorType: t.actorType, actorId: t.actorId, reason: t.reason, data: t.data })),
    });
  });

  r.post('/:id/decision', requireRole('approver'), validate({ params: idParam, body: decisionBody }), async (req, res) => {
    const approverId = identityOf(principalOf(req));
    const { params, body } = valid(res, { params: idParam, body: decisionBody });
    res.json(await requests.decide({ requestId: params.id, approverId, ...body, httpRequestId: requestIdOf(res) }));
  });

  r.post('/:id/extend', validate({ params: idParam, body: extendBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: extendBody });
    const result = await requests.extend({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, params.id, body);
    res.status(result.pendingApproval ? 202 : 200).json({ id: result.id, status: result.pendingApproval ? 'extension_pending_approval' : 'active', expiresAt: result.expiresAt });
  });

  r.post('/:id/revoke', validate({ params: idParam, body: revokeBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: revokeBody });
    const { id } = await requests.revoke({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, params.id, body);
    res.status(202).json({ id, status: 'revoke_requested' });
  });

  /**
   * The lease's credential (a service account's password, an SSH certificate), to its owner
   * only and only once: the read wipes it. Nobody else learns whether one exists (404); a second
   * read is 410, and the owner rotates to get a fresh one.
   */
  r.get('/:id/credential', validate({ params: idParam }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: idParam });
    const row = await loadRequest(params.id);
    const [grant] = await db.select({ id: grants.id }).from(grants).where(eq(grants.requestId, row.id));
    if (!p.identityId || !grant) throw notFound('credential');
    const d = await deliverOnce(db, vault, { grantId: grant.id, requestId: row.id, httpRequestId: requestIdOf(res) }, p.identityId);
    switch (d.outcome) {
      case 'none':
      case 'not_owner':
        throw notFound('credential');
      case 'already_delivered':
        throw new HttpError(410, 'already_delivered', 'this credential was delivered already and is no longer stored; rotate it to get a new one');
      case 'ended':
        throw new HttpError(410, 'credential_ended', `this credential is ${d.status}`);
      case 'delivered':
        // never cached by a proxy or the browser
        res.set('Cache-Control', 'no-store');
        res.json({
          id: d.credentialId,
          kind: d.kind,
          ...(d.kind === 'password' ? { username: d.targetRef, password: d.material } : { serial: d.targetRef, certificate: d.material }),
          issuedAt: d.issuedAt,
          notAfter: d.notAfter,
        });
    }
  });

  r.post('/:id/credential/rotate', validate({ params: idParam }), async (req, res) => {
    const { params } = valid(res, { params: idParam });
    res.json(await requests.rotateCredential({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, params.id));
  });

  return r;
}
