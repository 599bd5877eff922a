import { Router } from 'express';
import { requireRole } from '../auth.js';
import { createServiceDeskBody, idParam, updateServiceDeskBody } from '../schemas.js';
import type { ServiceDeskService } from '../services/service-desks.js';
import { valid, validate } from '../validate.js';
import { adminActor } from './operator.js';

/** Service desks: operators register and change them, operators and auditors watch them; the service owns every rule. */
export function serviceDeskRoutes(desks: ServiceDeskService): Router {
  const r = Router();
  r.post('/', requireRole('operator'), validate({ body: createServiceDeskBody }), async (req, res) => {
    const { body } = valid(res, { body: createServiceDeskBody });
    const desk = await desks.register(adminActor(req, res), body);
    res.status(201).location(`/v1/service-desks/${desk.id}`).json(desk);
  });
  r.get('/', requireRole('operator', 'auditor'), async (_req, res) => {
    res.json({ items: await desks.list() });
  });
  r.get('/:id', requireRole('operator', 'auditor'), validate({ params: idParam }), async (_req, res) => {
    const { params } = valid(res, { params: idParam });
    res.json(await desks.get(params.id));
  });
  r.patch('/:id', requireRole('operator'), validate({ params: idParam, body: updateServiceDeskBody }), async (req, res) => {
    const { params, body } = valid(res, { params: idParam, body: updateServiceDeskBody });
    res.json(await desks.update(adminActor(req, res), params.id, body));
  });
  r.post('/:id/check-tickets', requireRole('operator'), validate({ params: idParam }), async (_req, res) => {
    const { params } = valid(res, { params: idParam });
    res.status(202).json(await desks.checkTickets(params.id));
  });
  return r;
}
