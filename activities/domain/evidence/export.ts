import { asc, desc, eq, gt, or } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import { accessRequests, approvals, auditEvents, credentials, entitlements, grants, policyVersions, systems, type AuditEvent } from '../../../db/schema.js';
import { GENESIS_HASH, hashEvent } from '../audit.js';
import { DEFAULT_POLICY } from '../policy/evaluate.js';
import { policyVersionOfDocument } from '../policy/load.js';
import { checkFacts, type Facts } from './checks.js';
import { buildFacts, credentialFacts, iso, type ExportRows } from './facts.js';
import { EVIDENCE_FORMAT, EVIDENCE_HASH_ALGORITHM, type EvidenceBundle, type EvidenceEvent, type EvidenceProblem, type Unsigned } from './format.js';
import { signBundle, type EvidenceSigner } from './signing.js';

// ---- export -------------------------------------------------------------------------------

type Reader = Pick<Db, 'select'>;
const SEGMENT_PAGE = 2000;

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

/** The request's rows, or undefined for an unknown request; all read through the caller's snapshot. */
async function readRows(tx: Reader, requestId: string): Promise<ExportRows | undefined> {
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
  return { req, ent, approvalRows, grant, events: eventRows.map(toEvent), credentialRows, policy };
}

/** Everything about one request, read in one consistent snapshot, verified, not yet signed. */
async function collect(tx: Reader, requestId: string, exportedBy: string, now: Date): Promise<Unsigned | undefined> {
  const rows = await readRows(tx, requestId);
  if (!rows) return undefined;
  return assemble(tx, buildFacts(rows), credentialFacts(rows.credentialRows), exportedBy, now);
}

/** The facts with the chain segment re-verified from the database and every problem found. */
async function assemble(tx: Reader, facts: Facts, issuedCredentials: EvidenceBundle['credentials'], exportedBy: string, now: Date): Promise<Unsigned> {
  const { events } = facts;
  const fromSeq = events[0]?.seq;
  const segment = fromSeq !== undefined ? await verifySegment(tx, fromSeq, new Set(events.map((e) => e.seq))) : undefined;
  const head = segment?.head ?? (await chainHead(tx));
  const problems = [...(segment?.problems ?? []), ...checkFacts(facts)];
  return {
    format: EVIDENCE_FORMAT,
    exportedAt: now.toISOString(),
    exportedBy,
    ...facts,
    credentials: issuedCredentials,
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

/**
 * The request's evidence bundle, or undefined for an unknown request. Read in one
 * repeatable-read snapshot so the events, the facts and the head agree with each other.
 */
export async function exportEvidence(db: Db, signer: EvidenceSigner, requestId: string, opts: { exportedBy: string; now?: Date }): Promise<EvidenceBundle | undefined> {
  const unsigned = await db.transaction((tx) => collect(tx, requestId, opts.exportedBy, opts.now ?? new Date()), { isolationLevel: 'repeatable read', accessMode: 'read only' });
  return unsigned ? signBundle(unsigned, signer) : undefined;
}
