import { and, eq, gt, inArray, isNull } from 'drizzle-orm';
import type { z } from 'zod';
import { appendAudit } from '../../activities/domain/audit.js';
import {
  CONFIRMATION_TTL_MS,
  confirmationMatches,
  cooldownEndsAt,
  groupIdOf,
  groupMemberIds,
  newConfirmation,
  overduePostUseReviews,
  postUseReviewers,
  settingsOf,
  type BreakGlassSettings,
  type confirmBreakGlassBody,
  type invokeBreakGlassBody,
  type putBreakGlassBody,
} from '../../activities/domain/break-glass.js';
import type { Db } from '../../db/client.js';
import { accessRequests, approverGroups, auditEvents, breakGlassChallenges, entitlements, identities, systems, type Entitlement } from '../../db/schema.js';
import { actorRef, hasRole, identityOf, type Principal } from '../auth.js';
import { HttpError, badRequest, conflict, forbidden, notFound } from '../errors.js';
import { OPEN_STATES, type Submission, type Submitted } from './submission.js';

export interface BreakGlassDeps {
  db: Pick<Db, 'select' | 'insert' | 'update' | 'transaction'>;
  /** The one request submission (api/services/submission.ts): the confirm call goes through it. */
  submit: (s: Submission) => Promise<Submitted>;
}

export interface BreakGlassActor {
  principal: Principal;
  httpRequestId: string;
}

const tooSoon = (until: Date) =>
  new HttpError(429, 'break_glass_cooldown', `you broke glass on this entitlement recently; again from ${until.toISOString()}`, { retryAfterSeconds: Math.ceil((until.getTime() - Date.now()) / 1000), until: until.toISOString() });

/**
 * Break-glass (docs/break-glass.md): the per-entitlement settings, the two-step invoke → confirm,
 * and every rule that refuses a use. Nothing is written by a refusal; the confirm call creates the
 * request through the normal submission (with approvals skipped) and the lease workflow does the rest.
 */
export function createBreakGlassService(deps: BreakGlassDeps) {
  const { db, submit } = deps;

  async function loadEntitlement(id: string): Promise<Entitlement & { systemKind: string }> {
    const [row] = await db.select({ e: entitlements, systemKind: systems.kind }).from(entitlements).innerJoin(systems, eq(systems.id, entitlements.systemId)).where(eq(entitlements.id, id));
    if (!row) throw notFound('entitlement');
    return { ...row.e, systemKind: row.systemKind };
  }

  /** The rules a use must pass now, at invoke and again at confirm. */
  async function checkUse(invokerId: string, e: Entitlement, durationSeconds: number): Promise<BreakGlassSettings> {
    const s = settingsOf(e);
    if (!s) throw forbidden('break-glass is not allowed on this entitlement', 'break_glass_not_allowed');
    if (!(await groupMemberIds(db, s.invokers)).includes(invokerId)) throw forbidden('you are not in the group that may break glass on this entitlement', 'not_an_invoker');
    if (durationSeconds > s.maxDurationSeconds) {
      throw new HttpError(422, 'over_break_glass_cap', `durationSeconds exceeds the break-glass maximum of ${s.maxDurationSeconds}`, { maxDurationSeconds: s.maxDurationSeconds });
    }
    const overdue = await overduePostUseReviews(db, invokerId);
    if (overdue.length) throw new HttpError(409, 'post_use_review_overdue', 'a post-use review of your earlier break-glass is overdue; it must be decided first', { reviewItemIds: overdue });
    const until = await cooldownEndsAt(db, invokerId, e.id, s.cooldownSeconds);
    if (until) throw tooSoon(until);
    return s;
  }

  return {
    /** PUT /v1/entitlements/:id/break-glass: the settings and their audit event in one transaction. */
    async configure(a: BreakGlassActor, entitlementId: string, body: z.output<typeof putBreakGlassBody>) {
      const e = await loadEntitlement(entitlementId);
      let settings: BreakGlassSettings | null = null;
      if (body.allowed) {
        const { allowed: _allowed, ...rest } = body;
        settings = rest;
        if (settings.maxDurationSeconds > e.maxDurationSeconds) {
          throw badRequest('invalid_settings', `maxDurationSeconds must not exceed the entitlement's maximum of ${e.maxDurationSeconds}`);
        }
        const refs = [settings.invokers, ...(settings.reviewer !== 'entitlement_owner' ? [settings.reviewer] : []), ...(settings.notify ? [settings.notify] : [])];
        const found = await db.select({ id: approverGroups.id }).from(approverGroups).where(inArray(approverGroups.id, refs.map(groupIdOf)));
        const missing = refs.filter((r) => !found.some((f) => f.id === groupIdOf(r)));
        if (missing.length) throw badRequest('unknown_reference', `no such group: ${missing.join(', ')}`);
      }
      return db.transaction(async (tx) => {
        await tx.update(entitlements).set({ breakGlassAllowed: body.allowed, breakGlass: settings }).where(eq(entitlements.id, entitlementId));
        await appendAudit(tx, {
          idempotencyKey: `entitlement/${entitlementId}/break-glass/${a.httpRequestId}`,
          actorType: a.principal.identityId ? 'identity' : 'client',
          actorId: actorRef(a.principal),
          action: 'break_glass.configured',
          data: { entitlementId, allowed: body.allowed, ...(settings ? { settings } : {}), httpRequestId: a.httpRequestId },
        });
        return { entitlementId, allowed: body.allowed, settings };
      });
    },

    /** Step one: what it will do, and a short-lived single-use confirmation (only its hash is kept). */
    async invoke(a: BreakGlassActor, body: z.output<typeof invokeBreakGlassBody>) {
      const invokerId = identityOf(a.principal);
      const e = await loadEntitlement(body.entitlementId);
      const s = await checkUse(invokerId, e, body.durationSeconds);
      const subjectId = body.subjectId ?? invokerId;
      const [subject] = await db.select().from(identities).where(eq(identities.id, subjectId));
      if (!subject) throw notFound('subject identity');
      if (subjectId !== invokerId && subject.ownerId !== invokerId && subject.managerId !== invokerId && !hasRole(a.principal, 'operator')) {
        throw forbidden('you may break glass for yourself, your direct reports or non-human identities you own');
      }
      if (subject.status !== 'active') throw conflict('subject_inactive', 'the subject identity is not active');
      // The confirm would be refused by the submission's one-open-request rule: say so now.
      const [open] = await db
        .select({ id: accessRequests.id })
        .from(accessRequests)
        .where(and(eq(accessRequests.subjectId, subjectId), eq(accessRequests.entitlementId, e.id), inArray(accessRequests.status, [...OPEN_STATES])))
        .limit(1);
      if (open) throw conflict('duplicate_request', `an open request already exists for this subject and entitlement: ${open.id}`);
      const { secret, hash } = newConfirmation();
      const expiresAt = new Date(Date.now() + CONFIRMATION_TTL_MS);
      const reviewers = await postUseReviewers(db, s, { ownerId: e.ownerId, invokerId, subjectId });
      const challenge = await db.transaction(async (tx) => {
        const [c] = await tx
          .insert(breakGlassChallenges)
          .values({ secretHash: hash, invokerId, entitlementId: e.id, durationSeconds: body.durationSeconds, incidentRef: body.incidentRef, justification: body.justification, expiresAt })
          .returning();
        await appendAudit(tx, {
          idempotencyKey: `break-glass/${c!.id}/invoked`,
          actorType: 'identity',
          actorId: invokerId,
          action: 'break_glass.invoked',
          identityId: subjectId,
          reason: body.justification,
          data: { challengeId: c!.id, entitlementId: e.id, subjectId, durationSeconds: body.durationSeconds, incidentRef: body.incidentRef, expiresAt: expiresAt.toISOString(), httpRequestId: a.httpRequestId },
        });
        return c!;
      });
      return {
        id: challenge.id,
        confirmation: secret,
        expiresAt: expiresAt.toISOString(),
        willDo: {
          grant: { entitlementId: e.id, entitlementName: e.name, riskTier: e.riskTier, systemKind: e.systemKind, subjectId, durationSeconds: body.durationSeconds },
          approvals: 'skipped',
          lease: 'expires after durationSeconds, removal read back from the target as usual',
          notify: ['approvers the policy would have asked', 'entitlement owner', ...(s.notify ? [s.notify] : []), ...(s.reviewer !== 'entitlement_owner' ? [s.reviewer] : [])],
          postUseReview: { dueWithinHours: s.postUseReviewHours, reviewer: s.reviewer, ...reviewers },
          cooldownSeconds: s.cooldownSeconds,
          credentialRotation: e.attributes?.credential === 'password' ? 'the login password is rotated when the lease ends' : e.systemKind === 'ssh_ca' ? 'the certificate is revoked through the KRL when the lease ends' : 'none',
        },
      };
    },

    /** Step two: grants at once through the normal submission; the challenge is used in the request row's transaction. */
    async confirm(a: BreakGlassActor, id: string, body: z.output<typeof confirmBreakGlassBody>) {
      const invokerId = identityOf(a.principal);
      const [c] = await db.select().from(breakGlassChallenges).where(eq(breakGlassChallenges.id, id));
      // Someone else's challenge is not theirs to see.
      if (!c || c.invokerId !== invokerId) throw notFound('break-glass challenge');
      if (!confirmationMatches(body.confirmation, c.secretHash)) throw forbidden('the confirmation does not match', 'invalid_confirmation');
      if (c.confirmedAt) throw conflict('confirmation_used', 'this confirmation was used already');
      if (c.expiresAt.getTime() <= Date.now()) throw new HttpError(410, 'confirmation_expired', 'the confirmation expired; break glass again');
      const e = await loadEntitlement(c.entitlementId);
      await checkUse(invokerId, e, c.durationSeconds);
      const subjectId = await subjectOf(c.id);
      const submitted = await submit({
        principal: a.principal,
        httpRequestId: a.httpRequestId,
        channel: 'break_glass',
        breakGlass: true,
        body: { entitlementId: c.entitlementId, subjectId, durationSeconds: c.durationSeconds, justification: c.justification, ticketRef: c.incidentRef },
        onRecord: async (tx, requestId) => {
          // Single use under concurrency: only one confirm can flip the row.
          const used = await tx
            .update(breakGlassChallenges)
            .set({ confirmedAt: new Date(), requestId })
            .where(and(eq(breakGlassChallenges.id, c.id), isNull(breakGlassChallenges.confirmedAt), gt(breakGlassChallenges.expiresAt, new Date())))
            .returning({ id: breakGlassChallenges.id });
          if (used.length === 0) throw conflict('confirmation_used', 'this confirmation was used already');
          await appendAudit(tx, {
            idempotencyKey: `break-glass/${c.id}/confirmed`,
            actorType: 'identity',
            actorId: invokerId,
            action: 'break_glass.confirmed',
            requestId,
            identityId: subjectId,
            reason: c.justification,
            data: { challengeId: c.id, entitlementId: c.entitlementId, durationSeconds: c.durationSeconds, incidentRef: c.incidentRef, httpRequestId: a.httpRequestId },
          });
        },
      });
      return { ...submitted, breakGlass: true as const, challengeId: c.id };
    },
  };

  /**
   * The subject named at invoke. The challenge row (db/schema.ts, migration 0010) keeps only the
   * invoker; the subject is in the challenge's own `break_glass.invoked` event, written in the
   * same transaction and hash-chained, so no schema change was needed.
   */
  async function subjectOf(challengeId: string): Promise<string> {
    const [ev] = await db
      .select({ identityId: auditEvents.identityId })
      .from(auditEvents)
      .where(eq(auditEvents.idempotencyKey, `break-glass/${challengeId}/invoked`));
    if (!ev?.identityId) throw notFound('break-glass challenge');
    return ev.identityId;
  }
}
