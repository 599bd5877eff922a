import type { WorkflowClient } from '@temporalio/client';
import { eq } from 'drizzle-orm';
import type { z } from 'zod';
import { canonicalJson } from '../../activities/domain/audit.js';
import type { Db } from '../../db/client.js';
import { hrEvents, identities } from '../../db/schema.js';
import { lifecycleTiming, type Config } from '../../temporal/config.js';
import { identityWorkflow } from '../../workflows/index.js';
import { identityWorkflowId } from '../../workflows/ids.js';
import { hrEventSignal, type HrEventRef, type IdentityInput } from '../../workflows/messages.js';
import { IdentityRefKey } from '../../workflows/search-attributes.js';
import { HttpError, conflict } from '../errors.js';
import type { hrEventBody } from '../schemas.js';

type HrEventBody = z.output<typeof hrEventBody>;

export interface HrIntakeDeps {
  db: Pick<Db, 'transaction'>;
  temporal: { workflow: Pick<WorkflowClient, 'signalWithStart'> };
  config: Config;
}

/** One verified HR delivery: its Standard Webhooks id, the client that sent it, the parsed event. */
export interface HrDelivery {
  webhookId: string;
  source: string;
  event: HrEventBody;
}

export interface HrReceipt {
  eventId: string;
  identityId: string;
  workflowId: string;
  duplicate: boolean;
}

type IdentityTx = Pick<Db, 'select' | 'insert' | 'update'>;

/**
 * HR intake once the signature has been checked: the event lands in the inbox (deduplicated
 * by webhook id) and commits before the identity's workflow hears of it, so a failed hand-over
 * is repaired by the sender's retry rather than lost.
 */
export function createHrIntakeService({ db, temporal, config }: HrIntakeDeps) {
  async function store({ webhookId, source, event: body }: HrDelivery) {
    return db.transaction(async (tx) => {
      const [dupe] = await tx.select().from(hrEvents).where(eq(hrEvents.webhookId, webhookId));
      if (dupe) {
        // The same delivery again is fine; a different event under a used id is refused, not silently dropped.
        if (canonicalJson(dupe.payload) !== canonicalJson(body)) throw conflict('webhook_id_reused', 'this webhook-id was already used for a different event');
        return { event: dupe, duplicate: true };
      }
      const identityId = await identityFor(tx, body);
      const [event] = await tx
        .insert(hrEvents)
        .values({
          webhookId,
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
  }

  return {
    async receive(delivery: HrDelivery): Promise<HrReceipt> {
      const { event, duplicate } = await store(delivery);
      const workflowId = identityWorkflowId(event.identityId);
      // A duplicate whose first delivery never reached the workflow is handed over again; the
      // workflow ignores event ids it has seen, so this is safe to repeat.
      if (!duplicate || !event.processedAt) {
        const ref: HrEventRef = { eventId: event.id, type: event.type, sequence: event.sequence, effectiveAt: event.effectiveAt.toISOString() };
        const args: IdentityInput = { version: 1, identityId: event.identityId, timing: lifecycleTiming(config) };
        await temporal.workflow.signalWithStart(identityWorkflow, {
          workflowId,
          taskQueue: config.TEMPORAL_TASK_QUEUE,
          args: [args],
          signal: hrEventSignal,
          signalArgs: [ref],
          typedSearchAttributes: [{ key: IdentityRefKey, value: event.identityId }],
          staticSummary: 'Identity lifecycle (HR joiner · mover · leaver)',
          staticDetails: `identity \`${event.identityId}\``,
        });
      }
      return { eventId: event.id, identityId: event.identityId, workflowId, duplicate };
    },
  };
}

export type HrIntakeService = ReturnType<typeof createHrIntakeService>;

/** The identity an HR worker id maps to; a worker we have never seen gets a shell identity the workflow fills in. */
async function identityFor(tx: IdentityTx, body: HrEventBody): Promise<string> {
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
