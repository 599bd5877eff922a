import { z } from 'zod';

// ---- the format ---------------------------------------------------------------------------

export const EVIDENCE_FORMAT = 'accessloop.evidence/v2';
/** Bundles exported before per-stream chains: still verified (verify.ts), no longer exported. */
export const EVIDENCE_FORMAT_V1 = 'accessloop.evidence/v1';
export const EVIDENCE_KEY_FILE = 'evidence-signing.key';
/** How events are hashed; stated in each bundle so a verifier in another language can follow it. */
export const EVIDENCE_HASH_ALGORITHM =
  'hashVersion 2: sha256(prev_hash + "\\n" + canonical_json({v: 2, stream, streamSeq, idempotencyKey, at, actorType, actorId, action, requestId, grantId, identityId, reason, policyVersion, data})); ' +
  'hashVersion 1 (before streams): the same with {seq, …} in place of {v, stream, streamSeq, …}; ' +
  'checkpoint leaves: RFC 9162 leaf hash of canonical_json({stream, streamSeq, hash}), nodes RFC 9162';

const ts = z.iso.datetime();
const tsN = ts.nullable();
const strN = z.string().nullable();

/** An audit_event row with every field that goes into its hash (as exported before streams). */
export const evidenceEventSchemaV1 = z.strictObject({
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

/** An audit_event row with every field that goes into its hash, and its place in its stream. */
export const evidenceEventSchema = evidenceEventSchemaV1.extend({
  stream: z.string().min(1),
  streamSeq: z.number().int().positive(),
  hashVersion: z.union([z.literal(1), z.literal(2)]),
});

const hex = z.string().regex(/^[0-9a-f]{64}$/, 'a sha256 in hex');

/** A signed checkpoint: the Merkle root over every stream's head at one moment (activities/domain/checkpoints.ts). */
export const checkpointSchema = z.strictObject({
  format: z.literal('accessloop.checkpoint/v1'),
  id: z.number().int().positive(),
  createdAt: z.iso.datetime(),
  treeSize: z.number().int().positive(),
  rootHash: hex,
  signature: z.string(),
  signer: z.strictObject({ algorithm: z.literal('Ed25519'), publicKey: z.string(), fingerprint: z.string() }),
});

/** One stream of the bundle and the proof that ties its head to the checkpoint. */
export const streamProofSchema = z.strictObject({
  stream: z.string().min(1),
  /** Every event of the stream is in the bundle (from streamSeq 1); false for the pre-stream `legacy` chain, of which only this request's events are. */
  complete: z.boolean(),
  /** The stream's last event when exported (null: no event of it is left). */
  head: z.strictObject({ streamSeq: z.number().int().positive(), hash: hex }).nullable(),
  /** The leaf the checkpoint holds for this stream (its head then), and the audit path to the root. */
  proof: z
    .strictObject({
      checkpointId: z.number().int().positive(),
      head: z.strictObject({ streamSeq: z.number().int().positive(), hash: hex }),
      leafIndex: z.number().int().nonnegative(),
      treeSize: z.number().int().positive(),
      auditPath: z.array(hex).max(64),
    })
    .nullable(),
});

const problemSchema = z.strictObject({ code: z.string(), seq: z.number().int().optional(), stream: z.string().optional(), message: z.string() });

export const evidenceBundleSchemaV1 = z.strictObject({
  format: z.literal(EVIDENCE_FORMAT_V1),
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
  events: z.array(evidenceEventSchemaV1),
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


/**
 * The bundle: the request's facts, its streams' events, each stream's proof against one signed
 * checkpoint, and what the API found when it re-verified them from the database.
 */
export const evidenceBundleSchema = evidenceBundleSchemaV1.omit({ format: true, events: true, chain: true }).extend({
  format: z.literal(EVIDENCE_FORMAT),
  events: z.array(evidenceEventSchema),
  chain: z.strictObject({
    hashAlgorithm: z.string(),
    genesisHash: z.string(),
    streams: z.array(streamProofSchema),
    checkpoint: checkpointSchema.nullable(),
    /** The pre-stream chain, re-verified by the API from the first included legacy event to its head (absent when no event is legacy). */
    legacySegment: z.strictObject({ fromStreamSeq: z.number().int(), toStreamSeq: z.number().int(), eventsChecked: z.number().int() }).optional(),
  }),
});

export type EvidenceBundle = z.infer<typeof evidenceBundleSchema>;
export type EvidenceBundleV1 = z.infer<typeof evidenceBundleSchemaV1>;
export type EvidenceEventV1 = z.infer<typeof evidenceEventSchemaV1>;
export type StreamProofView = z.infer<typeof streamProofSchema>;
export type EvidenceEvent = z.infer<typeof evidenceEventSchema>;
export type EvidenceProblem = z.infer<typeof problemSchema>;
/** A bundle before the API signs it. */
export type Unsigned = Omit<EvidenceBundle, 'signer' | 'signature'>;
