import { sql } from 'drizzle-orm';
import {
  bigint,
  boolean,
  check,
  index,
  integer,
  jsonb,
  pgEnum,
  pgTable,
  primaryKey,
  smallint,
  text,
  timestamp,
  uniqueIndex,
  uuid,
} from 'drizzle-orm/pg-core';

const ts = (name: string) => timestamp(name, { withTimezone: true, mode: 'date' });
const createdAt = () => ts('created_at').notNull().defaultNow();

export const identityKind = pgEnum('identity_kind', [
  'employee',
  'contractor',
  'service_account',
  'api_key',
  'workload',
  'ai_agent',
]);
export const identityStatus = pgEnum('identity_status', ['active', 'suspended', 'terminated']);
export const riskTier = pgEnum('risk_tier', ['low', 'medium', 'high', 'privileged']);
export const requestStatus = pgEnum('request_status', [
  'pending_approval',
  'rejected',
  'expired_unapproved',
  'cancelled',
  'scheduled',
  'granting',
  'active',
  'revoking',
  'revocation_unverified',
  'revoked',
  'failed',
]);
export const approvalStatus = pgEnum('approval_status', ['pending', 'approved', 'rejected', 'expired', 'closed']);
/**
 * `discovered`: a membership reconciliation found with no grant, adopted as a lease under a
 * micro-review (docs/micro-reviews.md); `imported`: existing access an operator brought under a
 * lease (docs/import.md).
 */
export const grantSource = pgEnum('grant_source', ['request', 'birthright', 'break_glass', 'discovered', 'imported']);
export const grantStatus = pgEnum('grant_status', [
  'granting',
  'active',
  'revoking',
  'revocation_unverified',
  'revoked',
  'failed',
]);
export const revokeReason = pgEnum('revoke_reason', [
  'expired',
  'leaver',
  'mover',
  'review',
  'manual',
  'reconciliation',
  'sentinel',
  /** The service-desk ticket that justified the access was rejected or deleted by a person. */
  'ticket',
]);
export const apiRole = pgEnum('api_role', ['hr_system', 'requester', 'approver', 'operator', 'auditor']);

export const identities = pgTable(
  'identity',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    kind: identityKind('kind').notNull(),
    /** Account name on targets (rendered into DNs/role names by each system's template). */
    username: text('username').notNull(),
    displayName: text('display_name').notNull(),
    email: text('email'),
    externalId: text('external_id'),
    status: identityStatus('status').notNull().default('active'),
    managerId: uuid('manager_id'),
    department: text('department'),
    location: text('location'),
    employmentType: text('employment_type'),
    ownerId: uuid('owner_id'),
    sponsorId: uuid('sponsor_id'),
    endDate: ts('end_date'),
    /** Job code from HR (birthright rules can use it). */
    jobCode: text('job_code'),
    /** Highest HR event sequence applied: older (out-of-order) events are ignored. */
    hrSequence: bigint('hr_sequence', { mode: 'number' }),
    terminatedAt: ts('terminated_at'),
    attributes: jsonb('attributes').$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    uniqueIndex('identity_username_uq').on(t.username),
    uniqueIndex('identity_external_id_uq').on(t.externalId),
    check(
      'identity_nonhuman_has_owner',
      sql`${t.kind} in ('employee','contractor') or ${t.ownerId} is not null`,
    ),
  ],
);

export const systems = pgTable(
  'system',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    kind: text('kind').notNull(),
    /** Non-secret connector configuration, validated per kind. */
    config: jsonb('config').$type<Record<string, unknown>>().notNull(),
    /** Secret *references*: connector secret name → environment variable name. Never values. */
    secretRefs: jsonb('secret_refs').$type<Record<string, string>>().notNull().default({}),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => identities.id),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('system_name_uq').on(t.name)],
);

export interface ApprovalPolicy {
  /** Seconds an approval stage stays open before the request becomes expired_unapproved. */
  approvalTimeoutSeconds?: number;
}

export const entitlements = pgTable(
  'entitlement',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    systemId: uuid('system_id')
      .notNull()
      .references(() => systems.id),
    name: text('name').notNull(),
    description: text('description'),
    /** What the connector grants: a group DN, a role name, an SSH principal. */
    resource: text('resource').notNull(),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => identities.id),
    riskTier: riskTier('risk_tier').notNull().default('medium'),
    defaultDurationSeconds: integer('default_duration_seconds').notNull(),
    maxDurationSeconds: integer('max_duration_seconds').notNull(),
    requestable: boolean('requestable').notNull().default(true),
    approvalPolicy: jsonb('approval_policy').$type<ApprovalPolicy>().notNull().default({}),
    conditions: jsonb('conditions').$type<unknown[]>().notNull().default([]),
    sodConflicts: jsonb('sod_conflicts').$type<string[]>().notNull().default([]),
    breakGlassAllowed: boolean('break_glass_allowed').notNull().default(false),
    /**
     * Break-glass settings (activities/domain/break-glass.ts owns the schema): who may invoke it
     * (`group:<uuid>`), the hard maximum duration, the cooldown per person, the post-use review
     * window and reviewer. Only read when `break_glass_allowed`.
     */
    breakGlass: jsonb('break_glass').$type<Record<string, unknown>>(),
    /** Free attributes policy conditions can read (e.g. region, data classification). */
    attributes: jsonb('attributes').$type<Record<string, unknown>>().notNull().default({}),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('entitlement_system_resource_uq').on(t.systemId, t.resource),
    check('entitlement_durations', sql`${t.defaultDurationSeconds} > 0 and ${t.defaultDurationSeconds} <= ${t.maxDurationSeconds}`),
  ],
);

export const accessRequests = pgTable(
  'access_request',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    requesterId: uuid('requester_id')
      .notNull()
      .references(() => identities.id),
    subjectId: uuid('subject_id')
      .notNull()
      .references(() => identities.id),
    entitlementId: uuid('entitlement_id')
      .notNull()
      .references(() => entitlements.id),
    justification: text('justification').notNull(),
    requestedDurationSeconds: integer('requested_duration_seconds').notNull(),
    /** Access should begin no earlier than this (approved requests wait as `scheduled`). */
    startAt: ts('start_at'),
    ticketRef: text('ticket_ref'),
    status: requestStatus('status').notNull().default('pending_approval'),
    workflowId: text('workflow_id').notNull(),
    policyVersion: text('policy_version'),
    failureReason: text('failure_reason'),
    createdAt: createdAt(),
    decidedAt: ts('decided_at'),
    updatedAt: ts('updated_at').notNull().defaultNow(),
  },
  (t) => [
    index('access_request_subject_idx').on(t.subjectId),
    index('access_request_requester_idx').on(t.requesterId),
    uniqueIndex('access_request_workflow_uq').on(t.workflowId),
    // At most one open request per (subject, entitlement): the submission's duplicate check
    // is check-then-insert, so only the database can close the race between two submissions.
    uniqueIndex('access_request_open_uq')
      .on(t.subjectId, t.entitlementId)
      .where(
        sql`status in ('pending_approval','scheduled','granting','active','revoking','revocation_unverified')`,
      ),
  ],
);

/** One row per (request, stage, assigned approver): the approver's task and, once decided, the decision. */
export const approvals = pgTable(
  'approval',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    requestId: uuid('request_id')
      .notNull()
      .references(() => accessRequests.id),
    stage: integer('stage').notNull(),
    stageName: text('stage_name').notNull().default('owner'),
    approverId: uuid('approver_id')
      .notNull()
      .references(() => identities.id),
    status: approvalStatus('status').notNull().default('pending'),
    comment: text('comment'),
    /** Set when the approver acts as a delegate: whose task this was. */
    onBehalfOf: uuid('on_behalf_of').references(() => identities.id),
    policyVersion: text('policy_version').notNull(),
    dueAt: ts('due_at').notNull(),
    createdAt: createdAt(),
    decidedAt: ts('decided_at'),
  },
  (t) => [
    uniqueIndex('approval_request_stage_approver_uq').on(t.requestId, t.stage, t.approverId),
    index('approval_approver_status_idx').on(t.approverId, t.status),
  ],
);

/** The lease. Explicit state plus a timestamp per transition; never a boolean that loses history. */
export const grants = pgTable(
  'grant',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    identityId: uuid('identity_id')
      .notNull()
      .references(() => identities.id),
    entitlementId: uuid('entitlement_id')
      .notNull()
      .references(() => entitlements.id),
    requestId: uuid('request_id').references(() => accessRequests.id),
    source: grantSource('source').notNull(),
    status: grantStatus('status').notNull().default('granting'),
    /** Whether our grant call changed the target (false: the membership already existed). */
    targetChanged: boolean('target_changed'),
    grantedAt: ts('granted_at'),
    grantVerifiedAt: ts('grant_verified_at'),
    expiresAt: ts('expires_at'),
    revokeRequestedAt: ts('revoke_requested_at'),
    revokeReason: revokeReason('revoke_reason'),
    revokedBy: text('revoked_by'),
    revokedAt: ts('revoked_at'),
    removalVerifiedAt: ts('removal_verified_at'),
    createdAt: createdAt(),
  },
  (t) => [
    index('grant_identity_status_idx').on(t.identityId, t.status),
    index('grant_entitlement_idx').on(t.entitlementId),
    uniqueIndex('grant_request_uq').on(t.requestId),
  ],
);

/** Append-only, hash-chained: hash = sha256(prev_hash ‖ canonical(event)). */
/**
 * The audit log: append-only, hash-chained per **stream** (docs/audit.md). A stream is one
 * request, grant, identity, campaign or system (`request:<uuid>`, …; `operations` for the rest),
 * so writers of different streams never wait for each other; `stream_seq` counts within it and
 * `prev_hash` links to the stream's previous event. `seq` is a global id from an identity
 * sequence (insertion order, gaps allowed); it is what facts and the desk outbox cite. Rows of
 * `hash_version` 1 are the single chain from before streams (stream `legacy`, stream_seq = seq).
 */
export const auditEvents = pgTable(
  'audit_event',
  {
    seq: bigint('seq', { mode: 'number' }).primaryKey().generatedByDefaultAsIdentity(),
    /** Makes retried activity writes idempotent (e.g. `<workflowId>/<transition>`). */
    idempotencyKey: text('idempotency_key').notNull(),
    stream: text('stream').notNull(),
    streamSeq: integer('stream_seq').notNull(),
    hashVersion: smallint('hash_version').notNull().default(2),
    at: ts('at').notNull(),
    actorType: text('actor_type').notNull(),
    actorId: text('actor_id').notNull(),
    action: text('action').notNull(),
    requestId: uuid('request_id'),
    grantId: uuid('grant_id'),
    identityId: uuid('identity_id'),
    reason: text('reason'),
    policyVersion: text('policy_version'),
    data: jsonb('data').$type<Record<string, unknown>>().notNull().default({}),
    prevHash: text('prev_hash').notNull(),
    hash: text('hash').notNull(),
  },
  (t) => [
    uniqueIndex('audit_event_idempotency_uq').on(t.idempotencyKey),
    uniqueIndex('audit_event_stream_uq').on(t.stream, t.streamSeq),
    index('audit_event_request_idx').on(t.requestId),
    index('audit_event_grant_idx').on(t.grantId),
  ],
);

/** Each stream's head: the row an append locks (writers of one stream queue here, no one else does). */
export const auditStreams = pgTable('audit_stream', {
  stream: text('stream').primaryKey(),
  headSeq: integer('head_seq').notNull(),
  headHash: text('head_hash').notNull(),
  updatedAt: ts('updated_at').notNull().defaultNow(),
});

/**
 * A signed checkpoint: the root of a Merkle tree (RFC 6962 hashing) over every stream's head at
 * one moment, signed with the evidence key, like Certificate Transparency's signed tree heads.
 */
export const auditCheckpoints = pgTable('audit_checkpoint', {
  id: integer('id').primaryKey(),
  createdAt: ts('created_at').notNull(),
  treeSize: integer('tree_size').notNull(),
  rootHash: text('root_hash').notNull(),
  keyFingerprint: text('key_fingerprint').notNull(),
  publicKey: text('public_key').notNull(),
  signature: text('signature').notNull(),
});

/** The heads a checkpoint saw that changed since the one before (the rest are carried over): its leaves, without copying every head each time. */
export const auditCheckpointHeads = pgTable(
  'audit_checkpoint_head',
  {
    checkpointId: integer('checkpoint_id')
      .notNull()
      .references(() => auditCheckpoints.id),
    stream: text('stream').notNull(),
    streamSeq: integer('stream_seq').notNull(),
    headHash: text('head_hash').notNull(),
  },
  (t) => [primaryKey({ columns: [t.checkpointId, t.stream] }), index('audit_checkpoint_head_stream_idx').on(t.stream, t.checkpointId)],
);

export const apiTokens = pgTable(
  'api_token',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** sha256 of the token; the token itself is shown once and never stored. */
    tokenHash: text('token_hash').notNull(),
    identityId: uuid('identity_id').references(() => identities.id),
    clientName: text('client_name'),
    roles: apiRole('roles').array().notNull(),
    description: text('description'),
    createdBy: text('created_by').notNull(),
    createdAt: createdAt(),
    expiresAt: ts('expires_at'),
    revokedAt: ts('revoked_at'),
  },
  (t) => [
    uniqueIndex('api_token_hash_uq').on(t.tokenHash),
    check('api_token_one_principal', sql`(${t.identityId} is null) <> (${t.clientName} is null)`),
  ],
);

/** Versioned policy documents; the newest row is active. */
export const policyVersions = pgTable(
  'policy_version',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    version: text('version').notNull(),
    document: jsonb('document').$type<Record<string, unknown>>().notNull(),
    source: text('source').notNull(),
    createdBy: text('created_by').notNull(),
    createdAt: createdAt(),
  },
  (t) => [index('policy_version_version_idx').on(t.version)],
);

/** Groups of approvers (`group:<id>` in policies; the security team is one). */
export const approverGroups = pgTable(
  'approver_group',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('approver_group_name_uq').on(t.name)],
);

export const approverGroupMembers = pgTable(
  'approver_group_member',
  {
    groupId: uuid('group_id')
      .notNull()
      .references(() => approverGroups.id),
    identityId: uuid('identity_id')
      .notNull()
      .references(() => identities.id),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('approver_group_member_uq').on(t.groupId, t.identityId)],
);

/** An approver hands their approval tasks to another identity for a period. */
export const delegations = pgTable(
  'approval_delegation',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    delegatorId: uuid('delegator_id')
      .notNull()
      .references(() => identities.id),
    delegateId: uuid('delegate_id')
      .notNull()
      .references(() => identities.id),
    startsAt: ts('starts_at').notNull(),
    endsAt: ts('ends_at').notNull(),
    reason: text('reason'),
    createdBy: text('created_by').notNull(),
    revokedAt: ts('revoked_at'),
    createdAt: createdAt(),
  },
  (t) => [
    index('approval_delegation_delegator_idx').on(t.delegatorId),
    check('approval_delegation_period', sql`${t.startsAt} < ${t.endsAt}`),
    check('approval_delegation_not_self', sql`${t.delegatorId} <> ${t.delegateId}`),
  ],
);

export const hrEventType = pgEnum('hr_event_type', ['joiner', 'mover', 'leaver', 'rehire', 'update']);

/** The HR inbox: every signed event is stored (deduplicated by webhook-id) before it is acted on. */
export const hrEvents = pgTable(
  'hr_event',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    webhookId: text('webhook_id').notNull(),
    sourceClient: text('source_client').notNull(),
    type: hrEventType('type').notNull(),
    workerId: text('worker_id').notNull(),
    sequence: bigint('sequence', { mode: 'number' }).notNull(),
    effectiveAt: ts('effective_at').notNull(),
    payload: jsonb('payload').$type<Record<string, unknown>>().notNull(),
    identityId: uuid('identity_id')
      .notNull()
      .references(() => identities.id),
    receivedAt: ts('received_at').notNull().defaultNow(),
    processedAt: ts('processed_at'),
    /** applied, stale (older sequence), ignored (e.g. a mover for a terminated worker). */
    outcome: text('outcome'),
    /** Leavers: when the last removal was verified (time to revoke = this − receivedAt). */
    completedAt: ts('completed_at'),
  },
  (t) => [uniqueIndex('hr_event_webhook_uq').on(t.webhookId), index('hr_event_identity_idx').on(t.identityId)],
);

export const findingKind = pgEnum('finding_kind', [
  'orphaned_account',
  'unauthorized_access',
  'failed_revocation',
  'missing_grant',
  /** Live access whose service-desk ticket is resolved, rejected or deleted (account: the ticket ref). */
  'ticket_closed',
  /** Live access whose service-desk ticket the desk no longer has. */
  'ticket_missing',
]);
export const findingStatus = pgEnum('finding_status', ['open', 'remediated', 'resolved']);

/** What reconciliation found on a target that the lifecycle did not explain. */
export const reconciliationFindings = pgTable(
  'reconciliation_finding',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    runId: text('run_id').notNull(),
    systemId: uuid('system_id')
      .notNull()
      .references(() => systems.id),
    entitlementId: uuid('entitlement_id')
      .notNull()
      .references(() => entitlements.id),
    kind: findingKind('kind').notNull(),
    /** The target-side account (a DN, a role name). */
    account: text('account').notNull(),
    identityId: uuid('identity_id').references(() => identities.id),
    grantId: uuid('grant_id').references(() => grants.id),
    status: findingStatus('status').notNull().default('open'),
    detail: text('detail'),
    detectedAt: ts('detected_at').notNull().defaultNow(),
    remediatedAt: ts('remediated_at'),
  },
  (t) => [
    index('reconciliation_finding_system_idx').on(t.systemId, t.status),
    // One open finding per (entitlement, account, kind): reruns refresh rather than duplicate.
    uniqueIndex('reconciliation_finding_open_uq').on(t.entitlementId, t.account, t.kind).where(sql`status = 'open'`),
  ],
);

export const sentinelFindingKind = pgEnum('sentinel_finding_kind', [
  'expired_not_revoked',
  'stuck_granting',
  'removal_overdue',
  'terminated_with_grant',
  'unjustified_member',
  'workflow_task_failed',
  'workflow_ended',
]);

/**
 * What the sentinel found. The sentinel is independent of the lease workflows and of
 * reconciliation, so its findings have their own table: one row per (kind, subject key) is the
 * "alert once" record (the unique index over unresolved rows makes a rerun a no-op), and `remediated_at` records a
 * direct removal. `subject_key` is a grant id, a workflow id or `<entitlementId>/<account>`.
 */
export const sentinelFindings = pgTable(
  'sentinel_finding',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    kind: sentinelFindingKind('kind').notNull(),
    subjectKey: text('subject_key').notNull(),
    grantId: uuid('grant_id').references(() => grants.id),
    entitlementId: uuid('entitlement_id').references(() => entitlements.id),
    identityId: uuid('identity_id').references(() => identities.id),
    detail: text('detail'),
    detectedAt: ts('detected_at').notNull().defaultNow(),
    alertedAt: ts('alerted_at'),
    remediatedAt: ts('remediated_at'),
    /** Set when a run no longer sees it: the same thing found again later is a new finding. */
    resolvedAt: ts('resolved_at'),
  },
  (t) => [uniqueIndex('sentinel_finding_open_uq').on(t.kind, t.subjectKey).where(sql`resolved_at is null`)],
);

/** Messages to approvers and operators; action-link tokens are never stored, only who got one. */
export const notifications = pgTable(
  'notification',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    idempotencyKey: text('idempotency_key').notNull(),
    event: text('event').notNull(),
    requestId: uuid('request_id').references(() => accessRequests.id),
    stage: integer('stage'),
    recipientIds: jsonb('recipient_ids').$type<string[]>().notNull(),
    channel: text('channel').notNull(),
    status: text('status').notNull(),
    lastError: text('last_error'),
    createdAt: createdAt(),
    deliveredAt: ts('delivered_at'),
  },
  (t) => [uniqueIndex('notification_idempotency_uq').on(t.idempotencyKey), index('notification_request_idx').on(t.requestId)],
);

/** Single use of approval action links: a jti is recorded before its decision is attempted. */
export const actionLinkUses = pgTable('action_link_use', {
  jti: text('jti').primaryKey(),
  requestId: uuid('request_id').notNull(),
  approverId: uuid('approver_id').notNull(),
  usedAt: ts('used_at').notNull().defaultNow(),
});

export const credentialKind = pgEnum('credential_kind', ['password', 'ssh_certificate']);
export const credentialStatus = pgEnum('credential_status', ['active', 'superseded', 'revoked']);

/**
 * A credential issued for a grant (a PostgreSQL login password, an SSH certificate). The
 * material is sealed (AES-256-GCM) until its owner reads it once; then it is wiped and only
 * the facts remain. Workflows see the row id, never the material.
 */
export const credentials = pgTable(
  'credential',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    grantId: uuid('grant_id')
      .notNull()
      .references(() => grants.id),
    /** The identity the credential authenticates (a service account, or a person's SSH key). */
    identityId: uuid('identity_id')
      .notNull()
      .references(() => identities.id),
    /** Who may read the material: the non-human identity's owner, or the person themselves. */
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => identities.id),
    kind: credentialKind('kind').notNull(),
    /** Target-side id: the login role, the certificate serial. Not secret. */
    targetRef: text('target_ref').notNull(),
    status: credentialStatus('status').notNull().default('active'),
    /** `v1.<iv>.<ciphertext>.<tag>` (base64url) until delivered; null after. */
    sealed: text('sealed'),
    issuedAt: ts('issued_at').notNull().defaultNow(),
    notAfter: ts('not_after').notNull(),
    deliveredAt: ts('delivered_at'),
    deliveredTo: uuid('delivered_to'),
    endedAt: ts('ended_at'),
  },
  (t) => [
    index('credential_grant_idx').on(t.grantId, t.issuedAt),
    index('credential_owner_idx').on(t.ownerId),
  ],
);

/**
 * A service desk accessloop follows (issue 12): a queue whose tickets start access requests and
 * receive the lifecycle's story. Like a system, non-secret config plus secret *references*.
 */
export const serviceDesks = pgTable(
  'service_desk',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    /** The adapter: `rt` (Request Tracker 5). */
    kind: text('kind').notNull(),
    config: jsonb('config').$type<Record<string, unknown>>().notNull(),
    secretRefs: jsonb('secret_refs').$type<Record<string, string>>().notNull().default({}),
    ownerId: uuid('owner_id')
      .notNull()
      .references(() => identities.id),
    /** The adapter's cursor: the last desk event fully handled (RT: a transaction id). Null: not started. */
    cursor: text('cursor'),
    /** The loop's health, for operators and the alert: last round that reached the desk, first failure of the current run of failures. */
    reachedAt: ts('reached_at'),
    failingSince: ts('failing_since'),
    lastErrorType: text('last_error_type'),
    alertedAt: ts('alerted_at'),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('service_desk_name_uq').on(t.name)],
);

export const ticketLinkState = pgEnum('ticket_link_state', ['linked', 'refused', 'closed']);

/**
 * A ticket and the request it started (or why it started none). Unique per desk and ticket, and
 * inserted in the same transaction as the request row, so an intake event handled twice finds
 * the link and does nothing.
 */
export const ticketLinks = pgTable(
  'ticket_link',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    deskId: uuid('desk_id')
      .notNull()
      .references(() => serviceDesks.id),
    ticketRef: text('ticket_ref').notNull(),
    requestId: uuid('request_id').references(() => accessRequests.id),
    state: ticketLinkState('state').notNull(),
    /** For `refused`: the stable code of the refusal (never the ticket's own text). */
    refusal: text('refusal'),
    createdAt: createdAt(),
    /** When the ticket was opened on the desk (the start of "ticket → access verified"). */
    ticketCreatedAt: ts('ticket_created_at'),
    /** When the post that resolved or rejected the ticket was delivered. */
    closedAt: ts('closed_at'),
    /** The state that post set: `resolved` (removal verified) or `rejected`; `closed_on_desk` when a person had closed the ticket first (the post set none). */
    finalState: text('final_state'),
    /** The last outbox row posted to the ticket: write-back is in order and once. */
    deliveredThrough: bigint('delivered_through', { mode: 'number' }).notNull().default(0),
    /** Set before a post and cleared after it, so a crash in between is settled by reading the ticket back. */
    pendingMarker: text('pending_marker'),
    pendingThrough: bigint('pending_through', { mode: 'number' }),
  },
  (t) => [
    uniqueIndex('ticket_link_ticket_uq').on(t.deskId, t.ticketRef),
    uniqueIndex('ticket_link_request_uq').on(t.requestId).where(sql`request_id is not null`),
  ],
);

/**
 * What is still to be written to a ticket, in order. Rows for a linked request's audit events are
 * inserted in the audit event's own transaction (activities/domain/audit.ts), so every transition
 * reaches the desk and the lifecycle never waits for it; `source` is unique per link, so a
 * re-handled event adds nothing.
 */
export const deskOutbox = pgTable(
  'desk_outbox',
  {
    id: bigint('id', { mode: 'number' }).primaryKey().generatedAlwaysAsIdentity(),
    linkId: uuid('link_id')
      .notNull()
      .references(() => ticketLinks.id),
    /** `audit:<seq>`, or `desk:<event cursor>` for a reply to something the desk sent (`desk-note:<cursor>`: an internal note). */
    source: text('source').notNull(),
    auditSeq: bigint('audit_seq', { mode: 'number' }),
    /** A reply's fixed text (refusals); audit rows are rendered when delivered. */
    text: text('text'),
    createdAt: createdAt(),
    deliveredAt: ts('delivered_at'),
  },
  (t) => [
    uniqueIndex('desk_outbox_source_uq').on(t.linkId, t.source),
    index('desk_outbox_pending_idx').on(t.linkId, t.id).where(sql`delivered_at is null`),
  ],
);

// ---- access reviews (issue 13) -----------------------------------------------------------------

/** A recurring or one-off recertification (`campaign`), or a one-item review opened by an event (`micro`). */
export const reviewCampaignKind = pgEnum('review_campaign_kind', ['campaign', 'micro']);
/** `closing`: every item is decided, the revocations they caused are still being verified. */
export const reviewCampaignStatus = pgEnum('review_campaign_status', ['open', 'closing', 'closed', 'cancelled']);
/**
 * What opened a review: the API or a schedule (campaigns); a mover, a reconciliation finding of
 * unauthorised access, a grant outliving its review interval, a policy change, a break-glass use
 * (micro-certifications).
 */
export const reviewTrigger = pgEnum('review_trigger', ['api', 'schedule', 'mover', 'unauthorized_access', 'review_interval', 'policy_change', 'break_glass']);
export const reviewItemStatus = pgEnum('review_item_status', ['pending', 'kept', 'revoked', 'skipped']);

/**
 * A review campaign. Its definition (scope, reviewer rules, deadline rules, reminders) is stored as
 * validated JSON (activities/domain/reviews/ owns the schema); items are rows, never workflow history.
 */
export const reviewCampaigns = pgTable(
  'review_campaign',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    name: text('name').notNull(),
    kind: reviewCampaignKind('kind').notNull(),
    trigger: reviewTrigger('trigger').notNull(),
    /** The campaign definition as submitted (scope, reviewers, fallback, deadline rule, reminders, exclusions). */
    definition: jsonb('definition').$type<Record<string, unknown>>().notNull(),
    status: reviewCampaignStatus('status').notNull().default('open'),
    dueAt: ts('due_at').notNull(),
    workflowId: text('workflow_id').notNull(),
    policyVersion: text('policy_version'),
    createdBy: text('created_by').notNull(),
    createdAt: createdAt(),
    /** All items decided (by a person or the deadline rule). */
    decidedAt: ts('decided_at'),
    /** Every revocation the campaign caused is verified on its target. */
    closedAt: ts('closed_at'),
  },
  (t) => [index('review_campaign_status_idx').on(t.status), uniqueIndex('review_campaign_workflow_uq').on(t.workflowId)],
);

/** One grant under review in one campaign: who reviews it, the decision, and what came of it. */
export const reviewItems = pgTable(
  'review_item',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    campaignId: uuid('campaign_id')
      .notNull()
      .references(() => reviewCampaigns.id),
    grantId: uuid('grant_id')
      .notNull()
      .references(() => grants.id),
    /** The grant's holder (never its reviewer). */
    identityId: uuid('identity_id')
      .notNull()
      .references(() => identities.id),
    entitlementId: uuid('entitlement_id')
      .notNull()
      .references(() => entitlements.id),
    riskTier: riskTier('risk_tier').notNull(),
    reviewerId: uuid('reviewer_id')
      .notNull()
      .references(() => identities.id),
    /** The reviewer the rules chose, before any delegation or escalation. */
    assignedReviewerId: uuid('assigned_reviewer_id')
      .notNull()
      .references(() => identities.id),
    status: reviewItemStatus('status').notNull().default('pending'),
    /** Who decided: an identity id, or `rule:deadline` when the campaign's deadline rule did. */
    decidedBy: text('decided_by'),
    decidedAt: ts('decided_at'),
    comment: text('comment'),
    /** A keep may set a new end date for the lease. */
    newExpiresAt: ts('new_expires_at'),
    /** Kept by the deadline rule without a decision, or otherwise marked for attention. */
    flagged: boolean('flagged').notNull().default(false),
    remindedAt: ts('reminded_at'),
    reminders: integer('reminders').notNull().default(0),
    escalatedAt: ts('escalated_at'),
    /** Provenance at opening: approvers, policy version, ticket, granted at, last use where the target tells. */
    provenance: jsonb('provenance').$type<Record<string, unknown>>().notNull().default({}),
    lastUsedAt: ts('last_used_at'),
    /** For a revoke: when the lease's removal was verified on the target. */
    removalVerifiedAt: ts('removal_verified_at'),
    createdAt: createdAt(),
  },
  (t) => [
    uniqueIndex('review_item_campaign_grant_uq').on(t.campaignId, t.grantId),
    index('review_item_reviewer_idx').on(t.reviewerId, t.status),
    index('review_item_campaign_status_idx').on(t.campaignId, t.status),
    index('review_item_grant_idx').on(t.grantId),
    // The holder of the access never reviews it, whoever assigned it.
    check('review_item_not_self', sql`${t.reviewerId} <> ${t.identityId} and ${t.assignedReviewerId} <> ${t.identityId}`),
    check('review_item_decided', sql`(${t.status} = 'pending') = (${t.decidedAt} is null)`),
  ],
);

// ---- break-glass (issue 13) ---------------------------------------------------------------------

/**
 * The first step of a break-glass: what it will do, and a short-lived confirmation (stored hashed,
 * single use). The confirm call creates the request and grant with source `break_glass`.
 */
export const breakGlassChallenges = pgTable(
  'break_glass_challenge',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    /** sha256 of the confirmation secret. */
    secretHash: text('secret_hash').notNull(),
    invokerId: uuid('invoker_id')
      .notNull()
      .references(() => identities.id),
    entitlementId: uuid('entitlement_id')
      .notNull()
      .references(() => entitlements.id),
    durationSeconds: integer('duration_seconds').notNull(),
    incidentRef: text('incident_ref').notNull(),
    justification: text('justification').notNull(),
    expiresAt: ts('expires_at').notNull(),
    confirmedAt: ts('confirmed_at'),
    requestId: uuid('request_id').references(() => accessRequests.id),
    createdAt: createdAt(),
  },
  (t) => [uniqueIndex('break_glass_challenge_secret_uq').on(t.secretHash), index('break_glass_challenge_invoker_idx').on(t.invokerId, t.createdAt)],
);

// ---- web pages (issue 13) -----------------------------------------------------------------------

/**
 * A browser session for the server-rendered pages: an API token exchanged once for an HttpOnly
 * cookie. Only the sha256 of the cookie's secret is stored; the session acts as the token's
 * principal and roles and ends with it (revoked or expired token → session refused).
 */
export const webSessions = pgTable(
  'web_session',
  {
    id: uuid('id').primaryKey().defaultRandom(),
    secretHash: text('secret_hash').notNull(),
    tokenId: uuid('token_id')
      .notNull()
      .references(() => apiTokens.id),
    createdAt: createdAt(),
    expiresAt: ts('expires_at').notNull(),
    lastSeenAt: ts('last_seen_at'),
    endedAt: ts('ended_at'),
  },
  (t) => [uniqueIndex('web_session_secret_uq').on(t.secretHash)],
);

export type ReviewCampaign = typeof reviewCampaigns.$inferSelect;
export type ReviewItem = typeof reviewItems.$inferSelect;
export type BreakGlassChallenge = typeof breakGlassChallenges.$inferSelect;
export type WebSession = typeof webSessions.$inferSelect;

export type Identity = typeof identities.$inferSelect;
export type System = typeof systems.$inferSelect;
export type Entitlement = typeof entitlements.$inferSelect;
export type AccessRequest = typeof accessRequests.$inferSelect;
export type Approval = typeof approvals.$inferSelect;
export type Grant = typeof grants.$inferSelect;
export type AuditEvent = typeof auditEvents.$inferSelect;
export type ApiToken = typeof apiTokens.$inferSelect;
export type ApiRole = (typeof apiRole.enumValues)[number];
export type RequestStatus = (typeof requestStatus.enumValues)[number];
export type RevokeReason = (typeof revokeReason.enumValues)[number];
export type SentinelFinding = typeof sentinelFindings.$inferSelect;
export type SentinelFindingKind = (typeof sentinelFindingKind.enumValues)[number];
export type ServiceDesk = typeof serviceDesks.$inferSelect;
export type TicketLink = typeof ticketLinks.$inferSelect;
