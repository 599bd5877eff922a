import { createHash } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/activity';
import { eq } from 'drizzle-orm';
import { Webhook } from 'standardwebhooks';
import type { Db } from '../../db/client.js';
import { accessRequests, entitlements, notifications } from '../../db/schema.js';
import type { Logger } from '../../temporal/logger.js';
import { mintActionLink } from './action-links.js';

export type NotificationEvent = 'approval.requested' | 'approval.reminder' | 'approval.escalated' | 'revocation.unverified';

export interface NotifierOptions {
  /** JSON POST target (a chat or e-mail bridge); unset: notifications are recorded, not sent. */
  webhookUrl?: string | undefined;
  /** Standard Webhooks signing secret (`whsec_<base64>` or plain text). */
  webhookSecret?: string | undefined;
  /** Base URL the action links point at (the API as approvers reach it). */
  publicUrl: string;
  linkSecret: Buffer;
  linkTtlSeconds: number;
  timeoutMs?: number;
}

export interface NotifyInput {
  event: NotificationEvent;
  requestId: string;
  stage?: number | undefined;
  recipientIds: string[];
  /** Stable per transition: a retried activity is the same message (same webhook-id). */
  idempotencyKey: string;
}

/**
 * The library reads only `whsec_<base64>`; our configuration also accepts plain text (its UTF-8
 * bytes are the key), so we derive the key bytes ourselves and hand them over raw. The base64
 * is decoded leniently, as before, so a secret that worked keeps producing the same signatures.
 */
function webhookSigner(secret: string): Webhook {
  const key = secret.startsWith('whsec_') ? Buffer.from(secret.slice('whsec_'.length), 'base64') : Buffer.from(secret, 'utf8');
  // An empty HMAC key signs messages anyone can forge: refuse it at startup rather than send them.
  if (key.length === 0) throw new Error('the notification webhook secret decodes to an empty key');
  return new Webhook(key, { format: 'raw' });
}

export function createNotifier(opts: NotifierOptions, db: Db, log: Logger) {
  const signer = opts.webhookSecret ? webhookSigner(opts.webhookSecret) : undefined;
  return {
    async send(input: NotifyInput): Promise<{ status: 'sent' | 'recorded' | 'duplicate' }> {
      const [done] = await db.select({ status: notifications.status }).from(notifications).where(eq(notifications.idempotencyKey, input.idempotencyKey));
      if (done?.status === 'sent') return { status: 'duplicate' };
      const [req] = await db
        .select({ id: accessRequests.id, subjectId: accessRequests.subjectId, requesterId: accessRequests.requesterId, justification: accessRequests.justification, ticketRef: accessRequests.ticketRef, entitlementId: entitlements.id, entitlementName: entitlements.name, riskTier: entitlements.riskTier })
        .from(accessRequests)
        .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
        .where(eq(accessRequests.id, input.requestId));
      if (!req) throw ApplicationFailure.nonRetryable('request not found', 'NotFound');

      const withLinks = input.event !== 'revocation.unverified' && input.stage !== undefined;
      const recipients = input.recipientIds.map((identityId) => {
        if (!withLinks) return { identityId };
        const { token, claims } = mintActionLink(opts.linkSecret, { rid: input.requestId, st: input.stage!, ap: identityId }, opts.linkTtlSeconds);
        return { identityId, actionUrl: `${opts.publicUrl.replace(/\/$/, '')}/v1/approvals/actions/${token}`, expiresAt: new Date(claims.exp * 1000).toISOString() };
      });
      const messageId = `msg_${createHash('sha256').update(input.idempotencyKey).digest('hex').slice(0, 24)}`;
      const body = JSON.stringify({
        type: input.event,
        timestamp: new Date().toISOString(),
        data: {
          requestId: req.id,
          stage: input.stage ?? null,
          entitlement: { id: req.entitlementId, name: req.entitlementName, riskTier: req.riskTier },
          subjectId: req.subjectId,
          requesterId: req.requesterId,
          justification: req.justification,
          ticketRef: req.ticketRef,
          recipients,
        },
      });
      const record = { idempotencyKey: input.idempotencyKey, event: input.event, requestId: input.requestId, stage: input.stage ?? null, recipientIds: input.recipientIds, channel: opts.webhookUrl ? 'webhook' : 'none' };
      await db.insert(notifications).values({ ...record, status: 'pending' }).onConflictDoNothing();

      if (!opts.webhookUrl) {
        await db.update(notifications).set({ status: 'recorded' }).where(eq(notifications.idempotencyKey, input.idempotencyKey));
        log.info({ event: input.event, requestId: input.requestId, recipients: input.recipientIds.length }, 'notification recorded (no webhook configured)');
        return { status: 'recorded' };
      }
      const ts = Math.floor(Date.now() / 1000);
      const headers: Record<string, string> = { 'content-type': 'application/json', 'webhook-id': messageId, 'webhook-timestamp': String(ts) };
      if (signer) headers['webhook-signature'] = signer.sign(messageId, new Date(ts * 1000), body);
      let res: Response;
      try {
        res = await fetch(opts.webhookUrl, { method: 'POST', headers, body, signal: AbortSignal.timeout(opts.timeoutMs ?? 5000) });
      } catch (e) {
        await db.update(notifications).set({ status: 'failed', lastError: (e as Error).name }).where(eq(notifications.idempotencyKey, input.idempotencyKey));
        throw ApplicationFailure.retryable(`webhook unreachable: ${(e as Error).name}`, 'NotifierUnavailable');
      }
      if (!res.ok) {
        await db.update(notifications).set({ status: 'failed', lastError: `HTTP ${res.status}` }).where(eq(notifications.idempotencyKey, input.idempotencyKey));
        // 4xx other than 408/429 is the receiver refusing this message: retrying will not help.
        const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
        throw retryable ? ApplicationFailure.retryable(`webhook answered ${res.status}`, 'NotifierUnavailable') : ApplicationFailure.nonRetryable(`webhook refused with ${res.status}`, 'NotifierRefused');
      }
      await db.update(notifications).set({ status: 'sent', deliveredAt: new Date() }).where(eq(notifications.idempotencyKey, input.idempotencyKey));
      return { status: 'sent' };
    },
  };
}

export type Notifier = ReturnType<typeof createNotifier>;
