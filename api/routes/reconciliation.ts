import { and, desc, eq, type SQL } from 'drizzle-orm';
import { Router } from 'express';
import type { Db } from '../../db/client.js';
import { reconciliationFindings } from '../../db/schema.js';
import { requireRole } from '../auth.js';
import { findingsQuery, reconcileRunBody } from '../schemas.js';
import type { ReconciliationService } from '../services/reconciliation.js';
import { valid, validate } from '../validate.js';

export function reconciliationRoutes(deps: { db: Pick<Db, 'select'>; reconciliation: ReconciliationService }): Router {
  const { db, reconciliation } = deps;
  const r = Router();
  // On demand (the Temporal Schedule runs it too): 202 with the workflow to watch.
  r.post('/run', requireRole('operator'), validate({ body: reconcileRunBody }), async (_req, res) => {
    const { body } = valid(res, { body: reconcileRunBody });
    res.status(202).json(await reconciliation.runNow(body.systemId));
  });
  r.get('/findings', requireRole('operator', 'auditor'), validate({ query: findingsQuery }), async (_req, res) => {
    const { query } = valid(res, { query: findingsQuery });
    const where: SQL[] = [];
    if (query.systemId) where.push(eq(reconciliationFindings.systemId, query.systemId));
    if (query.status) where.push(eq(reconciliationFindings.status, query.status));
    if (query.kind) where.push(eq(reconciliationFindings.kind, query.kind));
    const items = await db.select().from(reconciliationFindings).where(and(...where)).orderBy(desc(reconciliationFindings.detectedAt)).limit(query.limit);
    res.json({ items });
  });
  return r;
}
