/**
 * `npx tsx test/replay/capture-break-glass.ts`: one break-glass lease (invoke → confirm → grant →
 * expiry → verified removal → forced-rotation step) on a private dev server, Postgres and slapd,
 * stored as test/replay/histories/v2-break-glass-expired.json so the replay test guards its shape.
 */
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { resolveTemporalBinary, startDevServer } from '../../temporal/dev-server.js';
import { startStackAt, type Stack } from '../helpers/stack-core.js';

const out = fileURLToPath(new URL('./histories/', import.meta.url));
const binary = await resolveTemporalBinary({ cliPath: process.env.TEMPORAL_CLI_PATH, say: console.log });
const server = await startDevServer({ binary, logDir: await mkdtemp(path.join(os.tmpdir(), 'accessloop-capture-')) });
// Captured in clear: the fixtures are committed and the replay test runs without a payload key.
const s: Stack = await startStackAt({ temporalAddress: server.address, env: { ACCESSLOOP_PAYLOAD_ENCRYPTION: 'false' } });
const tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
const must = <T extends { status: number; body: unknown }>(r: T, status: number): T => {
  if (r.status !== status) throw new Error(`${r.status}: ${JSON.stringify(r.body)}`);
  return r;
};

try {
  const ids = s.catalog.identities;
  const e = s.catalog.entitlements;
  const invokers = must(await s.call('POST', '/v1/groups', tok.operator, { name: 'replay-on-call', memberIds: [ids.alice] }), 201).body.ref;
  must(await s.call('PUT', `/v1/entitlements/${e['prod-admins']}/break-glass`, tok.operator, { allowed: true, invokers, maxDurationSeconds: 600 }), 200);
  const inv = must(await s.call('POST', '/v1/break-glass', tok.alice, { entitlementId: e['prod-admins'], durationSeconds: 2, incidentRef: 'INC-REPLAY', justification: 'captured for replay tests' }), 201);
  const ok = must(await s.call('POST', `/v1/break-glass/${inv.body.id}/confirm`, tok.alice, { confirmation: inv.body.confirmation }), 202);
  await s.waitForStatus(ok.body.id, ['revoked']);
  // The workflow closes after the rotation step and the post-use review's opening.
  await s.rt.temporal.workflow.getHandle(ok.body.workflowId).result();
  const { stdout } = await promisify(execFile)(binary, ['workflow', 'show', '--address', server.address, '-w', ok.body.workflowId, '-o', 'json'], { maxBuffer: 64 << 20 });
  await writeFile(path.join(out, 'v2-break-glass-expired.json'), stdout);
  console.log('captured break-glass-expired');
} finally {
  await s.stop();
  await server.stop();
}
