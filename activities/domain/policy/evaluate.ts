import type { Environment } from '@marcbachmann/cel-js';
import { celEnvironment } from './load.js';
import type { ApproverSpec, PolicyDocument, PolicyRule, StageSpec } from './schema.js';

/** What the CEL `when` expressions see (snake_case, as policy authors write it). */
export interface PolicyContext {
  subject: Record<string, unknown> & { id: string; kind: string; employment_type: string | null };
  requester: Record<string, unknown> & { id: string };
  entitlement: Record<string, unknown> & { id: string; risk_tier: string; system_id: string; max_duration_seconds: number };
  system: Record<string, unknown> & { id: string };
  request: { duration_seconds: number; justification: string; ticket_ref: string | null; self_request: boolean };
}

export interface PolicyFacts {
  /** Entitlements the subject holds (active grants) or has pending requests for, other than this one. */
  heldOrPending: ReadonlySet<string>;
}

export interface FiredRule {
  rule: string;
  effect: 'deny' | 'add_stage' | 'auto_approve' | 'cap_duration' | 'contractor' | 'sod_deny' | 'sod_exception';
  detail: string;
}

export interface StagePlan extends StageSpec {
  /** The SoD-exception stage: its approver must explain the exception in a comment. */
  requireComment: boolean;
}

export type PolicyDecision =
  | { effect: 'deny'; policy: string | null; reason: string; fired: FiredRule[]; maxDurationSeconds: number }
  | { effect: 'auto_approve'; policy: string; reason: string; fired: FiredRule[]; maxDurationSeconds: number }
  | { effect: 'route'; policy: string; stages: StagePlan[]; fired: FiredRule[]; maxDurationSeconds: number; extendRequiresApproval: boolean };

const isContractor = (s: PolicyContext['subject']) => s.kind === 'contractor' || s.employment_type === 'contractor';

/** Most specific policy wins: entitlement (3) > system (2) > risk tier (1) > catch-all (0); ties go to the earlier one. */
export function selectPolicy(doc: PolicyDocument, e: PolicyContext['entitlement']): PolicyRule | undefined {
  let best: { p: PolicyRule; score: number } | undefined;
  for (const p of doc.policies) {
    const a = p.appliesTo;
    let score = 0;
    if (a.entitlementIds) score = a.entitlementIds.includes(e.id) ? 3 : -1;
    else if (a.systemIds) score = a.systemIds.includes(e.system_id) ? 2 : -1;
    else if (a.riskTiers) score = (a.riskTiers as string[]).includes(e.risk_tier) ? 1 : -1;
    if (score >= 0 && (!best || score > best.score)) best = { p, score };
  }
  return best?.p;
}

/**
 * A compiled policy document: CEL programs parsed once, evaluation is pure and synchronous.
 * The same code serves the workflow's decision, the API's up-front check and `explain`.
 */
export class CompiledPolicy {
  private readonly env: Environment;
  private readonly programs = new Map<string, (ctx: Record<string, unknown>) => unknown>();

  constructor(
    readonly document: PolicyDocument,
    readonly version: string,
  ) {
    this.env = celEnvironment();
    for (const p of document.policies) for (const c of p.conditions) this.programs.set(c.when, this.env.parse(c.when));
    for (const b of document.birthright) this.programs.set(b.when, this.env.parse(b.when));
  }

  /**
   * The birthright entitlements a worker's attributes justify. A rule that cannot be evaluated
   * for this worker grants nothing (fails closed) and is reported.
   */
  birthright(subject: PolicyContext['subject']): { entitlementIds: Set<string>; rules: string[]; errors: string[] } {
    const out = new Set<string>();
    const rules: string[] = [];
    const errors: string[] = [];
    const vars = { subject, requester: subject, entitlement: {}, system: {}, request: {} };
    for (const b of this.document.birthright) {
      try {
        if (this.programs.get(b.when)!(vars) === true) {
          rules.push(b.name);
          for (const id of b.entitlementIds) out.add(id);
        }
      } catch (e) {
        errors.push(`${b.name}: ${(e as Error).message.split('\n')[0]}`);
      }
    }
    return { entitlementIds: out, rules, errors };
  }

  evaluate(ctx: PolicyContext, facts: PolicyFacts): PolicyDecision {
    const fired: FiredRule[] = [];
    let maxDurationSeconds = ctx.entitlement.max_duration_seconds;
    const cap = (s: number | undefined) => {
      if (s !== undefined && s < maxDurationSeconds) maxDurationSeconds = s;
    };
    const policy = selectPolicy(this.document, ctx.entitlement);
    if (!policy) return { effect: 'deny', policy: null, reason: 'no policy applies to this entitlement', fired, maxDurationSeconds };
    cap(policy.maxDurationSeconds);
    const stages: StagePlan[] = policy.stages.map((s) => ({ ...s, requireComment: false }));

    if (isContractor(ctx.subject)) {
      cap(policy.contractorMaxDurationSeconds);
      if (!stages.some((s) => s.approvers.includes('sponsor'))) stages.push({ name: 'sponsor', approvers: ['sponsor'], quorum: 1, requireComment: false });
      fired.push({ rule: `${policy.name}/contractor`, effect: 'contractor', detail: `sponsor approval; cap ${maxDurationSeconds}s` });
    }

    const vars = ctx as unknown as Record<string, unknown>;
    let autoApprove: string | undefined;
    for (const c of policy.conditions) {
      let matched: unknown;
      try {
        matched = this.programs.get(c.when)!(vars);
      } catch (e) {
        // A rule that cannot be evaluated for this request (e.g. a missing attribute) denies:
        // failing open would grant access the author meant to guard.
        return { effect: 'deny', policy: policy.name, reason: `rule ${c.name} could not be evaluated: ${(e as Error).message.split('\n')[0]}`, fired, maxDurationSeconds };
      }
      if (matched !== true) continue;
      const rule = `${policy.name}/${c.name}`;
      switch (c.effect) {
        case 'deny':
          fired.push({ rule, effect: 'deny', detail: c.reason });
          return { effect: 'deny', policy: policy.name, reason: c.reason, fired, maxDurationSeconds };
        case 'add_stage':
          stages.push({ ...c.stage, requireComment: false });
          fired.push({ rule, effect: 'add_stage', detail: `stage ${c.stage.name}: ${c.stage.approvers.join(', ')}` });
          break;
        case 'auto_approve':
          autoApprove ??= c.reason;
          fired.push({ rule, effect: 'auto_approve', detail: c.reason });
          break;
        case 'cap_duration':
          cap(c.maxDurationSeconds);
          fired.push({ rule, effect: 'cap_duration', detail: `cap ${c.maxDurationSeconds}s` });
          break;
      }
    }

    let sodException = false;
    for (const r of this.document.sod) {
      if (!r.entitlementIds.includes(ctx.entitlement.id)) continue;
      const conflicts = r.entitlementIds.filter((id) => id !== ctx.entitlement.id && facts.heldOrPending.has(id));
      if (conflicts.length === 0) continue;
      if (r.effect === 'deny') {
        fired.push({ rule: `sod/${r.name}`, effect: 'sod_deny', detail: `conflicts with ${conflicts.join(', ')}` });
        return { effect: 'deny', policy: policy.name, reason: `segregation of duties (${r.name}): conflicts with held or requested access`, fired, maxDurationSeconds };
      }
      sodException = true;
      cap(r.exceptionMaxDurationSeconds);
      stages.push({ name: `sod-${r.name}`.slice(0, 48), approvers: [r.exceptionApprover as ApproverSpec], quorum: 1, requireComment: true });
      fired.push({ rule: `sod/${r.name}`, effect: 'sod_exception', detail: `exception approval required; conflicts with ${conflicts.join(', ')}` });
    }

    // An exception to segregation of duties is never automatic.
    if (autoApprove && !sodException && !isContractor(ctx.subject)) return { effect: 'auto_approve', policy: policy.name, reason: autoApprove, fired, maxDurationSeconds };
    return { effect: 'route', policy: policy.name, stages, fired, maxDurationSeconds, extendRequiresApproval: policy.extendRequiresApproval };
  }
}

/** Behaviour before any policy is loaded: one stage, the entitlement owner, as issue 2 shipped. */
export const DEFAULT_POLICY: PolicyDocument = {
  apiVersion: 'accessloop/v1',
  birthright: [],
  moverGraceSeconds: 86400,
  reconciliation: { removeUnauthorized: 'privileged', redriveFailedRevocations: true, revokeWithoutTicket: false },
  policies: [{ name: 'default', appliesTo: {}, stages: [{ name: 'owner', approvers: ['entitlement_owner'], quorum: 1 }], extendRequiresApproval: false, conditions: [] }],
  sod: [],
};
