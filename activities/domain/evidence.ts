import { createHash, createPrivateKey, createPublicKey, randomBytes, sign, verify, type KeyObject } from 'node:crypto';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { asc, desc, eq, gt, or } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../db/client.js';
import { accessRequests, approvals, auditEvents, credentials, entitlements, grants, policyVersions, systems, type AuditEvent } from '../../db/schema.js';
import { canonicalJson, GENESIS_HASH, hashEvent } from './audit.js';
import { DEFAULT_POLICY } from './policy/evaluate.js';
import { policyVersionOfDocument } from './policy/load.js';

/*
 * Evidence bundles: one access request's whole story (request, policy, approvals, the lease,
 * its removal, credential facts and every audit event about it) as one JSON document that an
 * auditor verifies offline.
 *
 * Why the bundle can be trusted, in order:
 *  1. Every event carries all of its hashed fields, so anyone can recompute its hash with the
 *     product's own hashEvent (sha256 of prev_hash, "\n", canonical JSON of the fields).
 *  2. Where two included events are adjacent in seq, the later one's prev_hash must be the
 *     earlier one's hash.
 *  3. The audit chain is global (other requests' events interleave), so a hash alone proves
 *     nothing to someone holding only this file: an editor could recompute it. At export the
 *     API therefore re-verifies, from the database rows, the whole chain segment from the first
 *     included event to the current head (hashes, links, no missing seq), and records the head
 *     and every problem it found. A tampered row is never "laundered": it shows up as
 *     `verification.valid: false` with the seq named, and its stored hash stays in the bundle.
 *  4. The API signs the bundle (Ed25519, key generated once into the data dir or set by
 *     ACCESSLOOP_EVIDENCE_SIGNING_KEY). The public key and its fingerprint are embedded and
 *     served at GET /v1/evidence/public-key. The verifier checks the signature AND every hash.
 */

export const EVIDENCE_FORMAT = 'accessloop.evidence/v1';
export const EVIDENCE_KEY_FILE = 'evidence-signing.key';
/** How events are hashed; stated in each bundle so a verifier in another language can follow it. */
export const EVIDENCE_HASH_ALGORITHM = 'sha256(prev_hash + "\\n" + canonical_json({seq, idempotencyKey, at, actorType, actorId, action, requestId, grantId, identityId, reason, policyVersion, data}))';

// ---- the format ---------------------------------------------------------------------------

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
type Unsigned = Omit<EvidenceBundle, 'signer' | 'signature'>;

// ---- the signing key ----------------------------------------------------------------------

export interface EvidenceSigner {
  algorithm: 'Ed25519';
  publicKeyPem: string;
  fingerprint: string;
  /** base64 signature of the message */
  sign(message: Buffer): string;
}

// PKCS#8 wrapping of a raw 32-byte Ed25519 seed (RFC 8410).
const ED25519_PKCS8_PREFIX = Buffer.from('302e020100300506032b657004220420', 'hex');

export function evidenceSignerFromSeed(seed: Buffer): EvidenceSigner {
  if (seed.length !== 32) throw new Error('an Ed25519 evidence signing key is 32 bytes (64 hex characters)');
  const privateKey = createPrivateKey({ key: Buffer.concat([ED25519_PKCS8_PREFIX, seed]), format: 'der', type: 'pkcs8' });
  const publicKeyPem = createPublicKey(privateKey).export({ format: 'pem', type: 'spki' }).toString();
  return { algorithm: 'Ed25519', publicKeyPem, fingerprint: keyFingerprint(publicKeyPem), sign: (m) => sign(null, m, privateKey).toString('base64') };
}

/** `SHA256:<base64>` of the SubjectPublicKeyInfo, the way ssh-keygen prints fingerprints. */
export function keyFingerprint(publicKey: string | KeyObject): string {
  const key = typeof publicKey === 'string' ? createPublicKey(publicKey) : publicKey;
  const der = key.export({ format: 'der', type: 'spki' });
  return `SHA256:${createHash('sha256').update(der).digest('base64').replace(/=+$/, '')}`;
}

/** The configured key, or one generated once into the data dir (like the action-link and credential keys). */
export async function loadEvidenceSigner(opts: { key?: string | undefined; dataDir: string }): Promise<EvidenceSigner> {
  if (opts.key) return evidenceSignerFromSeed(Buffer.from(opts.key, 'hex'));
  const file = path.join(opts.dataDir, EVIDENCE_KEY_FILE);
  let hex = (await readFile(file, 'utf8').catch(() => '')).trim();
  if (!hex) {
    await mkdir(opts.dataDir, { recursive: true });
    // Another process may win the race: whatever is on disk afterwards is the key.
    await writeFile(file, randomBytes(32).toString('hex'), { mode: 0o600, flag: 'wx' }).catch(() => undefined);
    hex = (await readFile(file, 'utf8')).trim();
  }
  if (!/^[0-9a-fA-F]{64}$/.test(hex)) throw new Error(`${file} does not hold an Ed25519 seed (64 hex characters)`);
  return evidenceSignerFromSeed(Buffer.from(hex, 'hex'));
}

const signedBytes = (b: Unsigned | Omit<EvidenceBundle, 'signature'>) => Buffer.from(canonicalJson(b), 'utf8');

// ---- checks shared by the export and the offline verifier ----------------------------------

const DECISION_ACTIONS = new Set(['request.approved', 'request.rejected', 'approval.recorded', 'extension.approval_recorded', 'extension.rejected', 'review.approval_recorded', 'review.rejected']);

function toHashable(e: EvidenceEvent): Omit<AuditEvent, 'hash'> {
  return { ...e, at: new Date(e.at) };
}

/** Each event's hash recomputed from its fields; the link between events adjacent in seq. */
export function checkEvents(events: EvidenceEvent[]): { problems: EvidenceProblem[]; linksChecked: number } {
  const problems: EvidenceProblem[] = [];
  let linksChecked = 0;
  let prev: EvidenceEvent | undefined;
  for (const e of events) {
    if (hashEvent(toHashable(e)) !== e.hash) {
      problems.push({ code: 'hash_mismatch', seq: e.seq, message: `event seq ${e.seq} (${e.action}): its fields do not hash to its recorded hash; the event was changed` });
    }
    if (prev && e.seq <= prev.seq) problems.push({ code: 'order', seq: e.seq, message: `event seq ${e.seq} follows seq ${prev.seq}: events must be in ascending seq order` });
    if (prev && e.seq === prev.seq + 1) {
      linksChecked++;
      if (e.prevHash !== prev.hash) problems.push({ code: 'link_broken', seq: e.seq, message: `event seq ${e.seq}: prev_hash does not match the hash of seq ${prev.seq}` });
    }
    prev = e;
  }
  return { problems, linksChecked };
}

type Facts = Pick<EvidenceBundle, 'request' | 'policy' | 'approvals' | 'grant' | 'grantVerification' | 'revocation' | 'removalVerification' | 'events'>;

/**
 * The facts drawn from mutable tables (approvals, grant) must agree with the hash-chained events
 * that recorded them; and every event must concern this request or its grant.
 */
export function checkFacts(b: Facts): EvidenceProblem[] {
  const problems: EvidenceProblem[] = [];
  const bySeq = new Map(b.events.map((e) => [e.seq, e]));
  const grantId = b.grant?.id;
  for (const e of b.events) {
    if (e.requestId !== b.request.id && !(grantId && e.grantId === grantId)) {
      problems.push({ code: 'event_unrelated', seq: e.seq, message: `event seq ${e.seq} concerns neither request ${b.request.id} nor its grant` });
    }
  }
  /** The event a fact cites, when it is in the bundle and of the right kind. */
  const backedBy = (what: string, seq: number | null, actions: (a: string) => boolean): EvidenceEvent | undefined => {
    const e = seq === null ? undefined : bySeq.get(seq);
    if (!e) {
      problems.push({ code: 'fact_unsupported', ...(seq === null ? {} : { seq }), message: `${what}: no hash-chained event${seq === null ? '' : ` seq ${seq}`} in the bundle records it` });
      return undefined;
    }
    if (!actions(e.action)) {
      problems.push({ code: 'fact_mismatch', seq: e.seq, message: `${what}: event seq ${e.seq} is ${e.action}, not the event that records it` });
      return undefined;
    }
    return e;
  };
  const mismatch = (what: string, field: string, e: EvidenceEvent) =>
    problems.push({ code: 'fact_mismatch', seq: e.seq, message: `${what}: ${field} differs from the hash-chained event seq ${e.seq} (${e.action})` });

  for (const a of b.approvals) {
    if (!a.decision) continue;
    const what = `approval of stage ${a.stage} by ${a.approverId}`;
    const e = backedBy(what, a.eventSeq, (x) => DECISION_ACTIONS.has(x));
    if (!e) continue;
    if (e.actorId !== a.approverId) mismatch(what, 'the approver', e);
    if ((e.data as { stage?: unknown }).stage !== a.stage) mismatch(what, 'the stage', e);
    if ((e.reason ?? null) !== (a.comment ?? null)) mismatch(what, 'the comment', e);
    if ((a.decision === 'reject') !== e.action.endsWith('.rejected')) mismatch(what, 'the decision', e);
  }
  for (const r of b.policy.rulesFired) {
    const e = backedBy(`policy rule ${r.rule}`, r.seq, () => true);
    if (e && !((e.data as { rules?: unknown }).rules as unknown[] | undefined)?.includes(r.rule)) mismatch(`policy rule ${r.rule}`, 'the rule', e);
  }
  for (const s of b.policy.stagesOpened) {
    const e = backedBy(`approval stage ${s.stage}`, s.seq, (x) => x.endsWith('.stage_opened'));
    if (e && (e.data as { stage?: unknown }).stage !== s.stage) mismatch(`approval stage ${s.stage}`, 'the stage', e);
  }
  if (b.grantVerification) {
    const e = backedBy('grant verification', b.grantVerification.eventSeq, (x) => x === 'grant.verified');
    if (e && e.grantId !== grantId) mismatch('grant verification', 'the grant', e);
  }
  if (b.revocation) {
    const e = backedBy('revocation request', b.revocation.eventSeq, (x) => x === 'grant.revoke_requested');
    if (e && (e.data as { reason?: unknown }).reason !== b.revocation.reason) mismatch('revocation request', 'the reason', e);
    if (e && e.actorId !== b.revocation.requestedBy) mismatch('revocation request', 'who requested it', e);
  }
  if (b.removalVerification) {
    const rv = b.removalVerification;
    backedBy('removal verification', rv.eventSeq, (x) => x === (rv.outcome === 'removal_verified' ? 'grant.removal_verified' : 'grant.ended_membership_retained'));
  }
  return problems;
}

// ---- export -------------------------------------------------------------------------------

type Reader = Pick<Db, 'select'>;
const SEGMENT_PAGE = 2000;
const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

/**
 * Re-verifies the chain from `fromSeq` to the head, from the database rows: every hash
 * recomputed, every link, no missing seq. Events of other requests are named by seq only.
 */
async function verifySegment(tx: Reader, fromSeq: number, included: Set<number>) {
  const problems: EvidenceProblem[] = [];
  let prev: { seq: number; hash: string } | undefined = { seq: 0, hash: GENESIS_HASH };
  if (fromSeq > 1) {
    [prev] = await tx.select({ seq: auditEvents.seq, hash: auditEvents.hash }).from(auditEvents).where(eq(auditEvents.seq, fromSeq - 1));
    if (!prev) problems.push({ code: 'seq_gap', seq: fromSeq - 1, message: `seq ${fromSeq - 1}, the predecessor of this bundle's first event, is missing from the audit chain` });
  }
  let cursor = fromSeq - 1;
  let checked = 0;
  let linksChecked = 0;
  for (;;) {
    const rows = await tx.select().from(auditEvents).where(gt(auditEvents.seq, cursor)).orderBy(asc(auditEvents.seq)).limit(SEGMENT_PAGE);
    for (const r of rows) {
      const whose = included.has(r.seq) ? `event seq ${r.seq} (${r.action})` : `seq ${r.seq} (an event outside this bundle)`;
      if (prev && r.seq !== prev.seq + 1) {
        problems.push({ code: 'seq_gap', seq: r.seq, message: `seq ${prev.seq + 1}${r.seq - 1 > prev.seq + 1 ? `–${r.seq - 1}` : ''} missing from the audit chain before seq ${r.seq}` });
      } else if (prev) {
        linksChecked++;
        if (r.prevHash !== prev.hash) problems.push({ code: 'link_broken', seq: r.seq, message: `${whose}: prev_hash does not match the stored hash of seq ${prev.seq}` });
      }
      if (hashEvent(r) !== r.hash) problems.push({ code: 'hash_mismatch', seq: r.seq, message: `${whose}: the stored row does not hash to its recorded hash; it was changed after it was written` });
      prev = r;
      checked++;
    }
    if (rows.length < SEGMENT_PAGE) break;
    cursor = rows[rows.length - 1]!.seq;
  }
  return { problems, checked, linksChecked, head: prev ? { seq: prev.seq, hash: prev.hash } : { seq: 0, hash: GENESIS_HASH } };
}

async function policyRecord(tx: Reader, version: string | null) {
  if (!version) return { source: null, publishedAt: null, publishedBy: null, document: null };
  const [row] = await tx.select().from(policyVersions).where(eq(policyVersions.version, version)).orderBy(desc(policyVersions.id)).limit(1);
  if (row) return { source: row.source, publishedAt: iso(row.createdAt), publishedBy: row.createdBy, document: row.document };
  if (version === policyVersionOfDocument(DEFAULT_POLICY)) return { source: 'built-in default', publishedAt: null, publishedBy: null, document: DEFAULT_POLICY as unknown as Record<string, unknown> };
  return { source: null, publishedAt: null, publishedBy: null, document: null };
}

const toEvent = (r: AuditEvent): EvidenceEvent => ({
  seq: r.seq,
  idempotencyKey: r.idempotencyKey,
  at: r.at.toISOString(),
  actorType: r.actorType,
  actorId: r.actorId,
  action: r.action,
  requestId: r.requestId,
  grantId: r.grantId,
  identityId: r.identityId,
  reason: r.reason,
  policyVersion: r.policyVersion,
  data: r.data,
  prevHash: r.prevHash,
  hash: r.hash,
});

/** Everything about one request, read in one consistent snapshot, verified, not yet signed. */
async function collect(tx: Reader, requestId: string, exportedBy: string, now: Date): Promise<Unsigned | undefined> {
  const [req] = await tx.select().from(accessRequests).where(eq(accessRequests.id, requestId));
  if (!req) return undefined;
  const [[ent], approvalRows, [grant]] = await Promise.all([
    tx
      .select({ name: entitlements.name, resource: entitlements.resource, riskTier: entitlements.riskTier, systemId: entitlements.systemId, systemKind: systems.kind })
      .from(entitlements)
      .innerJoin(systems, eq(systems.id, entitlements.systemId))
      .where(eq(entitlements.id, req.entitlementId)),
    tx.select().from(approvals).where(eq(approvals.requestId, req.id)).orderBy(asc(approvals.stage), asc(approvals.createdAt), asc(approvals.approverId)),
    tx.select().from(grants).where(eq(grants.requestId, req.id)),
  ]);
  const [eventRows, credentialRows, policy] = await Promise.all([
    tx
      .select()
      .from(auditEvents)
      .where(grant ? or(eq(auditEvents.requestId, req.id), eq(auditEvents.grantId, grant.id)) : eq(auditEvents.requestId, req.id))
      .orderBy(asc(auditEvents.seq)),
    grant ? tx.select().from(credentials).where(eq(credentials.grantId, grant.id)).orderBy(asc(credentials.issuedAt)) : Promise.resolve([]),
    policyRecord(tx, req.policyVersion),
  ]);
  const events = eventRows.map(toEvent);
  const last = (pred: (e: EvidenceEvent) => boolean) => events.filter(pred).at(-1);
  const dataOf = (e: EvidenceEvent | undefined) => (e?.data ?? {}) as Record<string, unknown>;

  const verified = last((e) => e.action === 'grant.verified');
  const revokeRequested = last((e) => e.action === 'grant.revoke_requested');
  const removed = last((e) => e.action === 'grant.removal_verified' || e.action === 'grant.ended_membership_retained');

  const facts: Facts = {
    request: {
      id: req.id,
      status: req.status,
      workflowId: req.workflowId,
      requesterId: req.requesterId,
      subjectId: req.subjectId,
      entitlementId: req.entitlementId,
      entitlement: ent ?? null,
      justification: req.justification,
      durationSeconds: req.requestedDurationSeconds,
      startAt: iso(req.startAt),
      ticketRef: req.ticketRef,
      policyVersion: req.policyVersion,
      failureReason: req.failureReason,
      createdAt: req.createdAt.toISOString(),
      decidedAt: iso(req.decidedAt),
    },
    policy: {
      version: req.policyVersion,
      ...policy,
      rulesFired: events.flatMap((e) => {
        const rules = dataOf(e).rules;
        return Array.isArray(rules) ? rules.filter((r): r is string => typeof r === 'string').map((rule) => ({ rule, seq: e.seq })) : [];
      }),
      stagesOpened: events
        .filter((e) => e.action.endsWith('.stage_opened'))
        .map((e) => {
          const d = dataOf(e);
          return {
            seq: e.seq,
            stage: Number(d.stage),
            stageName: String(d.stageName ?? ''),
            approverIds: Array.isArray(d.approverIds) ? d.approverIds.map(String) : [],
            policyVersion: e.policyVersion,
          };
        }),
    },
    approvals: approvalRows.map((a) => {
      const decision = a.status === 'approved' ? 'approve' : a.status === 'rejected' ? 'reject' : null;
      const event = decision ? last((e) => DECISION_ACTIONS.has(e.action) && e.actorId === a.approverId && dataOf(e).stage === a.stage) : undefined;
      return {
        stage: a.stage,
        stageName: a.stageName,
        approverId: a.approverId,
        onBehalfOf: a.onBehalfOf,
        decision,
        status: a.status,
        comment: a.comment,
        decidedAt: iso(a.decidedAt),
        dueAt: a.dueAt.toISOString(),
        policyVersion: a.policyVersion,
        eventSeq: event?.seq ?? null,
      } as const;
    }),
    grant: grant
      ? {
          id: grant.id,
          status: grant.status,
          source: grant.source,
          identityId: grant.identityId,
          entitlementId: grant.entitlementId,
          targetChanged: grant.targetChanged,
          grantedAt: iso(grant.grantedAt),
          expiresAt: iso(grant.expiresAt),
        }
      : null,
    grantVerification: verified ? { verifiedAt: iso(grant?.grantVerifiedAt), expiresAt: (dataOf(verified).expiresAt as string | undefined) ?? null, eventSeq: verified.seq } : null,
    revocation: revokeRequested
      ? {
          requestedAt: iso(grant?.revokeRequestedAt),
          reason: grant?.revokeReason ?? null,
          requestedBy: grant?.revokedBy ?? null,
          // The event's reason is the operator's comment when one was given, else the reason code.
          comment: revokeRequested.reason !== dataOf(revokeRequested).reason ? revokeRequested.reason : null,
          eventSeq: revokeRequested.seq,
        }
      : null,
    removalVerification: removed
      ? {
          outcome: removed.action === 'grant.removal_verified' ? 'removal_verified' : 'membership_retained',
          revokedAt: iso(grant?.revokedAt),
          removalVerifiedAt: iso(grant?.removalVerifiedAt),
          timeToRevokeMs: typeof dataOf(removed).timeToRevokeMs === 'number' ? (dataOf(removed).timeToRevokeMs as number) : null,
          unverifiedAlerts: events.filter((e) => e.action === 'grant.revocation_unverified').map((e) => e.seq),
          eventSeq: removed.seq,
        }
      : null,
    events,
  };

  const fromSeq = events[0]?.seq;
  const segment = fromSeq !== undefined ? await verifySegment(tx, fromSeq, new Set(events.map((e) => e.seq))) : undefined;
  const head = segment?.head ?? (await chainHead(tx));
  const problems = [...(segment?.problems ?? []), ...checkFacts(facts)];
  return {
    format: EVIDENCE_FORMAT,
    exportedAt: now.toISOString(),
    exportedBy,
    ...facts,
    credentials: credentialRows.map((c) => ({
      id: c.id,
      kind: c.kind,
      targetRef: c.targetRef,
      status: c.status,
      issuedAt: c.issuedAt.toISOString(),
      notAfter: c.notAfter.toISOString(),
      deliveredAt: iso(c.deliveredAt),
      deliveredTo: c.deliveredTo,
      endedAt: iso(c.endedAt),
    })),
    chain: {
      hashAlgorithm: EVIDENCE_HASH_ALGORITHM,
      genesisHash: GENESIS_HASH,
      head,
      eventSeqs: events.map((e) => e.seq),
      segment: { fromSeq: fromSeq ?? head.seq, toSeq: head.seq, eventsChecked: segment?.checked ?? 0 },
    },
    verification: {
      valid: problems.length === 0,
      checkedAt: new Date().toISOString(),
      eventsChecked: segment?.checked ?? 0,
      linksChecked: segment?.linksChecked ?? 0,
      problems,
    },
  };
}

async function chainHead(tx: Reader) {
  const [row] = await tx.select({ seq: auditEvents.seq, hash: auditEvents.hash }).from(auditEvents).orderBy(desc(auditEvents.seq)).limit(1);
  return row ?? { seq: 0, hash: GENESIS_HASH };
}

export function signBundle(unsigned: Unsigned, signer: EvidenceSigner): EvidenceBundle {
  const withSigner = { ...unsigned, signer: { algorithm: signer.algorithm, publicKey: signer.publicKeyPem, fingerprint: signer.fingerprint } };
  return { ...withSigner, signature: signer.sign(signedBytes(withSigner)) };
}

/**
 * The request's evidence bundle, or undefined for an unknown request. Read in one
 * repeatable-read snapshot so the events, the facts and the head agree with each other.
 */
export async function exportEvidence(db: Db, signer: EvidenceSigner, requestId: string, opts: { exportedBy: string; now?: Date }): Promise<EvidenceBundle | undefined> {
  const unsigned = await db.transaction((tx) => collect(tx, requestId, opts.exportedBy, opts.now ?? new Date()), { isolationLevel: 'repeatable read', accessMode: 'read only' });
  return unsigned ? signBundle(unsigned, signer) : undefined;
}

// ---- offline verification -----------------------------------------------------------------

export interface EvidenceVerification {
  valid: boolean;
  problems: EvidenceProblem[];
  requestId?: string;
  fingerprint?: string;
  events: number;
  linksChecked: number;
  head?: { seq: number; hash: string };
}

function checkSignature(raw: Record<string, unknown>, pinnedKey: string | undefined, problems: EvidenceProblem[]): string | undefined {
  const signer = raw.signer as { publicKey?: unknown; fingerprint?: unknown } | undefined;
  if (typeof signer?.publicKey !== 'string' || typeof raw.signature !== 'string') return undefined;
  let key: KeyObject;
  try {
    key = createPublicKey(signer.publicKey);
    if (key.asymmetricKeyType !== 'ed25519') throw new Error('not an Ed25519 key');
  } catch (e) {
    problems.push({ code: 'signer_invalid', message: `signer.publicKey is not an Ed25519 public key (${(e as Error).message})` });
    return undefined;
  }
  const fingerprint = keyFingerprint(key);
  if (signer.fingerprint !== fingerprint) problems.push({ code: 'fingerprint_mismatch', message: `signer.fingerprint ${String(signer.fingerprint)} is not the fingerprint of the embedded key (${fingerprint})` });
  if (pinnedKey !== undefined) {
    let pinned: string | undefined;
    try {
      pinned = keyFingerprint(pinnedKey);
    } catch (e) {
      problems.push({ code: 'pinned_key_invalid', message: `the pinned public key cannot be read (${(e as Error).message})` });
    }
    if (pinned && pinned !== fingerprint) problems.push({ code: 'key_not_pinned', message: `the bundle is signed by ${fingerprint}, not by the pinned key ${pinned}` });
  }
  const { signature, ...rest } = raw;
  let ok = false;
  try {
    ok = verify(null, Buffer.from(canonicalJson(rest), 'utf8'), key, Buffer.from(signature as string, 'base64'));
  } catch {
    ok = false;
  }
  if (!ok) problems.push({ code: 'signature_invalid', message: 'the signature does not match the content: the bundle was changed after it was exported' });
  return fingerprint;
}

/**
 * Verifies an exported bundle with nothing but the bundle (and optionally a pinned public key):
 * schema, signature, every event hash, adjacency links, the event list against the signed
 * seqs, facts against events, and the API's own findings at export time.
 */
export function verifyEvidenceBundle(input: unknown, opts: { publicKey?: string } = {}): EvidenceVerification {
  const problems: EvidenceProblem[] = [];
  if (input === null || typeof input !== 'object' || Array.isArray(input)) {
    return { valid: false, problems: [{ code: 'schema', message: 'the bundle is not a JSON object' }], events: 0, linksChecked: 0 };
  }
  const raw = input as Record<string, unknown>;
  const fingerprint = checkSignature(raw, opts.publicKey, problems);
  const parsed = evidenceBundleSchema.safeParse(raw);
  if (!parsed.success) {
    for (const i of parsed.error.issues) problems.push({ code: 'schema', message: `${i.path.join('.') || '(bundle)'}: ${i.message}` });
    return { valid: false, problems, ...(fingerprint ? { fingerprint } : {}), events: 0, linksChecked: 0 };
  }
  const b = parsed.data;
  const ev = checkEvents(b.events);
  problems.push(...ev.problems);

  const present = new Set(b.events.map((e) => e.seq));
  const listed = new Set(b.chain.eventSeqs);
  for (const seq of b.chain.eventSeqs) if (!present.has(seq)) problems.push({ code: 'event_missing', seq, message: `event seq ${seq} is listed in chain.eventSeqs but missing from events` });
  for (const e of b.events) if (!listed.has(e.seq)) problems.push({ code: 'event_added', seq: e.seq, message: `event seq ${e.seq} is not listed in chain.eventSeqs` });
  const lastSeq = b.events.at(-1)?.seq ?? 0;
  if (b.chain.head.seq < lastSeq) problems.push({ code: 'head_behind', message: `chain head seq ${b.chain.head.seq} is before the last event (seq ${lastSeq})` });
  if (b.events[0] && b.chain.segment.fromSeq > b.events[0].seq) problems.push({ code: 'segment', message: `the verified segment starts at seq ${b.chain.segment.fromSeq}, after the first event (seq ${b.events[0].seq})` });

  problems.push(...checkFacts(b));
  if (!b.verification.valid) {
    for (const p of b.verification.problems) problems.push({ ...p, code: `export:${p.code}`, message: `at export the API found: ${p.message}` });
    if (b.verification.problems.length === 0) problems.push({ code: 'export:invalid', message: 'the API marked this bundle invalid at export' });
  }
  return {
    valid: problems.length === 0,
    problems,
    requestId: b.request.id,
    ...(fingerprint ? { fingerprint } : {}),
    events: b.events.length,
    linksChecked: ev.linksChecked,
    head: b.chain.head,
  };
}

/** One line per problem, for people. */
export function formatEvidenceProblems(problems: EvidenceProblem[]): string {
  return problems.map((p) => `  - ${p.seq !== undefined ? `[seq ${p.seq}] ` : ''}${p.code}: ${p.message}`).join('\n');
}
