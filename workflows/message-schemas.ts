import { z } from 'zod';
import type { DecisionArgs, ExtendArgs, ShortenArgs, HrEventRef, ReviewArgs, RevokeArgs, RevokeReason, RotateArgs } from './messages.js';

// The one boundary for every signal and update input, shared by the workflows (which parse what
// arrives, from the API or from anyone with Temporal UI access) and the API (which may parse
// what it sends with the same schemas). zod is pure and deterministic, so it runs in the sandbox.
// Objects are not strict on purpose: a field added by a newer API must not make an older
// workflow drop the message; unknown keys are stripped. Every value that reaches a database
// enum or a bounded column is checked here.

/** The database's revoke_reason enum, exactly (lower case: 'Manual' is not a reason). */
export const revokeReasons = ['expired', 'leaver', 'mover', 'review', 'manual', 'reconciliation', 'sentinel', 'ticket'] as const;
export const revokeReasonSchema = z.enum(revokeReasons);
// Both ways: the schema's list and the RevokeReason type must name the same reasons.
type SameSet<A, B> = [A] extends [B] ? ([B] extends [A] ? true : false) : false;
const reasonsMatch: SameSet<RevokeReason, (typeof revokeReasons)[number]> = true;
void reasonsMatch;

/** Opaque refs: identity ids, `client:<name>` principals, fixed actors such as `hr`. */
const ref = z.string().min(1).max(200);
const comment = z.string().max(2000);
const httpRequestId = z.string().min(1).max(200);

export const decisionArgsSchema = z.object({
  approverId: ref,
  decision: z.enum(['approve', 'reject']),
  comment: comment.optional(),
  stage: z.number().int().positive().optional(),
  httpRequestId: httpRequestId.optional(),
}) satisfies z.ZodType<DecisionArgs>;

// The duration's range is the policy's (OutsidePolicy, in the validator); here only its shape.
export const extendArgsSchema = z.object({
  actorId: ref,
  durationSeconds: z.number().finite(),
  justification: z.string().max(2000),
  httpRequestId: httpRequestId.optional(),
}) satisfies z.ZodType<ExtendArgs>;

export const shortenArgsSchema = z.object({
  actorId: ref,
  expiresAt: z.iso.datetime({ offset: true }),
  justification: z.string().max(2000),
  httpRequestId: httpRequestId.optional(),
}) satisfies z.ZodType<ShortenArgs>;

export const rotateArgsSchema = z.object({
  actorId: ref,
  httpRequestId: httpRequestId.optional(),
}) satisfies z.ZodType<RotateArgs>;

// `reason` may be left out (an operator's bare revoke from the UI is a manual one), but a
// reason that is given must be one the database knows.
export const revokeArgsSchema = z.object({
  reason: revokeReasonSchema.optional(),
  actorId: ref.optional(),
  comment: comment.optional(),
  httpRequestId: httpRequestId.optional(),
}) satisfies z.ZodType<Omit<RevokeArgs, 'reason'> & { reason?: RevokeArgs['reason'] | undefined }>;

export const reviewArgsSchema = z.object({
  reason: z.literal('mover'),
  deadlineSeconds: z.number().finite().positive(),
}) satisfies z.ZodType<ReviewArgs>;

export const hrEventRefSchema = z.object({
  eventId: ref,
  type: z.enum(['joiner', 'mover', 'leaver', 'rehire', 'update']),
  sequence: z.number().int(),
  effectiveAt: z.iso.datetime({ offset: true }),
}) satisfies z.ZodType<HrEventRef>;

/**
 * Where an input failed, for logs and rejections: paths and zod's messages, never the values
 * (a payload may carry personal data, and logs and history must not).
 */
export function describeInvalid(error: z.ZodError): string {
  return error.issues.map((i) => `${i.path.length ? i.path.join('.') : 'input'}: ${i.code}`).join('; ');
}
