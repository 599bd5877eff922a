/**
 * Service desks through the API (issue 12), checked with psql and against Temporal itself:
 * registration is validated (the kind's own config parser, secret references that are names
 * and never values), audited in the one chain and starts the desk's loop under
 * `service-desk/<deskId>`; reads show the loop's health, the write-back backlog and the ticket
 * links; changes are audited; check-tickets signals the loop; and the KPIs per desk queue are
 * computed from ticket links, grants and outbox rows inserted here with known timestamps. No RT
 * is needed: the registered desks point at a closed port, and only the API is asserted.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Server } from 'node:http';
import type { Client } from '@temporalio/client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../activities/domain/audit.js';
import { createMetrics } from '../../activities/domain/metrics.js';
import { createCredentialVault } from '../../activities/domain/vault.js';
import { createApp } from '../../api/app.js';
import { accessRequests, deskOutbox, grants, serviceDesks, ticketLinks } from '../../db/schema.js';
import { ensureServiceDeskWorkflow } from '../../temporal/desk-workflows.js';
import { createLogger } from '../../temporal/logger.js';
import { serviceDeskWorkflowId } from '../../workflows/ids.js';
import { checkTicketsSignal } from '../../workflows/service-desk.js';
import { psql } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let op: string;
let auditor: string;
let requester: string;
const started: string[] = [];

const TOKEN_REF = 'ACCESSLOOP_SECRET_TEST_RT_TOKEN';
/** A desk nobody answers at (the discard port, closed): the loop may fail to reach it, the API must not care. */
const rtConfig = (over: Record<string, unknown> = {}) => ({ url: 'http://127.0.0.1:9', queue: 'Access requests', user: 'accessloop', ...over });

beforeAll(async () => {
  s = await startStack();
  op = s.catalog.tokens.operator!.token;
  auditor = s.catalog.tokens.carol!.token;
  requester = s.catalog.tokens.alice!.token;
}, 60_000);

afterAll(async () => {
  // The loops outlive the stack on the shared dev server otherwise (with no worker on their queue).
  for (const id of started) await s?.rt.temporal.workflow.getHandle(serviceDeskWorkflowId(id)).terminate('test over').catch(() => undefined);
  await s?.stop();
});

interface AuditRow {
  seq: number;
  actor_type: string;
  actor_id: string;
  data: Record<string, unknown>;
}

/** The audit events of one action, read with psql (not through our code). */
async function eventsOf(action: string): Promise<AuditRow[]> {
  const out = await psql(s.tdb.url, `select row_to_json(e) from (select seq, actor_type, actor_id, data from audit_event where action = :'a' order by seq) e;\n`, { a: action });
  return out.trim().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as AuditRow);
}

/** Calls the API with a request id of our own, so an event can be matched to the call. */
async function act(method: string, path: string, body?: unknown, token = op) {
  const rid = `desk-${randomBytes(6).toString('hex')}`;
  const r = await s.call(method, path, token, body, { 'x-request-id': rid });
  return { ...r, rid };
}

/** Every audit event the call wrote, whatever its action. */
async function eventsOfCall(rid: string): Promise<string> {
  return (await psql(s.tdb.url, `select action from audit_event where data->>'httpRequestId' = :'rid' order by seq;\n`, { rid })).trim();
}

const deskRows = async (name: string) => Number((await psql(s.tdb.url, `select count(*) from service_desk where name = :'n';\n`, { n: name })).trim());

async function register(name: string, over: Record<string, unknown> = {}) {
  const r = await act('POST', '/v1/service-desks', { name, kind: 'rt', config: rtConfig(), secretRefs: { token: TOKEN_REF }, ownerId: s.catalog.identities.bob, ...over });
  if (r.status === 201) started.push(r.body.id);
  return r;
}

/** Signal names in the desk loop's history, following its continue-as-new chain from `runId` to the run now open. */
async function signalsSince(workflowId: string, runId: string): Promise<string[]> {
  const names: string[] = [];
  for (let run: string | undefined = runId; run; ) {
    const h = await s.rt.temporal.workflow.getHandle(workflowId, run).fetchHistory();
    run = undefined;
    for (const e of h.events ?? []) {
      if (e.workflowExecutionSignaledEventAttributes) names.push(e.workflowExecutionSignaledEventAttributes.signalName ?? '');
      if (e.workflowExecutionContinuedAsNewEventAttributes) run = e.workflowExecutionContinuedAsNewEventAttributes.newExecutionRunId ?? undefined;
    }
  }
  return names;
}

describe('registering a service desk', () => {
  it('answers 201, writes one audited event and starts the desk loop under service-desk/<id>', async () => {
    const r = await register('helpdesk');
    expect(r.status, JSON.stringify(r.body)).toBe(201);
    const id: string = r.body.id;
    expect(r.body).toMatchObject({
      name: 'helpdesk',
      kind: 'rt',
      ownerId: s.catalog.identities.bob,
      secretRefs: { token: TOKEN_REF },
      cursor: null,
      workflowId: `service-desk/${id}`,
      backlog: { pendingWriteBacks: 0, oldestPendingAt: null },
      links: { linked: 0, refused: 0, closed: 0 },
    });
    // the loop may already have tried the (closed) desk, so only the shape of its health is fixed here
    expect(Object.keys(r.body.health).sort()).toEqual(['alertedAt', 'failingSince', 'lastErrorType', 'reachedAt']);
    // stored parsed: the adapter's and the loop's defaults are explicit
    expect(r.body.config).toMatchObject({ ...rtConfig(), timeoutMs: 10_000, loop: { pollIntervalMs: 1000, ticketCheckIntervalSeconds: 300, alertAfterSeconds: 300, ticketDecisions: true } });

    const events = (await eventsOf('service_desk.registered')).filter((e) => e.data.httpRequestId === r.rid);
    expect(events).toHaveLength(1);
    expect(events[0]).toMatchObject({ actor_type: 'client', actor_id: 'client:demo-operator', data: { deskId: id, kind: 'rt', ownerId: s.catalog.identities.bob, secretRefs: { token: TOKEN_REF } } });

    const handle = s.rt.temporal.workflow.getHandle(serviceDeskWorkflowId(id));
    const desc = await handle.describe();
    expect(desc).toMatchObject({ workflowId: `service-desk/${id}`, type: 'serviceDeskWorkflow', taskQueue: s.config.TEMPORAL_TASK_QUEUE, status: { name: 'RUNNING' } });
    const firstRunId = desc.raw.workflowExecutionInfo!.firstRunId!;
    expect(await (await s.rt.temporal.workflow.getHandle(serviceDeskWorkflowId(id), firstRunId).describe()).staticSummary()).toBe('Service desk loop');

    // ensuring again keeps the running loop: no second chain, no "already started"
    await ensureServiceDeskWorkflow(s.rt.temporal, s.config, id);
    const again = await handle.describe();
    expect(again.status.name).toBe('RUNNING');
    expect(again.raw.workflowExecutionInfo!.firstRunId).toBe(firstRunId);
  });

  it('refuses a config its kind does not accept with 400 and writes nothing', async () => {
    const bad = await register('bad-config', { config: rtConfig({ url: 'ftp://desk.example', queue: '' }) });
    expect(bad.status, JSON.stringify(bad.body)).toBe(400);
    expect(bad.body.error.code).toBe('invalid_config');
    expect(bad.body.error.details.map((d: { path: string }) => d.path).sort()).toEqual(['queue', 'url']);

    // a secret pasted into the config is an unknown key: refused, and its value not said back
    const pasted = 'z9Qx-pasted-rt-token-8fK2';
    const inConfig = await register('bad-config', { config: rtConfig({ token: pasted }) });
    expect(inConfig.status).toBe(400);
    expect(JSON.stringify(inConfig.body)).not.toContain(pasted);

    const badLoop = await register('bad-config', { config: rtConfig({ loop: { pollIntervalMs: 5 } }) });
    expect(badLoop.status).toBe(400);
    expect(badLoop.body.error.code).toBe('invalid_config');

    // the name is part of every ticket reference and the TicketRef search attribute: a slug, not a phrase
    const badName = await register('Service Desk EU (Anna)', {});
    expect(badName.status).toBe(400);
    expect(JSON.stringify(badName.body)).toContain('name');

    for (const r of [bad, inConfig, badLoop, badName]) expect(await eventsOfCall(r.rid)).toBe('');
    expect(await deskRows('bad-config')).toBe(0);
    expect(await deskRows('Service Desk EU (Anna)')).toBe(0);
  });

  it('refuses a secret value where a reference belongs, without saying the value back', async () => {
    const value = '1-14-7d0c1f6b2ae1d4e8c2f39b1a';
    for (const token of [value, 'DATABASE_URL', 'ACCESSLOOP_SECRET_', 'accessloop_secret_rt_token']) {
      const r = await register('bad-secret', { secretRefs: { token } });
      expect(r.status, token).toBe(400);
      expect(r.body.error.details.map((d: { path: string }) => d.path)).toEqual(['secretRefs.token']);
      expect(JSON.stringify(r.body)).not.toContain(value);
      expect(await eventsOfCall(r.rid)).toBe('');
    }
    expect((await register('bad-secret', { secretRefs: {} })).status).toBe(400);
    expect((await register('bad-secret', { secretRefs: { token: TOKEN_REF, password: TOKEN_REF } })).status).toBe(400);
    expect(await deskRows('bad-secret')).toBe(0);
    expect(await psql(s.tdb.url, 'select data::text from audit_event;\n')).not.toContain(value);
  });

  it('answers 409 for a name that is taken, and needs an owner for a client token', async () => {
    expect((await register('taken')).status).toBe(201);
    const dup = await register('taken');
    expect(dup.status).toBe(409);
    expect(dup.body.error.code).toBe('already_exists');
    expect(await eventsOfCall(dup.rid)).toBe('');
    expect(await deskRows('taken')).toBe(1);

    const ownerless = await register('ownerless', { ownerId: undefined });
    expect(ownerless.status).toBe(400);
    expect(ownerless.body.error.code).toBe('owner_required');
    expect((await register('ownerless', { ownerId: randomUUID() })).body.error.code).toBe('unknown_reference');
    expect(await deskRows('ownerless')).toBe(0);
  });

  it('is for operators only; auditors may read', async () => {
    for (const token of [requester, auditor]) {
      const r = await act('POST', '/v1/service-desks', { name: 'not-yours', kind: 'rt', config: rtConfig(), secretRefs: { token: TOKEN_REF }, ownerId: s.catalog.identities.bob }, token);
      expect(r.status).toBe(403);
      expect(await eventsOfCall(r.rid)).toBe('');
    }
    const [desk] = await s.tdb.db.select().from(serviceDesks).limit(1);
    expect((await s.call('PATCH', `/v1/service-desks/${desk!.id}`, auditor, { config: rtConfig() })).status).toBe(403);
    expect((await s.call('POST', `/v1/service-desks/${desk!.id}/check-tickets`, auditor)).status).toBe(403);
    expect((await s.call('GET', '/v1/service-desks', requester)).status).toBe(403);
    expect((await s.call('GET', `/v1/service-desks/${desk!.id}`, requester)).status).toBe(403);
    expect((await s.call('GET', '/v1/service-desks', auditor)).status).toBe(200);
    expect((await s.call('GET', `/v1/service-desks/${desk!.id}`, auditor)).status).toBe(200);
    expect(await deskRows('not-yours')).toBe(0);
  });
});

/**
 * A desk with a known story, inserted directly (so no loop runs for it): health columns set, six
 * tickets (one refused, one from ten days ago), grants with known verification times, and an
 * outbox with two rows still to post. `base` is half an hour ago, inside a 1h window.
 */
async function seedDeskStory() {
  const db = s.tdb.db;
  const base = Date.now() - 30 * 60_000;
  const at = (ms: number) => new Date(base + ms);
  const tenDaysAgo = (ms: number) => new Date(base - 10 * 86_400_000 + ms);
  const [desk] = await db
    .insert(serviceDesks)
    .values({
      name: 'kpi-desk',
      kind: 'rt',
      config: rtConfig({ queue: 'Access KPIs' }),
      secretRefs: { token: TOKEN_REF },
      ownerId: s.catalog.identities.bob!,
      cursor: '4711',
      reachedAt: at(500_000),
      failingSince: at(510_000),
      lastErrorType: 'Unavailable',
      alertedAt: at(520_000),
    })
    .returning();
  const deskId = desk!.id;
  const subject = s.catalog.identities.dave!;
  const entitlementId = s.catalog.entitlements.engineering!;
  /** A ticket, its request and its grant, all closed (revoked), so nothing in the stack acts on them. */
  async function ticket(ref: string, t: { state: 'linked' | 'closed'; createdAt?: Date; ticketCreatedAt: Date; grantVerifiedAt: Date; removalVerifiedAt?: Date; closedAt?: Date; finalState?: 'resolved' | 'rejected' }) {
    const [req] = await db
      .insert(accessRequests)
      .values({ requesterId: subject, subjectId: subject, entitlementId, justification: 'ticket-linked KPI fixture', requestedDurationSeconds: 600, ticketRef: ref, status: 'revoked', workflowId: `test/kpi/${randomUUID()}` })
      .returning();
    await db.insert(grants).values({ identityId: subject, entitlementId, requestId: req!.id, source: 'request', status: 'revoked', grantedAt: t.grantVerifiedAt, grantVerifiedAt: t.grantVerifiedAt, removalVerifiedAt: t.removalVerifiedAt ?? null });
    const [link] = await db
      .insert(ticketLinks)
      .values({ deskId, ticketRef: ref, requestId: req!.id, state: t.state, ticketCreatedAt: t.ticketCreatedAt, closedAt: t.closedAt ?? null, finalState: t.finalState ?? null, ...(t.createdAt ? { createdAt: t.createdAt } : {}) })
      .returning();
    return link!.id;
  }
  // ticket → access verified: 10 s, 20 s, 60 s, 40 s; access ended → ticket resolved: 4 s, 8 s
  await ticket('1', { state: 'closed', ticketCreatedAt: at(0), grantVerifiedAt: at(10_000), removalVerifiedAt: at(100_000), closedAt: at(104_000), finalState: 'resolved' });
  await ticket('2', { state: 'closed', ticketCreatedAt: at(1000), grantVerifiedAt: at(21_000), removalVerifiedAt: at(200_000), closedAt: at(208_000), finalState: 'resolved' });
  // rejected by a person while access was live: the removal is verified, but the ticket was not resolved
  await ticket('3', { state: 'closed', ticketCreatedAt: at(2000), grantVerifiedAt: at(62_000), removalVerifiedAt: at(300_000), closedAt: at(301_000), finalState: 'rejected' });
  // removal verified, the resolving post not yet delivered
  const pendingLink = await ticket('6', { state: 'linked', ticketCreatedAt: at(5000), grantVerifiedAt: at(45_000), removalVerifiedAt: at(400_000) });
  // outside the window in every respect
  await ticket('5', { state: 'closed', createdAt: tenDaysAgo(0), ticketCreatedAt: tenDaysAgo(0), grantVerifiedAt: tenDaysAgo(1000), removalVerifiedAt: tenDaysAgo(2000), closedAt: tenDaysAgo(3000), finalState: 'resolved' });
  await db.insert(ticketLinks).values({ deskId, ticketRef: '4', state: 'refused', refusal: 'unknown_entitlement', ticketCreatedAt: at(3000) });
  await db.insert(deskOutbox).values([
    { linkId: pendingLink, source: 'audit:1', createdAt: at(400_500), deliveredAt: at(401_000) },
    { linkId: pendingLink, source: 'audit:2', createdAt: at(401_000) },
    { linkId: pendingLink, source: 'audit:3', createdAt: at(402_000) },
  ]);
  return { deskId, at };
}

describe('watching and changing a desk', () => {
  let story: Awaited<ReturnType<typeof seedDeskStory>>;
  beforeAll(async () => {
    story = await seedDeskStory();
  });

  it('shows config, secret names, cursor, health, the write-back backlog and the links', async () => {
    const r = await s.call('GET', `/v1/service-desks/${story.deskId}`, auditor);
    expect(r.status, JSON.stringify(r.body)).toBe(200);
    expect(r.body).toMatchObject({
      id: story.deskId,
      name: 'kpi-desk',
      config: rtConfig({ queue: 'Access KPIs' }),
      secretRefs: { token: TOKEN_REF },
      cursor: '4711',
      health: { reachedAt: story.at(500_000).toISOString(), failingSince: story.at(510_000).toISOString(), lastErrorType: 'Unavailable', alertedAt: story.at(520_000).toISOString() },
      backlog: { pendingWriteBacks: 2, oldestPendingAt: story.at(401_000).toISOString() },
      links: { linked: 1, refused: 1, closed: 4 },
    });
    const list = await s.call('GET', '/v1/service-desks', op);
    expect(list.status).toBe(200);
    const names = list.body.items.map((d: { name: string }) => d.name);
    expect(names).toEqual([...names].sort());
    expect(names).toEqual(expect.arrayContaining(['helpdesk', 'kpi-desk', 'taken']));
    expect(list.body.items.find((d: { id: string }) => d.id === story.deskId)).toEqual(r.body);
    expect((await s.call('GET', `/v1/service-desks/${randomUUID()}`, op)).status).toBe(404);
  });

  it('PATCH replaces config and secret references, validated as at registration and audited; no change writes nothing', async () => {
    const desk = (await register('patched')).body;
    const changed = await act('PATCH', `/v1/service-desks/${desk.id}`, { config: rtConfig({ queue: 'Other queue', loop: { ticketCheckIntervalSeconds: 60 } }), secretRefs: { token: 'ACCESSLOOP_SECRET_OTHER_RT' } });
    expect(changed.status, JSON.stringify(changed.body)).toBe(200);
    expect(changed.body.config).toMatchObject({ queue: 'Other queue', loop: { ticketCheckIntervalSeconds: 60, pollIntervalMs: 1000 } });
    expect(changed.body.secretRefs).toEqual({ token: 'ACCESSLOOP_SECRET_OTHER_RT' });
    const events = (await eventsOf('service_desk.updated')).filter((e) => e.data.httpRequestId === changed.rid);
    expect(events).toHaveLength(1);
    // which settings changed, not their values
    expect(events[0]).toMatchObject({ actor_id: 'client:demo-operator', data: { deskId: desk.id, configKeys: ['loop', 'queue'], secretRefs: { token: 'ACCESSLOOP_SECRET_OTHER_RT' } } });
    expect(JSON.stringify(events[0])).not.toContain('Other queue');

    const same = await act('PATCH', `/v1/service-desks/${desk.id}`, { config: rtConfig({ queue: 'Other queue', loop: { ticketCheckIntervalSeconds: 60 } }) });
    expect(same.status).toBe(200);
    expect(await eventsOfCall(same.rid)).toBe('');

    for (const body of [{}, { config: rtConfig({ url: 'not a url' }) }, { secretRefs: { token: 'z9Qx-pasted-rt-token' } }, { name: 'renamed' }]) {
      const r = await act('PATCH', `/v1/service-desks/${desk.id}`, body);
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(await eventsOfCall(r.rid)).toBe('');
    }
    expect((await s.call('GET', `/v1/service-desks/${desk.id}`, op)).body).toMatchObject({ config: { queue: 'Other queue' }, secretRefs: { token: 'ACCESSLOOP_SECRET_OTHER_RT' } });
    expect((await s.call('PATCH', `/v1/service-desks/${randomUUID()}`, op, { config: rtConfig() })).status).toBe(404);
    expect(await verifyChain(s.tdb.db)).toMatchObject({ ok: true });
  });

  it('check-tickets answers 202 and signals the desk loop', async () => {
    const desk = (await register('checked')).body;
    const handle = s.rt.temporal.workflow.getHandle(serviceDeskWorkflowId(desk.id));
    const runBefore = (await handle.describe()).runId;
    const r = await s.call('POST', `/v1/service-desks/${desk.id}/check-tickets`, op);
    expect(r.status, JSON.stringify(r.body)).toBe(202);
    expect(r.body).toEqual({ id: desk.id, workflowId: `service-desk/${desk.id}` });
    // a signal that arrives during a workflow task is written to history when that task completes
    await waitFor(async () => (await signalsSince(serviceDeskWorkflowId(desk.id), runBefore)).includes(checkTicketsSignal.name), 'the checkTickets signal in the desk loop history');
    expect((await s.call('POST', `/v1/service-desks/${randomUUID()}/check-tickets`, op)).status).toBe(404);
  });

  it('keeps the registered row when Temporal cannot start the loop (503), and check-tickets starts it later', async () => {
    const down = new Error('temporal unavailable');
    const failing = new Proxy(s.rt.temporal, {
      get: (t, k) => (k === 'workflow' ? { start: () => Promise.reject(down), signalWithStart: () => Promise.reject(down) } : Reflect.get(t, k)),
    }) as Client;
    const app = createApp({ db: s.rt.db, temporal: failing, config: s.config, log: createLogger('silent'), metrics: createMetrics(), policies: s.rt.policies, actionLinkSecret: randomBytes(32), vault: createCredentialVault(randomBytes(32)) });
    const server = await new Promise<Server>((resolve) => {
      const srv = app.listen(0, '127.0.0.1', () => resolve(srv));
    });
    let id: string;
    try {
      const addr = server.address();
      const url = `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}`;
      const post = (path: string, body?: unknown) =>
        fetch(`${url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${op}`, 'content-type': 'application/json' }, body: JSON.stringify(body ?? {}) });
      const res = await post('/v1/service-desks', { name: 'unstarted', kind: 'rt', config: rtConfig(), secretRefs: { token: TOKEN_REF }, ownerId: s.catalog.identities.bob });
      const body = (await res.json()) as { error: { code: string; details: { id: string } } };
      expect(res.status).toBe(503);
      expect(body.error.code).toBe('workflow_unavailable');
      id = body.error.details.id;
      started.push(id);
      expect((await post(`/v1/service-desks/${id}/check-tickets`)).status).toBe(503);
    } finally {
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
    expect(await deskRows('unstarted')).toBe(1);
    expect((await eventsOf('service_desk.registered')).filter((e) => e.data.deskId === id)).toHaveLength(1);
    expect((await s.call('POST', `/v1/service-desks/${id}/check-tickets`, op)).status).toBe(202);
    const desc = await waitFor(async () => {
      const d = await s.rt.temporal.workflow.getHandle(serviceDeskWorkflowId(id)).describe();
      return d.status.name === 'RUNNING' ? d : undefined;
    }, 'the desk loop to run');
    expect(desc.type).toBe('serviceDeskWorkflow');
  });

  it('KPIs per desk queue: tickets, refusals, ticket → access verified, access ended → ticket resolved, pending write-backs', async () => {
    const k = await s.call('GET', '/v1/metrics/kpis?window=1h', auditor);
    expect(k.status, JSON.stringify(k.body)).toBe(200);
    const mine = k.body.serviceDesks.find((d: { deskId: string }) => d.deskId === story.deskId);
    expect(mine).toEqual({
      deskId: story.deskId,
      name: 'kpi-desk',
      queue: 'Access KPIs',
      tickets: 5,
      refused: 1,
      // 10, 20, 40, 60 s: the median between 20 and 40, p95 at 85 % of the way from 40 to 60 (percentile_cont)
      ticketToAccessVerified: { n: 4, p50Ms: 30_000, p95Ms: 57_000, maxMs: 60_000 },
      // 4 and 8 s (the rejected ticket and the ten-day-old one are not counted)
      accessEndedToTicketResolved: { n: 2, p50Ms: 6000, p95Ms: 7800, maxMs: 8000 },
      pendingWriteBacks: 2,
    });
    // a desk with no tickets is listed, with nothing to measure
    expect(k.body.serviceDesks.find((d: { name: string }) => d.name === 'helpdesk')).toMatchObject({
      queue: 'Access requests',
      tickets: 0,
      refused: 0,
      ticketToAccessVerified: { n: 0, p50Ms: null, p95Ms: null, maxMs: null },
      accessEndedToTicketResolved: { n: 0, p50Ms: null },
      pendingWriteBacks: 0,
    });
    // the ten-day-old ticket counts in a wider window
    const wide = await s.call('GET', '/v1/metrics/kpis?window=30d', auditor);
    expect(wide.body.serviceDesks.find((d: { deskId: string }) => d.deskId === story.deskId)).toMatchObject({ tickets: 6, ticketToAccessVerified: { n: 5 }, accessEndedToTicketResolved: { n: 3, p50Ms: 4000 } });
  });
});
