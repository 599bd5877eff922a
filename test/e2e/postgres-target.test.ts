import { randomBytes } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminUrl } from '../helpers/db.js';
import { psql, psqlCreateRole, psqlDropRolesWithPrefix, psqlRoleMembers } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

// Roles are cluster-wide in PostgreSQL: everything this file creates carries a per-run prefix.
const prefix = `t${randomBytes(3).toString('hex')}_`;
const PG_SECRET = 'ACCESSLOOP_SECRET_TEST_PG';
let s: Stack;
let tok: Record<string, string>;
let entitlementId: string;
let systemId: string;

beforeAll(async () => {
  s = await startStack({ secrets: { [PG_SECRET]: 'unused-under-trust-auth' } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  await psqlCreateRole(adminUrl, `${prefix}readers`);
  await psqlCreateRole(adminUrl, `${prefix}alice`, { login: true });
  const sys = await s.call('POST', '/v1/systems', tok.operator, {
    name: 'warehouse-db',
    kind: 'postgres',
    config: { host: '127.0.0.1', port: 5432, database: s.tdb.name, user: 'postgres', accountTemplate: `${prefix}{username}` },
    secretRefs: { password: PG_SECRET },
    ownerId: s.catalog.identities.carol,
  });
  expect(sys.status, JSON.stringify(sys.body)).toBe(201);
  systemId = sys.body.id;
  const e = await s.call('POST', '/v1/entitlements', tok.operator, {
    systemId: sys.body.id,
    name: 'Warehouse readers',
    resource: `${prefix}readers`,
    ownerId: s.catalog.identities.bob,
    riskTier: 'medium',
    defaultDurationSeconds: 600,
    maxDurationSeconds: 3600,
  });
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  entitlementId = e.body.id;
});
afterAll(async () => {
  await s?.stop();
  await psqlDropRolesWithPrefix(adminUrl, prefix);
});

describe('a lease on a PostgreSQL role', () => {
  it('grants the role membership on approval and removes it (verified with psql) on revoke', async () => {
    expect(await psqlRoleMembers(adminUrl, `${prefix}readers`)).toEqual([]);
    const req = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId, durationSeconds: 600, justification: 'quarterly numbers from the warehouse' });
    expect(req.status).toBe(202);
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
    await s.waitForStatus(req.body.id, ['active']);
    expect(await psqlRoleMembers(adminUrl, `${prefix}readers`)).toEqual([`${prefix}alice`]);
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.alice, { reason: 'manual' });
    const done = await s.waitForStatus(req.body.id, ['revoked']);
    expect(done.removalVerifiedAt).toBeTruthy();
    expect(await psqlRoleMembers(adminUrl, `${prefix}readers`)).toEqual([]);
  });

  it('refuses a postgres system whose secret reference is not an ACCESSLOOP_SECRET_ name', async () => {
    const r = await s.call('POST', '/v1/systems', tok.operator, {
      name: 'exfil-db',
      kind: 'postgres',
      config: { host: '127.0.0.1', database: 'test', user: 'postgres', accountTemplate: '{username}' },
      secretRefs: { password: 'PGPASSWORD' },
      ownerId: s.catalog.identities.carol,
    });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('invalid_secret_ref');
  });

  it('reconciles role memberships granted behind our back with psql', async () => {
    await psqlCreateRole(adminUrl, `${prefix}bob`, { login: true });
    await psqlCreateRole(adminUrl, `${prefix}ghost`, { login: true });
    for (const r of [`${prefix}bob`, `${prefix}ghost`]) {
      await psql(adminUrl, `select format('GRANT %I TO %I', :'g', :'r') \\gexec\n`, { g: `${prefix}readers`, r });
    }
    const run = await s.call('POST', '/v1/reconciliation/run', tok.operator, { systemId });
    expect(run.status).toBe(202);
    const counts = await s.rt.temporal.workflow.getHandle(run.body.workflowId).result();
    expect(counts).toMatchObject({ memberships: 2, unauthorized_access: 1, orphaned_account: 1 });
    const f = (await s.call('GET', `/v1/reconciliation/findings?systemId=${systemId}`, tok.operator)).body.items;
    expect(f.map((x: { kind: string; account: string }) => [x.kind, x.account]).sort()).toEqual([
      ['orphaned_account', `${prefix}ghost`],
      ['unauthorized_access', `${prefix}bob`],
    ]);
  });
});

