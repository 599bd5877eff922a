import { z } from 'zod';

// ---- the format ---------------------------------------------------------------------------

export const EVIDENCE_FORMAT = 'accessloop.evidence/v1';
export const EVIDENCE_KEY_FILE = 'evidence-signing.key';
/** How events are hashed; stated in each bundle so a verifier in another language can follow it. */
export const EVIDENCE_HASH_ALGORITHM = 'sha256(prev_hash + "\\n" + canonical_json({seq, idempotencyKey, at, actorType, actorId, action, requestId, grantId, identityId, reason, policyVersion, data}))';

const ts = z.iso.datetime();
const tsN = ts.nullable();
const strN = z.string().nullable();

/** An audit_event row with every field that goes into its hash. */
export const evidenceEventSchema = z.strictObject({
  seq: z.number().int().positive(),
  idempotencyKey: z.string(),
  at: ts,
  actorType: z.string(),
  actorId: z.string(),
  action: z.string(),
  requestId: strN,
  grantId: strN,
  identityId: strN,
  reason: strN,
  policyVersion: strN,
  data: z.record(z.string(), z.unknown()),
  prevHash: z.string(),
  hash: z.string(),
});

const problemSchema = z.strictObject({ code: z.string(), seq: z.number().int().optional(), message: z.string() });

export const evidenceBundleSchema = z.strictObject({
  format: z.literal(EVIDENCE_FORMAT),
  exportedAt: ts,
  /** The exporting principal (an identity id or client:<name>; never a name). */
  exportedBy: z.string(),
  request: z.strictObject({
    id: z.uuid(),
    status: z.string(),
    workflowId: z.string(),
    requesterId: z.string(),
    subjectId: z.string(),
    entitlementId: z.string(),
    entitlement: z.strictObject({ name: z.string(), resource: z.string(), riskTier: z.string(), systemId: z.string(), systemKind: z.string() }).nullable(),
    justification: z.string(),
    durationSeconds: z.number().int(),
    startAt: tsN,
    ticketRef: strN,
    policyVersion: strN,
    failureReason: strN,
    createdAt: ts,
    decidedAt: tsN,
  }),
  policy: z.strictObject({
    version: strN,
    /** `built-in default`, or where the published document came from. */
    source: strN,
    publishedAt: tsN,
    publishedBy: strN,
    document: z.record(z.string(), z.unknown()).nullable(),
    /** Rules recorded in the hash chain as having fired (auto-approval, denial), with the event. */
    rulesFired: z.array(z.strictObject({ rule: z.string(), seq: z.number().int() })),
    /** The routing the policy produced: each approval stage opened, from the hash chain. */
    stagesOpened: z.array(z.strictObject({ seq: z.number().int(), stage: z.number().int(), stageName: z.string(), approverIds: z.array(z.string()), policyVersion: strN })),
  }),
  approvals: z.array(
    z.strictObject({
      stage: z.number().int(),
      stageName: z.string(),
      approverId: z.string(),
      onBehalfOf: strN,
      /** approve / reject; null when the task closed without this approver's decision. */
      decision: z.enum(['approve', 'reject']).nullable(),
      status: z.string(),
      comment: strN,
      decidedAt: tsN,
      dueAt: ts,
      policyVersion: z.string(),
      /** The hash-chained event recording this decision. */
      eventSeq: z.number().int().nullable(),
    }),
  ),
  grant: z
    .strictObject({
      id: z.string(),
      status: z.string(),
      source: z.string(),
      identityId: z.string(),
      entitlementId: z.string(),
      targetChanged: z.boolean().nullable(),
      grantedAt: tsN,
      expiresAt: tsN,
    })
    .nullable(),
  grantVerification: z.strictObject({ verifiedAt: tsN, expiresAt: strN, eventSeq: z.number().int() }).nullable(),
  revocation: z.strictObject({ requestedAt: tsN, reason: strN, requestedBy: strN, comment: strN, eventSeq: z.number().int() }).nullable(),
  removalVerification: z
    .strictObject({
      outcome: z.enum(['removal_verified', 'membership_retained']),
      revokedAt: tsN,
      removalVerifiedAt: tsN,
      timeToRevokeMs: z.number().nullable(),
      /** `grant.revocation_unverified` alerts raised on the way (seqs). */
      unverifiedAlerts: z.array(z.number().int()),
      eventSeq: z.number().int(),
    })
    .nullable(),
  /** Facts about credentials issued for the lease; the material is never exported. */
  credentials: z.array(
    z.strictObject({
      id: z.string(),
      kind: z.string(),
      targetRef: z.string(),
      status: z.string(),
      issuedAt: ts,
      notAfter: ts,
      deliveredAt: tsN,
      deliveredTo: strN,
      endedAt: tsN,
    }),
  ),
  events: z.array(evidenceEventSchema),
  chain: z.strictObject({
    hashAlgorithm: z.string(),
    genesisHash: z.string(),
    /** The chain's last event when the bundle was exported. */
    head: z.strictObject({ seq: z.number().int().nonnegative(), hash: z.string() }),
    eventSeqs: z.array(z.number().int()),
    /** The range the API re-verified from the database at export (first included event → head). */
    segment: z.strictObject({ fromSeq: z.number().int(), toSeq: z.number().int(), eventsChecked: z.number().int() }),
  }),
  verification: z.strictObject({
    valid: z.boolean(),
    checkedAt: ts,
    eventsChecked: z.number().int(),
    linksChecked: z.number().int(),
    problems: z.array(problemSchema),
  }),
  signer: z.strictObject({ algorithm: z.literal('Ed25519'), publicKey: z.string(), fingerprint: z.string() }),
  /** Ed25519 over canonical JSON of every other field, base64. */
  signature: z.string(),
});

export type EvidenceBundle = z.infer<typeof evidenceBundleSchema>;
export type EvidenceEvent = z.infer<typeof evidenceEventSchema>;
export type EvidenceProblem = z.infer<typeof problemSchema>;
/** A bundle before the API signs it. */
export type Unsigned = Omit<EvidenceBundle, 'signer' | 'signature'>;
