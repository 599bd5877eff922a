import { randomUUID } from 'node:crypto';
import { and, eq, inArray, isNotNull, lt, notInArray, type SQL } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import { accessRequests, approvals, approverGroupMembers, entitlements, grants, identities, reviewCampaigns, reviewItems, type ReviewCampaign, type ReviewItem } from '../../../db/schema.js';
import { appendAudit, type AuditInput } from '../audit.js';
import type { CampaignDefinition, CampaignScope, RiskTier } from './definition.js';
import { chooseReviewer, ReviewRuleError, ruleCandidates, type ReviewSubject } from './reviewers.js';

/**
 * The campaign workflow's id (workflows/ids.ts `reviewCampaignWorkflowId`, which this layer may
 * not import as a value; test/unit/review-definition.test.ts holds the two equal).
 */
export const campaignWorkflowId = (campaignId: string) => `review-campaign/${campaignId}`;

/** The workflow type the API and openMicroReview start (workflows/review-campaign.ts). */
export const CAMPAIGN_WORKFLOW_TYPE = 'reviewCampaignWorkflow';

const HUMAN_KINDS = ['employee', 'contractor'] as const;
const DAY_MS = 86_400_000;
const INSERT_CHUNK = 500;

/** One live grant in scope, with what reviewer resolution and provenance need. */
export interface ScopedGrant extends ReviewSubject {
  grantId: string;
  entitlementId: string;
  systemId: string;
  riskTier: RiskTier;
  source: string;
  grantedAt: Date | null;
  expiresAt: Date | null;
  requestId: string | null;
  requesterId: string | null;
  policyVersion: string | null;
  ticketRef: string | null;
  approvals: Array<{ approverId: string; stage: number; decidedAt: string | null; onBehalfOf: string | null }>;
}

type Reader = Pick<Db, 'select'>;

/**
 * Live grants a scope selects. Only grants with a lease workflow (from a request or a break-glass)
 * are reviewed: a revoke goes through that workflow's removal, and birthright access follows HR.
 */
export async function selectScopeGrants(db: Reader, scope: CampaignScope, now: Date, grantIds?: string[], includeEnded = false): Promise<ScopedGrant[]> {
  const where: SQL[] = [isNotNull(grants.requestId)];
  if (!includeEnded) where.push(eq(grants.status, 'active'));
  if (grantIds) where.push(inArray(grants.id, grantIds));
  if (scope.systemIds) where.push(inArray(entitlements.systemId, scope.systemIds));
  if (scope.entitlementIds) where.push(inArray(grants.entitlementId, scope.entitlementIds));
  if (scope.riskTiers) where.push(inArray(entitlements.riskTier, scope.riskTiers));
  if (scope.managerId) where.push(eq(identities.managerId, scope.managerId));
  if (scope.nonHuman) where.push(notInArray(identities.kind, [...HUMAN_KINDS]));
  if (scope.olderThanDays) where.push(lt(grants.grantedAt, new Date(now.getTime() - scope.olderThanDays * DAY_MS)));
  if (scope.excludeGrantedWithinDays) where.push(lt(grants.grantedAt, new Date(now.getTime() - scope.excludeGrantedWithinDays * DAY_MS)));
  const rows = await db
    .select({
      grantId: grants.id,
      source: grants.source,
      grantedAt: grants.grantedAt,
      expiresAt: grants.expiresAt,
      requestId: grants.requestId,
      holderId: identities.id,
      holderKind: identities.kind,
      holderManagerId: identities.managerId,
      holderOwnerId: identities.ownerId,
      entitlementId: entitlements.id,
      systemId: entitlements.systemId,
      riskTier: entitlements.riskTier,
      entitlementOwnerId: entitlements.ownerId,
      requesterId: accessRequests.requesterId,
      policyVersion: accessRequests.policyVersion,
      ticketRef: accessRequests.ticketRef,
    })
    .from(grants)
    .innerJoin(identities, eq(identities.id, grants.identityId))
    .innerJoin(entitlements, eq(entitlements.id, grants.entitlementId))
    .leftJoin(accessRequests, eq(accessRequests.id, grants.requestId))
    .where(and(...where))
    .orderBy(grants.id);
  const requestIds = rows.map((r) => r.requestId).filter((x): x is string => !!x);
  const approved = requestIds.length
    ? await db
        .select({ requestId: approvals.requestId, approverId: approvals.approverId, stage: approvals.stage, decidedAt: approvals.decidedAt, onBehalfOf: approvals.onBehalfOf })
        .from(approvals)
        .where(and(inArray(approvals.requestId, requestIds), eq(approvals.status, 'approved')))
    : [];
  // Grouped once: a 10,000-item campaign must not scan every approval per grant.
  const byRequest = new Map<string, typeof approved>();
  for (const a of approved) byRequest.set(a.requestId, [...(byRequest.get(a.requestId) ?? []), a]);
  return rows.map((r) => {
    const mine = (r.requestId && byRequest.get(r.requestId)) || [];
    return {
      ...r,
      approvals: mine.map((a) => ({ approverId: a.approverId, stage: a.stage, decidedAt: a.decidedAt?.toISOString() ?? null, onBehalfOf: a.onBehalfOf })),
      // The delegator whose task it was approved too, in substance.
      approverIds: [...new Set(mine.flatMap((a) => [a.approverId, ...(a.onBehalfOf ? [a.onBehalfOf] : [])]))],
    };
  });
}

export interface OpenCampaignInput {
  definition: CampaignDefinition;
  kind: 'campaign' | 'micro';
  trigger: ReviewCampaign['trigger'];
  actor: Pick<AuditInput, 'actorType' | 'actorId'>;
  policyVersion?: string | null | undefined;
  /** Micro-reviews: exactly these grants (still filtered to live ones). */
  grantIds?: string[];
  /** Micro-reviews of a use (break-glass): the grant may have ended already. */
  includeEnded?: boolean;
  /** Micro-reviews: this reviewer first, instead of the rule's. */
  preferredReviewerId?: string | undefined;
  /** Recorded on the opening audit event (e.g. the policy change or break-glass that caused it). */
  reason?: string | undefined;
  data?: Record<string, unknown>;
  /** A scheduled run names its campaign (derived from the run), so a retried open finds it. */
  campaignId?: string;
  now: Date;
}

export interface OpenedCampaign {
  campaign: ReviewCampaign;
  items: ReviewItem[];
}

/** Assigns reviewers to every scoped grant, or says which grants have nobody eligible. */
async function assignReviewers(db: Reader, def: CampaignDefinition, scoped: ScopedGrant[], preferred?: string) {
  const rule = def.reviewers.rule;
  const groupId = rule.startsWith('group:') ? rule.slice('group:'.length) : undefined;
  const members = groupId
    ? (await db.select({ id: approverGroupMembers.identityId }).from(approverGroupMembers).where(eq(approverGroupMembers.groupId, groupId))).map((m) => m.id).sort()
    : [];
  const candidatesOf = (s: ScopedGrant) => (preferred ? [preferred] : ruleCandidates(rule, s, () => members));
  const everyone = [...new Set([def.reviewers.fallbackReviewerId, ...scoped.flatMap(candidatesOf)])];
  const active = new Set(
    everyone.length ? (await db.select({ id: identities.id }).from(identities).where(and(inArray(identities.id, everyone), eq(identities.status, 'active')))).map((r) => r.id) : [],
  );
  const load = new Map<string, number>();
  const assigned: Array<{ grant: ScopedGrant; reviewerId: string; via: 'rule' | 'fallback' }> = [];
  const unassigned: ScopedGrant[] = [];
  for (const s of scoped) {
    const choice = chooseReviewer(candidatesOf(s), def.reviewers.fallbackReviewerId, s, { excludeOriginalApprover: def.reviewers.excludeOriginalApprover, isActive: (id) => active.has(id), load });
    if (!choice) {
      unassigned.push(s);
      continue;
    }
    load.set(choice.reviewerId, (load.get(choice.reviewerId) ?? 0) + 1);
    assigned.push({ grant: s, ...choice });
  }
  return { assigned, unassigned };
}

/**
 * Creates the campaign and all its items in one transaction, with its opening audit event; the
 * caller starts the workflow after commit. Nothing is written when the scope is empty
 * (`empty_scope`) or some grant has nobody eligible to review it (`no_eligible_reviewer`).
 */
export async function openCampaign(db: Pick<Db, 'select' | 'transaction'>, input: OpenCampaignInput): Promise<OpenedCampaign> {
  const { definition: def, now } = input;
  const scoped = await selectScopeGrants(db, def.scope, now, input.grantIds, input.includeEnded ?? false);
  if (scoped.length === 0) throw new ReviewRuleError('empty_scope', 'the scope selects no live grant');
  const { assigned, unassigned } = await assignReviewers(db, def, scoped, input.preferredReviewerId);
  if (unassigned.length) {
    throw new ReviewRuleError('no_eligible_reviewer', `${unassigned.length} grant(s) have no eligible reviewer, not even the fallback`, {
      grantIds: unassigned.map((s) => s.grantId),
      holderIsFallback: unassigned.some((s) => s.holderId === def.reviewers.fallbackReviewerId),
    });
  }
  const id = input.campaignId ?? randomUUID();
  return db.transaction(async (tx) => {
    const [campaign] = await tx
      .insert(reviewCampaigns)
      .values({ id, name: def.name, kind: input.kind, trigger: input.trigger, definition: def as unknown as Record<string, unknown>, dueAt: new Date(def.dueAt), workflowId: campaignWorkflowId(id), policyVersion: input.policyVersion ?? null, createdBy: input.actor.actorId, createdAt: now })
      .returning();
    const items: ReviewItem[] = [];
    for (let i = 0; i < assigned.length; i += INSERT_CHUNK) {
      const chunk = assigned.slice(i, i + INSERT_CHUNK).map(({ grant: g, reviewerId, via }) => ({
        campaignId: id,
        grantId: g.grantId,
        identityId: g.holderId,
        entitlementId: g.entitlementId,
        riskTier: g.riskTier,
        reviewerId,
        assignedReviewerId: reviewerId,
        provenance: {
          source: g.source,
          requestId: g.requestId,
          requesterId: g.requesterId,
          approvals: g.approvals,
          policyVersion: g.policyVersion,
          ticketRef: g.ticketRef,
          grantedAt: g.grantedAt?.toISOString() ?? null,
          expiresAt: g.expiresAt?.toISOString() ?? null,
          reviewerVia: via,
        },
      }));
      items.push(...(await tx.insert(reviewItems).values(chunk).returning()));
    }
    await appendAudit(tx, {
      idempotencyKey: `review-campaign/${id}/opened`,
      ...input.actor,
      action: 'review.campaign_opened',
      reason: input.reason ?? null,
      policyVersion: input.policyVersion ?? null,
      grantId: items.length === 1 ? items[0]!.grantId : null,
      identityId: items.length === 1 ? items[0]!.identityId : null,
      data: { campaignId: id, kind: input.kind, trigger: input.trigger, items: items.length, dueAt: def.dueAt, ...input.data },
      at: now,
    });
    return { campaign: campaign!, items };
  });
}
