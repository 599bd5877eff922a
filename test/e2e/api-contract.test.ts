import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const BOOTSTRAP = 'bootstrap-token-for-tests-0123456789';
let s: Stack;
let tok: Record<string, string>;

beforeAll(async () => {
  s = await startStack({ env: { ACCESSLOOP_BOOTSTRAP_TOKEN: BOOTSTRAP, ACCESSLOOP_BODY_LIMIT: '8kb' } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
});
afterAll(async () => {
  await s?.stop();
});

/** Row counts of every table plus the workflows on this task queue: "nothing written" means none of these move. */
async function footprint() {
  const rows = await s.tdb.db.execute(sql`
    select (select count(*) from access_request) as requests, (select count(*) from approval) as approvals,
           (select count(*) from "grant") as grants, (select count(*) from audit_event) as audit,
           (select count(*) from identity) as identities, (select count(*) from system) as systems,
           (select count(*) from entitlement) as entitlements, (select count(*) from api_token) as tokens`);
  const wf = await s.rt.temporal.workflow.count(`TaskQueue = '${s.config.TEMPORAL_TASK_QUEUE}'`);
  return { ...rows[0], workflows: wf.count };
}

describe('API contract: authentication, validation, error shape', () => {
  it('rejects missing, malformed and unknown tokens with 401 and the error shape', async () => {
    for (const auth of [undefined, 'Basic abc', 'Bearer short', 'Bearer al_this-token-does-not-exist-anywhere-123']) {
      const r = await s.call('GET', '/v1/approvals/pending', undefined, undefined, auth ? { authorization: auth } : {});
      expect(r.status).toBe(401);
      expect(r.body).toEqual({ error: { code: 'unauthorized', message: expect.any(String), requestId: expect.any(String) } });
    }
  });

  it('answers bad input with a clear 4xx and writes nothing', async () => {
    const before = await footprint();
    const ent = s.catalog.entitlements.engineering;
    const cases: Array<[string, string, string | undefined, unknown, number, string, Record<string, string>?]> = [
      ['missing justification', '/v1/access-requests', tok.alice, { entitlementId: ent }, 400, 'invalid_request'],
      ['unknown field', '/v1/access-requests', tok.alice, { entitlementId: ent, justification: 'a good reason here', approverId: 'x' }, 400, 'invalid_request'],
      ['non-uuid id', '/v1/access-requests', tok.alice, { entitlementId: 'cn=admins', justification: 'a good reason here' }, 400, 'invalid_request'],
      ['unknown entitlement', '/v1/access-requests', tok.alice, { entitlementId: '00000000-0000-4000-8000-000000000000', justification: 'a good reason here' }, 404, 'not_found'],
      ['duration beyond policy', '/v1/access-requests', tok.alice, { entitlementId: ent, justification: 'a good reason here', durationSeconds: 9 * 3600 }, 400, 'outside_policy'],
      ['ticketRef with PII-ish text', '/v1/access-requests', tok.alice, { entitlementId: ent, justification: 'a good reason here', ticketRef: 'alice@example.com wants it' }, 400, 'invalid_request'],
      ['operator client cannot request as a person', '/v1/access-requests', tok.operator, { entitlementId: ent, justification: 'a good reason here' }, 403, 'forbidden'],
      ['someone else’s access', '/v1/access-requests', tok.alice, { subjectId: s.catalog.identities.bob, entitlementId: ent, justification: 'a good reason here' }, 403, 'forbidden'],
      ['malformed JSON', '/v1/access-requests', tok.alice, '{"entitlementId": ', 400, 'malformed_json'],
      ['body over the limit', '/v1/access-requests', tok.alice, { entitlementId: ent, justification: 'x'.repeat(20_000) }, 413, 'payload_too_large'],
      ['decision on unknown request', '/v1/access-requests/00000000-0000-4000-8000-000000000000/decision', tok.bob, { decision: 'approve' }, 404, 'not_found'],
      ['bad decision value', `/v1/access-requests/00000000-0000-4000-8000-000000000000/decision`, tok.bob, { decision: 'maybe' }, 400, 'invalid_request'],
      ['requester cannot decide', '/v1/access-requests/00000000-0000-4000-8000-000000000000/decision', tok.alice, { decision: 'approve' }, 403, 'forbidden'],
      ['requester cannot mint tokens', '/v1/tokens', tok.alice, { principalId: s.catalog.identities.alice, roles: ['operator'] }, 403, 'forbidden'],
      ['secret ref outside the allowed prefix', '/v1/systems', tok.operator, { name: 'exfil', kind: 'ldap', config: { url: 'ldap://127.0.0.1:1', bindDn: 'cn=x', baseDn: 'dc=x', accountDnTemplate: 'uid={username},dc=x' }, secretRefs: { bindPassword: 'DATABASE_URL' }, ownerId: s.catalog.identities.carol }, 400, 'invalid_secret_ref'],
      ['invalid connector config', '/v1/systems', tok.operator, { name: 'bad', kind: 'ldap', config: { url: 'http://nope' }, secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_X' }, ownerId: s.catalog.identities.carol }, 400, 'invalid_config'],
      ['non-human identity without owner', '/v1/identities', tok.operator, { kind: 'service_account', username: 'svc-ci', displayName: 'CI' }, 400, 'invalid_request'],
      ['entitlement default above max', '/v1/entitlements', tok.operator, { systemId: s.catalog.systemId, name: 'x', resource: 'cn=x', ownerId: s.catalog.identities.bob, defaultDurationSeconds: 100, maxDurationSeconds: 10 }, 400, 'invalid_request'],
      ['unknown route', '/v1/nope', tok.operator, {}, 404, 'not_found'],
    ];
    for (const [name, path, token, body, status, code] of cases) {
      const r = await s.call('POST', path, token, body);
      expect({ name, status: r.status, code: r.body?.error?.code }).toEqual({ name, status, code });
      expect(JSON.stringify(r.body)).not.toMatch(/at .*\.ts:\d+|node_modules/); // never a stack trace
    }
    expect(await footprint()).toEqual(before);
  });

  it('hides requests from identities that are not party to them', async () => {
    const mint = await s.call('POST', '/v1/tokens', tok.operator, { principalId: s.catalog.identities.dave, roles: ['requester', 'approver'] });
    expect(mint.status).toBe(201);
    expect(mint.body.token).toMatch(/^al_/);
    const req = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements['prod-admins'], justification: 'visibility check only', durationSeconds: 60 });
    expect(req.status).toBe(202);
    expect((await s.call('GET', `/v1/access-requests/${req.body.id}`, mint.body.token)).status).toBe(404);
    expect((await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.alice)).status).toBe(200);
    expect((await s.call('GET', `/v1/identities/${s.catalog.identities.alice}/access`, mint.body.token)).status).toBe(404);
    // The assigned approver may read it once the stage is open.
    await waitFor(async () => (await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.bob)).status === 200, 'approver visibility');
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, mint.body.token, { reason: 'manual' })).status).toBe(403);
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.alice, { reason: 'leaver' })).status).toBe(403);
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
    await s.waitForStatus(req.body.id, ['cancelled']);
  });

  it('lets a fresh install be set up entirely through the API with the bootstrap token', async () => {
    const op = BOOTSTRAP;
    // The token configuration created is in the audit chain, issued by the system at start.
    const issued = await s.tdb.db.execute<{ actor_type: string; actor_id: string; data: Record<string, unknown> }>(sql`select actor_type, actor_id, data from audit_event where action = 'token.issued' and data->>'principalId' = 'client:bootstrap'`);
    expect([...issued].map((e) => [e.actor_type, e.actor_id, e.data.source])).toEqual([['system', 'startup', 'ACCESSLOOP_BOOTSTRAP_TOKEN']]);
    const owner = await s.call('POST', '/v1/identities', op, { kind: 'employee', username: 'erin', displayName: 'Erin Owner', externalId: 'HR-ERIN' });
    expect(owner.status, JSON.stringify(owner.body)).toBe(201);
    const dupe = await s.call('POST', '/v1/identities', op, { kind: 'employee', username: 'erin', displayName: 'Erin Again' });
    expect(dupe.status).toBe(409);
    const worker = await s.call('POST', '/v1/identities', op, { kind: 'employee', username: 'dave', displayName: 'dup username' });
    expect(worker.status).toBe(409);
    const frank = await s.call('POST', '/v1/identities', op, { kind: 'employee', username: 'frank', displayName: 'Frank', managerId: owner.body.id });
    expect(frank.status).toBe(201);
    expect((await s.call('GET', `/v1/identities/${frank.body.id}`, op)).body.managerId).toBe(owner.body.id);

    const base = (await s.tdb.db.query.systems.findFirst())!.config as Record<string, unknown>;
    const sys = await s.call('POST', '/v1/systems', op, { name: 'corp-directory', kind: 'ldap', config: base, secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' }, ownerId: owner.body.id });
    expect(sys.status, JSON.stringify(sys.body)).toBe(201);
    expect(JSON.stringify(sys.body)).not.toContain(s.slapd.rootPassword);
    const ent = await s.call('POST', '/v1/entitlements', op, {
      systemId: sys.body.id,
      name: 'Corp engineering',
      resource: 'cn=engineering,ou=groups,dc=accessloop,dc=test',
      ownerId: owner.body.id,
      riskTier: 'medium',
      defaultDurationSeconds: 3600,
      maxDurationSeconds: 7200,
    });
    expect(ent.status, JSON.stringify(ent.body)).toBe(201);
    const ft = await s.call('POST', '/v1/tokens', op, { principalId: frank.body.id, roles: ['requester'] });
    const et = await s.call('POST', '/v1/tokens', op, { principalId: owner.body.id, roles: ['approver'] });
    const hr = await s.call('POST', '/v1/tokens', op, { principalId: 'client:workday', roles: ['hr_system'] });
    expect([ft.status, et.status, hr.status]).toEqual([201, 201, 201]);
    // Tokens are stored hashed: the plaintext is nowhere in the database.
    const stored = await s.tdb.db.execute(sql`select token_hash from api_token`);
    expect(JSON.stringify(stored)).not.toContain(ft.body.token);

    const req = await s.call('POST', '/v1/access-requests', ft.body.token, { entitlementId: ent.body.id, justification: 'joining the platform team' });
    expect(req.status).toBe(202);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', et.body.token)).body.items?.length > 0, 'erin approval task');
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, et.body.token, { decision: 'approve' })).status).toBe(200);
    await s.waitForStatus(req.body.id, ['active']);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('frank'));
    expect((await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, op, { reason: 'manual' })).status).toBe(202);
    await s.waitForStatus(req.body.id, ['revoked']);
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('frank'));
  });

  it('serves health, readiness, metrics and OpenAPI', async () => {
    expect((await s.call('GET', '/healthz')).status).toBe(200);
    const ready = await s.call('GET', '/readyz');
    expect(ready).toEqual({ status: 200, body: { status: 'ready', database: 'ok', temporal: 'ok', worker: 'ok' } });
    const metrics = await s.call('GET', '/metrics');
    expect(metrics.body).toContain('accessloop_http_requests_total');
    const spec = await s.call('GET', '/openapi.json');
    expect(spec.body.openapi).toBe('3.1.0');
    expect(Object.keys(spec.body.paths)).toContain('/v1/access-requests/{id}/decision');
    expect(spec.body.paths['/v1/access-requests'].post.requestBody.content['application/json'].schema.required).toContain('justification');
  });

  it('lists requests by visibility, with filters and cursor paging', async () => {
    const ents = [s.catalog.entitlements.engineering, s.catalog.entitlements['finance-readers']];
    const made: string[] = [];
    for (const e of ents) {
      const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: e, durationSeconds: 60, justification: 'listing check request' });
      expect(r.status).toBe(202);
      made.push(r.body.id);
    }
    const mine = await s.call('GET', '/v1/access-requests?limit=200', tok.alice);
    expect(mine.status).toBe(200);
    expect(mine.body.items.map((i: { id: string }) => i.id)).toEqual(expect.arrayContaining(made));
    expect(mine.body.items.every((i: { requesterId: string; subjectId: string }) => i.requesterId === s.catalog.identities.alice || i.subjectId === s.catalog.identities.alice)).toBe(true);
    // Dave is party to none of them.
    const dave = await s.call('POST', '/v1/tokens', tok.operator, { principalId: s.catalog.identities.dave, roles: ['requester'] });
    expect((await s.call('GET', '/v1/access-requests', dave.body.token)).body.items.map((i: { id: string }) => i.id)).not.toEqual(expect.arrayContaining([made[0]]));
    // Paging: one at a time, newest first, no repeats.
    const p1 = await s.call('GET', `/v1/access-requests?limit=1&subjectId=${s.catalog.identities.alice}`, tok.operator);
    const p2 = await s.call('GET', `/v1/access-requests?limit=1&subjectId=${s.catalog.identities.alice}&before=${encodeURIComponent(p1.body.nextCursor)}`, tok.operator);
    expect(p1.body.items).toHaveLength(1);
    expect(p2.body.items).toHaveLength(1);
    expect(p2.body.items[0].id).not.toBe(p1.body.items[0].id);
    expect(Date.parse(p2.body.items[0].createdAt)).toBeLessThanOrEqual(Date.parse(p1.body.items[0].createdAt));
    expect((await s.call('GET', '/v1/access-requests?status=bogus', tok.operator)).status).toBe(400);
    for (const id of made) await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' });
    for (const id of made) await s.waitForStatus(id, ['cancelled', 'revoked']);
  });
});

