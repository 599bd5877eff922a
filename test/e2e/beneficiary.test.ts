import { and, eq, sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessRequests, approvals, auditEvents, identities } from '../../db/schema.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

// Issue 11: the beneficiary never approves (routing, delegation, escalation, the decision path),
// one open request per subject and entitlement under concurrency, and who may see a dry run.
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

async function publish(doc: Record<string, unknown>) {
  const r = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify({ apiVersion: 'accessloop/v1', securityTeam: securityGroup, ...doc }), { 'content-type': 'application/json' });
  expect(r.status, JSON.stringify(r.body)).toBeLessThan(300);
  return r.body.version as string;
}

const ownerStage = (extra: Record<string, unknown> = {}) => ({ policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'], ...extra }] }] });
const request = (token: string | undefined, body: Record<string, unknown>) => s.call('POST', '/v1/access-requests', token, { justification: 'beneficiary check', ...body });
const decide = (token: string | undefined, id: string) => s.call('POST', `/v1/access-requests/${id}/decision`, token, { decision: 'approve' });
const explain = (token: string | undefined, entitlementId: string | undefined, subjectId?: string) =>
  s.call('GET', `/v1/policies/${entitlementId}/explain${subjectId ? `?subjectId=${subjectId}` : ''}`, token);
const pendingIds = async (token: string | undefined) => ((await s.call('GET', '/v1/approvals/pending', token)).body.items ?? []).map((i: { requestId: string }) => i.requestId);
const waitPending = (token: string | undefined, id: string) => waitFor(async () => (await pendingIds(token)).includes(id), `task for ${id}`);
const setManager = (who: string, managerId: string | null) => s.tdb.db.update(identities).set({ managerId }).where(eq(identities.id, ids[who]!));
/** The approvers the workflow actually assigned, read from the table rather than through the API. */
const assigned = async (requestId: string) => (await s.tdb.db.select({ id: approvals.approverId }).from(approvals).where(eq(approvals.requestId, requestId))).map((r) => r.id).sort();
async function cancel(id: string) {
  expect((await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
  return s.waitForStatus(id, ['revoked', 'cancelled']);
}

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = { ...s.catalog.identities };
  ent = { ...s.catalog.entitlements };
  await person('vp');
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

describe('the beneficiary never approves', () => {
  it('a manager asking for the report who owns the item: refused up front when nobody else can approve, else routed past the owner', async () => {
    await publish(ownerStage());
    await setManager('carol', null);
    // bob owns engineering; carol is bob's manager and asks for him. bob is the subject, carol the
    // requester, and carol has no manager: no one may approve.
    const requestsBefore = await s.tdb.db.$count(accessRequests);
    const eventsBefore = await s.tdb.db.$count(auditEvents);
    const refused = await request(tok.carol, { subjectId: ids.bob, entitlementId: ent.engineering, durationSeconds: 600 });
    expect(refused.status, JSON.stringify(refused.body)).toBe(403);
    expect(refused.body.error).toMatchObject({ code: 'no_eligible_approver', details: { stage: 'owner' } });
    expect(await s.tdb.db.$count(accessRequests)).toBe(requestsBefore);
    expect(await s.tdb.db.$count(auditEvents)).toBe(eventsBefore);
    const dry = await explain(tok.carol, ent.engineering, ids.bob);
    expect(dry.body).toMatchObject({ effect: 'deny', noEligibleApprover: { stage: 'owner', quorum: 1, eligible: 0 } });

    // With a manager above carol, the stage goes to her (the owner's manager is the requester).
    await setManager('carol', ids.vp!);
    const routed = await explain(tok.carol, ent.engineering, ids.bob);
    expect(routed.body.stages).toEqual([expect.objectContaining({ name: 'owner', approvers: [{ id: ids.vp, via: 'entitlement_owner', substitutedFor: ids.bob, substitution: 'subject' }] })]);
    const req = await request(tok.carol, { subjectId: ids.bob, entitlementId: ent.engineering, durationSeconds: 600 });
    expect(req.status, JSON.stringify(req.body)).toBe(202);
    await waitPending(tok.vp, req.body.id);
    expect(await assigned(req.body.id)).toEqual([ids.vp]);
    expect(await pendingIds(tok.bob)).not.toContain(req.body.id);
    // The subject is refused before the workflow is asked, with the self-approval code.
    const self = await decide(tok.bob, req.body.id);
    expect(self.status).toBe(403);
    expect(self.body.error.code).toBe('self_approval');
    expect((await decide(tok.vp, req.body.id)).body.status).toBe('granting');
    await s.waitForStatus(req.body.id, ['active']);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('bob'));

    // The API's revoke is attested first, then signalled under the same HTTP request id.
    const revoke = await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' }, { 'x-request-id': 'beneficiary-revoke-0001' });
    expect(revoke.status).toBe(202);
    const done = await s.waitForStatus(req.body.id, ['revoked']);
    const actions = done.timeline.map((t: { action: string }) => t.action);
    expect(actions.indexOf('request.revoke_submitted')).toBeGreaterThan(-1);
    expect(actions.indexOf('request.revoke_submitted')).toBeLessThan(actions.indexOf('grant.revoke_requested'));
    expect(done.timeline.find((t: { action: string }) => t.action === 'request.revoke_submitted')).toMatchObject({
      actorType: 'client',
      actorId: 'client:demo-operator',
      data: { reason: 'manual', httpRequestId: 'beneficiary-revoke-0001' },
    });
    expect(done.timeline.find((t: { action: string }) => t.action === 'grant.revoke_requested').data.httpRequestId).toBe('beneficiary-revoke-0001');
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('bob'));
    await setManager('carol', null);
  });

  it('excludes the requester and the subject from every kind of stage, and explain shows the routing the workflow assigns', async () => {
    await setManager('carol', ids.vp!);
    const sys = await s.call('POST', '/v1/systems', tok.operator, {
      name: 'second-directory',
      kind: 'ldap',
      config: (await s.tdb.db.query.systems.findFirst())!.config,
      secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' },
      ownerId: ids.bob,
    });
    expect(sys.status, JSON.stringify(sys.body)).toBe(201);
    const item = await s.call('POST', '/v1/entitlements', tok.operator, {
      systemId: sys.body.id,
      name: 'second engineering',
      resource: 'cn=engineering,ou=groups,dc=accessloop,dc=test',
      ownerId: ids.bob,
      riskTier: 'medium',
      defaultDurationSeconds: 600,
      maxDurationSeconds: 3600,
    });
    expect(item.status, JSON.stringify(item.body)).toBe(201);
    const leads = await s.call('POST', '/v1/groups', tok.operator, { name: 'leads-with-bob', memberIds: [ids.bob, ids.erin] });
    const security = await s.call('POST', '/v1/groups', tok.operator, { name: 'security-with-bob', memberIds: [ids.bob, ids.grace] });
    await publish({
      securityTeam: security.body.ref,
      policies: [
        {
          name: 'every-spec',
          stages: [
            { name: 'owner', approvers: ['entitlement_owner'] },
            { name: 'system', approvers: ['system_owner'] },
            { name: 'named', approvers: [`identity:${ids.bob}`] },
            { name: 'leads', approvers: [leads.body.ref] },
            { name: 'security', approvers: ['security_team'] },
          ],
          // A policy holds at most five stages; a condition adds the sixth kind.
          conditions: [{ name: 'always-manager', when: 'true', effect: 'add_stage', stage: { name: 'manager', approvers: ['manager'] } }],
        },
      ],
    });
    const dry = await explain(tok.carol, item.body.id, ids.bob);
    expect(dry.status).toBe(200);
    // Group members come back in no particular order: compare each stage's approvers sorted by id.
    const sorted = <T extends { id: string }>(xs: T[]) => [...xs].sort((a, b) => a.id.localeCompare(b.id));
    const byStage = Object.fromEntries(dry.body.stages.map((st: { name: string; approvers: Array<{ id: string }> }) => [st.name, sorted(st.approvers)]));
    const viaSubject = (via: string) => ({ id: ids.vp!, via, substitutedFor: ids.bob, substitution: 'subject' });
    expect(byStage).toEqual({
      owner: [viaSubject('entitlement_owner')],
      system: [viaSubject('system_owner')],
      named: [viaSubject(`identity:${ids.bob}`)],
      leads: sorted([viaSubject(leads.body.ref), { id: ids.erin!, via: leads.body.ref }]),
      security: sorted([viaSubject('security_team'), { id: ids.grace!, via: 'security_team' }]),
      // bob's manager is carol, the requester: her manager stands in.
      manager: [{ id: ids.vp, via: 'manager', substitutedFor: ids.carol, substitution: 'requester' }],
    });
    for (const approvers of Object.values(byStage) as Array<Array<{ id: string }>>) expect(approvers.map((a) => a.id)).not.toEqual(expect.arrayContaining([ids.bob]));

    // The workflow's first stage is the one explain showed.
    const req = await request(tok.carol, { subjectId: ids.bob, entitlementId: item.body.id, durationSeconds: 600 });
    expect(req.status, JSON.stringify(req.body)).toBe(202);
    await waitPending(tok.vp, req.body.id);
    expect(await assigned(req.body.id)).toEqual([ids.vp]);
    await cancel(req.body.id);
    await setManager('carol', null);
  });

  it('never hands a task to a delegate who is the subject', async () => {
    await publish(ownerStage());
    await setManager('carol', ids.vp!);
    const d = await s.call('POST', '/v1/delegations', tok.bob, { delegateId: ids.carol, endsAt: new Date(Date.now() + 3600_000).toISOString(), reason: 'holiday' });
    expect(d.status, JSON.stringify(d.body)).toBe(201);
    // For anyone else, bob's task goes to carol...
    const other = await explain(tok.operator, ent.engineering, ids.alice);
    expect(other.body.stages[0].approvers).toEqual([{ id: ids.carol, via: 'entitlement_owner', substitutedFor: ids.bob, substitution: 'delegation' }]);
    // ...but not on carol's own request: bob keeps it.
    const dry = await explain(tok.vp, ent.engineering, ids.carol);
    expect(dry.body.stages[0].approvers).toEqual([{ id: ids.bob, via: 'entitlement_owner' }]);
    const req = await request(tok.vp, { subjectId: ids.carol, entitlementId: ent.engineering, durationSeconds: 600 });
    expect(req.status, JSON.stringify(req.body)).toBe(202);
    await waitPending(tok.bob, req.body.id);
    expect(await assigned(req.body.id)).toEqual([ids.bob]);
    expect(await pendingIds(tok.carol)).not.toContain(req.body.id);
    expect((await decide(tok.carol, req.body.id)).body.error.code).toBe('self_approval');
    await cancel(req.body.id);
    expect((await s.call('DELETE', `/v1/delegations/${d.body.id}`, tok.bob)).status).toBe(204);
    await setManager('carol', null);
  });

  it('escalates past a waiting approver’s manager who is the subject, to the security team', async () => {
    await publish(ownerStage({ escalateAfterSeconds: 1, timeoutSeconds: 60 }));
    await setManager('carol', ids.vp!);
    // bob (the owner) waits; his manager is carol, the subject: the security team is asked instead.
    const req = await request(tok.vp, { subjectId: ids.carol, entitlementId: ent.engineering, durationSeconds: 600 });
    expect(req.status, JSON.stringify(req.body)).toBe(202);
    const escalated = await waitFor(async () => {
      const r = await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.operator);
      return r.body.timeline.find((t: { action: string }) => t.action === 'approval.escalated');
    }, 'escalation');
    expect(escalated.data).toMatchObject({ waiting: [ids.bob], added: [ids.grace] });
    expect(await assigned(req.body.id)).toEqual([ids.bob, ids.grace].sort());
    await cancel(req.body.id);
    await setManager('carol', null);
  });
});

describe('one open request per subject and entitlement', () => {
  it('ten concurrent submissions: exactly one is accepted, nine answer 409 duplicate_request, one row and one event are written', async () => {
    await publish(ownerStage());
    const rows = () => s.tdb.db.$count(accessRequests, and(eq(accessRequests.subjectId, ids.alice!), eq(accessRequests.entitlementId, ent['finance-readers']!)));
    const submitted = () => s.tdb.db.$count(auditEvents, and(eq(auditEvents.action, 'request.submitted'), eq(auditEvents.identityId, ids.alice!), sql`${auditEvents.data}->>'entitlementId' = ${ent['finance-readers']}`));
    const [rowsBefore, eventsBefore] = [await rows(), await submitted()];
    const answers = await Promise.all(Array.from({ length: 10 }, () => request(tok.alice, { entitlementId: ent['finance-readers'], durationSeconds: 600 })));
    const statuses = answers.map((a) => a.status).sort();
    expect(statuses).toEqual([202, ...Array(9).fill(409)]);
    for (const a of answers.filter((x) => x.status === 409)) expect(a.body.error.code).toBe('duplicate_request');
    expect(await rows()).toBe(rowsBefore + 1);
    expect(await submitted()).toBe(eventsBefore + 1);
    await cancel(answers.find((a) => a.status === 202)!.body.id);
  });
});

describe('explain for another subject', () => {
  it('answers operators, auditors, the subject, their manager or sponsor, and approvers assigned to them; 404 to anyone else', async () => {
    await publish(ownerStage());
    const kim = await person('kim', { kind: 'contractor', sponsorId: ids.erin });
    const status = async (token: string | undefined, subjectId: string | undefined) => (await explain(token, ent.engineering, subjectId)).status;
    expect(await status(tok.operator, ids.alice!)).toBe(200);
    expect(await status(tok.carol, ids.alice!)).toBe(200); // manager (and auditor)
    expect(await status(tok.alice, ids.alice!)).toBe(200);
    expect((await explain(tok.alice, ent.engineering)).status).toBe(200);
    expect(await status(tok.erin, kim)).toBe(200); // sponsor
    expect(await status(tok.frank, kim)).toBe(404);
    expect(await status(tok.frank, ids.alice!)).toBe(404);
    const unknown = await explain(tok.frank, ent.engineering, '00000000-0000-4000-8000-000000000000');
    expect(unknown.status).toBe(404);
    expect((await explain(tok.frank, ent.engineering, ids.alice)).body.error).toMatchObject({ code: unknown.body.error.code, message: unknown.body.error.message });
    // bob approves for alice only while a task of hers is open to him.
    expect(await status(tok.bob, ids.alice!)).toBe(404);
    const req = await request(tok.alice, { entitlementId: ent.engineering, durationSeconds: 600 });
    expect(req.status, JSON.stringify(req.body)).toBe(202);
    await waitPending(tok.bob, req.body.id);
    expect(await status(tok.bob, ids.alice!)).toBe(200);
    expect(await status(tok.erin, ids.alice!)).toBe(404);
    await cancel(req.body.id);
    expect(await status(tok.bob, ids.alice!)).toBe(404);
  });
});
