import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../activities/domain/audit.js';
import { verifyAuditLog } from '../../activities/domain/checkpoints.js';
import { checkpointScheduleId } from '../../workflows/ids.js';
import { verifyEvidenceBundle, type EvidenceBundle } from '../../activities/domain/evidence/index.js';
import { accessloop, run } from '../helpers/cli.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const CHECKPOINT_EVERY_S = 2;
let s: Stack;
let tok: Record<'operator' | 'alice' | 'bob' | 'carol', string>;
let ids: Stack['catalog']['identities'];
let dir: string;

beforeAll(async () => {
  s = await startStack({ env: { ACCESSLOOP_CHECKPOINT_INTERVAL_SECONDS: String(CHECKPOINT_EVERY_S) } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token])) as typeof tok;
  ids = s.catalog.identities;
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-evidence-'));
});
afterAll(async () => {
  await s?.stop();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const COMMENT = 'approved for the build-farm incident INC-77';

async function request(entitlement: string, ticketRef: string): Promise<string> {
  const r = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements[entitlement], durationSeconds: 3600, justification: 'debugging the build farm', ticketRef });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === r.body.id), `approval task for ${r.body.id}`);
  return r.body.id;
}
const approve = async (id: string, comment?: string) => {
  const r = await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve', ...(comment ? { comment } : {}) });
  expect(r.status, JSON.stringify(r.body)).toBe(200);
};
const revoke = async (id: string, reason: string, comment: string) => {
  const r = await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason, comment });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
};
const exportBundle = async (id: string, token = tok.carol) => {
  const r = await s.call('GET', `/v1/evidence/${id}`, token);
  expect(r.status, JSON.stringify(r.body)).toBe(200);
  return r.body as EvidenceBundle;
};
async function saved(name: string, bundle: unknown): Promise<string> {
  const file = path.join(dir, name);
  await writeFile(file, JSON.stringify(bundle, null, 2));
  return file;
}
const verifyCli = (file: string, ...extra: string[]) => accessloop('http://127.0.0.1:9', undefined, 'evidence', 'verify', file, ...extra);

describe('evidence bundles', () => {
  let id: string;
  let other: string;
  let bundle: EvidenceBundle;
  let file: string;

  it('exports one request’s whole chain as a signed bundle that verifies', async () => {
    // Two leases in flight at once, so their audit events interleave on the global chain.
    other = await request('finance-readers', 'CHG-2');
    id = await request('engineering', 'CHG-1');
    await approve(id, COMMENT);
    await s.waitForStatus(id, ['active']);
    await approve(other);
    await s.waitForStatus(other, ['active']);
    await revoke(id, 'review', 'quarterly access review');
    const done = await s.waitForStatus(id, ['revoked']);
    await revoke(other, 'manual', 'finished');
    await s.waitForStatus(other, ['revoked']);

    bundle = await exportBundle(id);
    expect(bundle.format).toBe('accessloop.evidence/v2');
    expect(bundle.exportedBy).toBe(ids.carol);
    expect(bundle.request).toMatchObject({ id, status: 'revoked', requesterId: ids.alice, subjectId: ids.alice, ticketRef: 'CHG-1', entitlement: { name: 'Engineering group', riskTier: 'medium' } });
    // The built-in policy (no document published in this stack) with the routing it produced.
    expect(bundle.policy).toMatchObject({ version: done.policyVersion, source: 'built-in default' });
    expect(bundle.policy.document).toMatchObject({ apiVersion: 'accessloop/v1' });
    expect(bundle.policy.stagesOpened).toEqual([expect.objectContaining({ stage: 1, stageName: 'owner', approverIds: [ids.bob] })]);
    expect(bundle.approvals).toEqual([
      expect.objectContaining({ stage: 1, approverId: ids.bob, decision: 'approve', status: 'approved', comment: COMMENT, policyVersion: done.policyVersion, eventSeq: expect.any(Number) }),
    ]);
    expect(bundle.approvals[0]!.decidedAt).toBeTruthy();
    expect(bundle.grant).toMatchObject({ id: done.grant.id, status: 'revoked', identityId: ids.alice, source: 'request' });
    expect(bundle.grantVerification).toMatchObject({ verifiedAt: done.grant.grantVerifiedAt, eventSeq: expect.any(Number) });
    expect(bundle.revocation).toMatchObject({ reason: 'review', requestedBy: 'client:demo-operator', comment: 'quarterly access review' });
    expect(bundle.removalVerification).toMatchObject({ outcome: 'removal_verified', removalVerifiedAt: done.removalVerifiedAt, unverifiedAlerts: [] });
    expect(bundle.credentials).toEqual([]);

    // Every audit event of the request or its grant, in seq order, with all hashed fields; none of the other lease's.
    expect(bundle.events.map((e) => e.action)).toEqual(done.timeline.map((t: { action: string }) => t.action));
    expect(bundle.events.map((e) => e.seq)).toEqual(done.timeline.map((t: { seq: number }) => t.seq));
    for (const e of bundle.events) expect(e.requestId === id || e.grantId === done.grant.id).toBe(true);
    expect(Object.keys(bundle.events[0]!).sort()).toEqual(['action', 'actorId', 'actorType', 'at', 'data', 'grantId', 'hash', 'hashVersion', 'identityId', 'idempotencyKey', 'policyVersion', 'prevHash', 'reason', 'requestId', 'seq', 'stream', 'streamSeq'].sort());
    const seqs = bundle.events.map((e) => e.seq);
    expect(seqs.some((q, i) => i > 0 && q !== seqs[i - 1]! + 1)).toBe(true); // interleaved globally: gaps exist
    const otherSeqs = (await s.call('GET', `/v1/access-requests/${other}`, tok.operator)).body.timeline.map((t: { seq: number }) => t.seq);
    expect(seqs.filter((q) => otherSeqs.includes(q))).toEqual([]);

    // The request's own stream, whole from its first event, its head proven in a signed checkpoint.
    const own = bundle.events.filter((e) => e.stream === `request:${id}`);
    expect(own.map((e) => e.streamSeq)).toEqual(own.map((_, i) => i + 1));
    const [head] = (await s.tdb.db.execute(sql`select head_seq, head_hash from audit_stream where stream = ${`request:${id}`}`)) as unknown as Array<{ head_seq: number; head_hash: string }>;
    const stream = bundle.chain.streams.find((x) => x.stream === `request:${id}`)!;
    expect(stream).toMatchObject({ complete: true, head: { streamSeq: head!.head_seq, hash: head!.head_hash }, proof: { head: { streamSeq: head!.head_seq, hash: head!.head_hash } } });
    expect(bundle.chain.checkpoint).toMatchObject({ format: 'accessloop.checkpoint/v1', signer: { fingerprint: bundle.signer.fingerprint } });
    expect(stream.proof!.auditPath.length).toBeLessThanOrEqual(Math.ceil(Math.log2(bundle.chain.checkpoint!.treeSize)));
    expect(bundle.verification).toMatchObject({ valid: true, problems: [] });
    expect(bundle.verification.eventsChecked).toBe(bundle.events.length);

    // The signing key is published (no token needed) and embedded with its fingerprint.
    const key = await s.call('GET', '/v1/evidence/public-key');
    expect(key.status).toBe(200);
    expect(key.body).toEqual({ algorithm: 'Ed25519', publicKey: bundle.signer.publicKey, fingerprint: bundle.signer.fingerprint });
    expect(bundle.signer.fingerprint).toMatch(/^SHA256:[A-Za-z0-9+/]{43}$/);

    // The checkpoint the bundle is proven against is listed for auditors to keep outside the database.
    const listed = await s.call('GET', '/v1/evidence/checkpoints?limit=5', tok.carol);
    expect(listed.status).toBe(200);
    expect(listed.body.items[0]).toEqual(bundle.chain.checkpoint);
    expect((await s.call('GET', '/v1/evidence/checkpoints', tok.alice)).status).toBe(403);
    expect((await s.call('POST', '/v1/evidence/checkpoints', tok.carol)).status).toBe(403);
    const again = await s.call('POST', '/v1/evidence/checkpoints', tok.operator);
    expect([200, 201]).toContain(again.status);
    expect(again.body.id).toBeGreaterThanOrEqual(bundle.chain.checkpoint!.id);

    const v = verifyEvidenceBundle(bundle, { publicKey: key.body.publicKey });
    expect(v).toMatchObject({ valid: true, problems: [], requestId: id, events: bundle.events.length, fingerprint: bundle.signer.fingerprint });
    expect(v.linksChecked).toBeGreaterThan(0);
    // Operators may export too; nothing is written by an export.
    expect((await exportBundle(id, tok.operator)).events).toHaveLength(bundle.events.length);
    expect(await verifyChain(s.tdb.db)).toMatchObject({ ok: true });
  });

  it('verifies offline through npm run evidence:verify and the CLI, with the published key pinned', async () => {
    file = await saved('evidence.json', bundle);
    const npm = await run('npm', ['run', '--silent', 'evidence:verify', '--', file]);
    expect(npm.code, npm.stderr).toBe(0);
    expect(npm.stdout).toMatch(new RegExp(`^OK .*request ${id}, ${bundle.events.length} events .*key ${bundle.signer.fingerprint.replace(/[+/]/g, '\\$&')}`, 'm'));

    const pem = path.join(dir, 'published.pem');
    await writeFile(pem, (await s.call('GET', '/v1/evidence/public-key')).body.publicKey);
    const pinned = await verifyCli(file, '--public-key', pem);
    expect(pinned.code, pinned.stderr).toBe(0);
    expect(pinned.stdout).toContain('(the pinned key)');

    const stranger = path.join(dir, 'stranger.pem');
    await writeFile(stranger, generateKeyPairSync('ed25519').publicKey.export({ format: 'pem', type: 'spki' }).toString());
    const wrongKey = await verifyCli(file, '--public-key', stranger);
    expect(wrongKey.code).toBe(1);
    expect(wrongKey.stderr).toContain('key_not_pinned');
  });

  it('fails offline verification of a changed file and names the problem', async () => {
    const edit = (f: (b: EvidenceBundle) => void) => {
      const copy = structuredClone(bundle);
      f(copy);
      return copy;
    };
    const decisionSeq = bundle.approvals[0]!.eventSeq!;
    const verifiedSeq = bundle.grantVerification!.eventSeq;

    // The approval comment (a fact from the approval table, checked against its chained event).
    const comment = await verifyCli(await saved('comment.json', edit((b) => (b.approvals[0]!.comment = 'approved, no questions asked'))));
    expect(comment.code).toBe(1);
    expect(comment.stderr).toContain('signature_invalid');
    expect(comment.stderr).toContain(`[seq ${decisionSeq}] fact_mismatch: approval of stage 1 by ${ids.bob}: the comment differs from the hash-chained event seq ${decisionSeq}`);

    // An event's actor: its hash no longer matches its fields.
    const actor = await verifyCli(await saved('actor.json', edit((b) => (b.events.find((e) => e.seq === decisionSeq)!.actorId = ids.carol))));
    expect(actor.code).toBe(1);
    expect(actor.stderr).toContain(`[seq ${decisionSeq}] hash_mismatch`);

    // An event left out.
    const dropped = await verifyCli(await saved('dropped.json', edit((b) => (b.events = b.events.filter((e) => e.seq !== verifiedSeq)))));
    expect(dropped.code).toBe(1);
    // Its stream now has a hole where it was, and the fact it recorded has no event left.
    const droppedAt = bundle.events.find((e) => e.seq === verifiedSeq)!.streamSeq;
    expect(dropped.stderr).toContain(`event_missing: stream request:${id}: event ${droppedAt} is missing before stream_seq ${droppedAt + 1}`);
    expect(dropped.stderr).toContain(`[seq ${verifiedSeq}] fact_unsupported`);
    expect(dropped.stderr).toContain('signature_invalid');

    // One byte of the file, then the server's own verdict flipped: the signature catches both.
    const text = JSON.stringify(bundle);
    const oneByte = path.join(dir, 'one-byte.json');
    await writeFile(oneByte, text.replace('"CHG-1"', '"CHG-7"'));
    const byte = await run('npm', ['run', '--silent', 'evidence:verify', '--', oneByte]);
    expect(byte.code).toBe(1);
    expect(byte.stderr).toMatch(/INVALID .*one-byte\.json: 1 problem/);
    expect(byte.stderr).toContain('signature_invalid');

    const notJson = path.join(dir, 'truncated.json');
    await writeFile(notJson, text.slice(0, 200));
    const truncated = await verifyCli(notJson);
    expect(truncated.code).toBe(1);
    expect(truncated.stderr).toContain('not_json');
  });

  it('writes a signed checkpoint on its Temporal Schedule once the log has moved, and the whole log verifies against them', async () => {
    const handle = s.rt.temporal.schedule.getHandle(checkpointScheduleId(s.config.TEMPORAL_TASK_QUEUE));
    expect((await handle.describe()).spec.intervals?.[0]?.every).toBe(CHECKPOINT_EVERY_S * 1000);
    const before = (await s.call('GET', '/v1/evidence/checkpoints?limit=1', tok.carol)).body.items[0]?.id ?? 0;
    // Something moves (a new request), then a scheduled run (not an export) checkpoints it.
    const moved = await s.call('POST', '/v1/access-requests', tok.alice, { entitlementId: s.catalog.entitlements['finance-readers'], durationSeconds: 600, justification: 'checkpoint schedule fixture' });
    expect(moved.status).toBe(202);
    const latest = await waitFor(async () => {
      const items = (await s.call('GET', '/v1/evidence/checkpoints?limit=1', tok.carol)).body.items as Array<{ id: number }>;
      return items[0] && items[0].id > before ? items[0] : undefined;
    }, 'a scheduled checkpoint', CHECKPOINT_EVERY_S * 10_000);
    expect((await handle.describe()).info.numActionsTaken).toBeGreaterThan(0);
    expect(latest).toMatchObject({ format: 'accessloop.checkpoint/v1', signer: { fingerprint: bundle.signer.fingerprint } });
    expect(await verifyAuditLog(s.tdb.db, { publicKey: bundle.signer.publicKey })).toMatchObject({ ok: true, problems: [] });
  });

  it('answers only auditors and operators: 404 to others and for unknown ids, 400 for a malformed id', async () => {
    const before = await verifyChain(s.tdb.db);
    for (const who of [tok.alice, tok.bob]) {
      const r = await s.call('GET', `/v1/evidence/${id}`, who);
      expect(r.status).toBe(404);
      expect(r.body.error.code).toBe('not_found');
    }
    const unknown = await s.call('GET', '/v1/evidence/6f1c1a47-3f0e-4c55-9a55-0a6b6a1e2b3c', tok.carol);
    expect(unknown.status).toBe(404);
    const malformed = await s.call('GET', '/v1/evidence/not-a-uuid', tok.carol);
    expect(malformed.status).toBe(400);
    expect(malformed.body.error).toMatchObject({ code: 'invalid_request', details: [{ path: 'requestId', message: 'must be a UUID' }] });
    expect((await s.call('GET', `/v1/evidence/${id}`)).status).toBe(401);
    expect(await verifyChain(s.tdb.db)).toEqual(before);
  });

  // Last: it breaks the chain of this file's database on purpose.
  it('reports a row altered in Postgres as invalid evidence naming the seq, and the offline verify fails', async () => {
    const seq = bundle.approvals[0]!.eventSeq!;
    const original = bundle.events.find((e) => e.seq === seq)!;
    await s.tdb.db.execute(sql`update audit_event set reason = 'approved without looking' where seq = ${seq}`);

    const fresh = await exportBundle(id);
    expect(fresh.verification.valid).toBe(false);
    expect(fresh.verification.problems).toEqual(expect.arrayContaining([expect.objectContaining({ code: 'hash_mismatch', seq })]));
    // Not laundered: the altered field is exported with the hash the chain committed to.
    expect(fresh.events.find((e) => e.seq === seq)).toMatchObject({ reason: 'approved without looking', hash: original.hash, prevHash: original.prevHash });

    const v = verifyEvidenceBundle(fresh);
    expect(v.valid).toBe(false);
    expect(v.problems.map((p) => p.code)).not.toContain('signature_invalid'); // the API signed what it found, and said so
    expect(v.problems).toEqual(expect.arrayContaining([expect.objectContaining({ code: 'hash_mismatch', seq }), expect.objectContaining({ code: 'export:hash_mismatch', seq })]));

    const offline = await verifyCli(await saved('tampered-db.json', fresh));
    expect(offline.code).toBe(1);
    expect(offline.stderr).toContain(`[seq ${seq}] hash_mismatch`);

    // Chains are per stream: the other lease's evidence stands on its own and still verifies,
    // while the whole-log check names the altered stream and event.
    const neighbour = await exportBundle(other);
    expect(neighbour.events.map((e) => e.seq)).not.toContain(seq);
    expect(neighbour.verification).toMatchObject({ valid: true, problems: [] });
    const log = await verifyAuditLog(s.tdb.db);
    expect(log.problems).toEqual([expect.objectContaining({ code: 'hash_mismatch', stream: `request:${id}`, seq })]);
  });
});
