import { eq } from 'drizzle-orm';
import { Router } from 'express';
import { z } from 'zod';
import { verifyActionLink } from '../../activities/domain/action-links.js';
import type { Db } from '../../db/client.js';
import { actionLinkUses, identities } from '../../db/schema.js';
import { authenticate } from '../auth.js';
import { HttpError, conflict, forbidden } from '../errors.js';
import { decisionBody } from '../schemas.js';
import { valid, validate } from '../validate.js';
import type { AccessRequest } from '../../db/schema.js';
import type { DecideFn } from './access-requests.js';
import { requestIdOf } from '../request-context.js';

const tokenParam = z.strictObject({ token: z.string().min(10).max(1024) });

/**
 * `POST /v1/approvals/actions/:token` — the approve/reject button in chat or e-mail. The
 * signed link is the credential: bound to request, stage and approver, short-lived, single
 * use. A bearer token, when sent too, must belong to the same approver.
 */
export function actionLinkRoutes(deps: { db: Db; secret: Buffer; decide: DecideFn; loadRequest: (id: string) => Promise<AccessRequest> }): Router {
  const { db } = deps;
  const r = Router();
  const optionalAuth = authenticate(db);
  r.post('/:token', (req, res, next) => (req.get('authorization') ? optionalAuth(req, res, next) : next()), validate({ params: tokenParam, body: decisionBody }), async (req, res) => {
    const { params, body } = valid(res, { params: tokenParam, body: decisionBody });
    const v = verifyActionLink(deps.secret, params.token);
    if (!v.ok) {
      if (v.error === 'expired') throw new HttpError(410, 'link_expired', 'this approval link has expired; use the API or ask for a new link');
      throw new HttpError(401, 'invalid_link', 'this approval link is not valid');
    }
    const { claims } = v;
    if (req.principal && req.principal.identityId !== claims.ap) throw forbidden('this approval link belongs to another approver', 'link_not_yours');
    const [approver] = await db.select({ status: identities.status }).from(identities).where(eq(identities.id, claims.ap));
    if (approver?.status !== 'active') throw forbidden('the approver of this link is not active', 'approver_inactive');
    const row = await deps.loadRequest(claims.rid);
    // Single use: the jti is claimed before the decision is attempted, so two clicks cannot both act.
    const claimed = await db.insert(actionLinkUses).values({ jti: claims.jti, requestId: claims.rid, approverId: claims.ap }).onConflictDoNothing().returning();
    if (claimed.length === 0) throw conflict('link_used', 'this approval link has already been used');
    try {
      const result = await deps.decide(row, claims.ap, body, { stage: claims.st, httpRequestId: requestIdOf(res) });
      res.json({ id: row.id, status: result.status });
    } catch (e) {
      // A refusal (4xx) consumes the link; an outage does not, so the approver can click again.
      if (!(e instanceof HttpError)) await db.delete(actionLinkUses).where(eq(actionLinkUses.jti, claims.jti));
      throw e;
    }
  });
  return r;
}
