/**
 * Payload encryption end to end: a lease runs through the real API and worker; its history is
 * read raw with the Temporal CLI (no codec, as anyone with access to the cluster's store would)
 * and holds no plaintext; our client and the codec endpoint (also through the CLI's own
 * `--codec-endpoint` client, and the dev server's UI settings) read it back in clear.
 */
import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { Client, WorkflowUpdateStage } from '@temporalio/client';
import express from 'express';
import type { Server } from 'node:http';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { codecRoutes } from '../../api/routes/codec.js';
import { errorHandler } from '../../api/errors.js';
import { loadConfig } from '../../temporal/config.js';
import { freePort, startDevServer } from '../../temporal/dev-server.js';
import { createLogger } from '../../temporal/logger.js';
import { decideUpdate } from '../../workflows/messages.js';
import { decodedHistoryText, metadataText, payloadsIn, rawHistoryText } from '../helpers/history.js';
import { ldapModify } from '../helpers/ldap.js';
import { demoGroupDn, DEMO_SUFFIX } from '../../activities/connectors/ldap/seed.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const execFileAsync = promisify(execFile);
const UI_ORIGIN = 'http://temporal-ui.test:8233';
const tag = randomBytes(4).toString('hex');
/** Strings that exist only inside workflow payloads (update arguments), never in ids or search attributes. */
const COMMENT = `codec-e2e approver comment ${tag}: fine for the quarter close`;
const EXTEND_REASON = `codec-e2e extension ${tag}: audit fieldwork runs late`;
const b64 = (s: string) => Buffer.from(s).toString('base64');

let s: Stack;
let tok: Record<string, string>;
let workflowId: string;
let grantId: string;
let rawHistory: { events: Array<Record<string, any>> };

async function cli(args: string[]): Promise<string> {
  const { stdout } = await execFileAsync(inject('temporalCli'), [...args, '--address', inject('temporalAddress'), '--namespace', 'default'], { maxBuffer: 64 << 20 });
  return stdout;
}

beforeAll(async () => {
  s = await startStack({ env: { ACCESSLOOP_UI_ORIGIN: UI_ORIGIN } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));

  // One lease through approval, extension and revocation, so the history holds every kind of
  // payload: workflow input, activity inputs and results, update arguments and results.
  const created = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements.engineering, durationSeconds: 600, justification: 'quarter close' });
  expect(created.status, JSON.stringify(created.body)).toBe(202);
  const id = created.body.id as string;
  workflowId = created.body.workflowId;
  await waitFor(async () => (await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve', comment: COMMENT })).status === 200, 'approval');
  const active = await s.waitForStatus(id, ['active']);
  grantId = active.grant.id;
  expect(grantId).toMatch(/^[0-9a-f-]{36}$/);
  const ext = await s.call('POST', `/v1/access-requests/${id}/extend`, tok.operator, { durationSeconds: 1200, justification: EXTEND_REASON });
  expect(ext.status, JSON.stringify(ext.body)).toBe(200);
  expect((await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
  await s.waitForStatus(id, ['revoked']);
  rawHistory = JSON.parse(await cli(['workflow', 'show', '--workflow-id', workflowId, '--output', 'json']));
});

afterAll(async () => {
  await s?.stop();
});

const decode = (token: string | undefined, body: unknown, headers: Record<string, string> = {}) => s.call('POST', '/codec/decode', token, body, { 'x-namespace': 'default', ...headers });
const encode = (token: string | undefined, body: unknown, headers: Record<string, string> = {}) => s.call('POST', '/codec/encode', token, body, { 'x-namespace': 'default', ...headers });
const jsonPayload = (v: unknown) => ({ metadata: { encoding: b64('json/plain') }, data: b64(JSON.stringify(v)) });

describe('the history at rest', () => {
  it('holds no plaintext: markers and the grant id are absent from the raw CLI output, even base64-decoded', () => {
    expect(rawHistory.events.map((e) => e.eventType)).toContain('EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED');
    const raw = rawHistoryText(rawHistory);
    for (const secret of [COMMENT, tag, EXTEND_REASON, grantId, 'Engineering group']) expect(raw, secret).not.toContain(secret);
  });

  it('encrypts every payload except search attributes (opaque ids by design) and the SDK core\'s own marker bookkeeping', () => {
    const payloads = payloadsIn(rawHistory);
    // The server must index search attributes, so they cannot be encrypted; ours hold only states and opaque ids.
    const searchAttributes = payloads.filter((p) => /\.searchAttributes\.indexedFields\./.test(p.path));
    // patched() markers are written by the SDK core itself, past the codec: they hold the patch name only.
    const patchMarkers = payloads.filter((p) => /\.markerRecordedEventAttributes\.details\.patch-data\./.test(p.path));
    // A local activity's marker carries the core's own record of the call (sequence, attempt,
    // activity type, times), also past the codec; its input never enters history and its result
    // (`details.result`) is sealed like any payload, checked with the rest below.
    const localActivityRecords = payloads.filter((p) => /\.markerRecordedEventAttributes\.details\.data\./.test(p.path));
    const rest = payloads.filter((p) => !searchAttributes.includes(p) && !patchMarkers.includes(p) && !localActivityRecords.includes(p));
    expect(searchAttributes.length).toBeGreaterThan(0);
    for (const p of patchMarkers) expect(Object.keys(JSON.parse(Buffer.from(p.payload.data as string, 'base64').toString())).sort()).toEqual(['deprecated', 'id']);
    // Bookkeeping runs as local activities (workflows/bookkeeping.ts): their records hold no values of ours.
    expect(localActivityRecords.length).toBeGreaterThan(0);
    for (const p of localActivityRecords) {
      const record = JSON.parse(Buffer.from(p.payload.data as string, 'base64').toString()) as Record<string, unknown>;
      expect(Object.keys(record).sort()).toEqual(['activity_id', 'activity_type', 'attempt', 'backoff', 'complete_time', 'original_schedule_time', 'seq']);
      expect(String(record.activity_type)).toMatch(/^[a-zA-Z]+$/);
    }
    expect(payloads.some((p) => /\.markerRecordedEventAttributes\.details\.result\./.test(p.path) && metadataText(p.payload, 'encoding') === 'binary/encrypted')).toBe(true);
    expect(rest.length).toBeGreaterThan(10);
    expect(rest.filter((p) => metadataText(p.payload, 'encoding') !== 'binary/encrypted').map((p) => `${p.path}: ${metadataText(p.payload, 'encoding')}`)).toEqual([]);
    expect(new Set(rest.map((p) => metadataText(p.payload, 'encryption-key-id')))).toEqual(new Set(['local-1']));
    expect(new Set(rest.map((p) => metadataText(p.payload, 'encryption-cipher')))).toEqual(new Set(['AES-256-GCM']));
    // Search attributes stay readable: only states, kinds and opaque ids go there.
    expect(searchAttributes.every((p) => metadataText(p.payload, 'encoding') === 'json/plain')).toBe(true);
  });

  it('encrypts the static summary and details too: the SDK sends user metadata through the codec', async () => {
    const started = rawHistory.events[0]!;
    expect(started.eventType).toBe('EVENT_TYPE_WORKFLOW_EXECUTION_STARTED');
    expect(metadataText(started.userMetadata.summary, 'encoding')).toBe('binary/encrypted');
    expect(metadataText(started.userMetadata.details, 'encoding')).toBe('binary/encrypted');
    // Our client (same data converter) reads them in clear.
    const desc = await s.rt.temporal.workflow.getHandle(workflowId).describe();
    expect(await desc.staticSummary()).toMatch(/^Engineering group · medium · 10 min lease$/);
    expect(await desc.staticDetails()).toContain('**Access request**');
  });
});

describe('reading it back with the key', () => {
  it('our client decodes the fetched history: the comment, the extension and the grant id are there', async () => {
    const history = await s.rt.temporal.workflow.getHandle(workflowId).fetchHistory();
    const text = await decodedHistoryText(history, s.rt.temporal.options.loadedDataConverter.payloadCodecs);
    for (const secret of [COMMENT, EXTEND_REASON, grantId, 'Engineering group']) expect(text, secret).toContain(secret);
  });

  it('POST /codec/decode opens the raw CLI payloads', async () => {
    const payloads = payloadsIn(rawHistory).map((p) => p.payload);
    const r = await decode(tok.operator, { payloads });
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body.payloads).toHaveLength(payloads.length);
    const text = r.body.payloads.map((p: { data: string }) => Buffer.from(p.data, 'base64').toString('utf8')).join('\n');
    for (const secret of [COMMENT, EXTEND_REASON, grantId]) expect(text, secret).toContain(secret);
    expect(r.body.payloads.every((p: { metadata: Record<string, string> }) => Buffer.from(p.metadata.encoding!, 'base64').toString() !== 'binary/encrypted')).toBe(true);
  });

  it("the Temporal CLI's own codec client decodes through the endpoint (--codec-endpoint, --codec-auth)", async () => {
    const clear = await cli(['workflow', 'show', '--workflow-id', workflowId, '--output', 'json', '--codec-endpoint', `${s.rt.apiUrl}/codec`, '--codec-auth', `Bearer ${tok.carol}`]);
    for (const secret of [COMMENT, EXTEND_REASON, grantId]) expect(rawHistoryText(JSON.parse(clear)), secret).toContain(secret);
  });
});

describe('turning encryption on', () => {
  it('keeps running workflows whose history already holds plaintext payloads', async () => {
    const created = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements.engineering, durationSeconds: 600, justification: 'second lease' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === created.body.id), 'the approval task');
    // A client without the codec, as every client was before encryption: its update argument
    // lands in history as plaintext, and the encrypting worker must still act on it.
    const plainComment = `written before encryption ${tag}`;
    const legacy = new Client({ connection: s.rt.temporal.connection, namespace: 'default' });
    await legacy.workflow
      .getHandle(created.body.workflowId)
      .startUpdate(decideUpdate, { args: [{ approverId: s.catalog.identities.bob, decision: 'approve', comment: plainComment }], waitForStage: WorkflowUpdateStage.ACCEPTED });
    await s.waitForStatus(created.body.id, ['active']);
    const raw = JSON.parse(await cli(['workflow', 'show', '--workflow-id', created.body.workflowId, '--output', 'json']));
    const encodings = new Set(payloadsIn(raw).map((p) => metadataText(p.payload, 'encoding')));
    expect(encodings).toContain('binary/encrypted');
    expect(rawHistoryText(raw)).toContain(plainComment);
    const decoded = await decodedHistoryText(await s.rt.temporal.workflow.getHandle(created.body.workflowId).fetchHistory(), s.rt.temporal.options.loadedDataConverter.payloadCodecs);
    expect(decoded).toContain(plainComment);
    expect((await s.call('POST', `/v1/access-requests/${created.body.id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
    await s.waitForStatus(created.body.id, ['revoked']);
  });
});

describe('the codec endpoint', () => {
  it('encodes for operators, and what it seals only opens with the key', async () => {
    const e = await encode(tok.operator, { payloads: [jsonPayload({ marker: tag })] });
    expect(e.status, JSON.stringify(e.body)).toBe(200);
    const [sealed] = e.body.payloads;
    expect(Buffer.from(sealed.metadata.encoding, 'base64').toString()).toBe('binary/encrypted');
    expect(Buffer.from(sealed.data, 'base64').toString('latin1')).not.toContain(tag);
    const d = await decode(tok.carol, { payloads: [sealed] });
    expect(d.status).toBe(200);
    expect(JSON.parse(Buffer.from(d.body.payloads[0].data, 'base64').toString())).toEqual({ marker: tag });
  });

  it('requires a bearer token when the cluster is not our dev server: none 401, requester 403, operator/auditor 200', async () => {
    const body = { payloads: [jsonPayload('x')] };
    expect((await decode(undefined, body)).status).toBe(401);
    expect((await encode(undefined, body)).status).toBe(401);
    expect((await decode('al_not-a-real-token-at-all-000000', body)).status).toBe(401);
    expect((await decode(tok.alice, body)).status).toBe(403); // requester only
    expect((await decode(tok.bob, body)).status).toBe(403); // requester + approver
    expect((await decode(tok.operator, body)).status).toBe(200);
    expect((await decode(tok.carol, body)).status).toBe(200); // auditor
    // Encoding makes input the workers trust (a signal from the UI): operators only.
    expect((await encode(tok.carol, body)).status).toBe(403);
    expect((await encode(tok.operator, body)).status).toBe(200);
  });

  it('answers CORS for the UI origin only', async () => {
    const preflight = (origin: string) =>
      fetch(`${s.rt.apiUrl}/codec/decode`, { method: 'OPTIONS', headers: { origin, 'access-control-request-method': 'POST', 'access-control-request-headers': 'content-type,x-namespace,authorization' } });
    const ok = await preflight(UI_ORIGIN);
    expect(ok.status).toBe(204);
    expect(ok.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    expect(ok.headers.get('access-control-allow-headers')).toBe('Content-Type, X-Namespace, Authorization');
    expect(ok.headers.get('access-control-allow-credentials')).toBe('true');
    const other = await preflight('http://evil.test:8233');
    expect(other.status).toBe(204);
    for (const h of ['access-control-allow-origin', 'access-control-allow-headers', 'access-control-allow-credentials']) expect(other.headers.get(h), h).toBeNull();

    const body = { payloads: [jsonPayload('x')] };
    const fromUi = await fetch(`${s.rt.apiUrl}/codec/decode`, { method: 'POST', headers: { origin: UI_ORIGIN, 'content-type': 'application/json', authorization: `Bearer ${tok.operator}` }, body: JSON.stringify(body) });
    expect(fromUi.status).toBe(200);
    expect(fromUi.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    expect(fromUi.headers.get('cache-control')).toBe('no-store');
    // The UI can read a refusal too (so it can tell the operator), but another site learns nothing.
    const refused = await fetch(`${s.rt.apiUrl}/codec/decode`, { method: 'POST', headers: { origin: UI_ORIGIN, 'content-type': 'application/json' }, body: JSON.stringify(body) });
    expect(refused.status).toBe(401);
    expect(refused.headers.get('access-control-allow-origin')).toBe(UI_ORIGIN);
    const fromOther = await fetch(`${s.rt.apiUrl}/codec/decode`, { method: 'POST', headers: { origin: 'http://evil.test:8233', 'content-type': 'application/json', authorization: `Bearer ${tok.operator}` }, body: JSON.stringify(body) });
    expect(fromOther.headers.get('access-control-allow-origin')).toBeNull();
  });

  it('answers bad bodies and undecodable payloads with 400 and an error, nothing else', async () => {
    const [sealed] = (await encode(tok.operator, { payloads: [jsonPayload({ marker: tag })] })).body.payloads;
    const flipped = Buffer.from(sealed.data, 'base64');
    flipped[20] = flipped[20]! ^ 1;
    const bad: Array<[string, unknown, Record<string, string>?]> = [
      ['not JSON', '{"payloads": [', undefined],
      ['no payloads', {}],
      ['payloads not an array', { payloads: 'x' }],
      ['data not base64', { payloads: [{ metadata: { encoding: b64('json/plain') }, data: 'not base64!' }] }],
      ['metadata value not a string', { payloads: [{ metadata: { encoding: 5 }, data: '' }] }],
      ['tampered ciphertext', { payloads: [{ ...sealed, data: flipped.toString('base64') }] }],
      ['unknown key id', { payloads: [{ ...sealed, metadata: { ...sealed.metadata, 'encryption-key-id': b64('retired-9') } }] }],
      ['not JSON content', 'payloads=1', { 'content-type': 'text/plain' }],
    ];
    for (const [what, body, headers] of bad) {
      const r = await decode(tok.operator, body, headers);
      expect(r.status, what).toBe(400);
      expect(Object.keys(r.body), what).toEqual(['error']);
      expect(JSON.stringify(r.body), what).not.toContain(tag);
    }
    const unknown = await decode(tok.operator, { payloads: [{ ...sealed, metadata: { ...sealed.metadata, 'encryption-key-id': b64('retired-9') } }] });
    expect(unknown.body.error).toMatchObject({ code: 'codec_error', message: expect.stringContaining('unknown key id "retired-9"') });
  });

  it('leaves payloads of other namespaces untouched (our keys are for ours)', async () => {
    const p = jsonPayload({ marker: tag });
    const e = await encode(tok.operator, { payloads: [p] }, { 'x-namespace': 'someone-else' });
    expect(e.status).toBe(200);
    expect(e.body.payloads).toEqual([p]);
  });

  it('needs no token in dev mode (our own dev server, loopback API)', async () => {
    const devConfig = loadConfig({ ACCESSLOOP_DATA_DIR: s.config.ACCESSLOOP_DATA_DIR });
    const app = express();
    app.use('/codec', codecRoutes({ db: s.rt.db, config: devConfig, codecs: s.rt.temporal.options.loadedDataConverter.payloadCodecs }));
    app.use(errorHandler(createLogger('silent')));
    const server = await new Promise<Server>((resolve) => {
      const srv = app.listen(0, '127.0.0.1', () => resolve(srv));
    });
    try {
      const { port } = server.address() as { port: number };
      const r = await fetch(`http://127.0.0.1:${port}/codec/encode`, { method: 'POST', headers: { 'content-type': 'application/json', origin: 'http://localhost:8233' }, body: JSON.stringify({ payloads: [jsonPayload('dev')] }) });
      expect(r.status).toBe(200);
      expect(r.headers.get('access-control-allow-origin')).toBe('http://localhost:8233');
    } finally {
      server.close();
    }
  });
});

describe('a failure path', () => {
  it('seals failure messages and stack traces: a grant that fails naming a directory entry leaves neither in the raw history', async () => {
    // The group is gone from the directory (the last test to use it), so the grant fails with "LDAP read of member on cn=engineering,…: LDAP result 32 (NoSuchObjectError)".
    const group = demoGroupDn(DEMO_SUFFIX, 'engineering');
    await ldapModify({ url: s.slapd.url, rootDn: s.slapd.rootDn, rootPassword: s.slapd.rootPassword }, `dn: ${group}\nchangetype: delete\n`);
    const created = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements.engineering, durationSeconds: 600, justification: 'failure path' });
    expect(created.status, JSON.stringify(created.body)).toBe(202);
    await waitFor(async () => (await s.call('POST', `/v1/access-requests/${created.body.id}/decision`, tok.bob, { decision: 'approve', comment: 'ok' })).status === 200, 'approval');
    // The grant fails at once (NoSuchResource is not retryable); its failure is the first failed activity.
    const failedActivities = (h: { events: Array<Record<string, any>> }) => h.events.filter((e) => e.eventType === 'EVENT_TYPE_ACTIVITY_TASK_FAILED').map((e) => e.activityTaskFailedEventAttributes.failure);
    const raw = await waitFor(async () => {
      const h = JSON.parse(await cli(['workflow', 'show', '--workflow-id', created.body.workflowId, '--output', 'json']));
      return failedActivities(h).length > 0 ? h : undefined;
    }, 'the failed grant in history', 60_000, 250);
    const failures = failedActivities(raw);
    for (const f of failures) {
      // The SDK's placeholder replaces the message; the real one and the stack ride in the sealed payload.
      expect(f.message).toBe('Encoded failure');
      expect(f.stackTrace ?? '').toBe('');
      expect(metadataText(f.encodedAttributes, 'encoding')).toBe('binary/encrypted');
    }
    const text = rawHistoryText(raw);
    for (const secret of [group, 'cn=engineering', 'NoSuchObject', 'at async']) expect(text, secret).not.toContain(secret);

    // With the key, through the codec endpoint (as the Temporal UI reads it), the message is there.
    const clear = await cli(['workflow', 'show', '--workflow-id', created.body.workflowId, '--output', 'json', '--codec-endpoint', `${s.rt.apiUrl}/codec`, '--codec-auth', `Bearer ${tok.operator}`]);
    expect(rawHistoryText(JSON.parse(clear))).toContain(`LDAP read of member on ${group}: LDAP result 32`);
    // And our client's fetched history decodes to it too.
    const decoded = await decodedHistoryText(await s.rt.temporal.workflow.getHandle(created.body.workflowId).fetchHistory(), s.rt.temporal.options.loadedDataConverter.payloadCodecs);
    expect(decoded).toContain(`LDAP read of member on ${group}: LDAP result 32`);
  });
});

describe('the dev server', () => {
  it('starts its Web UI with our codec endpoint', async () => {
    const logDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-codec-ui-'));
    const uiPort = await freePort();
    const endpoint = `${s.rt.apiUrl}/codec`;
    const dev = await startDevServer({ binary: inject('temporalCli'), logDir, uiPort, codecEndpoint: endpoint });
    try {
      const settings = await waitFor(
        async () => {
          const r = await fetch(`http://127.0.0.1:${uiPort}/api/v1/settings`).catch(() => undefined);
          return r?.ok ? ((await r.json()) as { Codec: { Endpoint: string } }) : undefined;
        },
        'the UI settings',
        30_000,
      );
      expect(settings.Codec.Endpoint).toBe(endpoint);
    } finally {
      await dev.stop();
      await rm(logDir, { recursive: true, force: true });
    }
  });
});
