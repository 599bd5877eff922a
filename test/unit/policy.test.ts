import { describe, expect, it } from 'vitest';
import { CompiledPolicy, selectPolicy, type PolicyContext } from '../../activities/domain/policy/evaluate.js';
import { formatProblems, loadPolicyText } from '../../activities/domain/policy/load.js';

const ENT_A = '11111111-1111-4111-8111-111111111111';
const ENT_B = '22222222-2222-4222-8222-222222222222';
const SYS = '33333333-3333-4333-8333-333333333333';
const GRP = '44444444-4444-4444-8444-444444444444';

const yaml = `apiVersion: accessloop/v1
securityTeam: group:${GRP}
policies:
  - name: default
    stages:
      - name: owner
        approvers: [entitlement_owner]
    contractorMaxDurationSeconds: 3600
    conditions:
      - name: no-contractor-privileged
        when: subject.employment_type == "contractor" && entitlement.risk_tier == "privileged"
        effect: deny
        reason: contractors cannot hold privileged access
      - name: cross-region
        when: has(entitlement.attributes.region) && subject.location != entitlement.attributes.region
        effect: add_stage
        stage: { name: security, approvers: [security_team] }
      - name: low-risk-self
        when: entitlement.risk_tier == "low" && request.self_request
        effect: auto_approve
        reason: low-risk self-service
  - name: payments
    appliesTo: { entitlementIds: [${ENT_B}] }
    maxDurationSeconds: 7200
    stages:
      - { name: manager, approvers: [manager] }
      - { name: owners, approvers: ["group:${GRP}"], quorum: 2 }
sod:
  - name: pay-and-approve
    entitlementIds: [${ENT_A}, ${ENT_B}]
    effect: exception
    exceptionApprover: security_team
    exceptionMaxDurationSeconds: 1800
`;

function ctx(over: { subject?: Record<string, unknown>; entitlement?: Record<string, unknown>; self?: boolean } = {}): PolicyContext {
  return {
    subject: { id: 's', kind: 'employee', employment_type: 'full_time', location: 'LON', ...over.subject },
    requester: { id: over.self === false ? 'r' : 's' },
    entitlement: { id: ENT_A, risk_tier: 'medium', system_id: SYS, max_duration_seconds: 28800, attributes: {}, ...over.entitlement },
    system: { id: SYS },
    request: { duration_seconds: 600, justification: 'because', ticket_ref: null, self_request: over.self ?? true },
  } as PolicyContext;
}

describe('policy documents', () => {
  const loaded = loadPolicyText(yaml);
  if (!loaded.ok) throw new Error(formatProblems(loaded.problems));
  const policy = new CompiledPolicy(loaded.document, loaded.version);

  it('versions by content, not formatting', () => {
    const reformatted = loadPolicyText(JSON.stringify(loaded.document, null, 1));
    expect(reformatted.ok && reformatted.version).toBe(loaded.version);
    expect(loaded.version).toMatch(/^pol@[0-9a-f]{16}$/);
  });

  it('reports schema errors with the line and column of the bad value', () => {
    const bad = yaml.replace('quorum: 2', 'quorum: "two"');
    const r = loadPolicyText(bad);
    expect(r.ok).toBe(false);
    const line = bad.split('\n').findIndex((l) => l.includes('quorum: "two"')) + 1;
    expect(!r.ok && r.problems).toEqual([expect.objectContaining({ line, path: 'policies.1.stages.1.quorum' })]);
  });

  it('compiles CEL at load time and points at the broken expression', () => {
    const bad = yaml.replace('entitlement.risk_tier == "low" && request.self_request', 'entitlement.risk_tier == && true');
    const r = loadPolicyText(bad);
    const line = bad.split('\n').findIndex((l) => l.includes('== && true')) + 1;
    expect(!r.ok && r.problems[0]).toMatchObject({ line, path: 'policies.0.conditions.2.when', message: expect.stringMatching(/^CEL: /) });
    const typo = loadPolicyText(yaml.replace('subject.location !=', 'subjet.location !='));
    expect(!typo.ok && typo.problems[0]?.message).toMatch(/subjet/);
  });

  it('reports YAML syntax errors and duplicate keys with their position', () => {
    const r = loadPolicyText('apiVersion: accessloop/v1\npolicies:\n  - name: a\n    name: b\n');
    expect(!r.ok && r.problems[0]).toMatchObject({ line: 4 });
  });

  it('picks the most specific policy', () => {
    expect(selectPolicy(loaded.document, ctx().entitlement)?.name).toBe('default');
    expect(selectPolicy(loaded.document, ctx({ entitlement: { id: ENT_B } }).entitlement)?.name).toBe('payments');
  });

  it('denies by CEL rule and names the rule', () => {
    const d = policy.evaluate(ctx({ subject: { employment_type: 'contractor', kind: 'contractor' }, entitlement: { risk_tier: 'privileged' } }), { heldOrPending: new Set() });
    expect(d).toMatchObject({ effect: 'deny', reason: 'contractors cannot hold privileged access', fired: expect.arrayContaining([expect.objectContaining({ rule: 'default/no-contractor-privileged' })]) });
  });

  it('adds a stage when a condition holds and routes contractors to their sponsor with a shorter cap', () => {
    const d = policy.evaluate(ctx({ subject: { kind: 'contractor', employment_type: 'contractor' }, entitlement: { attributes: { region: 'NYC' } } }), { heldOrPending: new Set() });
    expect(d.effect).toBe('route');
    expect(d.effect === 'route' && d.stages.map((s) => s.name)).toEqual(['owner', 'sponsor', 'security']);
    expect(d.maxDurationSeconds).toBe(3600);
  });

  it('auto-approves low-risk self-service, but never for contractors', () => {
    expect(policy.evaluate(ctx({ entitlement: { risk_tier: 'low' } }), { heldOrPending: new Set() }).effect).toBe('auto_approve');
    expect(policy.evaluate(ctx({ entitlement: { risk_tier: 'low' }, self: false }), { heldOrPending: new Set() }).effect).toBe('route');
    expect(policy.evaluate(ctx({ entitlement: { risk_tier: 'low' }, subject: { kind: 'contractor', employment_type: 'contractor' } }), { heldOrPending: new Set() }).effect).toBe('route');
  });

  it('routes an SoD conflict to the exception approver with a comment requirement and a cap', () => {
    const d = policy.evaluate(ctx({ entitlement: { id: ENT_B } }), { heldOrPending: new Set([ENT_A]) });
    expect(d.effect).toBe('route');
    if (d.effect !== 'route') return;
    expect(d.stages.map((s) => [s.name, s.quorum, s.requireComment])).toEqual([
      ['manager', 1, false],
      ['owners', 2, false],
      ['sod-pay-and-approve', 1, true],
    ]);
    expect(d.maxDurationSeconds).toBe(1800);
  });

  it('denies an SoD conflict when the rule says deny', () => {
    const strict = loadPolicyText(yaml.replace('effect: exception', 'effect: deny'));
    if (!strict.ok) throw new Error('load');
    const d = new CompiledPolicy(strict.document, strict.version).evaluate(ctx({ entitlement: { id: ENT_B } }), { heldOrPending: new Set([ENT_A]) });
    expect(d).toMatchObject({ effect: 'deny', reason: expect.stringContaining('segregation of duties') });
  });

  it('denies (fails closed) when a rule cannot be evaluated for a request', () => {
    const r = loadPolicyText(yaml.replace('has(entitlement.attributes.region) && ', ''));
    if (!r.ok) throw new Error('load');
    const d = new CompiledPolicy(r.document, r.version).evaluate(ctx({ entitlement: { attributes: {} } }), { heldOrPending: new Set() });
    expect(d).toMatchObject({ effect: 'deny', reason: expect.stringContaining('cross-region') });
  });
});
