import { z } from 'zod';
import { campaignScope, deadlineSpec, reminderSpec, reviewerSpec } from '../reviews/definition.js';

/**
 * The approval policy document (issue 3): data, versioned in Postgres, loadable from a YAML or
 * JSON file. Every CEL expression is compiled when the document is loaded, so a bad rule is
 * refused with its line before it can route a single request.
 */

const uuid = z.uuid();
const seconds = z.number().int().positive().max(366 * 86400);

/**
 * Who approves a stage, resolved at request time:
 * `manager` (of the subject), `entitlement_owner`, `system_owner`, `sponsor` (of a contractor),
 * `security_team`, `group:<uuid>` (any member), `identity:<uuid>`.
 */
export const approverSpec = z.union([
  z.enum(['manager', 'entitlement_owner', 'system_owner', 'sponsor', 'security_team']),
  z.string().regex(/^group:[0-9a-fA-F-]{36}$/, 'group:<uuid>'),
  z.string().regex(/^identity:[0-9a-fA-F-]{36}$/, 'identity:<uuid>'),
]);
export type ApproverSpec = z.infer<typeof approverSpec>;

export const stageSchema = z
  .strictObject({
    name: z.string().regex(/^[a-z][a-z0-9_-]{0,47}$/, 'lower-case stage name'),
    approvers: z.array(approverSpec).min(1),
    /** Approvals needed from distinct people. */
    quorum: z.number().int().min(1).max(10).default(1),
    /** Final timeout: the request becomes expired_unapproved. */
    timeoutSeconds: seconds.optional(),
    /** A reminder to the approvers who have not decided, this long after the stage opens. */
    reminderAfterSeconds: seconds.optional(),
    /** Escalation this long after the stage opens: the waiting approvers' managers (else the security team) join the stage. */
    escalateAfterSeconds: seconds.optional(),
  })
  .refine((s) => !s.timeoutSeconds || !s.reminderAfterSeconds || s.reminderAfterSeconds < s.timeoutSeconds, { message: 'reminderAfterSeconds must be before timeoutSeconds', path: ['reminderAfterSeconds'] })
  .refine((s) => !s.timeoutSeconds || !s.escalateAfterSeconds || s.escalateAfterSeconds < s.timeoutSeconds, { message: 'escalateAfterSeconds must be before timeoutSeconds', path: ['escalateAfterSeconds'] });
export type StageSpec = z.infer<typeof stageSchema>;

const ruleEffect = z.discriminatedUnion('effect', [
  z.strictObject({ effect: z.literal('deny'), reason: z.string().min(3).max(300) }),
  z.strictObject({ effect: z.literal('add_stage'), stage: stageSchema }),
  z.strictObject({ effect: z.literal('auto_approve'), reason: z.string().min(3).max(300) }),
  z.strictObject({ effect: z.literal('cap_duration'), maxDurationSeconds: seconds }),
]);

export const conditionRule = z.intersection(
  z.strictObject({
    name: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, 'lower-case rule name'),
    /** CEL over subject, requester, entitlement, system and request. */
    when: z.string().min(1).max(2000),
  }),
  ruleEffect,
);

const selector = z
  .strictObject({
    entitlementIds: z.array(uuid).optional(),
    riskTiers: z.array(z.enum(['low', 'medium', 'high', 'privileged'])).optional(),
    systemIds: z.array(uuid).optional(),
  })
  .default({});

export const policyRule = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, 'lower-case policy name'),
  /** Empty selector: applies to everything. The most specific matching policy wins (entitlement > system > tier > any). */
  appliesTo: selector,
  stages: z.array(stageSchema).max(5).default([{ name: 'owner', approvers: ['entitlement_owner'], quorum: 1 }]),
  maxDurationSeconds: seconds.optional(),
  /** Used when a request names no duration (capped by every maximum that applies). */
  defaultDurationSeconds: seconds.optional(),
  /** Contractors get at most this, and their sponsor must approve. */
  contractorMaxDurationSeconds: seconds.optional(),
  /** Whether an extension needs a fresh approval (the stages run again). */
  extendRequiresApproval: z.boolean().default(false),
  conditions: z.array(conditionRule).max(50).default([]),
});
export type PolicyRule = z.infer<typeof policyRule>;

export const sodRule = z
  .strictObject({
    name: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, 'lower-case rule name'),
    /** No one may hold (or be pending for) two or more of these together. */
    entitlementIds: z.array(uuid).min(2).max(20),
    effect: z.enum(['deny', 'exception']).default('deny'),
    /** For `exception`: who may approve holding them together (a mandatory extra stage). */
    exceptionApprover: approverSpec.optional(),
    exceptionMaxDurationSeconds: seconds.optional(),
  })
  .refine((r) => r.effect !== 'exception' || r.exceptionApprover, { message: 'an exception rule needs exceptionApprover', path: ['exceptionApprover'] });
export type SodRule = z.infer<typeof sodRule>;

export const birthrightRule = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9_-]{0,63}$/, 'lower-case rule name'),
  /** CEL over `subject` (the worker as HR describes them): department, location, employment_type, job_code, kind. */
  when: z.string().min(1).max(2000),
  entitlementIds: z.array(uuid).min(1).max(100),
});
export type BirthrightRule = z.infer<typeof birthrightRule>;

export const policyDocument = z.strictObject({
  apiVersion: z.literal('accessloop/v1'),
  /** Access everyone matching a rule holds while the rule matches (joiners, movers); no approval. */
  birthright: z.array(birthrightRule).max(1000).default([]),
  /** What reconciliation fixes by itself; anything else stays an open finding for the owner. */
  reconciliation: z
    .strictObject({
      /** Remove members no grant explains: on privileged entitlements only, everywhere, or never. */
      removeUnauthorized: z.enum(['privileged', 'all', 'none']).default('privileged'),
      /** Re-drive removals the lifecycle ended but the target still shows. */
      redriveFailedRevocations: z.boolean().default(true),
      /**
       * Revoke live access whose service-desk ticket was resolved, rejected or deleted behind the
       * lifecycle's back, or that the desk no longer has (reason `ticket`); otherwise it is an open
       * finding for the owner.
       */
      revokeWithoutTicket: z.boolean().default(false),
    })
    .default({ removeUnauthorized: 'privileged', redriveFailedRevocations: true, revokeWithoutTicket: false }),
  /**
   * What the sentinel removes by itself (it alerts on every finding): access past expiry + grace
   * (`expired`, the default), also unexplained members, terminated identities' grants and
   * overdue removals (`all`), or nothing (`none`).
   */
  sentinel: z.strictObject({ remove: z.enum(['expired', 'all', 'none']).default('expired') }).optional(),
  /**
   * Access reviews (issue 13, docs/micro-reviews.md). `intervalDays`: per risk tier, how long a
   * live grant goes without a review (since it was granted or last kept) before the sentinel
   * opens a micro-review of it (trigger `review_interval`), due `intervalReviewDueDays` later,
   * with `intervalDeadline` for what is still undecided then. Absent: no interval reviews.
   */
  reviews: z
    .strictObject({
      intervalDays: z.partialRecord(z.enum(['low', 'medium', 'high', 'privileged']), z.number().int().min(1).max(3660)).default({}),
      intervalReviewDueDays: z.number().int().min(1).max(366).default(14),
      intervalDeadline: z.enum(['keep_and_flag', 'revoke', 'escalate']).default('keep_and_flag'),
      /**
       * Live leases a newly published version no longer allows (its `impact`): `micro_review` opens
       * a micro-review of each (trigger `policy_change`, docs/reviews.md), due
       * `policyChangeReviewDueDays` later with `policyChangeDeadline` for what is undecided then;
       * `finding` (the default) only reports them in the publish response.
       */
      onPolicyChange: z.enum(['micro_review', 'finding']).default('finding'),
      policyChangeReviewDueDays: z.number().int().min(1).max(366).default(7),
      policyChangeDeadline: z.enum(['keep_and_flag', 'revoke', 'escalate']).default('revoke'),
      /**
       * A membership reconciliation finds with no grant, and `reconciliation.removeUnauthorized`
       * leaves in place: `micro_review` adopts it as a lease (grant source `discovered`, approvals
       * skipped, the entitlement's default duration) and opens a micro-review of it (trigger
       * `unauthorized_access`) by the holder's manager, due `unauthorizedReviewHours` later:
       * keep → justified until the lease ends; revoke, or undecided at `unauthorizedDeadline` →
       * the lease's verified removal. `finding` (the default) leaves it an open finding for the owner.
       */
      onUnauthorized: z.enum(['micro_review', 'finding']).default('finding'),
      unauthorizedReviewHours: z.number().min(1 / 3600).max(90 * 24).default(72),
      unauthorizedDeadline: z.enum(['keep_and_flag', 'revoke', 'escalate']).default('revoke'),
      /**
       * Recurring campaigns (docs/reviews.md): a Temporal Schedule per entry opens a campaign
       * (trigger `schedule`) every `everyDays`, due `dueInDays` after it opens.
       */
      campaigns: z
        .array(
          z.strictObject({
            name: z.string().trim().min(1).max(200),
            everyDays: z.number().int().min(1).max(366),
            dueInDays: z.number().int().min(1).max(366),
            scope: campaignScope,
            reviewers: reviewerSpec,
            reminders: reminderSpec.optional(),
            deadline: deadlineSpec.optional(),
          }),
        )
        .max(50)
        .refine((cs) => new Set(cs.map((c) => c.name)).size === cs.length, 'recurring campaign names must be unique')
        .default([]),
    })
    .optional(),
  /** How long a mover keeps birthright the new attributes no longer justify. */
  moverGraceSeconds: z.number().int().min(0).max(90 * 86400).default(86400),
  /** The group whose members act as `security_team` (and receive escalations). */
  securityTeam: z.string().regex(/^group:[0-9a-fA-F-]{36}$/, 'group:<uuid>').optional(),
  policies: z.array(policyRule).min(1).max(2000),
  sod: z.array(sodRule).max(1000).default([]),
});
export type PolicyDocument = z.infer<typeof policyDocument>;
