import type { Client } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import express, { Router } from 'express';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { canonicalJson } from '../../activities/domain/audit.js';
import { hrEventBody, type HrEventBody } from '../../activities/hr.js';
import type { Db } from '../../db/client.js';
import { hrEvents, identities } from '../../db/schema.js';
import type { Config } from '../../temporal/config.js';
import { lifecycleTiming } from '../../temporal/config.js';
import { hrEventSignal, identityWorkflowId, type HrEventRef, type IdentityInput } from '../../workflows/messages.js';
import { IdentityRefKey } from '../../workflows/search-attributes.js';
import { principalOf, requireRole } from '../auth.js';
import { HttpError, badRequest, conflict, zodDetails } from '../errors.js';

/**
 * `POST /v1/hr/events`: joiner/mover/leaver/rehire/update from an HR system. Order of work:
 * bearer token (hr_system) → Standard Webhooks signature over the raw body (several secrets
 * accepted, for rotation; ±5 minutes) → schema → inbox row committed (deduplicated by
 * webhook-id) → signal-with-start of the identity's workflow → 202. Nothing is stored for a
 * request that fails any check before the inbox.
 */
export function hrRoutes(deps: { db: Db; temporal: Client; config: Config }): Router {
  const { db, temporal, config } = deps;
  const secrets = (config.ACCESSLOOP_HR_WEBHOOK_SECRETS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const verifiers = secrets.map((s) => new Webhook(s));
  const r = Router();

  r.post('/events', requireRole('hr_system'), express.text({ type: () => true, limit: config.ACCESSLOOP_BODY_LIMIT }), async (req, res) => {
    if (verifiers.length === 0) throw new HttpError(503, 'hr_not_configured', 'HR webhooks are not configured (ACCESSLOOP_HR_WEBHOOK_SECRETS)');
    const raw = typeof req.body === 'string' ? req.body : '';
    const headers = { 'webhook-id': req.get('webhook-id') ?? '', 'webhook-timestamp': req.get('webhook-timestamp') ?? '', 'webhook-signature': req.get('webhook-signature') ?? '' };
    // The signature covers the exact bytes received; a re-serialised body does not verify.
    const verified = verifiers.some((v) => {
      try {
        v.verify(raw, headers);
        return true;
      } catch (e) {
        if (e instanceof WebhookVerificationError) return false;
        throw e;
      }
    });
    if (!verified) throw new HttpError(401, 'invalid_signature', 'webhook signature, timestamp or id is missing, wrong or outside the ±5 minute window');
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw badRequest('malformed_json', 'request body is not valid JSON');
    }
    const parsed = hrEventBody.safeParse(json);
    if (!parsed.success) throw badRequest('invalid_request', 'invalid HR event', zodDetails(parsed.error));
    const body: HrEventBody = parsed.data;
    const source = `client:${principalOf(req).clientName ?? principalOf(req).identityId}`;

    const stored = await db.transaction(async (tx) => {
      const [dupe] = await tx.select().from(hrEvents).where(eq(hrEvents.webhookId, headers['webhook-id']));
      if (dupe) {
        // The same delivery again is fine; a different event under a used id is refused, not silently dropped.
        if (canonicalJson(dupe.payload) !== canonicalJson(body)) throw conflict('webhook_id_reused', 'this webhook-id was already used for a different event');
        return { event: dupe, duplicate: true };
      }
      const identityId = await identityFor(tx as unknown as Db, body);
      const [event] = await tx
        .insert(hrEvents)
        .values({
          webhookId: headers['webhook-id'],
          sourceClient: source,
          type: body.type,
          workerId: body.worker.id,
          sequence: body.sequence,
          effectiveAt: body.effectiveAt ? new Date(body.effectiveAt) : new Date(),
          payload: body as unknown as Record<string, unknown>,
          identityId,
        })
        .returning();
      return { event: event!, duplicate: false };
    });

    const { event, duplicate } = stored;
    // A duplicate whose first delivery never reached the workflow is handed over again; the
    // workflow ignores event ids it has seen, so this is safe to repeat.
    if (!duplicate || !event.processedAt) {
      const ref: HrEventRef = { eventId: event.id, type: event.type, sequence: event.sequence, effectiveAt: event.effectiveAt.toISOString() };
      const args: IdentityInput = { version: 1, identityId: event.identityId, timing: lifecycleTiming(config) };
      await temporal.workflow.signalWithStart('identityWorkflow', {
        workflowId: identityWorkflowId(event.identityId),
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        args: [args],
        signal: hrEventSignal,
        signalArgs: [ref],
        typedSearchAttributes: [{ key: IdentityRefKey, value: event.identityId }],
        staticSummary: 'Identity lifecycle (HR joiner · mover · leaver)',
        staticDetails: `identity \`${event.identityId}\``,
      });
    }
    res.status(202).json({ eventId: event.id, identityId: event.identityId, workflowId: identityWorkflowId(event.identityId), duplicate });
  });

  return r;
}

/** The identity an HR worker id maps to; a worker we have never seen gets a shell identity the workflow fills in. */
async function identityFor(tx: Db, body: HrEventBody): Promise<string> {
  const w = body.worker;
  const [known] = await tx.select({ id: identities.id }).from(identities).where(eq(identities.externalId, w.id));
  if (known) return known.id;
  const username = w.username ?? w.id.toLowerCase().replace(/[^a-z0-9._@-]/g, '-');
  // An identity created by hand before HR knew it (same username, no HR id) is adopted, not duplicated.
  const [byName] = await tx.select({ id: identities.id, externalId: identities.externalId }).from(identities).where(eq(identities.username, username));
  if (byName && !byName.externalId) {
    await tx.update(identities).set({ externalId: w.id }).where(eq(identities.id, byName.id));
    return byName.id;
  }
  if (byName) throw new HttpError(409, 'username_taken', `username ${username} belongs to another HR worker`);
  const [row] = await tx
    .insert(identities)
    .values({ kind: w.kind ?? 'employee', username, displayName: w.displayName ?? w.id, externalId: w.id, status: 'suspended' })
    .returning({ id: identities.id });
  return row!.id;
}
