/**
 * `npm run replay:capture`: runs real lifecycles on a private dev server, Postgres and slapd,
 * and stores their histories under test/replay/histories/ for the replay test. Re-run it
 * after a deliberate workflow change (guarded by patched()) to add the new shape.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { resolveTemporalBinary, startDevServer } from '../../temporal/dev-server.js';
import { startStackAt, waitFor, type Stack } from '../helpers/stack-core.js';

const out = fileURLToPath(new URL('./histories/', import.meta.url));
const binary = await resolveTemporalBinary({ cliPath: process.env.TEMPORAL_CLI_PATH, say: console.log });
const server = await startDevServer({ binary, logDir: await mkdtemp(path.join(os.tmpdir(), 'accessloop-capture-')) });
// Captured in clear: the fixtures are committed and the replay test runs without a payload key.
const s: Stack = await startStackAt({ temporalAddress: server.address, env: { ACCESSLOOP_PAYLOAD_ENCRYPTION: 'false' } });
const tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));

async function request(entitlementId: string, durationSeconds: number) {
  const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId, durationSeconds, justification: 'captured for replay tests' });
  if (r.status !== 202) throw new Error(JSON.stringify(r.body));
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === r.body.id), 'stage');
  return r.body.id as string;
}
const decide = (id: string, decision: string) => s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision });
async function save(name: string, id: string) {
  // The CLI writes the canonical JSON form that historyFromJSON reads.
  const { stdout } = await promisify(execFile)(binary, ['workflow', 'show', '--address', server.address, '-w', `access-request/${id}`, '-o', 'json'], { maxBuffer: 64 << 20 });
  // v1-* are histories from before policy stages and notifications; new captures are v2-*.
  await writeFile(path.join(out, `v2-${name}.json`), stdout);
  console.log(`captured ${name}`);
}

try {
  const e = s.catalog.entitlements;
  let id = await request(e.engineering!, 2);
  await decide(id, 'approve');
  await s.waitForStatus(id, ['revoked']);
  await save('approved-expired', id);

  id = await request(e['prod-admins']!, 600);
  await decide(id, 'reject');
  await s.waitForStatus(id, ['rejected']);
  await save('rejected', id);

  id = await request(e.engineering!, 600);
  await decide(id, 'approve');
  await s.waitForStatus(id, ['active']);
  await s.call('POST', `/v1/access-requests/${id}/extend`, tok.alice, { durationSeconds: 3600, justification: 'still needed for the incident' });
  await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'review' });
  await s.waitForStatus(id, ['revoked']);
  await save('extended-then-revoked', id);

  id = await request(e['finance-readers']!, 600);
  await decide(id, 'approve');
  await s.waitForStatus(id, ['active']);
  await s.slapd.stop();
  await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' });
  await s.waitForStatus(id, ['revocation_unverified']);
  await s.slapd.start();
  await s.waitForStatus(id, ['revoked']);
  await save('revocation-unverified-then-verified', id);

  // Policy shapes: two stages with a quorum, escalation, and an extension sent back for approval.
  const group = await s.call('POST', '/v1/groups', tok.operator, { name: 'replay-leads', memberIds: [s.catalog.identities.bob, s.catalog.identities.carol, s.catalog.identities.dave] });
  const publish = (doc: unknown) => s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(doc), { 'content-type': 'application/json' });
  await publish({
    apiVersion: 'accessloop/v1',
    policies: [
      {
        name: 'default',
        stages: [
          { name: 'manager', approvers: ['manager'], escalateAfterSeconds: 1, timeoutSeconds: 600 },
          { name: 'leads', approvers: [group.body.ref], quorum: 2 },
        ],
        extendRequiresApproval: true,
      },
    ],
  });
  const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: e.engineering!, durationSeconds: 600, justification: 'captured for replay tests' });
  id = r.body.id;
  await waitFor(async () => (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.timeline.some((t: { action: string }) => t.action === 'approval.escalated'), 'escalation');
  await s.call('POST', `/v1/access-requests/${id}/decision`, tok.carol, { decision: 'approve' });
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === id), 'stage 2');
  await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' });
  const daveToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: s.catalog.identities.dave, roles: ['approver'] })).body.token;
  await s.call('POST', `/v1/access-requests/${id}/decision`, daveToken, { decision: 'approve' });
  await s.waitForStatus(id, ['active']);
  await s.call('POST', `/v1/access-requests/${id}/extend`, tok.alice, { durationSeconds: 1200, justification: 'captured extension' });
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.carol)).body.items?.some((i: { requestId: string }) => i.requestId === id), 'extension stage');
  await s.call('POST', `/v1/access-requests/${id}/decision`, tok.carol, { decision: 'approve' });
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === id), 'extension stage 2');
  await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' });
  await s.call('POST', `/v1/access-requests/${id}/decision`, daveToken, { decision: 'approve' });
  await waitFor(async () => (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body.timeline.some((t: { action: string }) => t.action === 'grant.extended'), 'extension');
  await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' });
  await s.waitForStatus(id, ['revoked']);
  await save('two-stages-escalation-extension', id);
} finally {
  await s.stop();
  await server.stop();
}
