/**
 * Operator set-up through the API, checked in the database with psql: every admin action writes
 * one audit event in the same chain (actor from the token, the HTTP request id, no secrets), the
 * chain still verifies, tokens can be listed (never a secret), revoked and expire, and /metrics
 * serves KPI gauges from a cached snapshot behind an optional token.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../activities/domain/audit.js';
import { createMetrics } from '../../activities/domain/metrics.js';
import { createCredentialVault } from '../../activities/domain/vault.js';
import { createApp } from '../../api/app.js';
import { computeKpis, type Kpis } from '../../api/routes/kpis.js';
import { UNIT_MS } from '../../api/schemas.js';
import { createLogger } from '../../temporal/logger.js';
import type { Config } from '../../temporal/config.js';
import { psql } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let op: string;

beforeAll(async () => {
  s = await startStack();
  op = s.catalog.tokens.operator!.token;
}, 60_000);

afterAll(async () => {
  await s?.stop();
});

interface AuditRow {
  seq: number;
  actor_type: string;
  actor_id: string;
  identity_id: string | null;
  policy_version: string | null;
  data: Record<string, unknown>;
}

/** The audit events of one action, read with psql (not through our code). */
async function eventsOf(action: string): Promise<AuditRow[]> {
  const out = await psql(s.tdb.url, `select row_to_json(e) from (select seq, actor_type, actor_id, identity_id, policy_version, data from audit_event where action = :'a' order by seq) e;\n`, { a: action });
  return out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRow);
}

/** Calls the API with a request id of our own, so its event can be matched to the call. */
async function act(method: string, path: string, body?: unknown, token = op) {
  const rid = `admin-${randomBytes(6).toString('hex')}`;
  const r = await s.call(method, path, token, body, { 'x-request-id': rid });
  return { ...r, rid };
}

/** The one event the call wrote: by the operator's client principal, carrying the request id. */
async function expectOneEvent(action: string, rid: string): Promise<AuditRow> {
  const mine = (await eventsOf(action)).filter((e) => e.data.httpRequestId === rid);
  expect(mine, `${action} for ${rid}`).toHaveLength(1);
  expect(mine[0]).toMatchObject({ actor_type: 'client', actor_id: 'client:demo-operator' });
  return mine[0]!;
}

/** An OpenSSH ed25519 public key line with a well-formed blob. */
function sshKey(): string {
  const str = (b: Buffer) => Buffer.concat([Buffer.from([0, 0, 0, b.length]), b]);
  return `ssh-ed25519 ${Buffer.concat([str(Buffer.from('ssh-ed25519')), str(randomBytes(32))]).toString('base64')} test`;
}

describe('admin actions are audited', () => {
  it('writes one event per action in the same chain, with opaque ids and no secrets', async () => {
    const person = await act('POST', '/v1/identities', { kind: 'employee', username: 'audit-ivy', displayName: 'Ivy Audit', email: 'ivy@example.test' });
    expect(person.status, JSON.stringify(person.body)).toBe(201);
    const ev = await expectOneEvent('identity.created', person.rid);
    expect(ev.identity_id).toBe(person.body.id);
    // personal data stays in its row: no name or e-mail in the trail
    expect(JSON.stringify(ev)).not.toMatch(/Ivy Audit|ivy@example/);

    const key = await act('PUT', `/v1/identities/${person.body.id}/ssh-public-key`, { publicKey: sshKey() });
    expect(key.status).toBe(200);
    expect((await expectOneEvent('identity.ssh_key_set', key.rid)).data.fingerprint).toBe(key.body.fingerprint);

    const config = (await s.tdb.db.query.systems.findFirst())!.config;
    const sys = await act('POST', '/v1/systems', { name: 'audited-directory', kind: 'ldap', config, secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' }, ownerId: person.body.id });
    expect(sys.status, JSON.stringify(sys.body)).toBe(201);
    const sysEv = await expectOneEvent('system.created', sys.rid);
    // the reference name is configuration; the value it names never reaches the trail
    expect(sysEv.data.secretRefs).toEqual({ bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' });

    const ent = await act('POST', '/v1/entitlements', { systemId: sys.body.id, name: 'Audited group', resource: 'cn=audited,ou=groups,dc=accessloop,dc=test', ownerId: person.body.id, riskTier: 'low', defaultDurationSeconds: 600, maxDurationSeconds: 3600 });
    expect(ent.status, JSON.stringify(ent.body)).toBe(201);
    expect((await expectOneEvent('entitlement.created', ent.rid)).data.entitlementId).toBe(ent.body.id);

    const group = await act('POST', '/v1/groups', { name: 'audited-approvers', memberIds: [s.catalog.identities.bob] });
    expect(group.status).toBe(201);
    expect((await expectOneEvent('approver_group.created', group.rid)).data).toMatchObject({ groupId: group.body.id, memberIds: [s.catalog.identities.bob] });
    const members = await act('PUT', `/v1/groups/${group.body.id}/members`, { identityIds: [person.body.id] });
    expect(members.status).toBe(200);
    expect((await expectOneEvent('approver_group.members_set', members.rid)).data).toMatchObject({ added: [person.body.id], removed: [s.catalog.identities.bob] });

    const endsAt = new Date(Date.now() + 3600_000).toISOString();
    const dg = await act('POST', '/v1/delegations', { delegatorId: s.catalog.identities.bob, delegateId: person.body.id, endsAt, reason: 'holiday' });
    expect(dg.status, JSON.stringify(dg.body)).toBe(201);
    expect((await expectOneEvent('delegation.created', dg.rid)).data).toMatchObject({ delegationId: dg.body.id, delegateId: person.body.id });
    const end = await act('DELETE', `/v1/delegations/${dg.body.id}`);
    expect(end.status).toBe(204);
    await expectOneEvent('delegation.ended', end.rid);
    // ending it again changes nothing, so it writes nothing
    const again = await act('DELETE', `/v1/delegations/${dg.body.id}`);
    expect(again.status).toBe(204);
    expect((await eventsOf('delegation.ended')).filter((e) => e.data.httpRequestId === again.rid)).toHaveLength(0);

    const policy = { apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], maxDurationSeconds: 7200 }] };
    const pub = await act('PUT', '/v1/policies', policy);
    expect(pub.status, JSON.stringify(pub.body)).toBe(201);
    expect((await expectOneEvent('policy.published', pub.rid)).policy_version).toBe(pub.body.version);

    const issued = await act('POST', '/v1/tokens', { principalId: person.body.id, roles: ['requester'], expiresInSeconds: 3600 });
    expect(issued.status).toBe(201);
    const issuedEv = await expectOneEvent('token.issued', issued.rid);
    expect(issuedEv.data).toMatchObject({ tokenId: issued.body.id, roles: ['requester'] });
    const revoked = await act('DELETE', `/v1/tokens/${issued.body.id}`);
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);
    await expectOneEvent('token.revoked', revoked.rid);

    // never the token or its hash anywhere in the trail
    const hash = (await psql(s.tdb.url, `select token_hash from api_token where id = :'id';\n`, { id: issued.body.id })).match(/[0-9a-f]{64}/)![0];
    const trail = await psql(s.tdb.url, 'select data::text, coalesce(reason, \'\') from audit_event;\n');
    expect(trail).not.toContain(issued.body.token);
    expect(trail).not.toContain(hash);
    expect(trail).not.toContain(s.slapd.rootPassword);

    expect(await verifyChain(s.tdb.db)).toMatchObject({ ok: true });
  });
});

describe('tokens', () => {
  it('lists tokens without secrets, to operators only', async () => {
    const t = await s.call('POST', '/v1/tokens', op, { principalId: 'client:listing-check', roles: ['auditor'], description: 'listing check' });
    expect(t.status).toBe(201);
    const list = await s.call('GET', '/v1/tokens', op);
    expect(list.status).toBe(200);
    const mine = list.body.items.find((x: { id: string }) => x.id === t.body.id);
    expect(mine).toMatchObject({ principalId: 'client:listing-check', roles: ['auditor'], description: 'listing check', revokedAt: null, expiresAt: null });
    expect(Object.keys(mine).sort()).toEqual(['createdAt', 'createdBy', 'description', 'expiresAt', 'id', 'principalId', 'revokedAt', 'roles']);
    const hashes = (await psql(s.tdb.url, 'select token_hash from api_token;\n')).split('\n').map((l) => l.trim()).filter((l) => /^[0-9a-f]{64}$/.test(l));
    const text = JSON.stringify(list.body);
    expect(hashes.length).toBeGreaterThan(1);
    for (const h of hashes) expect(text).not.toContain(h);
    for (const demo of Object.values(s.catalog.tokens)) expect(text).not.toContain(demo.token);
    expect((await s.call('GET', '/v1/tokens', t.body.token)).status).toBe(403);
  });

  it('a revoked token gets 401 at once; the last live operator token cannot be revoked', async () => {
    const t = await s.call('POST', '/v1/tokens', op, { principalId: 'client:revoke-check', roles: ['operator'] });
    expect((await s.call('GET', '/v1/tokens', t.body.token)).status).toBe(200);
    const del = await s.call('DELETE', `/v1/tokens/${t.body.id}`, op);
    expect(del.status).toBe(200);
    expect(del.body.revokedAt).toEqual(expect.any(String));
    expect((await s.call('GET', '/v1/tokens', t.body.token)).status).toBe(401);
    // revoking it again changes nothing
    expect((await s.call('DELETE', `/v1/tokens/${t.body.id}`, op)).body.revokedAt).toBe(del.body.revokedAt);
    expect((await s.call('DELETE', `/v1/tokens/${randomUUID()}`, op)).status).toBe(404);

    // the demo operator token is now the only live operator token: revoking it would lock everyone out
    const live = await psql(s.tdb.url, `select count(*) from api_token where revoked_at is null and 'operator' = any(roles) and (expires_at is null or expires_at > now());\n`);
    expect(live.trim()).toBe('1');
    const self = await s.call('DELETE', `/v1/tokens/${await operatorTokenId()}`, op);
    expect(self.status, JSON.stringify(self.body)).toBe(409);
    expect(self.body.error.code).toBe('last_operator_token');
    expect((await s.call('GET', '/v1/tokens', op)).status).toBe(200);
  });

  it('an expired token gets 401; expiresAt and expiresInSeconds are validated', async () => {
    const t = await s.call('POST', '/v1/tokens', op, { principalId: 'client:expiry-check', roles: ['auditor'], expiresAt: new Date(Date.now() + 1500).toISOString() });
    expect(t.status, JSON.stringify(t.body)).toBe(201);
    expect(t.body.expiresAt).toEqual(expect.any(String));
    await waitFor(async () => (await s.call('GET', '/v1/metrics/kpis', t.body.token)).status === 401, 'the token to expire', 10_000);
    const stored = await psql(s.tdb.url, `select expires_at <= now() from api_token where id = :'id';\n`, { id: t.body.id });
    expect(stored.trim()).toBe('t');
    for (const body of [
      { expiresAt: new Date(Date.now() - 1000).toISOString() },
      { expiresAt: new Date(Date.now() + 3 * 365 * UNIT_MS.d).toISOString() },
      { expiresAt: new Date(Date.now() + 60_000).toISOString(), expiresInSeconds: 60 },
    ]) {
      const r = await s.call('POST', '/v1/tokens', op, { principalId: 'client:expiry-check', roles: ['auditor'], ...body });
      expect(r.status, JSON.stringify(body)).toBe(400);
    }
  });
});

async function operatorTokenId(): Promise<string> {
  const list = await s.call('GET', '/v1/tokens', op);
  return list.body.items.find((x: { principalId: string }) => x.principalId === 'client:demo-operator').id;
}

/** createApp over the stack's real deps, on an ephemeral port, with config overrides and a KPI snapshot function. */
async function apiWith(config: Partial<Config>, kpiSnapshot?: () => Promise<Kpis>): Promise<{ url: string; close: () => Promise<void> }> {
  const app = createApp({
    db: s.rt.db,
    temporal: s.rt.temporal,
    config: { ...s.config, ...config },
    log: createLogger('silent'),
    metrics: createMetrics(),
    policies: s.rt.policies,
    actionLinkSecret: randomBytes(32),
    vault: createCredentialVault(randomBytes(32)),
    ...(kpiSnapshot ? { kpiSnapshot } : {}),
  });
  const server = await new Promise<Server>((resolve) => {
    const srv = app.listen(0, '127.0.0.1', () => resolve(srv));
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return { url: `http://127.0.0.1:${port}`, close: () => new Promise((resolve) => server.close(() => resolve())) };
}

describe('/metrics', () => {
  it('requires the configured token', async () => {
    const token = randomBytes(24).toString('base64url');
    const api = await apiWith({ ACCESSLOOP_METRICS_TOKEN: token });
    try {
      expect((await fetch(`${api.url}/metrics`)).status).toBe(401);
      expect((await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${token}x` } })).status).toBe(401);
      expect((await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${op}` } })).status).toBe(401);
      const ok = await fetch(`${api.url}/metrics`, { headers: { authorization: `Bearer ${token}` } });
      expect(ok.status).toBe(200);
      expect(await ok.text()).toContain('accessloop_http_requests_total');
    } finally {
      await api.close();
    }
    // unset (the stack's own API): open, as before
    expect((await fetch(`${s.rt.apiUrl}/metrics`)).status).toBe(200);
  });

  it('serves the KPI gauges from a snapshot: scrapes do not run the aggregates', async () => {
    let computed = 0;
    const api = await apiWith({ ACCESSLOOP_METRICS_REFRESH_SECONDS: 3600 }, async () => {
      computed++;
      return computeKpis(s.rt.db, UNIT_MS.d);
    });
    try {
      const scrape = async () => (await fetch(`${api.url}/metrics`)).text();
      // no snapshot yet: the first scrape answers without one and starts the only refresh
      const first = await scrape();
      expect(first).toMatch(/^accessloop_kpi_snapshot_timestamp_seconds 0$/m);
      const text = await waitFor(async () => {
        const t = await scrape();
        return /^accessloop_kpi_snapshot_timestamp_seconds [1-9]/m.test(t) ? t : undefined;
      }, 'the first KPI snapshot');
      expect(text).toMatch(/^accessloop_revocations_unverified_open \d+$/m);
      for (let i = 0; i < 10; i++) await scrape();
      expect(computed).toBe(1);
    } finally {
      await api.close();
    }
  });
});
