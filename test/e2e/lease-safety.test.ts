import { randomBytes, randomUUID } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { ApplicationFailure } from '@temporalio/activity';
import { and, eq, sql } from 'drizzle-orm';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createActivities, type Activities } from '../../activities/index.js';
import { appendAudit } from '../../activities/domain/audit.js';
import { createMetrics } from '../../activities/domain/metrics.js';
import { createNotifier } from '../../activities/domain/notifier.js';
import { createCredentialVault } from '../../activities/domain/vault.js';
import { toFailure } from '../../activities/lease-context.js';
import { closeDb, createDb } from '../../db/client.js';
import { auditEvents, entitlements, grants, identities, notifications } from '../../db/schema.js';
import { createLogger } from '../../temporal/logger.js';
import { revokeSignal } from '../../workflows/messages.js';
import { psqlRaw } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';
import { startWebhookReceiver, type WebhookDelivery, type WebhookReceiver, signatureValid as verifySignature } from '../helpers/webhook-receiver.js';

// The lease activities' safety properties, exercised through the activity functions the worker
// registers (createActivities over the stack's real database, slapd and a local signed-webhook
// receiver), and checked with ldapsearch, SQL and the receiver's own signature verification.

type Delivery = WebhookDelivery<{ type: string; data: { requestId: string | null; grantId?: string; subjectId: string; details?: Record<string, unknown>; recipients: Array<{ identityId: string }> } }>;

const secretBytes = randomBytes(24);
const deliveries: Delivery[] = [];
let receiver: WebhookReceiver | undefined;
let s: Stack;
let acts: Activities;
let metrics: ReturnType<typeof createMetrics>;
let ids: Stack['catalog']['identities'];
let ent: Record<string, string>;

const signatureValid = (d: Delivery) => verifySignature(d, secretBytes);

/** The error an activity call rejects with (fails the test if it resolves). */
async function failureOf(p: Promise<unknown>): Promise<unknown> {
  try {
    await p;
  } catch (e) {
    return e;
  }
  throw new Error('expected the call to fail');
}

const counter = async (name: string, labels: Record<string, string> = {}) =>
  (await metrics.registry.getSingleMetric(name)!.get()).values.filter((v) => Object.entries(labels).every(([k, x]) => v.labels[k] === x)).reduce((n, v) => n + v.value, 0);

async function grantRow(identityId: string, entitlementId: string, status: 'active' | 'granting' | 'revoking' = 'active') {
  const [g] = await s.rt.db.insert(grants).values({ identityId, entitlementId, source: 'request', status, grantedAt: new Date(), grantVerifiedAt: new Date() }).returning();
  return g!;
}

beforeAll(async () => {
  receiver = await startWebhookReceiver(deliveries);
  s = await startStack();
  ids = s.catalog.identities;
  ent = s.catalog.entitlements;
  const log = createLogger('error');
  metrics = createMetrics();
  const notifier = createNotifier(
    { webhookUrl: receiver.url, webhookSecret: `whsec_${secretBytes.toString('base64')}`, publicUrl: 'http://localhost', linkSecret: randomBytes(32), linkTtlSeconds: 60 },
    s.rt.db,
    log,
  );
  acts = createActivities({ db: s.rt.db, connectors: s.rt.connectors, policies: s.rt.policies, log, metrics, notifier, vault: createCredentialVault(randomBytes(32)) });
});
afterAll(async () => {
  await s?.stop();
  await receiver?.close();
});

describe('database errors become stable Temporal failures', () => {
  it('an unknown enum value is non-retryable InvalidInput, and the message does not carry the value', async () => {
    const err = await failureOf(s.rt.db.update(grants).set({ revokeReason: 'Expired-by-Alice' as never }).where(eq(grants.id, randomUUID())));
    const f = toFailure(err);
    expect(f).toBeInstanceOf(ApplicationFailure);
    expect((f as ApplicationFailure).nonRetryable).toBe(true);
    expect((f as ApplicationFailure).type).toBe('InvalidInput');
    expect((f as ApplicationFailure).message).toContain('22P02');
    expect((f as ApplicationFailure).message).not.toContain('Alice');
  });

  it('a constraint violation is non-retryable ConstraintViolation, without the parameters', async () => {
    const ghost = randomUUID();
    const err = await failureOf(s.rt.db.insert(grants).values({ identityId: ghost, entitlementId: ent.engineering!, source: 'request' }));
    const f = toFailure(err) as ApplicationFailure;
    expect([f.type, f.nonRetryable]).toEqual(['ConstraintViolation', true]);
    expect(f.message).toMatch(/SQLSTATE 23503, constraint \w+/);
    expect(f.message).not.toContain(ghost);
  });

  it('every activity goes through the mapping: a malformed id reaching SQL fails for good, without the value', async () => {
    const err = (await failureOf(acts.recordExtension({ requestId: 'not-a-uuid-carol', grantId: 'not-a-uuid-carol', actorId: ids.bob, justification: 'x', expiresAt: new Date().toISOString(), idempotencyKey: randomUUID() }))) as ApplicationFailure;
    expect([err.type, err.nonRetryable]).toEqual(['InvalidInput', true]);
    expect(err.message).not.toContain('carol');
    const approvals = (await failureOf(acts.recordAutoApproval({ requestId: 'not-a-uuid', policyVersion: 'v', reason: 'r', fired: [], idempotencyKey: randomUUID() }))) as ApplicationFailure;
    expect([approvals.type, approvals.nonRetryable]).toEqual(['InvalidInput', true]);
  });

  it('a database that cannot be reached stays retryable', async () => {
    const port = await new Promise<number>((r) => {
      const srv = http.createServer().listen(0, '127.0.0.1', () => {
        const p = (srv.address() as AddressInfo).port;
        srv.close(() => r(p));
      });
    });
    const down = createDb(`postgres://postgres@127.0.0.1:${port}/none`, { max: 1 });
    try {
      const f = toFailure(await failureOf(down.select().from(grants).limit(1))) as ApplicationFailure;
      expect(f.nonRetryable).toBe(false);
    } finally {
      await closeDb(down).catch(() => {});
    }
  });

  it('beginRevocation refuses a reason the database does not know, for good', async () => {
    const g = await grantRow(ids.carol, ent.engineering!);
    const err = (await failureOf(acts.beginRevocation({ grantId: g.id, reason: 'Manual' as never, actorId: 'system', requestedAt: new Date().toISOString(), idempotencyKey: randomUUID() }))) as ApplicationFailure;
    expect([err.type, err.nonRetryable]).toEqual(['InvalidInput', true]);
    const [after] = await s.rt.db.select().from(grants).where(eq(grants.id, g.id));
    expect(after!.status).toBe('active');
  });
});

describe('revocation attribution', () => {
  async function activeLease(entitlement: string) {
    const r = await s.call('POST', '/v1/access-requests', s.catalog.tokens.alice!.token, { entitlementId: ent[entitlement], durationSeconds: 600, justification: 'attribution check' });
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', s.catalog.tokens.bob!.token)).body.items?.some((i: { requestId: string }) => i.requestId === r.body.id), 'approval task');
    expect((await s.call('POST', `/v1/access-requests/${r.body.id}/decision`, s.catalog.tokens.bob!.token, { decision: 'approve' })).status).toBe(200);
    await s.waitForStatus(r.body.id, ['active']);
    return r.body as { id: string; workflowId: string };
  }
  const revokeEvent = (requestId: string) =>
    waitFor(async () => (await s.rt.db.select().from(auditEvents).where(and(eq(auditEvents.requestId, requestId), eq(auditEvents.action, 'grant.revoke_requested'))))[0], 'grant.revoke_requested');

  it('a revoke through the API is credited to the authenticated caller', async () => {
    const req = await activeLease('finance-readers');
    expect((await s.call('POST', `/v1/access-requests/${req.id}/revoke`, s.catalog.tokens.alice!.token, { reason: 'manual' })).status).toBeLessThan(300);
    const e = await revokeEvent(req.id);
    expect([e.actorType, e.actorId]).toEqual(['identity', ids.alice]);
    expect(e.data).not.toHaveProperty('claimedActorId');
  });

  it('a signal that only claims an actor is recorded as an unauthenticated Temporal-side action', async () => {
    const req = await activeLease('engineering');
    await s.rt.temporal.workflow.getHandle(req.workflowId).signal(revokeSignal, { reason: 'manual', actorId: ids.carol, httpRequestId: 'made-up' });
    const e = await revokeEvent(req.id);
    expect([e.actorType, e.actorId]).toEqual(['temporal', 'temporal-signal']);
    expect(e.data).toMatchObject({ claimedActorId: ids.carol });
    const [g] = await s.rt.db.select({ revokedBy: grants.revokedBy }).from(grants).where(eq(grants.requestId, req.id));
    expect(g!.revokedBy).toBe('temporal-signal');
  });

  it('the attestation counts only for its own request and HTTP request id', async () => {
    const g = await grantRow(ids.dave, ent['finance-readers']!);
    await s.rt.db.transaction((tx) =>
      appendAudit(tx, { idempotencyKey: randomUUID(), actorType: 'identity', actorId: ids.bob, action: 'request.revoke_submitted', requestId: randomUUID(), data: { httpRequestId: 'req-1' } }),
    );
    // Same HTTP request id, different request: not attested.
    await acts.beginRevocation({ grantId: g.id, requestId: undefined, reason: 'manual', actorId: ids.bob, httpRequestId: 'req-1', signalActorClaimed: true, requestedAt: new Date().toISOString(), idempotencyKey: `attr/${g.id}` });
    const [e] = await s.rt.db.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, `attr/${g.id}`));
    expect([e!.actorType, e!.actorId, e!.data.claimedActorId]).toEqual(['temporal', 'temporal-signal', ids.bob]);
  });
});

describe('overlap-safe removal is serialised per membership', () => {
  it('a removal and a grant of one membership wait for each other; the new grant keeps its membership', async () => {
    const dave = s.userDn('dave');
    const [entRow] = await s.rt.db.select().from(entitlements).where(eq(entitlements.id, ent.engineering!));
    const [daveRow] = await s.rt.db.select().from(identities).where(eq(identities.id, ids.dave));
    const { accountFor } = await s.rt.connectors.forSystem(entRow!.systemId);
    const old = await grantRow(ids.dave, ent.engineering!);
    await acts.grantAccess({ grantId: old.id, subjectId: ids.dave, entitlementId: ent.engineering!, idempotencyKey: randomUUID() });
    expect(await s.ldapMembers('engineering')).toContain(dave);
    await s.rt.db.update(grants).set({ status: 'revoking' }).where(eq(grants.id, old.id));

    // Hold the membership's lock from outside, start both, and see that neither gets past it.
    const holder = postgres(s.tdb.url, { max: 1, onnotice: () => {} });
    const key = `${entRow!.systemId}\n${accountFor(daveRow!)}\n${entRow!.resource}`;
    let release!: () => void;
    const released = new Promise<void>((r) => (release = r));
    let locked!: () => void;
    const isLocked = new Promise<void>((r) => (locked = r));
    const holding = holder.begin(async (tx) => {
      await tx`select pg_advisory_xact_lock(${0x6d656d62}, hashtext(${key}))`;
      locked();
      await released;
    });
    await isLocked;
    const fresh = randomUUID();
    const removal = acts.removeAndVerify({ grantId: old.id, subjectId: ids.dave, entitlementId: ent.engineering!, reason: 'manual' });
    const grant = acts.grantAccess({ grantId: fresh, subjectId: ids.dave, entitlementId: ent.engineering!, idempotencyKey: randomUUID() });
    const waiting = () =>
      s.rt.db.execute(
        sql`select count(*)::int as n from pg_locks where locktype = 'advisory' and not granted and classid::bigint = ${0x6d656d62} and database = (select oid from pg_database where datname = current_database())`,
      );
    await waitFor(async () => ((await waiting()) as unknown as Array<{ n: number }>)[0]!.n === 2, 'both calls waiting on the membership lock');
    expect(await s.ldapMembers('engineering')).toContain(dave);
    release();
    await holding;
    await holder.end();
    const [removed] = await Promise.all([removal, grant]);

    // Whichever went first, the live grant's membership is there: retained, or re-added after the removal.
    expect(await s.ldapMembers('engineering')).toContain(dave);
    if (removed.retainedBy) expect(removed.retainedBy).toBe(fresh);
    await acts.removeAndVerify({ grantId: fresh, subjectId: ids.dave, entitlementId: ent.engineering!, reason: 'manual' });
    expect(await s.ldapMembers('engineering')).not.toContain(dave);
  });

  it('a grant that failed never keeps a membership in place', async () => {
    const carol = s.userDn('carol');
    const a = await grantRow(ids.carol, ent['prod-admins']!);
    await acts.grantAccess({ grantId: a.id, subjectId: ids.carol, entitlementId: ent['prod-admins']!, idempotencyKey: randomUUID() });
    const [failed] = await s.rt.db.insert(grants).values({ identityId: ids.carol, entitlementId: ent['prod-admins']!, source: 'birthright', status: 'failed' }).returning();
    const stuck = await grantRow(ids.carol, ent['prod-admins']!, 'granting');
    await s.rt.db.update(grants).set({ createdAt: new Date(Date.now() - 3_600_000) }).where(eq(grants.id, stuck.id));
    const r = await acts.removeAndVerify({ grantId: a.id, subjectId: ids.carol, entitlementId: ent['prod-admins']!, reason: 'manual' });
    expect(r.retainedBy).toBeUndefined();
    expect(await s.ldapMembers('prod-admins')).not.toContain(carol);
    expect(failed!.status).toBe('failed');
  });
});

describe('a lease that ended stays ended', () => {
  // A late activity attempt (timed out by Temporal, its queries queued through a database
  // restart) runs after a newer attempt closed the lease. The fault drill caught one reopening a
  // verified grant as `revocation_unverified`, which held a leaver forever.
  it('late attempts after a verified removal change nothing: not the rows, not the audit trail, not slapd', async () => {
    const dn = s.userDn('carol');
    const [req] = await s.rt.db.execute<{ id: string }>(sql`insert into access_request (requester_id, subject_id, entitlement_id, justification, requested_duration_seconds, status, workflow_id) values (${ids.carol}, ${ids.carol}, ${ent['finance-readers']!}, 'late attempts', 600, 'granting', ${`late/${randomUUID()}`}) returning id`);
    const requestId = req!.id;
    const [g] = await s.rt.db.insert(grants).values({ identityId: ids.carol, entitlementId: ent['finance-readers']!, requestId, source: 'request', status: 'granting' }).returning();
    const lease = { grantId: g!.id, subjectId: ids.carol, entitlementId: ent['finance-readers']! };
    await acts.grantAccess({ ...lease, requestId, idempotencyKey: randomUUID() });
    const verified = await acts.verifyGranted({ ...lease, requestId, expiresAt: new Date(Date.now() + 600_000).toISOString(), idempotencyKey: randomUUID() });
    await acts.beginRevocation({ grantId: g!.id, requestId, reason: 'manual', actorId: 'system', requestedAt: new Date().toISOString(), idempotencyKey: randomUUID() });
    const r = await acts.removeAndVerify({ ...lease, reason: 'manual' });
    await acts.completeRevocation({ grantId: g!.id, requestId, changed: r.changed, verifiedAt: new Date().toISOString(), idempotencyKey: randomUUID() });
    expect(await s.ldapMembers('finance-readers')).not.toContain(dn);
    const eventsBefore = await s.rt.db.$count(auditEvents, eq(auditEvents.grantId, g!.id));

    // Every late write a lease workflow could make, each as a fresh attempt.
    await acts.markRevocationUnverified({ grantId: g!.id, requestId, error: 'deadline', idempotencyKey: randomUUID() });
    await acts.verifyGranted({ ...lease, requestId, expiresAt: verified.expiresAt, idempotencyKey: randomUUID() }).catch(() => undefined); // absent on the target: retryable, and still nothing written
    await acts.recordExtension({ grantId: g!.id, requestId, actorId: ids.bob, justification: 'late', expiresAt: new Date(Date.now() + 900_000).toISOString(), idempotencyKey: randomUUID() });
    await acts.beginRevocation({ grantId: g!.id, requestId, reason: 'manual', actorId: 'system', requestedAt: new Date().toISOString(), idempotencyKey: randomUUID() });
    await acts.markFailed({ grantId: g!.id, requestId, reason: 'late', idempotencyKey: randomUUID() });
    // A late grant must not put the membership back on the target.
    const err = (await failureOf(acts.grantAccess({ ...lease, requestId, idempotencyKey: randomUUID() }))) as ApplicationFailure;
    expect([err.type, err.nonRetryable]).toEqual(['GrantClosed', true]);
    expect(await s.ldapMembers('finance-readers')).not.toContain(dn);

    const [after] = await s.rt.db.select().from(grants).where(eq(grants.id, g!.id));
    expect([after!.status, after!.removalVerifiedAt !== null, after!.expiresAt?.toISOString()]).toEqual(['revoked', true, verified.expiresAt]);
    const [row] = await s.rt.db.execute<{ status: string }>(sql`select status from access_request where id = ${requestId}`);
    expect(row!.status).toBe('revoked');
    // Not one event after the fact: the evidence says what happened, in the order it happened.
    expect(await s.rt.db.$count(auditEvents, eq(auditEvents.grantId, g!.id))).toBe(eventsBefore);

    // The database itself refuses to reopen a final state, whoever writes (psql here, not our code).
    const reopen = await psqlRaw(s.tdb.url, `update "grant" set status = 'active' where id = :'id';\n`, { id: g!.id });
    expect(reopen.code).not.toBe(0);
    expect(reopen.stderr).toMatch(/grant .* is revoked, a final state/);
    const reopenRequest = await psqlRaw(s.tdb.url, `update access_request set status = 'active' where id = :'id';\n`, { id: requestId });
    expect(reopenRequest.stderr).toMatch(/access_request .* is revoked, a final state/);
    // Between live states the row moves freely (the trigger guards only the final ones).
    const live = await grantRow(ids.carol, ent['finance-readers']!, 'granting');
    expect((await psqlRaw(s.tdb.url, `update "grant" set status = 'active' where id = :'id';\nupdate "grant" set status = 'revoked' where id = :'id';\n`, { id: live.id })).code).toBe(0);
  });
});

describe('birthright failures and alerts', () => {
  it('a birthright grant that can never succeed ends `failed` and justifies nothing', async () => {
    const [eng] = await s.rt.db.select().from(entitlements).where(eq(entitlements.id, ent.engineering!));
    const [missing] = await s.rt.db
      .insert(entitlements)
      .values({ systemId: eng!.systemId, resource: eng!.resource.replace(/^cn=[^,]+/, `cn=no-such-group-${randomBytes(3).toString('hex')}`), name: 'missing group', ownerId: eng!.ownerId, riskTier: 'low', defaultDurationSeconds: 600, maxDurationSeconds: 3600 })
      .returning();
    const grantId = randomUUID();
    const err = (await failureOf(acts.grantBirthright({ identityId: ids.dave, entitlementId: missing!.id, grantId, rules: ['r'], policyVersion: 'v1' }))) as ApplicationFailure;
    expect(err.nonRetryable).toBe(true);
    const [g] = await s.rt.db.select().from(grants).where(eq(grants.id, grantId));
    expect(g!.status).toBe('failed');
    expect(await s.rt.db.$count(auditEvents, and(eq(auditEvents.grantId, grantId), eq(auditEvents.action, 'grant.birthright_failed')))).toBe(1);
    const plan = await acts.planBirthright({ identityId: ids.dave });
    expect(plan.revoke.map((r) => r.grantId)).not.toContain(grantId);
  });

  it('alertStuckLeaver records, counts and notifies once per key', async () => {
    const g = await grantRow(ids.dave, ent['finance-readers']!, 'revoking');
    const input = { identityId: ids.dave, eventId: randomUUID(), pendingGrantIds: [g.id], sinceSeconds: 600, idempotencyKey: `leaver/${randomUUID()}/overdue` };
    await acts.alertStuckLeaver(input);
    expect(await acts.alertStuckLeaver(input)).toEqual({ status: 'duplicate' });
    expect(await s.rt.db.$count(auditEvents, eq(auditEvents.idempotencyKey, input.idempotencyKey))).toBe(1);
    expect(await counter('accessloop_leaver_removals_overdue_total')).toBe(1);
    const sent = deliveries.filter((d) => d.json.type === 'leaver.removals_overdue' && d.json.data.subjectId === ids.dave);
    expect(sent).toHaveLength(1);
    expect(signatureValid(sent[0]!)).toBe(true);
    const [owner] = await s.rt.db.select({ id: entitlements.ownerId }).from(entitlements).where(eq(entitlements.id, ent['finance-readers']!));
    expect(sent[0]!.json.data.recipients.map((r) => r.identityId)).toContain(owner!.id);
  });
});

describe('an unverified revocation is announced once', () => {
  it('notifies the entitlement owner (signed), counts once, however often it is retried', async () => {
    const g = await grantRow(ids.bob, ent['prod-admins']!, 'revoking');
    const before = await counter('accessloop_revocations_unverified_total');
    const call = (key: string) => acts.markRevocationUnverified({ grantId: g.id, error: 'TargetUnavailable: uid=bob still there', errorType: 'TargetUnavailable', idempotencyKey: key });
    await call(`unverified/${g.id}`);
    await call(`unverified/${g.id}`);
    await call(`unverified/${g.id}/other-run`);
    expect(await counter('accessloop_revocations_unverified_total')).toBe(before + 2);
    const sent = deliveries.filter((d) => d.json.type === 'revocation.unverified' && d.json.data.grantId === g.id);
    expect(sent).toHaveLength(1);
    expect(signatureValid(sent[0]!)).toBe(true);
    expect(sent[0]!.body).not.toContain('uid=bob');
    expect(sent[0]!.json.data.details).toEqual({ errorType: 'TargetUnavailable' });
    const [owner] = await s.rt.db.select({ id: entitlements.ownerId }).from(entitlements).where(eq(entitlements.id, ent['prod-admins']!));
    expect(sent[0]!.json.data.recipients.map((r) => r.identityId)).toContain(owner!.id);
    const [n] = await s.rt.db.select().from(notifications).where(eq(notifications.idempotencyKey, `revocation-unverified/${g.id}`));
    expect(n!.status).toBe('sent');
  });

  it('completeRevocation counts a removal once, however often it is retried', async () => {
    const g = await grantRow(ids.bob, ent['finance-readers']!, 'revoking');
    await s.rt.db.update(grants).set({ revokeReason: 'manual', revokeRequestedAt: new Date() }).where(eq(grants.id, g.id));
    const before = await counter('accessloop_removals_total', { reason: 'manual' });
    const done = { grantId: g.id, changed: true, verifiedAt: new Date().toISOString(), idempotencyKey: `revoked/${g.id}` };
    await acts.completeRevocation(done);
    await acts.completeRevocation(done);
    expect(await counter('accessloop_removals_total', { reason: 'manual' })).toBe(before + 1);
  });
});
