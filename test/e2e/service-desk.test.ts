/**
 * The service desk in the loop (issue 12), end to end: a private Request Tracker 5, the product's
 * own runtime (Temporal, Postgres, worker, API) and a private slapd. Tickets are opened and
 * changed as RT users through RT's REST API; what RT holds afterwards is read back as root over
 * REST, and what the directory holds with ldapsearch, never through our code.
 */
import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { grants, serviceDesks, ticketLinks } from '../../db/schema.js';
import { serviceDeskWorkflowId } from '../../workflows/ids.js';
import { addRtUser, rtCall, startRt, type RtHandle } from '../helpers/rt.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

const RT_SECRET_ENV = 'ACCESSLOOP_SECRET_TEST_RT';

interface Collection<T> {
  count: number;
  items: T[];
}
interface Txn {
  id: string;
  Type: string;
  Created: string;
  Creator: { id: string };
  OldValue?: string;
  NewValue?: string;
  Field?: string;
}

let rt: RtHandle;
let s: Stack;
let deskId: string;
const rtTokens: Record<string, string> = {};
let tok: Record<string, string>;
let ent: Record<string, string>;

const asAdmin = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rt.adminToken, method, route, body);
const asUser = <T>(user: string, method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rtTokens[user]!, method, route, body);

beforeAll(async () => {
  rt = await startRt();
  for (const [name, groups] of [
    ['alice', ['requesters']],
    ['dave', ['requesters']],
    ['bob', ['approvers']],
  ] as const) {
    rtTokens[name] = (await addRtUser(rt, name, { groups: [...groups] })).token;
  }
  s = await startStack({ secrets: { [RT_SECRET_ENV]: rt.token } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ent = s.catalog.entitlements;
  const policy = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify({
    apiVersion: 'accessloop/v1',
    policies: [
      {
        name: 'default',
        stages: [{ name: 'owner', approvers: ['entitlement_owner'] }],
        conditions: [{ name: 'low-self', when: 'entitlement.risk_tier == "low" && request.self_request', effect: 'auto_approve', reason: 'low-risk self-service' }],
      },
    ],
  }));
  expect(policy.status, JSON.stringify(policy.body)).toBeLessThan(300);
  const desk = await s.call('POST', '/v1/service-desks', tok.operator, {
    name: 'rt-test',
    kind: 'rt',
    config: { url: rt.url, queue: rt.fixture.queue.name, user: rt.fixture.users.integration.name, loop: { pollIntervalMs: 300, ticketCheckIntervalSeconds: 3600 } },
    secretRefs: { token: RT_SECRET_ENV },
    ownerId: s.catalog.identities.carol,
  });
  expect(desk.status, JSON.stringify(desk.body)).toBe(201);
  deskId = desk.body.id;
  // The loop starts from the desk's newest event: wait until it has read the head.
  await waitFor(async () => (await s.tdb.db.select({ cursor: serviceDesks.cursor }).from(serviceDesks).where(eq(serviceDesks.id, deskId)))[0]?.cursor, 'the desk cursor');
}, 240_000);

afterAll(async () => {
  await s?.stop();
  await rt?.stop();
});

async function openTicket(user: string, fields: Record<string, string>, subject = 'Access please'): Promise<string> {
  const res = await asUser<{ id: number }>(user, 'POST', '/ticket', {
    Queue: rt.fixture.queue.name,
    Requestor: user,
    Subject: subject,
    Content: 'Please grant the access in the fields.',
    ContentType: 'text/plain',
    CustomFields: fields,
  });
  expect(res.status, JSON.stringify(res.body)).toBe(201);
  return String(res.body.id);
}

async function linkOf(ticket: string) {
  return waitFor(async () => (await s.tdb.db.select().from(ticketLinks).where(eq(ticketLinks.ticketRef, ticket)))[0], `the link of ticket ${ticket}`);
}

async function history(ticket: string): Promise<Txn[]> {
  const res = await asAdmin<Collection<Txn>>('GET', `/ticket/${ticket}/history?fields=Type,Created,Creator,OldValue,NewValue,Field&per_page=100`);
  expect(res.status).toBe(200);
  return res.body.items;
}

/** The text of every comment and reply on the ticket, oldest first, with who wrote it. */
async function posts(ticket: string): Promise<Array<{ type: string; creator: string; created: string; text: string }>> {
  const out = [];
  for (const t of await history(ticket)) {
    if (t.Type !== 'Comment' && t.Type !== 'Correspond') continue;
    const parts = await asAdmin<Collection<{ Content?: string }>>('GET', `/transaction/${t.id}/attachments?fields=Content`);
    out.push({ type: t.Type, creator: t.Creator.id, created: t.Created, text: parts.body.items.map((a) => a.Content ?? '').join('\n') });
  }
  return out;
}

/** RT's REST answers ISO 8601 in UTC; its database format (`YYYY-MM-DD HH:MM:SS`) is UTC too. */
const rtTime = (t: string) => Date.parse(t.includes('T') ? t : `${t.replace(' ', 'T')}Z`);

async function ticketStatus(ticket: string): Promise<string> {
  const res = await asAdmin<{ Status: string }>('GET', `/ticket/${ticket}`);
  return res.body.Status;
}

describe('ticket in, access out, ticket resolved only after removal is verified', () => {
  it('takes an auto-approved request in from a ticket, grants it in slapd, and resolves the ticket after the verified removal', async () => {
    const ticket = await openTicket('alice', { Entitlement: 'Finance reports (read)', Duration: '8s', Justification: 'month-end close for the finance team' });
    const link = await linkOf(ticket);
    expect(link.state).toBe('linked');
    const active = await s.waitForStatus(link.requestId!, ['active']);
    expect(active.ticketRef).toBe(`rt-test#${ticket}`);
    expect(active.ticket).toMatchObject({ deskId, ticketRef: ticket, state: 'linked' });
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('alice'));

    // TicketRef in the Temporal UI: the search attribute an operator filters on.
    const wf = await s.rt.temporal.workflow.getHandle(active.workflowId).describe();
    expect(wf.searchAttributes.TicketRef).toEqual([`rt-test#${ticket}`]);

    const done = await s.waitForStatus(link.requestId!, ['revoked'], 30_000);
    expect(await s.ldapMembers('finance-readers')).not.toContain(s.userDn('alice'));
    await waitFor(async () => (await ticketStatus(ticket)) === 'resolved', 'the ticket resolved', 30_000);

    const all = await posts(ticket);
    const story = all.map((p) => p.text).join('\n');
    expect(story).toMatch(/approved automatically/i);
    expect(story).toMatch(/low-self/);
    expect(story).toMatch(/granted/i);
    expect(story).toMatch(/removal verified/i);
    expect(story).toContain(`/v1/evidence/${link.requestId}`);
    // Resolved only after the verified removal: RT's status change is no earlier than removal_verified_at (RT keeps whole seconds).
    const resolvedAt = (await history(ticket)).find((t) => t.Type === 'Status' && t.NewValue === 'resolved')!.Created;
    const [grant] = await s.tdb.db.select().from(grants).where(eq(grants.requestId, link.requestId!));
    expect(rtTime(resolvedAt)).toBeGreaterThanOrEqual(Math.floor(grant!.removalVerifiedAt!.getTime() / 1000) * 1000);
    expect(Date.parse(done.removalVerifiedAt)).toBeGreaterThan(0);

    // The per-desk KPIs count this ticket: opened → access verified, and access ended → ticket resolved.
    const kpis = await s.call('GET', '/v1/metrics/kpis', tok.operator);
    const mine = kpis.body.serviceDesks.find((d: { deskId: string }) => d.deskId === deskId);
    expect(mine.ticketToAccessVerified.n).toBeGreaterThanOrEqual(1);
    expect(mine.accessEndedToTicketResolved.n).toBeGreaterThanOrEqual(1);
    expect(mine.accessEndedToTicketResolved.p50Ms).toBeGreaterThanOrEqual(0);
  });

  it('lets the owner approve from the ticket, and the requester cancel it: access revoked (reason ticket) and verified', async () => {
    const ticket = await openTicket('alice', { Entitlement: 'Engineering group', Duration: '1h', Justification: 'on-call rotation this week' });
    const link = await linkOf(ticket);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === link.requestId), 'the approval task');
    const replyRes = await asUser('bob', 'POST', `/ticket/${ticket}/correspond`, { Content: '/approve fine for the rotation', ContentType: 'text/plain' });
    expect(replyRes.status).toBe(201);
    await s.waitForStatus(link.requestId!, ['active']);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    const cancel = await asUser<string[]>('alice', 'PUT', `/ticket/${ticket}`, { Status: 'rejected' });
    expect(cancel.status).toBe(200);
    const done = await s.waitForStatus(link.requestId!, ['revoked'], 30_000);
    expect(done.grant.revokeReason).toBe('ticket');
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    await waitFor(async () => (await posts(ticket)).some((p) => /removal verified/i.test(p.text)), 'the verified removal on the ticket', 30_000);
    // The person's decision stands: a cancelled ticket stays rejected.
    expect(await ticketStatus(ticket)).toBe('rejected');
    const story = (await posts(ticket)).map((p) => p.text).join('\n');
    expect(story).toMatch(/approved/i);
  });

  it('answers a bad ticket on the ticket and changes nothing', async () => {
    const ticket = await openTicket('alice', { Entitlement: 'No such thing', Justification: 'because I want it' });
    await waitFor(async () => (await posts(ticket)).some((p) => /could not accept/i.test(p.text)), 'the refusal on the ticket');
    const link = await linkOf(ticket);
    expect(link).toMatchObject({ state: 'refused', refusal: 'unknown_entitlement', requestId: null });
    expect(await ticketStatus(ticket)).not.toBe('resolved');
  });

  it('refuses a decision from the requester on their own ticket', async () => {
    const ticket = await openTicket('alice', { Entitlement: 'Engineering group', Duration: '1h', Justification: 'pairing with the platform team' });
    const link = await linkOf(ticket);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === link.requestId), 'the approval task');
    await asUser('alice', 'POST', `/ticket/${ticket}/correspond`, { Content: '/approve', ContentType: 'text/plain' });
    await waitFor(async () => (await posts(ticket)).some((p) => /did not record this decision/i.test(p.text)), 'the refusal');
    const r = await s.call('GET', `/v1/access-requests/${link.requestId}`, tok.operator);
    expect(r.body.status).toBe('pending_approval');
    await s.call('POST', `/v1/access-requests/${link.requestId}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(link.requestId!, ['cancelled', 'revoked'], 30_000);
  });

  it('keeps running workflow ids opaque', async () => {
    const d = await s.rt.temporal.workflow.getHandle(serviceDeskWorkflowId(deskId)).describe();
    expect(d.status.name).toBe('RUNNING');
  });
});
