import type { AccessRequest, Approval, credentials, Grant } from '../../../db/schema.js';
import { DECISION_ACTIONS, type Facts } from './checks.js';
import type { EvidenceBundle, EvidenceEvent } from './format.js';

// ---- export: the facts, built from the rows of one snapshot --------------------------------

export const iso = (d: Date | null | undefined) => (d ? d.toISOString() : null);

/** The rows one bundle is built from, all read in the same snapshot (export.ts). */
export interface ExportRows {
  req: AccessRequest;
  ent: NonNullable<Facts['request']['entitlement']> | undefined;
  approvalRows: Approval[];
  grant: Grant | undefined;
  events: EvidenceEvent[];
  credentialRows: (typeof credentials.$inferSelect)[];
  policy: Omit<Facts['policy'], 'version' | 'rulesFired' | 'stagesOpened'>;
}

const last = (events: EvidenceEvent[], pred: (e: EvidenceEvent) => boolean) => events.filter(pred).at(-1);
const dataOf = (e: EvidenceEvent | undefined) => (e?.data ?? {}) as Record<string, unknown>;

/** Request, policy, approvals and the lease, each fact citing the hash-chained event that recorded it. */
export function buildFacts(rows: ExportRows): Facts {
  return {
    request: requestFacts(rows.req, rows.ent),
    policy: policyFacts(rows.req.policyVersion, rows.policy, rows.events),
    approvals: approvalFacts(rows.approvalRows, rows.events),
    ...leaseFacts(rows.grant, rows.events),
    events: rows.events,
  };
}

function requestFacts(req: AccessRequest, ent: ExportRows['ent']): Facts['request'] {
  return {
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
  };
}

function policyFacts(version: string | null, policy: ExportRows['policy'], events: EvidenceEvent[]): Facts['policy'] {
  return {
    version,
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
  };
}

function approvalFacts(approvalRows: Approval[], events: EvidenceEvent[]): Facts['approvals'] {
  return approvalRows.map((a) => {
    const decision = a.status === 'approved' ? 'approve' : a.status === 'rejected' ? 'reject' : null;
    const event = decision ? last(events, (e) => DECISION_ACTIONS.has(e.action) && e.actorId === a.approverId && dataOf(e).stage === a.stage) : undefined;
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
  });
}

/** The grant, its verification, the revocation and the removal's verification. */
function leaseFacts(grant: Grant | undefined, events: EvidenceEvent[]): Pick<Facts, 'grant' | 'grantVerification' | 'revocation' | 'removalVerification'> {
  const verified = last(events, (e) => e.action === 'grant.verified');
  const revokeRequested = last(events, (e) => e.action === 'grant.revoke_requested');
  const removed = last(events, (e) => e.action === 'grant.removal_verified' || e.action === 'grant.ended_membership_retained');
  return {
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
  };
}

/** Facts about credentials issued for the lease; the material is never exported. */
export function credentialFacts(credentialRows: ExportRows['credentialRows']): EvidenceBundle['credentials'] {
  return credentialRows.map((c) => ({
    id: c.id,
    kind: c.kind,
    targetRef: c.targetRef,
    status: c.status,
    issuedAt: c.issuedAt.toISOString(),
    notAfter: c.notAfter.toISOString(),
    deliveredAt: iso(c.deliveredAt),
    deliveredTo: c.deliveredTo,
    endedAt: iso(c.endedAt),
  }));
}
