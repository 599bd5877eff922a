import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessRequests, identities } from '../../db/schema.js';
import { verifyChain } from '../../activities/domain/audit.js';
import { loadConfig } from '../../temporal/config.js';
import { createLogger } from '../../temporal/logger.js';
import { startRuntime } from '../../temporal/runtime.js';
import { psql } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<string, string>;
let ids: Record<string, string>;
let ent: Record<string, string>;
let securityGroup: string;

async function person(username: string, extra: Record<string, unknown> = {}) {
  const r = await s.call('POST', '/v1/identities', tok.operator, { kind: 'employee', username, displayName: username, location: 'LON', ...extra });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const t = await s.call('POST', '/v1/tokens', tok.operator, { principalId: r.body.id, roles: ['requester', 'approver'] });
  ids[username] = r.body.id;
  tok[username] = t.body.token;
  return r.body.id as string;
}

async function publish(doc: unknown) {
  const r = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(doc), { 'content-type': 'application/json' });
  expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return r.body.version as string;
}

const request = (token: string | undefined, body: Record<string, unknown>) => s.call('POST', '/v1/access-requests', token, { justification: 'policy routing check', ...body });
const decide = (token: string | undefined, id: string, decision: 'approve' | 'reject', comment?: string) =>
  s.call('POST', `/v1/access-requests/${id}/decision`, token, { decision, ...(comment ? { comment } : {}) });
const pendingIds = async (token: string | undefined) => ((await s.call('GET', '/v1/approvals/pending', token)).body.items ?? []).map((i: { requestId: string }) => i.requestId);
const waitPending = (token: string | undefined, id: string) => waitFor(async () => (await pendingIds(token)).includes(id), `task for ${id}`);
async function finish(id: string) {
  await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' });
  await s.waitForStatus(id, ['revoked', 'cancelled']);
}

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = { ...s.catalog.identities };
  ent = { ...s.catalog.entitlements };
  await person('erin');
  await person('frank');
  await person('grace');
  const g = await s.call('POST', '/v1/groups', tok.operator, { name: 'security-team', memberIds: [ids.grace] });
  expect(g.status).toBe(201);
  securityGroup = g.body.ref;
});
afterAll(async () => {
  await s?.stop();
});

describe('policy-routed approvals', () => {
  it('refuses a malformed policy with a line-precise message and keeps the active one', async () => {
    const active = (await s.call('GET', '/v1/policies/active', tok.operator)).body.version;
    const yaml = ['apiVersion: accessloop/v1', 'policies:', '  - name: broken', '    stages:', '      - name: owner', '        approvers: [entitlement_owner]', '        quorum: 0', '    conditions:', '      - name: bad', '        when: subject.location ==', '        effect: deny', '        reason: nope', ''].join('\n');
    const r = await s.call('PUT', '/v1/policies', tok.operator, yaml, { 'content-type': 'application/yaml' });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_policy');
    expect(r.body.error.details).toEqual([expect.objectContaining({ line: 7, path: 'policies.0.stages.0.quorum' })]);
    const cel = await s.call('PUT', '/v1/policies', tok.operator, yaml.replace('quorum: 0', 'quorum: 1'), { 'content-type': 'application/yaml' });
    expect(cel.status).toBe(400);
    expect(cel.body.error.details).toEqual([expect.objectContaining({ line: 10, path: 'policies.0.conditions.0.when', message: expect.stringMatching(/^CEL/) })]);
    expect((await s.call('GET', '/v1/policies/active', tok.operator)).body.version).toBe(active);
    expect((await s.call('PUT', '/v1/policies', tok.alice, yaml, { 'content-type': 'application/yaml' })).status).toBe(403);
  });

  it('runs two stages in order: the subject’s manager, then two distinct members of a group', async () => {
    const g = await s.call('POST', '/v1/groups', tok.operator, { name: 'eng-leads', memberIds: [ids.bob, ids.erin, ids.frank, ids.carol] });
    await publish({
      apiVersion: 'accessloop/v1',
      policies: [
        { name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] },
        { name: 'eng', appliesTo: { entitlementIds: [ent.engineering] }, stages: [{ name: 'manager', approvers: ['manager'] }, { name: 'leads', approvers: [g.body.ref], quorum: 2 }] },
      ],
    });
    const explain = await s.call('GET', `/v1/policies/${ent.engineering}/explain`, tok.alice);
    expect(explain.status).toBe(200);
    expect(explain.body).toMatchObject({ effect: 'route', policy: 'eng', stages: [{ name: 'manager', quorum: 1, approvers: [{ id: ids.carol, via: 'manager' }] }, { name: 'leads', quorum: 2 }] });

    const req = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 600 });
    expect(req.status).toBe(202);
    await waitPending(tok.carol, req.body.id);
    expect(await pendingIds(tok.bob)).not.toContain(req.body.id); // stage 2 is not open yet
    expect((await decide(tok.carol, req.body.id, 'approve')).body.status).toBe('pending_approval');

    await waitPending(tok.bob, req.body.id);
    // Carol approved stage 1: she may not count toward stage 2 as well.
    const twice = await decide(tok.carol, req.body.id, 'approve');
    expect(twice.status).toBe(403);
    expect((await decide(tok.bob, req.body.id, 'approve')).body.status).toBe('pending_approval');
    expect((await decide(tok.bob, req.body.id, 'approve')).status).toBe(403);
    expect((await decide(tok.erin, req.body.id, 'approve')).body.status).toBe('granting');
    const active = await s.waitForStatus(req.body.id, ['active']);
    expect(active.stages.filter((x: { status: string }) => x.status === 'approved').map((x: { approverId: string; name: string }) => [x.name, x.approverId])).toEqual([
      ['manager', ids.carol],
      ['leads', ids.bob],
      ['leads', ids.erin],
    ]);
    // Frank's task closed without a decision once the quorum was reached.
    expect(active.stages.find((x: { approverId: string }) => x.approverId === ids.frank).status).toBe('closed');
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));
    await finish(req.body.id);
  });

  it('denies by CEL rule up front (nothing written) and adds a stage when a condition holds', async () => {
    // The same directory registered a second time, so the regional item can reuse a real group.
    const sys = await s.call('POST', '/v1/systems', tok.operator, {
      name: 'us-directory',
      kind: 'ldap',
      config: (await s.tdb.db.query.systems.findFirst())!.config,
      secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' },
      ownerId: ids.carol,
    });
    const regional = await s.call('POST', '/v1/entitlements', tok.operator, {
      systemId: sys.body.id,
      name: 'US engineering',
      resource: 'cn=engineering,ou=groups,dc=accessloop,dc=test',
      ownerId: ids.bob,
      riskTier: 'medium',
      defaultDurationSeconds: 600,
      maxDurationSeconds: 3600,
      attributes: { region: 'NYC' },
    });
    expect(regional.status, JSON.stringify(regional.body)).toBe(201);
    const version = await publish({
      apiVersion: 'accessloop/v1',
      securityTeam: securityGroup,
      policies: [
        {
          name: 'default',
          stages: [{ name: 'owner', approvers: ['entitlement_owner'] }],
          conditions: [
            { name: 'no-contractor-privileged', when: 'subject.employment_type == "contractor" && entitlement.risk_tier == "privileged"', effect: 'deny', reason: 'contractors cannot hold privileged access' },
            { name: 'cross-region', when: 'has(entitlement.attributes.region) && subject.location != entitlement.attributes.region', effect: 'add_stage', stage: { name: 'security', approvers: ['security_team'] } },
          ],
        },
      ],
    });
    const before = await s.tdb.db.$count(accessRequests);
    // carol is dave's manager, so she may ask on his behalf; the policy still says no.
    const byManager = await request(tok.carol, { subjectId: ids.dave, entitlementId: ent['prod-admins'], durationSeconds: 600 });
    expect(byManager.status).toBe(403);
    expect(byManager.body.error).toMatchObject({ code: 'denied_by_policy', message: 'contractors cannot hold privileged access', details: { policyVersion: version, rules: ['default/contractor', 'default/no-contractor-privileged'] } });
    expect(await s.tdb.db.$count(accessRequests)).toBe(before);

    const req = await request(tok.alice, { entitlementId: regional.body.id, durationSeconds: 600 });
    expect(req.status).toBe(202);
    await waitPending(tok.bob, req.body.id);
    await decide(tok.bob, req.body.id, 'approve');
    await waitPending(tok.grace, req.body.id);
    expect((await decide(tok.grace, req.body.id, 'approve')).body.status).toBe('granting');
    const done = await s.waitForStatus(req.body.id, ['active']);
    expect(done.policyVersion).toBe(version);
    expect(done.stages.map((x: { name: string }) => x.name)).toEqual(['owner', 'security']);
    await finish(req.body.id);
  });

  it('routes a contractor to their sponsor with a shorter cap', async () => {
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], contractorMaxDurationSeconds: 1800 }] });
    const t = await s.call('POST', '/v1/tokens', tok.operator, { principalId: ids.dave, roles: ['requester'] });
    const tooLong = await request(t.body.token, { entitlementId: ent['finance-readers'], durationSeconds: 3600 });
    expect(tooLong.status).toBe(400);
    expect(tooLong.body.error).toMatchObject({ code: 'outside_policy', details: { maxDurationSeconds: 1800 } });
    const req = await request(t.body.token, { entitlementId: ent['finance-readers'], durationSeconds: 1800 });
    expect(req.status).toBe(202);
    await waitPending(tok.bob, req.body.id);
    expect((await decide(tok.bob, req.body.id, 'approve')).body.status).toBe('pending_approval');
    await waitPending(tok.carol, req.body.id); // dave's sponsor
    expect((await decide(tok.carol, req.body.id, 'approve')).body.status).toBe('granting');
    const active = await s.waitForStatus(req.body.id, ['active']);
    expect(active.stages.map((x: { name: string; approverId: string }) => [x.name, x.approverId])).toEqual([
      ['owner', ids.bob],
      ['sponsor', ids.carol],
    ]);
    expect(Date.parse(active.expiresAt) - Date.parse(active.grant.grantVerifiedAt)).toBeLessThanOrEqual(1800 * 1000 + 1000);
    await finish(req.body.id);
  });

  it('denies an SoD conflict, or routes it to the exception approver with a mandatory comment', async () => {
    const sod = (effect: 'deny' | 'exception') => ({
      apiVersion: 'accessloop/v1',
      securityTeam: securityGroup,
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }],
      sod: [{ name: 'eng-vs-finance', entitlementIds: [ent.engineering, ent['finance-readers']], effect, exceptionApprover: 'security_team', exceptionMaxDurationSeconds: 900 }],
    });
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }] });
    const held = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 3600 });
    await waitPending(tok.bob, held.body.id);
    await decide(tok.bob, held.body.id, 'approve');
    await s.waitForStatus(held.body.id, ['active']);

    await publish(sod('deny'));
    const denied = await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 600 });
    expect(denied.status).toBe(403);
    expect(denied.body.error.details.rules).toContain('sod/eng-vs-finance');

    await publish(sod('exception'));
    expect((await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 3600 })).status).toBe(400); // capped at 900
    const req = await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 900 });
    expect(req.status).toBe(202);
    await waitPending(tok.bob, req.body.id);
    await decide(tok.bob, req.body.id, 'approve');
    await waitPending(tok.grace, req.body.id);
    const noWhy = await decide(tok.grace, req.body.id, 'approve');
    expect(noWhy.status).toBe(400);
    expect(noWhy.body.error.code).toBe('outside_policy');
    expect((await decide(tok.grace, req.body.id, 'approve', 'temporary cover for the quarter close')).status).toBe(200);
    const done = await s.waitForStatus(req.body.id, ['active']);
    expect(done.stages.find((x: { name: string }) => x.name.startsWith('sod-'))).toMatchObject({ approverId: ids.grace, comment: 'temporary cover for the quarter close' });
    await finish(req.body.id);
    await finish(held.body.id);
  });

  it('hands a delegator’s tasks to their delegate, and re-routes a terminated approver to their manager', async () => {
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }] });
    const d = await s.call('POST', '/v1/delegations', tok.bob, { delegateId: ids.erin, endsAt: new Date(Date.now() + 3600_000).toISOString(), reason: 'holiday' });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    expect((await s.call('POST', '/v1/delegations', tok.alice, { delegatorId: ids.bob, delegateId: ids.alice, endsAt: new Date(Date.now() + 3600_000).toISOString() })).status).toBe(403);
    const req = await request(tok.alice, { entitlementId: ent['prod-admins'], durationSeconds: 600 });
    await waitPending(tok.erin, req.body.id);
    expect(await pendingIds(tok.bob)).not.toContain(req.body.id);
    await decide(tok.erin, req.body.id, 'approve');
    const active = await s.waitForStatus(req.body.id, ['active']);
    expect(active.stages[0]).toMatchObject({ approverId: ids.erin, onBehalfOf: ids.bob, status: 'approved' });
    await finish(req.body.id);
    expect((await s.call('DELETE', `/v1/delegations/${d.body.id}`, tok.bob)).status).toBe(204);

    // Bob leaves: his stage goes to his manager, carol.
    await s.tdb.db.update(identities).set({ status: 'terminated' }).where(eq(identities.id, ids.bob!));
    const explain = await s.call('GET', `/v1/policies/${ent.engineering}/explain`, tok.alice);
    expect(explain.body.stages[0].approvers).toEqual([{ id: ids.carol, via: 'entitlement_owner', substitutedFor: ids.bob, substitution: 'terminated' }]);
    const req2 = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 600 });
    await waitPending(tok.carol, req2.body.id);
    await decide(tok.carol, req2.body.id, 'approve');
    await s.waitForStatus(req2.body.id, ['active']);
    await finish(req2.body.id);
    await s.tdb.db.update(identities).set({ status: 'active' }).where(eq(identities.id, ids.bob!));
  });

  it('auto-approves by rule and records which rule fired', async () => {
    await publish({
      apiVersion: 'accessloop/v1',
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], conditions: [{ name: 'low-self', when: 'entitlement.risk_tier == "low" && request.self_request', effect: 'auto_approve', reason: 'low-risk self-service' }] }],
    });
    const req = await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 600 });
    const active = await s.waitForStatus(req.body.id, ['active']);
    expect(active.stages).toEqual([]);
    expect(active.timeline.find((t: { action: string }) => t.action === 'request.auto_approved')).toMatchObject({ reason: 'low-risk self-service', data: { rules: ['default/low-self'] } });
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('alice'));
    await finish(req.body.id);
  });

  it('reports the live leases a new policy version would no longer allow, in the response and the audit trail', async () => {
    const lowSelf = { name: 'low-self', when: 'entitlement.risk_tier == "low" && request.self_request', effect: 'auto_approve', reason: 'low-risk self-service' };
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], conditions: [lowSelf] }] });
    const kept = await request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 600 });
    const longer = await request(tok.bob, { entitlementId: ent['finance-readers'], durationSeconds: 1200 });
    await s.waitForStatus(kept.body.id, ['active']);
    await s.waitForStatus(longer.body.id, ['active']);
    const grantOf = async (id: string) => (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.grant.id as string;
    const [keptGrant, longerGrant] = [await grantOf(kept.body.id), await grantOf(longer.body.id)];

    // alice's location (LON) is now refused; bob's lease is longer than the new 900 s maximum.
    const doc = {
      apiVersion: 'accessloop/v1',
      policies: [{ name: 'default', maxDurationSeconds: 900, stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], conditions: [{ name: 'no-london', when: 'subject.location == "LON" && entitlement.risk_tier == "low" && subject.id == "' + ids.alice + '"', effect: 'deny', reason: 'not from London any more' }, lowSelf] }],
    };
    const r = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(doc), { 'content-type': 'application/json' });
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    expect(r.body.impact.checked).toBeGreaterThanOrEqual(2);
    const byGrant = Object.fromEntries((r.body.impact.grants as Array<{ grantId: string }>).map((g) => [g.grantId, g]));
    expect(byGrant[keptGrant]).toMatchObject({ kind: 'denied', reason: 'not from London any more', requestId: kept.body.id, identityId: ids.alice, rule: 'default/no-london' });
    expect(byGrant[longerGrant]).toMatchObject({ kind: 'over_maximum', requestId: longer.body.id, identityId: ids.bob, rule: 'default' });
    expect(r.body.impact.noLongerAllowed).toBe(r.body.impact.grants.length);

    const events = await s.tdb.db.$client<{ data: { impact: { noLongerAllowed: number; grants: Array<{ grantId: string; kind: string }> } } }[]>`
      select data from audit_event where action = 'policy.published' and policy_version = ${r.body.version}`;
    expect(events).toHaveLength(1);
    expect(events[0]!.data.impact.noLongerAllowed).toBe(r.body.impact.noLongerAllowed);
    expect(events[0]!.data.impact.grants).toEqual(expect.arrayContaining([{ grantId: keptGrant, kind: 'denied' }, { grantId: longerGrant, kind: 'over_maximum' }]));
    // Publishing reports; it does not revoke: both leases are still live.
    expect(await s.ldapMembers('finance-readers')).toEqual(expect.arrayContaining([s.userDn('alice'), s.userDn('bob')]));
    await finish(kept.body.id);
    await finish(longer.body.id);
  });

  it('audits a policy published from ACCESSLOOP_POLICY_FILE at start as a system action, once per change', async () => {
    const dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-policy-'));
    const file = path.join(dir, 'startup-policy.yaml');
    await writeFile(file, `apiVersion: accessloop/v1\npolicies:\n  - name: from-file-${Date.now()}\n    stages:\n      - { name: owner, approvers: [entitlement_owner] }\n`);
    const events = async () =>
      (await psql(s.tdb.url, `select actor_type || '|' || actor_id || '|' || policy_version || '|' || (data->>'source') from audit_event where action = 'policy.published' and data->>'source' = 'file:startup-policy.yaml' order by seq;\n`)).trim().split('\n').filter(Boolean);
    const start = async () => {
      const rt = await startRuntime({ config: loadConfig({ ...s.workerEnv, PORT: '0', ACCESSLOOP_POLICY_FILE: file }), log: createLogger('silent'), api: false, worker: false, say: () => {} });
      await rt.stop();
    };
    await start();
    const active = (await s.call('GET', '/v1/policies/active', tok.operator)).body.version;
    expect(await events()).toEqual([`system|startup|${active}|file:startup-policy.yaml`]);
    // The same file again is no change, and no second event.
    await start();
    expect(await events()).toHaveLength(1);
    expect(await verifyChain(s.tdb.db)).toMatchObject({ ok: true });
  });

  it('refuses a malformed ACCESSLOOP_POLICY_FILE at start with file:line:column, leaving the active policy', async () => {
    const active = (await s.call('GET', '/v1/policies/active', tok.operator)).body.version;
    const dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-policy-'));
    const file = path.join(dir, 'policy.yaml');
    await writeFile(file, 'apiVersion: accessloop/v1\npolicies:\n  - name: x\n    appliesTo: { riskTiers: [extreme] }\n');
    const config = loadConfig({ ...s.workerEnv, PORT: '0', ACCESSLOOP_POLICY_FILE: file });
    const err = await startRuntime({ config, log: createLogger('silent'), api: false, worker: false, say: () => {} }).catch((e: Error) => e);
    expect(err).toBeInstanceOf(Error);
    expect((err as Error).message).toContain(`${file}:4:`);
    expect((err as Error).message).toContain('policies.0.appliesTo.riskTiers.0');
    expect((await s.call('GET', '/v1/policies/active', tok.operator)).body.version).toBe(active);

    // The policy's default duration applies when a request names none.
    await publish({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', defaultDurationSeconds: 1200, stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }] });
    const req = await request(tok.alice, { entitlementId: ent.engineering });
    expect(req.status).toBe(202);
    expect((await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.alice)).body.durationSeconds).toBe(1200);
    await finish(req.body.id);
  });
});
