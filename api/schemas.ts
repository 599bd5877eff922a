import { z } from 'zod';
import { revokeReasonSchema } from '../workflows/message-schemas.js';

// Request/response contracts: the routes validate with these and api/openapi.ts documents
// these, so the two cannot drift. Strict objects: an unknown field is a client bug worth a
// 400, not something to silently drop.

export const idParam = z.strictObject({ id: z.uuid({ message: 'must be a UUID' }) });
export const checkpointsQuery = z.strictObject({ limit: z.coerce.number().int().min(1).max(100).default(10) });
export const evidenceParams = z.strictObject({ requestId: z.uuid({ message: 'must be a UUID' }) });
/** The evidence bundle (GET /v1/evidence/:requestId) is defined next to its verifier. */
export { evidenceBundleSchema } from '../activities/domain/evidence/index.js';
/** HR events are verified over their raw bytes before this parses them, so it lives with the activity that applies them. */
export { hrEventBody } from '../activities/domain/hr-event.js';
/** PUT /v1/policies takes YAML or JSON text; the policy loader parses it with this (line-precise problems). */
export { policyDocument } from '../activities/domain/policy/schema.js';

/** The one error shape (api/errors.ts); the request id lets a caller quote a failure. */
export const errorBody = z
  .object({
    error: z.object({
      code: z.string(),
      message: z.string(),
      details: z.unknown().optional(),
      requestId: z.string(),
    }),
  })
  .meta({ id: 'Error' });

const justification = z.string().trim().min(10, 'say why in at least 10 characters').max(2000);
const durationSeconds = z.number().int().positive().max(10 * 365 * 24 * 3600);
// The workflow's own reason schema, less the one only the sentinel itself records.
const apiRevokeReason = revokeReasonSchema.exclude(['sentinel', 'ticket']);

export const createAccessRequestBody = z.strictObject({
  subjectId: z.uuid().optional(),
  entitlementId: z.uuid(),
  durationSeconds: durationSeconds.optional(),
  /** Grant no earlier than this; the request can be approved before it. */
  startAt: z.iso.datetime({ offset: true }).optional(),
  justification,
  /** External ITSM id; it becomes a search attribute, so keep it an opaque reference. */
  ticketRef: z
    .string()
    .regex(/^[A-Za-z0-9][A-Za-z0-9._:#/-]{0,63}$/, 'ticketRef must be an opaque ticket id (letters, digits, . _ : # / -)')
    .optional(),
});

/** Existing access brought under leases (docs/import.md); each item is answered on its own. */
export const importLeasesBody = z.strictObject({
  items: z
    .array(
      z.strictObject({
        subjectId: z.uuid(),
        entitlementId: z.uuid(),
        /** When the imported access ends; within the entitlement's maximum from now. */
        expiresAt: z.iso.datetime({ offset: true }),
        justification,
        ticketRef: createAccessRequestBody.shape.ticketRef,
      }),
    )
    .min(1)
    .max(1000),
});

const REQUEST_STATUSES = ['pending_approval', 'rejected', 'expired_unapproved', 'cancelled', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified', 'revoked', 'failed'] as const;
/** The states no request leaves: a long poll for anything else ends on them too. */
export const FINAL_REQUEST_STATUSES: readonly string[] = ['rejected', 'expired_unapproved', 'cancelled', 'revoked', 'failed'];

/**
 * A long poll on one request: answer once its status is one of `waitFor` (or final), or after
 * `waitSeconds` with whatever it is then. Without `waitFor`, the read answers at once.
 */
export const requestReadQuery = z
  .strictObject({
    waitFor: z
      .string()
      .max(300)
      .transform((v, ctx) => {
        const list = v.split(',').map((x) => x.trim());
        const bad = list.filter((x) => !(REQUEST_STATUSES as readonly string[]).includes(x));
        if (bad.length || list.length === 0) {
          ctx.addIssue({ code: 'custom', message: `waitFor takes a comma-separated list of request statuses (${REQUEST_STATUSES.join(', ')})` });
          return z.NEVER;
        }
        return list;
      })
      .optional()
      .meta({ description: 'comma-separated request statuses to wait for, e.g. `active`; a final status ends the wait too' }),
    waitSeconds: z.coerce.number().int().min(1).max(30).optional().meta({ description: 'the longest wait in seconds, with waitFor (default 20)' }),
  })
  .refine((q) => q.waitFor !== undefined || q.waitSeconds === undefined, { message: 'waitSeconds needs waitFor', path: ['waitSeconds'] });

export const listRequestsQuery = z.strictObject({
  status: z.enum(REQUEST_STATUSES).optional(),
  subjectId: z.uuid().optional(),
  entitlementId: z.uuid().optional(),
  limit: z.coerce.number().int().min(1).max(200).default(50),
  /**
   * Opaque cursor from the previous page (createdAt|id of its last row). Case-insensitive by
   * spelling both cases out: an OpenAPI `pattern` cannot carry regex flags.
   */
  before: z.string().regex(/^[0-9TtZz:.+-]+\|[0-9a-fA-F-]{36}$/, 'use nextCursor from the previous page').optional(),
});

export const decisionBody = z.strictObject({
  decision: z.enum(['approve', 'reject']),
  comment: z.string().trim().max(2000).optional(),
});

export const extendBody = z.strictObject({ durationSeconds, justification });

export const revokeBody = z.strictObject({
  reason: apiRevokeReason.default('manual'),
  comment: z.string().trim().max(2000).optional(),
});

const username = z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._@-]{0,127}$/, 'username: letters, digits, . _ @ - (max 128)');
const nonHumanKinds = ['service_account', 'api_key', 'workload', 'ai_agent'] as const;

export const createIdentityBody = z
  .strictObject({
    kind: z.enum(['employee', 'contractor', ...nonHumanKinds]),
    username,
    displayName: z.string().trim().min(1).max(200),
    email: z.email().optional(),
    externalId: z.string().min(1).max(128).optional(),
    status: z.enum(['active', 'suspended', 'terminated']).default('active'),
    managerId: z.uuid().optional(),
    department: z.string().max(128).optional(),
    location: z.string().max(128).optional(),
    employmentType: z.string().max(64).optional(),
    ownerId: z.uuid().optional(),
    sponsorId: z.uuid().optional(),
    endDate: z.iso.datetime({ offset: true }).optional(),
    attributes: z.record(z.string(), z.unknown()).default({}),
  })
  .refine((b) => !(nonHumanKinds as readonly string[]).includes(b.kind) || b.ownerId, {
    message: 'non-human identities need an ownerId',
    path: ['ownerId'],
  });

/**
 * The key blob of an OpenSSH public key line starts with its own type name (SSH wire format:
 * uint32 length, then the name), so a line whose base64 is not a key of the named type is refused.
 */
function sshKeyBlobMatchesType(line: string): boolean {
  const [type, body] = line.split(' ');
  if (!type || !body) return false;
  const blob = Buffer.from(body, 'base64');
  if (blob.toString('base64').replace(/=+$/, '') !== body.replace(/=+$/, '') || blob.length < 4 + type.length) return false;
  return blob.readUInt32BE(0) === type.length && blob.subarray(4, 4 + type.length).toString('latin1') === type;
}

/** One OpenSSH public key line: type, base64 body, optional comment; no line breaks. */
export const sshPublicKeyBody = z.strictObject({
  publicKey: z
    .string()
    .trim()
    .max(8192)
    .regex(
      /^(ssh-ed25519|ecdsa-sha2-nistp(256|384|521)|sk-ssh-ed25519@openssh\.com|sk-ecdsa-sha2-nistp256@openssh\.com|ssh-rsa) [A-Za-z0-9+/]+={0,3}( [^\r\n\0]*)?$/,
      'publicKey must be one OpenSSH public key line (e.g. "ssh-ed25519 AAAA… comment")',
    )
    .refine(sshKeyBlobMatchesType, 'publicKey: the base64 body is not a key of the named type'),
});

export const createSystemBody = z.strictObject({
  name: z.string().trim().min(1).max(128),
  kind: z.enum(['ldap', 'postgres', 'ssh_ca']),
  config: z.record(z.string(), z.unknown()),
  secretRefs: z.record(z.string(), z.string().regex(/^[A-Z][A-Z0-9_]{0,127}$/, 'must be an environment variable name')).default({}),
  ownerId: z.uuid(),
});

export const createEntitlementBody = z
  .strictObject({
    systemId: z.uuid(),
    name: z.string().trim().min(1).max(200),
    description: z.string().max(2000).optional(),
    resource: z.string().min(1).max(1024),
    ownerId: z.uuid(),
    riskTier: z.enum(['low', 'medium', 'high', 'privileged']).default('medium'),
    defaultDurationSeconds: durationSeconds,
    maxDurationSeconds: durationSeconds,
    requestable: z.boolean().default(true),
    approvalPolicy: z.strictObject({ approvalTimeoutSeconds: z.number().int().positive().max(90 * 24 * 3600).optional() }).default({}),
    /** Attributes policy conditions can read, e.g. {"region": "EU"}. */
    attributes: z.record(z.string(), z.union([z.string().max(256), z.number(), z.boolean()])).default({}),
  })
  .refine((b) => b.defaultDurationSeconds <= b.maxDurationSeconds, {
    message: 'defaultDurationSeconds must not exceed maxDurationSeconds',
    path: ['defaultDurationSeconds'],
  });

export const apiRoles = ['hr_system', 'requester', 'approver', 'operator', 'auditor'] as const;

/** Two years: a token that must outlive that is a configuration, not a credential. */
const TOKEN_MAX_LIFETIME_SECONDS = 2 * 365 * 24 * 3600;

export const createTokenBody = z
  .strictObject({
    /** An identity id, or `client:<name>` for a system client such as an HR feed. */
    principalId: z.union([z.uuid(), z.string().regex(/^client:[a-z0-9][a-z0-9._-]{0,63}$/, 'client:<name> with a lower-case name')]),
    roles: z.array(z.enum(apiRoles)).min(1).max(apiRoles.length),
    description: z.string().max(200).optional(),
    expiresInSeconds: z.number().int().positive().max(TOKEN_MAX_LIFETIME_SECONDS).optional(),
    /** An absolute expiry instead (one or the other): authentication refuses the token from then on. */
    expiresAt: z.iso.datetime({ offset: true }).optional(),
  })
  .refine((b) => !(b.expiresInSeconds !== undefined && b.expiresAt !== undefined), { message: 'give expiresInSeconds or expiresAt, not both', path: ['expiresAt'] })
  .refine((b) => b.expiresAt === undefined || Date.parse(b.expiresAt) > Date.now(), { message: 'expiresAt must be in the future', path: ['expiresAt'] })
  .refine((b) => b.expiresAt === undefined || Date.parse(b.expiresAt) <= Date.now() + TOKEN_MAX_LIFETIME_SECONDS * 1000, { message: 'expiresAt must be within two years', path: ['expiresAt'] });

export const explainParams = z.strictObject({ entitlementId: z.uuid() });
/** A dry run for a subject (default: the caller) and a duration (default: the entitlement's). */
export const explainQuery = z.strictObject({ subjectId: z.uuid().optional(), durationSeconds: z.coerce.number().int().positive().optional() });

export const createGroupBody = z.strictObject({ name: z.string().trim().min(1).max(128), memberIds: z.array(z.uuid()).max(500).default([]) });
export const setMembersBody = z.strictObject({ identityIds: z.array(z.uuid()).max(500) });
export const createDelegationBody = z
  .strictObject({
    /** Operators may delegate on someone's behalf; everyone else delegates their own tasks. */
    delegatorId: z.uuid().optional(),
    delegateId: z.uuid(),
    startsAt: z.iso.datetime({ offset: true }).optional(),
    endsAt: z.iso.datetime({ offset: true }),
    reason: z.string().trim().max(500).optional(),
  })
  .refine((b) => Date.parse(b.endsAt) > (b.startsAt ? Date.parse(b.startsAt) : Date.now()), { message: 'endsAt must be after startsAt (and in the future)', path: ['endsAt'] });

/** The signed, single-use token of an approval action link (its format is checked by the verifier). */
export const actionLinkParams = z.strictObject({ token: z.string().min(10).max(1024) });

export const reconcileRunBody = z.strictObject({ systemId: z.uuid() });
export const findingsQuery = z.strictObject({
  systemId: z.uuid().optional(),
  status: z.enum(['open', 'remediated', 'resolved']).optional(),
  kind: z.enum(['orphaned_account', 'unauthorized_access', 'failed_revocation', 'missing_grant']).optional(),
  limit: z.coerce.number().int().min(1).max(1000).default(200),
});

export const UNIT_MS = { m: 60_000, h: 3_600_000, d: 86_400_000 } as const;
const MAX_WINDOW_MS = 366 * UNIT_MS.d;

/** `?window=24h` (m, h or d) or the older `?windowDays=30`; default 30 days. */
export const kpiQuery = z
  .strictObject({
    window: z
      .string()
      .regex(/^[1-9][0-9]{0,5}[mhd]$/, 'window must look like 90m, 24h or 30d')
      .optional(),
    windowDays: z.coerce.number().int().min(1).max(366).optional(),
  })
  .refine((q) => !(q.window && q.windowDays), { message: 'give window or windowDays, not both' })
  .transform((q) => {
    if (q.window) return { label: q.window, ms: Number(q.window.slice(0, -1)) * UNIT_MS[q.window.slice(-1) as keyof typeof UNIT_MS] };
    const days = q.windowDays ?? 30;
    return { label: `${days}d`, ms: days * UNIT_MS.d };
  })
  .refine((w) => w.ms <= MAX_WINDOW_MS, { message: 'window must be at most 366 days' });

// proto3 JSON writes bytes as base64 (standard or URL-safe alphabet, padding optional).
const base64 = z.string().regex(/^[A-Za-z0-9+/_-]*={0,2}$/, 'must be base64');
/** Temporal's remote codec protocol: the proto3 JSON form of Payloads. */
export const codecBody = z.object({
  payloads: z
    .array(
      z.object({
        metadata: z.record(z.string().min(1).max(256), base64).nullish(),
        data: base64.nullish(),
      }),
    )
    .max(1000),
});

// ---- Service desks (issue 12): a desk's config is validated by its kind's parser in the service
// (activities/connectors/service-desk/registry.ts), so here it is only an object.

/**
 * A secret *reference*: the name of an `ACCESSLOOP_SECRET_*` variable (SECRET_ENV_PREFIX) the
 * worker reads. Names are upper case, so a pasted token (mixed case, dashes) is refused, and the
 * error names the field, never what was sent.
 */
const deskSecretRef = z.string().regex(/^ACCESSLOOP_SECRET_[A-Z0-9_]{1,100}$/, 'must be the name of an ACCESSLOOP_SECRET_* environment variable (a reference, never the secret itself)');
const deskSecretRefs = z.strictObject({ token: deskSecretRef });
const deskConfig = z.record(z.string(), z.unknown());

export const createServiceDeskBody = z.strictObject({
  /**
   * Part of every ticket reference (`<name>#<ticket id>`), which the API, the audit trail and
   * the TicketRef search attribute show: an opaque slug, short enough for a ticketRef.
   */
  name: z.string().regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$/, 'name: letters, digits, . _ - (max 40), e.g. rt-eu'),
  kind: z.enum(['rt']),
  /** The adapter's config plus an optional `loop` object (poll, ticket-check and alert intervals, ticket decisions). */
  config: deskConfig,
  secretRefs: deskSecretRefs,
  /** Who answers for the desk; default: the caller's identity (a client token must name one). */
  ownerId: z.uuid().optional(),
});

/** Each given part replaces the stored one whole, and is validated as at registration. */
export const updateServiceDeskBody = z
  .strictObject({ config: deskConfig.optional(), secretRefs: deskSecretRefs.optional() })
  .refine((b) => b.config !== undefined || b.secretRefs !== undefined, { message: 'give config, secretRefs or both' });
