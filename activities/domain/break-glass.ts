import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';
import { and, count, desc, eq, gte, isNotNull, lt, or } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.js';
import { accessRequests, approverGroupMembers, breakGlassChallenges, grants, reviewCampaigns, reviewItems } from '../../db/schema.js';

/**
 * Break-glass (docs/break-glass.md): the per-entitlement settings stored in
 * `entitlement.break_glass`, the API bodies, and the rules the API and the worker share (who may
 * invoke, the cooldown, the overdue post-use review that blocks the next use).
 */

const groupRef = z.string().regex(/^group:[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/, 'must be group:<uuid>');
/** Becomes the request's ticketRef (and the TicketRef search attribute): an opaque incident or ticket id. */
const incidentRef = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,63}$/, 'incidentRef must be an opaque incident or ticket id (letters, digits, . _ : # / -)');

export const breakGlassSettings = z.strictObject({
  /** The approver group whose members may break glass. */
  invokers: groupRef,
  /** Hard cap on one use; never more than the entitlement's own maximum. */
  maxDurationSeconds: z.number().int().positive().max(7 * 86400),
  /** Per person and entitlement: time between one confirmed use and the next. */
  cooldownSeconds: z.number().int().min(0).max(30 * 86400).default(3600),
  /** The post-use review is due this long after the grant is verified (fractions allowed: tests use seconds). */
  postUseReviewHours: z.number().min(1 / 3600).max(30 * 24).default(24),
  /** Who reviews the use: the entitlement owner, or a member of a (security) group; never the invoker. */
  reviewer: z.union([z.literal('entitlement_owner'), groupRef]).default('entitlement_owner'),
  /** Told at once besides the approvers and the owner (the security group). */
  notify: groupRef.optional(),
});
export type BreakGlassSettings = z.output<typeof breakGlassSettings>;

/** PUT /v1/entitlements/:id/break-glass. */
export const putBreakGlassBody = z.discriminatedUnion('allowed', [breakGlassSettings.extend({ allowed: z.literal(true) }), z.strictObject({ allowed: z.literal(false) })]);

const justification = z.string().trim().min(10, 'say why in at least 10 characters').max(2000);

/** POST /v1/break-glass: both the incident and the justification are required. */
export const invokeBreakGlassBody = z.strictObject({
  entitlementId: z.uuid(),
  subjectId: z.uuid().optional(),
  durationSeconds: z.number().int().positive(),
  incidentRef,
  justification,
});

/** POST /v1/break-glass/:id/confirm. */
export const confirmBreakGlassBody = z.strictObject({ confirmation: z.string().min(16).max(128) });

/** How long a confirmation stays usable. */
export const CONFIRMATION_TTL_MS = 5 * 60_000;

/** The settings of an entitlement that allows break-glass; undefined when it does not (or they do not parse). */
export function settingsOf(e: { breakGlassAllowed: boolean; breakGlass: unknown }): BreakGlassSettings | undefined {
  if (!e.breakGlassAllowed) return undefined;
  const parsed = breakGlassSettings.safeParse(e.breakGlass ?? {});
  return parsed.success ? parsed.data : undefined;
}

export const groupIdOf = (ref: string) => ref.slice('group:'.length);

/** A confirmation secret and the hash stored for it (the secret itself is shown once, never stored). */
export function newConfirmation(): { secret: string; hash: string } {
  const secret = `bg_${randomBytes(24).toString('base64url')}`;
  return { secret, hash: hashConfirmation(secret) };
}

export const hashConfirmation = (secret: string) => createHash('sha256').update(secret).digest('hex');

export function confirmationMatches(secret: string, hash: string): boolean {
  const a = Buffer.from(hashConfirmation(secret), 'hex');
  const b = Buffer.from(hash, 'hex');
  return a.length === b.length && timingSafeEqual(a, b);
}

export async function groupMemberIds(db: Pick<Db, 'select'>, ref: string | undefined): Promise<string[]> {
  if (!ref) return [];
  const rows = await db.select({ id: approverGroupMembers.identityId }).from(approverGroupMembers).where(eq(approverGroupMembers.groupId, groupIdOf(ref)));
  return rows.map((r) => r.id).sort();
}

/**
 * Post-use reviews of this person's break-glass uses that are past due and still undecided: the
 * review item is about a break-glass grant the person holds or invoked. While any is, they cannot
 * break glass again (ids only; the rows belong to the review campaign).
 */
export async function overduePostUseReviews(db: Pick<Db, 'select'>, personId: string, now = new Date()): Promise<string[]> {
  const rows = await db
    .select({ id: reviewItems.id })
    .from(reviewItems)
    .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
    .innerJoin(grants, eq(grants.id, reviewItems.grantId))
    .leftJoin(accessRequests, eq(accessRequests.id, grants.requestId))
    .where(
      and(
        eq(reviewCampaigns.trigger, 'break_glass'),
        eq(reviewItems.status, 'pending'),
        lt(reviewCampaigns.dueAt, now),
        or(eq(reviewItems.identityId, personId), eq(accessRequests.requesterId, personId)),
      ),
    )
    .limit(20);
  return rows.map((r) => r.id);
}

/** When this person may break glass on this entitlement again (undefined: now). */
export async function cooldownEndsAt(db: Pick<Db, 'select'>, personId: string, entitlementId: string, cooldownSeconds: number): Promise<Date | undefined> {
  if (cooldownSeconds <= 0) return undefined;
  const [last] = await db
    .select({ at: breakGlassChallenges.confirmedAt })
    .from(breakGlassChallenges)
    .where(and(eq(breakGlassChallenges.invokerId, personId), eq(breakGlassChallenges.entitlementId, entitlementId), isNotNull(breakGlassChallenges.confirmedAt)))
    .orderBy(desc(breakGlassChallenges.confirmedAt))
    .limit(1);
  if (!last?.at) return undefined;
  const ends = new Date(last.at.getTime() + cooldownSeconds * 1000);
  return ends.getTime() > Date.now() ? ends : undefined;
}

/**
 * The post-use reviewer: the owner, or the first member of the reviewer group, never the invoker
 * or the holder; the fallback is the next eligible one (the owner, the notify group).
 */
export async function postUseReviewers(
  db: Pick<Db, 'select'>,
  s: Pick<BreakGlassSettings, 'reviewer' | 'notify'>,
  who: { ownerId: string; invokerId: string; subjectId: string },
): Promise<{ reviewerId?: string; fallbackReviewerId?: string }> {
  const candidates = [
    ...(s.reviewer === 'entitlement_owner' ? [who.ownerId] : await groupMemberIds(db, s.reviewer)),
    who.ownerId,
    ...(await groupMemberIds(db, s.notify)),
  ].filter((id) => id !== who.invokerId && id !== who.subjectId);
  const [reviewerId, ...rest] = [...new Set(candidates)];
  const fallbackReviewerId = rest[0];
  return { ...(reviewerId ? { reviewerId } : {}), ...(fallbackReviewerId ? { fallbackReviewerId } : {}) };
}

/** KPI `breakGlass` (GET /v1/metrics/kpis): uses confirmed in the window; post-use reviews overdue now. */
export async function breakGlassKpis(db: Pick<Db, 'select'>, since: Date, now = new Date()): Promise<{ uses: number; postUseReviewsOverdue: number }> {
  const [uses] = await db
    .select({ n: count() })
    .from(breakGlassChallenges)
    .where(and(isNotNull(breakGlassChallenges.confirmedAt), gte(breakGlassChallenges.confirmedAt, since)));
  const [overdue] = await db
    .select({ n: count() })
    .from(reviewItems)
    .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
    .where(and(eq(reviewCampaigns.trigger, 'break_glass'), eq(reviewItems.status, 'pending'), lt(reviewCampaigns.dueAt, now)));
  return { uses: Number(uses?.n ?? 0), postUseReviewsOverdue: Number(overdue?.n ?? 0) };
}
