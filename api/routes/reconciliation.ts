import { randomUUID } from 'node:crypto';
import type { Client } from '@temporalio/client';
import { and, desc, eq, type SQL } from 'drizzle-orm';
import { Router } from 'express';
import { z } from 'zod';
import type { Db } from '../../db/client.js';
import { reconciliationFindings, systems } from '../../db/schema.js';
import type { Config } from '../../temporal/config.js';
import { reconciliationWorkflowId } from '../../workflows/reconciliation.js';
import { SystemRefKey } from '../../workflows/search-attributes.js';
import { requireRole } from '../auth.js';
import { notFound } from '../errors.js';
import { valid, validate } from '../validate.js';

const runBody = z.strictObject({ systemId: z.uuid() });
const findingsQuery = z.strictObject({
  systemId: z.uuid().optional(),
  status: z.enum(['open', 'remediated', 'resolved']).optional(),
  kind: z.enum(['orphaned_account', 'unauthorized_access', 'failed_revocation', 'missing_grant']).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(200),
});

export function reconciliationRoutes(deps: { db: Db; temporal: Client; config: Config }): Router {
  const { db, temporal, config } = deps;
  const r = Router();
  // On demand (the Temporal Schedule runs it too): 202 with the workflow to watch.
  r.post('/run', requireRole('operator'), validate({ body: runBody }), async (_req, res) => {
    const { body } = valid(res, { body: runBody });
    const [system] = await db.select({ id: systems.id }).from(systems).where(eq(systems.id, body.systemId));
    if (!system) throw notFound('system');
    const workflowId = reconciliationWorkflowId(system.id, randomUUID());
    await temporal.workflow.start('reconciliationWorkflow', {
      workflowId,
      taskQueue: config.TEMPORAL_TASK_QUEUE,
      args: [{ systemId: system.id }],
      typedSearchAttributes: [{ key: SystemRefKey, value: system.id }],
      staticSummary: 'On-demand reconciliation',
    });
    res.status(202).json({ workflowId });
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
