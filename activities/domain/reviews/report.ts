import { and, asc, eq, or, sql } from 'drizzle-orm';
import { z } from 'zod';
import type { Db } from '../../../db/client.js';
import { auditEvents, entitlements, identities, reviewCampaigns, reviewItems, systems, type AuditEvent } from '../../../db/schema.js';
import { canonicalJson, LEGACY_STREAM } from '../audit.js';
import { checkEvents, checkStreams } from '../evidence/checks.js';
import { checkpointCovering, proveStreamsOf } from '../evidence/export.js';
import { checkpointSchema, evidenceEventSchema, evidenceEventSchemaV1, streamProofSchema, type EvidenceEvent, type EvidenceProblem } from '../evidence/format.js';
import type { EvidenceSigner } from '../evidence/signing.js';

/**
 * The signed report of a review campaign: the campaign, every item with its decision and
 * provenance, and the hash-chained events that recorded them. Signed with the evidence key in
 * the evidence format's way (canonical JSON without `signature`, Ed25519), so `accessloop
 * evidence verify` checks it offline like an evidence bundle.
 */
export const REVIEW_REPORT_FORMAT = 'accessloop.review-report/v2' as const;
/** Reports signed before per-stream chains: still verified, no longer written. */
export const REVIEW_REPORT_FORMAT_V1 = 'accessloop.review-report/v1' as const;
const campaignStream = (campaignId: string) => `campaign:${campaignId}`;

const ts = z.iso.datetime();
const tsN = ts.nullable();
const strN = z.string().nullable();

const reportItemSchema = z.strictObject({
  id: z.uuid(),
  grantId: z.uuid(),
  identityId: z.uuid(),
  entitlementId: z.uuid(),
  riskTier: z.string(),
  reviewerId: z.uuid(),
  assignedReviewerId: z.uuid(),
  status: z.enum(['pending', 'kept', 'revoked', 'skipped']),
  decidedBy: strN,
  decidedAt: tsN,
  comment: strN,
  newExpiresAt: tsN,
  flagged: z.boolean(),
  escalatedAt: tsN,
  lastUsedAt: tsN,
  removalVerifiedAt: tsN,
  provenance: z.record(z.string(), z.unknown()),
  /** The event that recorded the decision (null while pending). */
  decisionEventSeq: z.number().int().nullable(),
});

export const reviewReportSchemaV1 = z.strictObject({
  format: z.literal(REVIEW_REPORT_FORMAT_V1),
  exportedAt: ts,
  exportedBy: z.string(),
  campaign: z.strictObject({
    id: z.uuid(),
    name: z.string(),
    kind: z.string(),
    trigger: z.string(),
    status: z.string(),
    dueAt: ts,
    createdAt: ts,
    createdBy: z.string(),
    decidedAt: tsN,
    closedAt: tsN,
    policyVersion: strN,
    definition: z.record(z.string(), z.unknown()),
  }),
  summary: z.strictObject({ items: z.number().int(), pending: z.number().int(), kept: z.number().int(), revoked: z.number().int(), skipped: z.number().int(), flagged: z.number().int(), removalVerified: z.number().int() }),
  items: z.array(reportItemSchema),
  events: z.array(evidenceEventSchemaV1),
  chain: z.strictObject({ head: z.strictObject({ seq: z.number().int(), hash: z.string() }) }),
  signer: z.strictObject({ algorithm: z.literal('Ed25519'), publicKey: z.string(), fingerprint: z.string() }),
  signature: z.string(),
});

/** The campaign's own stream (every decision, escalation and skip), proven against a signed checkpoint. */
export const reviewReportSchema = reviewReportSchemaV1.omit({ format: true, events: true, chain: true }).extend({
  format: z.literal(REVIEW_REPORT_FORMAT),
  events: z.array(evidenceEventSchema),
  chain: z.strictObject({ streams: z.array(streamProofSchema), checkpoint: checkpointSchema.nullable() }),
  /** What the API found when it re-verified the stream from the database at export. */
  verification: z.strictObject({ valid: z.boolean(), checkedAt: ts, problems: z.array(z.strictObject({ code: z.string(), seq: z.number().int().optional(), stream: z.string().optional(), message: z.string() })) }),
});
export type ReviewReport = z.output<typeof reviewReportSchema>;
type ReviewReportV1 = z.output<typeof reviewReportSchemaV1>;
type ReportItem = z.output<typeof reportItemSchema>;

const iso = (d: Date | null) => (d ? d.toISOString() : null);
const toEvent = (r: AuditEvent): EvidenceEvent => ({ ...r, hashVersion: r.hashVersion === 1 ? 1 : 2, at: r.at.toISOString(), data: r.data });

/** Actions whose event carries the decision of an item. */
const DECISION_ACTIONS = new Set(['review.item_decided', 'review.item_skipped']);

function summarize(items: Pick<ReportItem, 'status' | 'flagged' | 'removalVerifiedAt'>[]) {
  const count = (s: string) => items.filter((i) => i.status === s).length;
  return { items: items.length, pending: count('pending'), kept: count('kept'), revoked: count('revoked'), skipped: count('skipped'), flagged: items.filter((i) => i.flagged).length, removalVerified: items.filter((i) => i.removalVerifiedAt).length };
}

/** The campaign's stream, and its events from before streams (each names the campaign in its data). */
async function campaignEvents(db: Pick<Db, 'select'>, campaignId: string): Promise<AuditEvent[]> {
  return db
    .select()
    .from(auditEvents)
    .where(or(eq(auditEvents.stream, campaignStream(campaignId)), and(eq(auditEvents.stream, LEGACY_STREAM), sql`${auditEvents.data}->>'campaignId' = ${campaignId}`)))
    .orderBy(asc(auditEvents.seq));
}

export async function buildReviewReport(db: Db, signer: EvidenceSigner, campaignId: string, opts: { exportedBy: string; now?: Date }): Promise<ReviewReport | undefined> {
  await checkpointCovering(db, signer, [campaignStream(campaignId)]);
  const unsigned = await db.transaction(
    async (tx) => {
      const [c] = await tx.select().from(reviewCampaigns).where(eq(reviewCampaigns.id, campaignId));
      if (!c) return undefined;
      const rows = await tx.select().from(reviewItems).where(eq(reviewItems.campaignId, campaignId)).orderBy(asc(reviewItems.createdAt), asc(reviewItems.id));
      const events = await campaignEvents(tx, campaignId);
      const decisionOf = new Map<string, number>();
      for (const e of events) if (DECISION_ACTIONS.has(e.action) && typeof e.data.itemId === 'string') decisionOf.set(e.data.itemId, e.seq);
      const proven = await proveStreamsOf(tx, [campaignStream(campaignId)], events.map(toEvent));
      const items: ReportItem[] = rows.map((r) => ({
        id: r.id,
        grantId: r.grantId,
        identityId: r.identityId,
        entitlementId: r.entitlementId,
        riskTier: r.riskTier,
        reviewerId: r.reviewerId,
        assignedReviewerId: r.assignedReviewerId,
        status: r.status,
        decidedBy: r.decidedBy,
        decidedAt: iso(r.decidedAt),
        comment: r.comment,
        newExpiresAt: iso(r.newExpiresAt),
        flagged: r.flagged,
        escalatedAt: iso(r.escalatedAt),
        lastUsedAt: iso(r.lastUsedAt),
        removalVerifiedAt: iso(r.removalVerifiedAt),
        provenance: r.provenance,
        decisionEventSeq: decisionOf.get(r.id) ?? null,
      }));
      return {
        format: REVIEW_REPORT_FORMAT,
        exportedAt: (opts.now ?? new Date()).toISOString(),
        exportedBy: opts.exportedBy,
        campaign: { id: c.id, name: c.name, kind: c.kind, trigger: c.trigger, status: c.status, dueAt: c.dueAt.toISOString(), createdAt: c.createdAt.toISOString(), createdBy: c.createdBy, decidedAt: iso(c.decidedAt), closedAt: iso(c.closedAt), policyVersion: c.policyVersion, definition: c.definition },
        summary: summarize(items),
        items,
        events: events.map(toEvent),
        chain: { streams: proven.streams, checkpoint: proven.checkpoint },
        verification: { valid: proven.problems.length === 0, checkedAt: new Date().toISOString(), problems: proven.problems },
      };
    },
    { isolationLevel: 'repeatable read', accessMode: 'read only' },
  );
  return unsigned ? signReviewReport(unsigned, signer) : undefined;
}

/** Signs as evidence bundles are signed: the canonical JSON of everything but `signature`, with the signer embedded. */
export function signReviewReport(unsigned: Omit<ReviewReport, 'signer' | 'signature'>, signer: EvidenceSigner): ReviewReport {
  const withSigner = { ...unsigned, signer: { algorithm: signer.algorithm, publicKey: signer.publicKeyPem, fingerprint: signer.fingerprint } };
  // Round-trip through JSON first: what is signed is exactly what a verifier will parse.
  const plain = JSON.parse(JSON.stringify(withSigner)) as typeof withSigner;
  return { ...plain, signature: signer.sign(Buffer.from(canonicalJson(plain), 'utf8')) };
}

/**
 * The offline checks of a review report beyond its signature (checked by the evidence
 * verifier): schema, every event hash and adjacent link, each decision backed by its event,
 * every event about this campaign, the summary recomputed from the items.
 */
export function checkReviewReport(raw: unknown): { problems: EvidenceProblem[]; report?: ReviewReport | ReviewReportV1; linksChecked: number; unanchored?: number } {
  const v1 = (raw as { format?: unknown }).format === REVIEW_REPORT_FORMAT_V1;
  const parsed = v1 ? reviewReportSchemaV1.safeParse(raw) : reviewReportSchema.safeParse(raw);
  if (!parsed.success) return { problems: parsed.error.issues.map((i) => ({ code: 'schema', message: `${i.path.join('.') || '(report)'}: ${i.message}` })), linksChecked: 0 };
  const r = parsed.data;
  const problems: EvidenceProblem[] = [];
  let linksChecked = 0;
  let unanchored: number | undefined;
  if (r.format === REVIEW_REPORT_FORMAT_V1) {
    const ev = checkEvents(r.events);
    problems.push(...ev.problems);
    linksChecked = ev.linksChecked;
    const last = r.events.at(-1)?.seq ?? 0;
    if (r.chain.head.seq < last) problems.push({ code: 'head_behind', message: `chain head seq ${r.chain.head.seq} is before the last event (seq ${last})` });
  } else {
    const st = checkStreams(r.events, r.chain.streams, r.chain.checkpoint);
    problems.push(...st.problems);
    linksChecked = st.linksChecked;
    unanchored = st.unanchored;
    if (!r.chain.streams.some((x) => x.stream === campaignStream(r.campaign.id))) problems.push({ code: 'stream_missing', message: `the report does not carry stream ${campaignStream(r.campaign.id)}` });
    if (r.chain.checkpoint && r.chain.checkpoint.signer.fingerprint !== r.signer.fingerprint) problems.push({ code: 'checkpoint_key', message: `checkpoint ${r.chain.checkpoint.id} is signed by ${r.chain.checkpoint.signer.fingerprint}, the report by ${r.signer.fingerprint}` });
    if (!r.verification.valid) for (const p of r.verification.problems) problems.push({ ...p, code: `export:${p.code}`, message: `at export the API found: ${p.message}` });
  }
  const bySeq = new Map<number, (typeof r.events)[number]>(r.events.map((e) => [e.seq, e]));
  for (const e of r.events) {
    if (e.data.campaignId !== r.campaign.id) problems.push({ code: 'event_unrelated', seq: e.seq, message: `event seq ${e.seq} does not concern campaign ${r.campaign.id}` });
  }
  for (const item of r.items) {
    if (item.status === 'pending') continue;
    const e = item.decisionEventSeq === null ? undefined : bySeq.get(item.decisionEventSeq);
    if (!e || !DECISION_ACTIONS.has(e.action) || e.data.itemId !== item.id) {
      problems.push({ code: 'fact_unsupported', ...(item.decisionEventSeq === null ? {} : { seq: item.decisionEventSeq }), message: `item ${item.id} (${item.status}): no hash-chained event in the report records its decision` });
      continue;
    }
    const recorded = e.action === 'review.item_skipped' ? 'skipped' : e.data.decision === 'revoke' ? 'revoked' : 'kept';
    if (recorded !== item.status) problems.push({ code: 'fact_mismatch', seq: e.seq, message: `item ${item.id} is ${item.status} but event seq ${e.seq} recorded ${recorded}` });
    if (e.actorId !== item.decidedBy) problems.push({ code: 'fact_mismatch', seq: e.seq, message: `item ${item.id} was decided by ${item.decidedBy} but event seq ${e.seq} names ${e.actorId}` });
  }
  if (canonicalJson(summarize(r.items)) !== canonicalJson(r.summary)) problems.push({ code: 'summary_mismatch', message: 'the summary does not match the items' });
  return { problems, report: r, linksChecked, ...(unanchored !== undefined ? { unanchored } : {}) };
}

const CSV_COLUMNS = ['item_id', 'campaign_id', 'grant_id', 'identity_id', 'username', 'entitlement_id', 'entitlement', 'system', 'risk_tier', 'reviewer_id', 'assigned_reviewer_id', 'status', 'decided_by', 'decided_at', 'comment', 'flagged', 'new_expires_at', 'escalated_at', 'last_used_at', 'removal_verified_at', 'granted_at', 'approved_by', 'policy_version', 'ticket_ref'] as const;

/** RFC 4180 quoting; a leading =, +, - or @ is prefixed so a spreadsheet does not run it as a formula. */
function csvCell(v: unknown): string {
  if (v === null || v === undefined) return '';
  let s = v instanceof Date ? v.toISOString() : String(v);
  if (/^[=+\-@]/.test(s)) s = `'${s}`;
  return /[",\r\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

export async function reviewReportCsv(db: Pick<Db, 'select'>, campaignId: string): Promise<string | undefined> {
  const [c] = await db.select({ id: reviewCampaigns.id }).from(reviewCampaigns).where(eq(reviewCampaigns.id, campaignId));
  if (!c) return undefined;
  const rows = await db
    .select({ item: reviewItems, username: identities.username, entitlement: entitlements.name, system: systems.name })
    .from(reviewItems)
    .innerJoin(identities, eq(identities.id, reviewItems.identityId))
    .innerJoin(entitlements, eq(entitlements.id, reviewItems.entitlementId))
    .innerJoin(systems, eq(systems.id, entitlements.systemId))
    .where(eq(reviewItems.campaignId, campaignId))
    .orderBy(asc(reviewItems.createdAt), asc(reviewItems.id));
  const lines = [CSV_COLUMNS.join(',')];
  for (const { item: i, username, entitlement, system } of rows) {
    const p = i.provenance as { grantedAt?: string; approvals?: Array<{ approverId: string }>; policyVersion?: string; ticketRef?: string };
    lines.push(
      [i.id, i.campaignId, i.grantId, i.identityId, username, i.entitlementId, entitlement, system, i.riskTier, i.reviewerId, i.assignedReviewerId, i.status, i.decidedBy, i.decidedAt, i.comment, i.flagged, i.newExpiresAt, i.escalatedAt, i.lastUsedAt, i.removalVerifiedAt, p.grantedAt, (p.approvals ?? []).map((a) => a.approverId).join(' '), p.policyVersion, p.ticketRef]
        .map(csvCell)
        .join(','),
    );
  }
  return `${lines.join('\r\n')}\r\n`;
}

