import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { accessloop } from '../helpers/cli.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<'operator' | 'alice' | 'bob' | 'carol', string>;
let ids: Stack['catalog']['identities'];
let dir: string;
let cli: (token: string | undefined, ...args: string[]) => ReturnType<typeof accessloop>;

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as typeof tok;
  ids = s.catalog.identities;
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-cli-'));
  cli = (token, ...args) => accessloop(s.rt.apiUrl!, token, ...args);
});
afterAll(async () => {
  await s?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

describe('operator CLI (npx accessloop) against a running API', () => {
  let id: string;

  it('lists alice’s request in bob’s pending tasks, refuses a non-assigned approver, and approves as bob', async () => {
    const req = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements.engineering, durationSeconds: 3600, justification: 'debugging the build farm', ticketRef: 'CHG-31' });
    expect(req.status).toBe(202);
    id = req.body.id;
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === id), 'bob’s approval task');

    const pending = await cli(tok.bob, 'pending');
    expect(pending.code, pending.stderr).toBe(0);
    const [header, ...rows] = pending.stdout.trim().split('\n');
    expect(header).toMatch(/^REQUEST\s+ENTITLEMENT\s+RISK\s+SUBJECT/);
    expect(rows.find((r) => r.startsWith(id))).toMatch(/Engineering group\s+medium\s+\S+\s+\S+\s+1\s+.*CHG-31\s+debugging the build farm/);
    const asJson = await cli(tok.bob, 'pending', '--json');
    expect(JSON.parse(asJson.stdout)).toEqual([expect.objectContaining({ requestId: id, subjectId: ids.alice, stage: 1 })]);

    // Carol is an approver, but not of this stage: the API's 403, its message, and nothing changes.
    const notMine = await cli(tok.carol, 'approve', id);
    expect(notMine.code).toBe(1);
    expect(notMine.stderr).toContain('error: you are not an assigned approver of the open stage (not_eligible, HTTP 403)');
    expect((await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.status).toBe('pending_approval');

    const ok = await cli(tok.bob, 'approve', id, '--comment', 'ok for the incident');
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout.trim()).toBe(`approved ${id}: the request is now granting`);
    const active = await s.waitForStatus(id, ['active']);
    expect(active.stages).toMatchObject([{ approverId: ids.bob, status: 'approved', comment: 'ok for the incident' }]);
    expect((await cli(tok.bob, 'pending')).stdout.trim()).toBe('no open approval tasks');
  });

  it('shows the status and the audit timeline', async () => {
    const show = await cli(tok.alice, 'show', id);
    expect(show.code, show.stderr).toBe(0);
    expect(show.stdout).toMatch(/^status\s+active$/m);
    expect(show.stdout).toMatch(new RegExp(`^1\\s+owner\\s+${ids.bob}\\s+approved\\s+\\S+\\s+ok for the incident$`, 'm'));
    const api = (await s.call('GET', `/v1/access-requests/${id}`, tok.alice)).body;
    for (const t of api.timeline as Array<{ seq: number; action: string }>) expect(show.stdout).toMatch(new RegExp(`^${t.seq}\\s+\\S+\\s+${t.action.replace('.', '\\.')}\\s`, 'm'));

    const timeline = await cli(tok.alice, 'timeline', id, '--json');
    expect(timeline.code, timeline.stderr).toBe(0);
    const actions = JSON.parse(timeline.stdout).map((t: { action: string }) => t.action);
    expect(actions).toEqual(api.timeline.map((t: { action: string }) => t.action));
    expect(actions).toEqual(expect.arrayContaining(['approval.stage_opened', 'request.approved', 'grant.applied', 'grant.verified']));
    const text = await cli(tok.alice, 'timeline', id);
    expect(text.stdout.split('\n')[0]).toBe(`request ${id}: active`);
    expect(text.stdout).toMatch(new RegExp(`request\\.approved\\s+identity:${ids.bob}\\s+ok for the incident`));
  });

  it('revokes as operator (bob may not), and the removal is verified', async () => {
    const missingReason = await cli(tok.operator, 'revoke', id);
    expect(missingReason.code).toBe(2);
    expect(missingReason.stderr).toContain('revoke needs --reason');

    const bob = await cli(tok.bob, 'revoke', id, '--reason', 'manual');
    expect(bob.code).toBe(1);
    expect(bob.stderr).toContain('only an operator or the subject may revoke (forbidden, HTTP 403)');

    const badReason = await cli(tok.operator, 'revoke', id, '--reason', 'boredom');
    expect(badReason.code).toBe(1);
    expect(badReason.stderr).toMatch(/invalid body \(invalid_request, HTTP 400\)\n\s+- reason: /);
    expect((await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.status).toBe('active');

    const r = await cli(tok.operator, 'revoke', id, '--reason', 'review', '--comment', 'quarterly review');
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toContain(`revocation requested for ${id} (reason review)`);
    const done = await s.waitForStatus(id, ['revoked']);
    expect(done.grant.revokeReason).toBe('review');
    expect(done.removalVerifiedAt).toBeTruthy();
  });

  it('exports evidence and verifies it offline (round trip), with the published key pinned', async () => {
    const file = path.join(dir, 'evidence.json');
    const exp = await cli(tok.carol, 'evidence', 'export', id, '-o', file);
    expect(exp.code, exp.stderr).toBe(0);
    expect(exp.stdout).toContain(`wrote ${file}`);
    const bundle = JSON.parse(await readFile(file, 'utf8'));
    expect(bundle).toMatchObject({ format: 'accessloop.evidence/v2', request: { id, status: 'revoked' }, verification: { valid: true } });

    const pem = path.join(dir, 'key.pem');
    const key = await cli(undefined, 'evidence', 'public-key', '-o', pem);
    expect(key.code, key.stderr).toBe(0);
    expect(key.stdout).toContain(`Ed25519 ${bundle.signer.fingerprint}`);

    // Offline: no token and an API address where nothing listens.
    const verify = await accessloop('http://127.0.0.1:9', undefined, 'evidence', 'verify', file, '--public-key', pem);
    expect(verify.code, verify.stderr).toBe(0);
    expect(verify.stdout).toMatch(new RegExp(`^OK ${file}: request ${id}, ${bundle.events.length} events`));
    expect(verify.stdout).toContain('(the pinned key)');
    const json = await accessloop('http://127.0.0.1:9', undefined, 'evidence', 'verify', file, '--json');
    expect(JSON.parse(json.stdout)).toMatchObject({ valid: true, problems: [], requestId: id, fingerprint: bundle.signer.fingerprint });

    // A requester may not export: the API's 404, as for any request they may not see.
    const alice = await cli(tok.alice, 'evidence', 'export', id);
    expect(alice.code).toBe(1);
    expect(alice.stderr).toContain('error: access request not found (not_found, HTTP 404)');
  });

  it('issues, lists and revokes a token as operator; the secret is printed once and refused after revocation', async () => {
    const issued = await cli(tok.operator, 'token', 'issue', 'client:cli-feed', '--role', 'hr_system', '--role', 'auditor', '--expires-in', '3600', '--description', 'CLI test feed');
    expect(issued.code, issued.stderr).toBe(0);
    const secret = issued.stdout.trim();
    expect(secret).toMatch(/^\S{24,}$/);
    const tokenId = /issued token ([0-9a-f-]{36}) for client:cli-feed \(hr_system, auditor\), expires \S+; it is shown only this once/.exec(issued.stderr)?.[1];
    expect(tokenId, issued.stderr).toBeTruthy();
    // The new token works against the API: an auditor may read the KPIs.
    expect((await s.call('GET', '/v1/metrics/kpis', secret)).status).toBe(200);

    const list = await cli(tok.operator, 'token', 'list');
    expect(list.code, list.stderr).toBe(0);
    expect(list.stdout.split('\n')[0]).toMatch(/^ID\s+PRINCIPAL\s+ROLES\s+STATE\s+EXPIRES/);
    expect(list.stdout.split('\n').find((l) => l.startsWith(tokenId!))).toMatch(/client:cli-feed\s+hr_system,auditor\s+live\s+\S+Z\s+.*CLI test feed/);
    // Never a secret in the listing, neither the new one nor the caller's own.
    expect(list.stdout).not.toContain(secret);
    expect(list.stdout).not.toContain(tok.operator);
    const asJson = JSON.parse((await cli(tok.operator, 'token', 'list', '--json')).stdout) as Array<Record<string, unknown>>;
    expect(asJson.find((t) => t.id === tokenId)).toMatchObject({ principalId: 'client:cli-feed', roles: ['hr_system', 'auditor'], revokedAt: null });

    // Only an operator manages tokens: the API's 403, and the token stays live.
    const notOperator = await cli(tok.bob, 'token', 'revoke', tokenId!);
    expect(notOperator.code).toBe(1);
    expect(notOperator.stderr).toMatch(/\(forbidden, HTTP 403\)/);
    const revoked = await cli(tok.operator, 'token', 'revoke', tokenId!);
    expect(revoked.code, revoked.stderr).toBe(0);
    expect(revoked.stdout).toMatch(new RegExp(`^token ${tokenId} for client:cli-feed revoked \\S+; it is refused from now on`));
    expect((await s.call('GET', '/v1/metrics/kpis', secret)).status).toBe(401);
    expect((await cli(tok.operator, 'token', 'list')).stdout.split('\n').find((l) => l.startsWith(tokenId!))).toMatch(/\srevoked\s/);

    // Bad input is refused before anything is sent.
    const noRole = await cli(tok.operator, 'token', 'issue', 'client:cli-feed');
    expect([noRole.code, noRole.stderr]).toEqual([2, expect.stringContaining('token issue needs at least one --role')]);
    const badExpiry = await cli(tok.operator, 'token', 'issue', 'client:cli-feed', '--role', 'auditor', '--expires-in', 'soon');
    expect([badExpiry.code, badExpiry.stderr]).toEqual([2, expect.stringContaining('--expires-in takes a whole number of seconds')]);
    const badRole = await cli(tok.operator, 'token', 'issue', 'client:cli-feed', '--role', 'root');
    expect(badRole.code).toBe(1);
    expect(badRole.stderr).toMatch(/HTTP 400/);
    const bare = await cli(tok.operator, 'token');
    expect([bare.code, bare.stderr]).toEqual([2, expect.stringContaining('token needs a subcommand: list, issue or revoke')]);
  });

  it('fails with the API’s message on a bad token and with usage errors on bad input', async () => {
    const bad = await cli('al_this-token-was-never-issued-by-anyone', 'pending');
    expect(bad.code).toBe(1);
    expect(bad.stderr.trim()).toBe('error: missing or invalid bearer token (unauthorized, HTTP 401)');
    const none = await cli(undefined, 'pending');
    expect(none.code).toBe(2);
    expect(none.stderr).toContain('ACCESSLOOP_TOKEN is not set');
    const malformed = await cli(tok.bob, 'approve', 'not-a-request');
    expect(malformed.code).toBe(2);
    expect(malformed.stderr).toContain('"not-a-request" is not a request id');
    const unknown = await cli(tok.bob, 'promote', id);
    expect(unknown.code).toBe(2);
    expect(unknown.stderr).toContain('unknown command "promote"');
    const down = await accessloop('http://127.0.0.1:9', tok.bob, 'pending');
    expect(down.code).toBe(1);
    expect(down.stderr).toContain('cannot reach the accessloop API at http://127.0.0.1:9');
    // The token is never echoed back.
    for (const r of [bad, none, malformed, unknown, down]) expect(r.stdout + r.stderr).not.toContain(tok.bob);
  });
});
