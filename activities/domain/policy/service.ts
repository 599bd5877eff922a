import { and, desc, eq, gt, inArray, isNull, lte, ne } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import {
  accessRequests,
  approverGroupMembers,
  delegations,
  entitlements,
  grants,
  identities,
  policyVersions,
  systems,
  type Entitlement,
  type Identity,
  type System,
} from '../../../db/schema.js';
import { CompiledPolicy, DEFAULT_POLICY, selectPolicy, type FiredRule, type PolicyContext, type PolicyDecision } from './evaluate.js';
import { loadPolicyText, policyVersionOfDocument, type PolicyProblem } from './load.js';
import type { ApproverSpec, PolicyDocument } from './schema.js';

export interface ResolvedApprover {
  id: string;
  /** How they were found: the spec, and any substitution on the way. */
  via: ApproverSpec;
  substitutedFor?: string;
  substitution?: 'terminated' | 'requester' | 'subject' | 'delegation';
}

export interface ResolvedStage {
  name: string;
  quorum: number;
  timeoutSeconds?: number | undefined;
  reminderAfterSeconds?: number | undefined;
  escalateAfterSeconds?: number | undefined;
  requireComment: boolean;
  approverIds: string[];
  /** approverId → the delegator whose task they carry. */
  onBehalfOf: Record<string, string>;
  approvers: ResolvedApprover[];
}

export type RoutedDecision =
  | {
      effect: 'deny';
      reason: string;
      fired: FiredRule[];
      maxDurationSeconds: number;
      policy: string | null;
      policyVersion: string;
      /** Set when the policy would route, but a stage has too few approvers once the requester and the subject are excluded. */
      noEligibleApprover?: { stage: string; quorum: number; eligible: number };
    }
  | { effect: 'auto_approve'; reason: string; fired: FiredRule[]; maxDurationSeconds: number; policy: string; policyVersion: string }
  | { effect: 'route'; stages: ResolvedStage[]; fired: FiredRule[]; maxDurationSeconds: number; policy: string; policyVersion: string; extendRequiresApproval: boolean };

export interface RequestFacts {
  requesterId: string;
  subjectId: string;
  entitlementId: string;
  durationSeconds: number;
  justification: string;
  ticketRef?: string | null | undefined;
  /** The request being evaluated, excluded from "pending" SoD facts. */
  requestId?: string;
}

const OPEN_REQUEST = ['pending_approval', 'scheduled', 'granting'] as const;
const MAX_MANAGER_HOPS = 3;

export function identityVars(i: Identity) {
  return {
    id: i.id,
    kind: i.kind,
    status: i.status,
    department: i.department,
    location: i.location,
    employment_type: i.employmentType,
    job_code: i.jobCode,
    manager_id: i.managerId,
    owner_id: i.ownerId,
    sponsor_id: i.sponsorId,
    attributes: i.attributes,
  };
}

export class PolicyError extends Error {
  constructor(
    readonly code: 'not_found' | 'invalid_policy',
    message: string,
    readonly problems: PolicyProblem[] = [],
  ) {
    super(message);
  }
}

/** The variables a policy's CEL conditions see for one request. */
export function contextOf(subject: Identity, requester: Identity, ent: Entitlement, system: System, f: RequestFacts): PolicyContext {
  return {
    subject: identityVars(subject),
    requester: identityVars(requester),
    entitlement: {
      id: ent.id,
      name: ent.name,
      resource: ent.resource,
      risk_tier: ent.riskTier,
      system_id: ent.systemId,
      owner_id: ent.ownerId,
      max_duration_seconds: ent.maxDurationSeconds,
      attributes: ent.attributes,
    },
    system: { id: system.id, name: system.name, kind: system.kind, owner_id: system.ownerId },
    request: { duration_seconds: f.durationSeconds, justification: f.justification, ticket_ref: f.ticketRef ?? null, self_request: f.requesterId === f.subjectId },
  };
}

/** Active policy, publication and request-time evaluation with approver resolution. */
export function createPolicyService(db: Db) {
  let cached: { id: number; policy: CompiledPolicy } | undefined;
  const fallback = new CompiledPolicy(DEFAULT_POLICY, policyVersionOfDocument(DEFAULT_POLICY));

  async function active(): Promise<CompiledPolicy> {
    const [row] = await db.select({ id: policyVersions.id }).from(policyVersions).orderBy(desc(policyVersions.id)).limit(1);
    if (!row) return fallback;
    if (cached?.id === row.id) return cached.policy;
    const [full] = await db.select().from(policyVersions).where(eq(policyVersions.id, row.id));
    cached = { id: row.id, policy: new CompiledPolicy(full!.document as PolicyDocument, full!.version) };
    return cached.policy;
  }

  async function identity(id: string | null | undefined): Promise<Identity | undefined> {
    if (!id) return undefined;
    const [row] = await db.select().from(identities).where(eq(identities.id, id));
    return row;
  }

  async function groupMembers(groupRef: string | undefined): Promise<string[]> {
    if (!groupRef) return [];
    const groupId = groupRef.slice('group:'.length);
    const rows = await db.select({ id: approverGroupMembers.identityId }).from(approverGroupMembers).where(eq(approverGroupMembers.groupId, groupId));
    return rows.map((r) => r.id);
  }

  async function activeDelegate(delegatorId: string, at: Date): Promise<string | undefined> {
    const [d] = await db
      .select({ delegateId: delegations.delegateId })
      .from(delegations)
      .where(and(eq(delegations.delegatorId, delegatorId), lte(delegations.startsAt, at), gt(delegations.endsAt, at), isNull(delegations.revokedAt)))
      .orderBy(desc(delegations.createdAt))
      .limit(1);
    return d?.delegateId;
  }

  /** The request's facts from the catalog: two queries (the people; the entitlement with its system). */
  async function load(f: RequestFacts) {
    const [people, [row]] = await Promise.all([
      db.select().from(identities).where(inArray(identities.id, [...new Set([f.subjectId, f.requesterId])])),
      db.select({ ent: entitlements, system: systems }).from(entitlements).innerJoin(systems, eq(systems.id, entitlements.systemId)).where(eq(entitlements.id, f.entitlementId)),
    ]);
    const subject = people.find((p) => p.id === f.subjectId);
    const requester = people.find((p) => p.id === f.requesterId);
    if (!subject || !requester || !row) throw new PolicyError('not_found', 'subject, requester or entitlement not found');
    return { subject, requester, ent: row.ent, system: row.system };
  }

  async function heldOrPending(f: RequestFacts): Promise<Set<string>> {
    const [held, pending] = await Promise.all([
      db.select({ e: grants.entitlementId }).from(grants).where(and(eq(grants.identityId, f.subjectId), inArray(grants.status, ['granting', 'active']))),
      db
        .select({ e: accessRequests.entitlementId })
        .from(accessRequests)
        .where(
          and(
            eq(accessRequests.subjectId, f.subjectId),
            inArray(accessRequests.status, [...OPEN_REQUEST]),
            ...(f.requestId ? [ne(accessRequests.id, f.requestId)] : []),
          ),
        ),
    ]);
    const out = new Set([...held, ...pending].map((r) => r.e));
    out.delete(f.entitlementId);
    return out;
  }

  /**
   * Turns approver specs into people. Four eyes: never the requester and never the subject (the
   * beneficiary must not approve their own access, whatever its risk tier); an excluded,
   * terminated or suspended approver is replaced by their manager; an active delegation hands
   * the task to the delegate, unless the delegate is the requester or the subject.
   */
  async function resolveStage(
    plan: { name: string; quorum: number; timeoutSeconds?: number | undefined; reminderAfterSeconds?: number | undefined; escalateAfterSeconds?: number | undefined; requireComment: boolean; approvers: ApproverSpec[] },
    ctx: { subject: Identity; requester: Identity; ent: Entitlement; system: System; doc: PolicyDocument; now: Date },
  ): Promise<ResolvedStage> {
    const out: ResolvedApprover[] = [];
    for (const spec of plan.approvers) {
      let candidates: string[] = [];
      if (spec === 'manager') candidates = [ctx.subject.managerId].filter((x): x is string => !!x);
      else if (spec === 'entitlement_owner') candidates = [ctx.ent.ownerId];
      else if (spec === 'system_owner') candidates = [ctx.system.ownerId];
      else if (spec === 'sponsor') candidates = [ctx.subject.sponsorId].filter((x): x is string => !!x);
      else if (spec === 'security_team') candidates = await groupMembers(ctx.doc.securityTeam);
      else if (spec.startsWith('group:')) candidates = await groupMembers(spec);
      else candidates = [spec.slice('identity:'.length)];

      for (const original of candidates) {
        let id: string | undefined = original;
        let substitution: ResolvedApprover['substitution'];
        for (let hop = 0; id && hop <= MAX_MANAGER_HOPS; hop++) {
          const who = await identity(id);
          if (!who) {
            id = undefined;
            break;
          }
          const excluded =
            who.status !== 'active'
              ? 'terminated'
              : who.id === ctx.requester.id
                ? 'requester'
                : who.id === ctx.subject.id
                  ? 'subject'
                  : undefined;
          if (!excluded) break;
          substitution ??= excluded;
          id = who.managerId ?? undefined;
        }
        if (!id) continue;
        const delegate = await activeDelegate(id, ctx.now);
        if (delegate && delegate !== ctx.requester.id && delegate !== ctx.subject.id) {
          const d = await identity(delegate);
          if (d?.status === 'active') {
            out.push({ id: delegate, via: spec, substitutedFor: id, substitution: 'delegation' });
            continue;
          }
        }
        out.push({ id, via: spec, ...(id !== original ? { substitutedFor: original, substitution: substitution! } : {}) });
      }
    }
    const seen = new Set<string>();
    const approvers = out.filter((a) => (seen.has(a.id) ? false : (seen.add(a.id), true)));
    return {
      name: plan.name,
      quorum: plan.quorum,
      // The stage's own timeout, else the catalog item's (its approvalPolicy), else the default.
      ...((plan.timeoutSeconds ?? ctx.ent.approvalPolicy.approvalTimeoutSeconds) ? { timeoutSeconds: plan.timeoutSeconds ?? ctx.ent.approvalPolicy.approvalTimeoutSeconds } : {}),
      ...(plan.reminderAfterSeconds ? { reminderAfterSeconds: plan.reminderAfterSeconds } : {}),
      ...(plan.escalateAfterSeconds ? { escalateAfterSeconds: plan.escalateAfterSeconds } : {}),
      requireComment: plan.requireComment,
      approverIds: approvers.map((a) => a.id),
      onBehalfOf: Object.fromEntries(approvers.filter((a) => a.substitution === 'delegation').map((a) => [a.id, a.substitutedFor!])),
      approvers,
    };
  }

  return {
    active,

    async activeRecord() {
      const [row] = await db.select().from(policyVersions).orderBy(desc(policyVersions.id)).limit(1);
      return row ?? { id: 0, version: fallback.version, document: DEFAULT_POLICY, source: 'built-in default', createdBy: 'system', createdAt: null };
    },

    /** Validates and stores a new version; the active one is untouched when anything is wrong. */
    /** `recorded` runs in the insert's transaction (the API's `policy.published` audit event). */
    async publish(
      text: string,
      source: string,
      createdBy: string,
      recorded?: (tx: Pick<Db, 'select' | 'insert' | 'update' | 'execute'>, version: string, document: PolicyDocument) => Promise<unknown>,
    ): Promise<{ version: string; changed: boolean }> {
      const r = loadPolicyText(text);
      if (!r.ok) throw new PolicyError('invalid_policy', `policy rejected (${r.problems.length} problem${r.problems.length === 1 ? '' : 's'})`, r.problems);
      const current = await active();
      if (current.version === r.version) return { version: r.version, changed: false };
      await db.transaction(async (tx) => {
        await tx.insert(policyVersions).values({ version: r.version, document: r.document as unknown as Record<string, unknown>, source, createdBy });
        await recorded?.(tx, r.version, r.document);
      });
      return { version: r.version, changed: true };
    },

    /** The reviewer of a mover's requested access: the subject's manager, resolved like any stage. */
    async reviewStage(requestId: string, timeoutSeconds: number): Promise<ResolvedStage | undefined> {
      const [req] = await db.select().from(accessRequests).where(eq(accessRequests.id, requestId));
      if (!req) return undefined;
      const policy = await active();
      const { subject, requester, ent, system } = await load({ requesterId: req.requesterId, subjectId: req.subjectId, entitlementId: req.entitlementId, durationSeconds: 0, justification: '' });
      const stage = await resolveStage(
        { name: 'manager-review', quorum: 1, timeoutSeconds, requireComment: false, approvers: ['manager'] },
        { subject, requester: { ...requester, id: requester.id === subject.id ? '' : requester.id } as Identity, ent, system, doc: policy.document, now: new Date() },
      );
      return stage.approverIds.length ? stage : undefined;
    },

    /** The duration a request gets when it names none: the policy's default, else the catalog item's. */
    async defaultDuration(entitlementId: string): Promise<number | undefined> {
      const [ent] = await db.select().from(entitlements).where(eq(entitlements.id, entitlementId));
      if (!ent) return undefined;
      const policy = selectPolicy((await active()).document, { id: ent.id, risk_tier: ent.riskTier, system_id: ent.systemId, max_duration_seconds: ent.maxDurationSeconds });
      return Math.min(policy?.defaultDurationSeconds ?? ent.defaultDurationSeconds, ent.maxDurationSeconds);
    },

    /**
     * Who joins a stage on escalation: the managers of the approvers still waiting, or, when
     * none is eligible, the security team. Never someone excluded (prior approvers, the ones
     * waiting), and never the request's requester or subject, read from the request itself so
     * no caller can forget them.
     */
    async escalationTargets(requestId: string, waitingIds: string[], excludeIds: string[]): Promise<string[]> {
      const [req] = await db.select({ requesterId: accessRequests.requesterId, subjectId: accessRequests.subjectId }).from(accessRequests).where(eq(accessRequests.id, requestId));
      // Without the row the parties are unknown: escalating to anyone could reach the subject.
      if (!req) return [];
      const exclude = new Set([...excludeIds, req.requesterId, req.subjectId]);
      const eligible = async (ids: Array<string | null | undefined>) => {
        const clean = [...new Set(ids.filter((x): x is string => !!x && !exclude.has(x)))];
        if (!clean.length) return [];
        const rows = await db.select({ id: identities.id }).from(identities).where(and(inArray(identities.id, clean), eq(identities.status, 'active')));
        return rows.map((r) => r.id);
      };
      const waiting = waitingIds.length ? await db.select({ managerId: identities.managerId }).from(identities).where(inArray(identities.id, waitingIds)) : [];
      const managers = await eligible(waiting.map((w) => w.managerId));
      if (managers.length) return managers;
      return eligible(await groupMembers((await active()).document.securityTeam));
    },

    /** The routing a request would get now: used by the workflow, by request creation and by explain. */
    async decide(f: RequestFacts, now = new Date()): Promise<RoutedDecision> {
      const policy = await active();
      const { subject, requester, ent, system } = await load(f);
      const decision: PolicyDecision = policy.evaluate(contextOf(subject, requester, ent, system, f), { heldOrPending: await heldOrPending(f) });
      const base = { fired: decision.fired, maxDurationSeconds: decision.maxDurationSeconds, policyVersion: policy.version };
      if (decision.effect === 'deny') return { effect: 'deny', reason: decision.reason, policy: decision.policy, ...base };
      if (f.durationSeconds > decision.maxDurationSeconds) {
        return { effect: 'deny', reason: `requested duration exceeds the policy maximum of ${decision.maxDurationSeconds} seconds`, policy: decision.policy, ...base };
      }
      if (decision.effect === 'auto_approve') return { effect: 'auto_approve', reason: decision.reason, policy: decision.policy, ...base };
      const stages: ResolvedStage[] = [];
      for (const plan of decision.stages) {
        const stage = await resolveStage(plan, { subject, requester, ent, system, doc: policy.document, now });
        if (stage.approverIds.length < stage.quorum) {
          return {
            effect: 'deny',
            reason: `stage ${stage.name} needs ${stage.quorum} approver(s) but only ${stage.approverIds.length} eligible one(s) resolve (the requester and the subject never approve)`,
            policy: decision.policy,
            noEligibleApprover: { stage: stage.name, quorum: stage.quorum, eligible: stage.approverIds.length },
            ...base,
          };
        }
        stages.push(stage);
      }
      return { effect: 'route', stages, policy: decision.policy, extendRequiresApproval: decision.extendRequiresApproval, ...base };
    },
  };
}

export type PolicyService = ReturnType<typeof createPolicyService>;
