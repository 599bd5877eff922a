import { Router } from 'express';
import { confirmBreakGlassBody, invokeBreakGlassBody, putBreakGlassBody } from '../../activities/domain/break-glass.js';
import { principalOf, requireRole } from '../auth.js';
import { requestIdOf } from '../request-context.js';
import { idParam } from '../schemas.js';
import type { createBreakGlassService } from '../services/break-glass.js';
import { valid, validate } from '../validate.js';

type BreakGlassService = ReturnType<typeof createBreakGlassService>;

/** PUT /v1/entitlements/:id/break-glass (mounted on /entitlements next to the catalog). */
export function breakGlassSettingsRoutes(service: BreakGlassService): Router {
  const r = Router();
  r.put('/:id/break-glass', requireRole('operator'), validate({ params: idParam, body: putBreakGlassBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: putBreakGlassBody });
    res.json(await service.configure({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, params.id, body));
  });
  return r;
}

/** POST /v1/break-glass and /v1/break-glass/:id/confirm: requesters; the service decides who is an invoker. */
export function breakGlassRoutes(service: BreakGlassService): Router {
  const r = Router();
  r.post('/', requireRole('requester'), validate({ body: invokeBreakGlassBody }), async (req, res) => {
    const { body } = valid(res, { body: invokeBreakGlassBody });
    const out = await service.invoke({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, body);
    // The confirmation is a secret shown once.
    res.status(201).set('cache-control', 'no-store').json(out);
  });
  r.post('/:id/confirm', requireRole('requester'), validate({ params: idParam, body: confirmBreakGlassBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: confirmBreakGlassBody });
    const out = await service.confirm({ principal: principalOf(req), httpRequestId: requestIdOf(res) }, params.id, body);
    res.status(202).location(`/v1/access-requests/${out.id}`).json(out);
  });
  return r;
}
