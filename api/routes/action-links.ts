import express, { Router } from 'express';
import { eq } from 'drizzle-orm';
import { verifyActionLink, type ActionLinkClaims } from '../../activities/domain/action-links.js';
import type { Db } from '../../db/client.js';
import { identities } from '../../db/schema.js';
import type { Logger } from '../../temporal/logger.js';
import { asPage, pageErrorHandler } from '../pages/errors.js';
import { approvalView, linkUsed } from '../pages/queries.js';
import { sameOriginOnly } from '../pages/security.js';
import { approvalPage, decisionDonePage } from '../pages/views.js';
import { authenticate } from '../auth.js';
import { HttpError, conflict, forbidden } from '../errors.js';
import { actionLinkParams, decisionBody } from '../schemas.js';
import { valid, validate } from '../validate.js';
import type { AccessRequestService } from '../services/access-requests.js';
import { requestIdOf } from '../request-context.js';

/**
 * `POST /v1/approvals/actions/:token` — the approve/reject button in chat or e-mail. The
 * signed link is the credential: bound to request, stage and approver, short-lived, single
 * use. A bearer token, when sent too, must belong to the same approver. The link is checked
 * here (it is the credential); the decision is the same service call the token route makes.
 */
export function actionLinkRoutes(deps: { db: Db; secret: Buffer; requests: Pick<AccessRequestService, 'decide'>; log?: Logger; publicUrl?: string | undefined }): Router {
  const r = Router();
  const optionalAuth = authenticate(deps.db);

  function claimsOf(token: string): ActionLinkClaims {
    const v = verifyActionLink(deps.secret, token);
    if (v.ok) return v.claims;
    if (v.error === 'expired') throw new HttpError(410, 'link_expired', 'this approval link has expired; use the API or ask for a new link');
    throw new HttpError(401, 'invalid_link', 'this approval link is not valid');
  }

  /**
   * `GET /v1/approvals/actions/:token` — the page behind the link in the e-mail. Opening it
   * changes nothing (mail scanners and link previews fetch links): it shows what the approver
   * needs to decide, only to the approver the link was minted for, and a form that posts back
   * with the link as the credential.
   */
  r.get('/:token', asPage, validate({ params: actionLinkParams }), async (req, res) => {
    const { params } = valid(res, { params: actionLinkParams });
    const claims = claimsOf(params.token);
    if (await linkUsed(deps.db, claims.jti)) throw conflict('link_used', 'this approval link has already been used');
    const [approver] = await deps.db.select({ status: identities.status }).from(identities).where(eq(identities.id, claims.ap));
    if (approver?.status !== 'active') throw forbidden('the approver of this link is not active', 'approver_inactive');
    const view = await approvalView(deps.db, claims.rid, claims.ap);
    if (!view) throw new HttpError(404, 'not_found', 'there is nothing to decide behind this link');
    // The link is bound to one stage: a form for any other stage would be refused anyway.
    if (view.open && view.open.stage !== claims.st) view.open = null;
    res.type('html').send(approvalPage(view, { action: `${req.baseUrl}/${encodeURIComponent(params.token)}/form` }));
  });

  /** The page's form: the same checks and the same decision call as the JSON route below. */
  r.post(
    '/:token/form',
    asPage,
    sameOriginOnly(deps.publicUrl),
    express.urlencoded({ extended: false, limit: '4kb', parameterLimit: 10 }),
    validate({ params: actionLinkParams }),
    async (req, res) => {
      const { params } = valid(res, { params: actionLinkParams });
      const body = decisionBody.parse({ decision: req.body?.decision, ...(req.body?.comment ? { comment: req.body.comment } : {}) });
      const claims = claimsOf(params.token);
      const result = await deps.requests.decide({ requestId: claims.rid, approverId: claims.ap, ...body, httpRequestId: requestIdOf(res), link: { jti: claims.jti, stage: claims.st } });
      res.type('html').send(decisionDonePage(body.decision, result.status));
    },
  );
  r.post('/:token', (req, res, next) => (req.get('authorization') ? optionalAuth(req, res, next) : next()), validate({ params: actionLinkParams, body: decisionBody }), async (req, res) => {
    const { params, body } = valid(res, { params: actionLinkParams, body: decisionBody });
    const v = verifyActionLink(deps.secret, params.token);
    if (!v.ok) {
      if (v.error === 'expired') throw new HttpError(410, 'link_expired', 'this approval link has expired; use the API or ask for a new link');
      throw new HttpError(401, 'invalid_link', 'this approval link is not valid');
    }
    const { claims } = v;
    if (req.principal && req.principal.identityId !== claims.ap) throw forbidden('this approval link belongs to another approver', 'link_not_yours');
    const result = await deps.requests.decide({
      requestId: claims.rid,
      approverId: claims.ap,
      ...body,
      httpRequestId: requestIdOf(res),
      link: { jti: claims.jti, stage: claims.st },
    });
    res.json(result);
  });
  if (deps.log) r.use(pageErrorHandler(deps.log));
  return r;
}
