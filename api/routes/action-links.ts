import { Router } from 'express';
import { verifyActionLink } from '../../activities/domain/action-links.js';
import type { Db } from '../../db/client.js';
import { authenticate } from '../auth.js';
import { HttpError, forbidden } from '../errors.js';
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
export function actionLinkRoutes(deps: { db: Db; secret: Buffer; requests: Pick<AccessRequestService, 'decide'> }): Router {
  const r = Router();
  const optionalAuth = authenticate(deps.db);
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
  return r;
}
