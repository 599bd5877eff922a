import { createHash } from 'node:crypto';
import { ApplicationFailure } from '@temporalio/activity';
import { and, arrayContains, eq, gt, inArray, isNotNull, isNull, or } from 'drizzle-orm';
import { Webhook } from 'standardwebhooks';
import type { Db } from '../../db/client.js';
import { accessRequests, apiTokens, approverGroupMembers, entitlements, grants, notifications } from '../../db/schema.js';
import type { Logger } from '../../temporal/logger.js';
import { mintActionLink } from './action-links.js';

export type NotificationEvent = 'approval.requested' | 'approval.reminder' | 'approval.escalated' | 'revocation.unverified' | 'sentinel.alert' | 'leaver.removals_overdue' | 'review.reminder' | 'review.escalated' | 'break_glass.used';

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
  /** The request the message is about; alerts about a birthright grant or a leaver have none. */
  requestId?: string | undefined;
  /** Alerts: the grant (without a request, its entitlement names the access) or the identity concerned. */
  grantId?: string | undefined;
  identityId?: string | undefined;
  /** Alerts: ids, counts and stable failure types only (never connector messages: they can name accounts). */
  details?: Record<string, string | number | string[]> | undefined;
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

interface DeliveryRecord {
  idempotencyKey: string;
  event: NotificationEvent;
  requestId: string | null;
  stage: number | null;
  recipientIds: string[];
}

export interface AlertInput {
  /** Stable per finding: a retried activity is the same message (same webhook-id). */
  idempotencyKey: string;
  requestId?: string | undefined;
  recipientIds: string[];
  /** Opaque ids and the finding's kind only: the receiver looks details up behind access control. */
  data: Record<string, unknown>;
}

export function createNotifier(opts: NotifierOptions, db: Db, log: Logger) {
  const signer = opts.webhookSecret ? webhookSigner(opts.webhookSecret) : undefined;

  /** What the message is about: the request, else the grant and its entitlement, else the identity. */
  async function aboutWhat(input: NotifyInput) {
    if (input.requestId) {
      const [req] = await db
        .select({ id: accessRequests.id, subjectId: accessRequests.subjectId, requesterId: accessRequests.requesterId, justification: accessRequests.justification, ticketRef: accessRequests.ticketRef, entitlementId: entitlements.id, entitlementName: entitlements.name, riskTier: entitlements.riskTier })
        .from(accessRequests)
        .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
        .where(eq(accessRequests.id, input.requestId));
      if (!req) throw ApplicationFailure.nonRetryable('request not found', 'NotFound');
      return req;
    }
    const none = { id: null, requesterId: null, justification: null, ticketRef: null };
    if (input.grantId) {
      const [g] = await db
        .select({ subjectId: grants.identityId, entitlementId: entitlements.id, entitlementName: entitlements.name, riskTier: entitlements.riskTier })
        .from(grants)
        .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
        .where(eq(grants.id, input.grantId));
      if (!g) throw ApplicationFailure.nonRetryable('grant not found', 'NotFound');
      return { ...none, ...g };
    }
    if (!input.identityId) throw ApplicationFailure.nonRetryable('a notification needs a request, a grant or an identity', 'InvalidInput');
    return { ...none, subjectId: input.identityId, entitlementId: null, entitlementName: null, riskTier: null };
  }

  return {
    async send(input: NotifyInput): Promise<{ status: 'sent' | 'recorded' | 'duplicate' }> {
      const [done] = await db.select({ status: notifications.status }).from(notifications).where(eq(notifications.idempotencyKey, input.idempotencyKey));
      if (done?.status === 'sent') return { status: 'duplicate' };
      const req = await aboutWhat(input);
      const withLinks = input.event.startsWith('approval.') && input.stage !== undefined && input.requestId !== undefined;
      const recipients = input.recipientIds.map((identityId) => {
        if (!withLinks) return { identityId };
        const { token, claims } = mintActionLink(opts.linkSecret, { rid: input.requestId!, st: input.stage!, ap: identityId }, opts.linkTtlSeconds);
        return { identityId, actionUrl: `${opts.publicUrl.replace(/\/$/, '')}/v1/approvals/actions/${token}`, expiresAt: new Date(claims.exp * 1000).toISOString() };
      });
      const messageId = `msg_${createHash('sha256').update(input.idempotencyKey).digest('hex').slice(0, 24)}`;
      const body = JSON.stringify({
        type: input.event,
        timestamp: new Date().toISOString(),
        data: {
          requestId: req.id,
          stage: input.stage ?? null,
          entitlement: req.entitlementId ? { id: req.entitlementId, name: req.entitlementName, riskTier: req.riskTier } : null,
          subjectId: req.subjectId,
          requesterId: req.requesterId,
          justification: req.justification,
          ticketRef: req.ticketRef,
          ...(input.grantId ? { grantId: input.grantId } : {}),
          ...(input.details ? { details: input.details } : {}),
          recipients,
        },
      });
      return deliver({ idempotencyKey: input.idempotencyKey, event: input.event, requestId: input.requestId ?? null, stage: input.stage ?? null, recipientIds: input.recipientIds }, messageId, body);
    },

    /**
     * A `sentinel.alert`: the same signed webhook and the same once-per-key record, but about a
     * finding that may have no request (a birthright grant, an unexplained member, a workflow).
     */
    async alert(input: AlertInput): Promise<{ status: 'sent' | 'recorded' | 'duplicate' }> {
      const [done] = await db.select({ status: notifications.status }).from(notifications).where(eq(notifications.idempotencyKey, input.idempotencyKey));
      if (done?.status === 'sent') return { status: 'duplicate' };
      const messageId = `msg_${createHash('sha256').update(input.idempotencyKey).digest('hex').slice(0, 24)}`;
      const recipients = input.recipientIds.map((identityId) => ({ identityId }));
      const body = JSON.stringify({ type: 'sentinel.alert', timestamp: new Date().toISOString(), data: { ...input.data, requestId: input.requestId ?? null, recipients } });
      return deliver({ idempotencyKey: input.idempotencyKey, event: 'sentinel.alert', requestId: input.requestId ?? null, stage: null, recipientIds: input.recipientIds }, messageId, body);
    },
  };

  /** Records the message, then POSTs it signed (or only records it when no webhook is configured). */
  async function deliver(rec: DeliveryRecord, messageId: string, body: string): Promise<{ status: 'sent' | 'recorded' }> {
    const key = eq(notifications.idempotencyKey, rec.idempotencyKey);
    await db.insert(notifications).values({ ...rec, channel: opts.webhookUrl ? 'webhook' : 'none', status: 'pending' }).onConflictDoNothing();
    if (!opts.webhookUrl) {
      await db.update(notifications).set({ status: 'recorded' }).where(key);
      log.info({ event: rec.event, requestId: rec.requestId, recipients: rec.recipientIds.length }, 'notification recorded (no webhook configured)');
      return { status: 'recorded' };
    }
    const ts = Math.floor(Date.now() / 1000);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'webhook-id': messageId, 'webhook-timestamp': String(ts) };
    if (signer) headers['webhook-signature'] = signer.sign(messageId, new Date(ts * 1000), body);
    let res: Response;
    try {
      res = await fetch(opts.webhookUrl, { method: 'POST', headers, body, signal: AbortSignal.timeout(opts.timeoutMs ?? 5000) });
    } catch (e) {
      await db.update(notifications).set({ status: 'failed', lastError: (e as Error).name }).where(key);
      throw ApplicationFailure.retryable(`webhook unreachable: ${(e as Error).name}`, 'NotifierUnavailable');
    }
    if (!res.ok) {
      await db.update(notifications).set({ status: 'failed', lastError: `HTTP ${res.status}` }).where(key);
      // 4xx other than 408/429 is the receiver refusing this message: retrying will not help.
      const retryable = res.status >= 500 || res.status === 408 || res.status === 429;
      throw retryable ? ApplicationFailure.retryable(`webhook answered ${res.status}`, 'NotifierUnavailable') : ApplicationFailure.nonRetryable(`webhook refused with ${res.status}`, 'NotifierRefused');
    }
    await db.update(notifications).set({ status: 'sent', deliveredAt: new Date() }).where(key);
    return { status: 'sent' };
  }
}

export type Notifier = ReturnType<typeof createNotifier>;

/**
 * Who hears an alert (an unverified revocation, a leaver whose removals are overdue): the owners
 * of the entitlements concerned and the operators, i.e. identities holding a live operator token.
 * Where no operator is bound to an identity (operators are `client:` principals only), the
 * policy's security team stands in, so an alert always reaches a person.
 */
export async function alertRecipients(db: Pick<Db, 'select'>, opts: { entitlementIds: string[]; securityTeam?: string | undefined }): Promise<string[]> {
  const owners = opts.entitlementIds.length
    ? await db.select({ id: entitlements.ownerId }).from(entitlements).where(inArray(entitlements.id, opts.entitlementIds))
    : [];
  const now = new Date();
  const operators = await db
    .select({ id: apiTokens.identityId })
    .from(apiTokens)
    .where(and(arrayContains(apiTokens.roles, ['operator']), isNotNull(apiTokens.identityId), isNull(apiTokens.revokedAt), or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, now))));
  let team: { id: string }[] = [];
  if (operators.length === 0 && opts.securityTeam?.startsWith('group:')) {
    team = await db.select({ id: approverGroupMembers.identityId }).from(approverGroupMembers).where(eq(approverGroupMembers.groupId, opts.securityTeam.slice('group:'.length)));
  }
  const ids = [...owners, ...operators, ...team].map((r) => r.id).filter((id): id is string => !!id);
  return [...new Set(ids)].sort();
}
