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
const s: Stack = await startStackAt({ temporalAddress: server.address });
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
  await writeFile(path.join(out, `${name}.json`), stdout);
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
} finally {
  await s.stop();
  await server.stop();
}
