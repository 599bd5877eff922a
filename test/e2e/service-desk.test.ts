/**
 * The service desk in the loop (issue 12), end to end: a private Request Tracker 5, the product's
 * own runtime (Temporal, Postgres, worker, API) and a private slapd. Tickets are opened and
 * changed as RT users through RT's REST API; what RT holds afterwards is read back as root over
 * REST, and what the directory holds with ldapsearch, never through our code.
 */
import { eq, inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { accessRequests, grants } from '../../db/schema.js';
import { serviceDeskWorkflowId } from '../../workflows/ids.js';
import { lowRiskSelfServicePolicy, rtTime, startDeskStack, ticketHistory, ticketPosts, ticketStatus, type DeskStack } from '../helpers/desk.js';
import type { RtHandle } from '../helpers/rt.js';
import { waitFor, type Stack } from '../helpers/stack.js';

let desk: DeskStack;
let rt: RtHandle;
let s: Stack;
let deskId: string;
let tok: Record<string, string>;

beforeAll(async () => {
  desk = await startDeskStack({
    temporalAddress: inject('temporalAddress'),
    name: 'rt-test',
    rtUsers: { alice: ['requesters'], dave: ['requesters'], bob: ['approvers'] },
    policy: lowRiskSelfServicePolicy(),
  });
  ({ rt, stack: s, deskId, tokens: tok } = desk);
}, 240_000);

afterAll(async () => {
  await desk?.stop();
});

describe('ticket in, access out, ticket resolved only after removal is verified', () => {
  it('takes an auto-approved request in from a ticket, grants it in slapd, and resolves the ticket after the verified removal', async () => {
    const ticket = await desk.openTicket('alice', { Entitlement: 'Finance reports (read)', Duration: '8s', Justification: 'month-end close for the finance team' });
    const link = await desk.linkOf(ticket);
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
    await waitFor(async () => (await ticketStatus(rt, ticket)) === 'resolved', 'the ticket resolved', 30_000);

    const all = await ticketPosts(rt, ticket);
    const story = all.map((p) => p.text).join('\n');
    expect(story).toMatch(/approved automatically/i);
    expect(story).toMatch(/low-self/);
    expect(story).toMatch(/granted/i);
    expect(story).toMatch(/removal verified/i);
    expect(story).toContain(`/v1/evidence/${link.requestId}`);
    // Resolved only after the verified removal: RT's status change is no earlier than removal_verified_at (RT keeps whole seconds).
    const resolvedAt = (await ticketHistory(rt, ticket)).find((t) => t.Type === 'Status' && t.NewValue === 'resolved')!.Created;
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
    const ticket = await desk.openTicket('alice', { Entitlement: 'Engineering group', Duration: '1h', Justification: 'on-call rotation this week' });
    const link = await desk.linkOf(ticket);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === link.requestId), 'the approval task');
    const replyRes = await desk.asUser('bob', 'POST', `/ticket/${ticket}/correspond`, { Content: '/approve fine for the rotation', ContentType: 'text/plain' });
    expect(replyRes.status).toBe(201);
    await s.waitForStatus(link.requestId!, ['active']);
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    const cancel = await desk.asUser<string[]>('alice', 'PUT', `/ticket/${ticket}`, { Status: 'rejected' });
    expect(cancel.status).toBe(200);
    const done = await s.waitForStatus(link.requestId!, ['revoked'], 30_000);
    expect(done.grant.revokeReason).toBe('ticket');
    expect(await s.ldapMembers('engineering')).not.toContain(s.userDn('alice'));
    await waitFor(async () => (await ticketPosts(rt, ticket)).some((p) => /removal verified/i.test(p.text)), 'the verified removal on the ticket', 30_000);
    // The person's decision stands: a cancelled ticket stays rejected.
    expect(await ticketStatus(rt, ticket)).toBe('rejected');
    // …and the KPI "access ended → ticket resolved" does not count it as resolved by accessloop.
    expect(await waitFor(async () => ((l) => (l.state === 'closed' ? l : undefined))(await desk.linkOf(ticket)), 'the link closed')).toMatchObject({ finalState: 'closed_on_desk' });
    const story = (await ticketPosts(rt, ticket)).map((p) => p.text).join('\n');
    expect(story).toMatch(/approved/i);
  });

  it('answers a bad ticket on the ticket and changes nothing', async () => {
    const ticket = await desk.openTicket('alice', { Entitlement: 'No such thing', Justification: 'because I want it' });
    await waitFor(async () => (await ticketPosts(rt, ticket)).some((p) => /could not accept/i.test(p.text)), 'the refusal on the ticket');
    const link = await desk.linkOf(ticket);
    expect(link).toMatchObject({ state: 'refused', refusal: 'unknown_entitlement', requestId: null });
    expect(await ticketStatus(rt, ticket)).not.toBe('resolved');
  });

  it('answers a ticket for a subject the requester may not request for, or beyond the maximum duration, with the rule and nothing written', async () => {
    const forBob = await desk.openTicket('alice', { Entitlement: 'Engineering group', Subject: 'bob', Duration: '1h', Justification: 'bob needs it, says alice' });
    const tooLong = await desk.openTicket('alice', { Entitlement: 'Engineering group', Duration: '2 days', Justification: 'a long on-call stretch' });
    await waitFor(async () => (await ticketPosts(rt, forBob)).some((p) => /could not accept/i.test(p.text)), 'the refusal of the subject');
    await waitFor(async () => (await ticketPosts(rt, tooLong)).some((p) => /could not accept/i.test(p.text)), 'the refusal of the duration');
    expect((await ticketPosts(rt, forBob)).map((p) => p.text).join('\n')).toMatch(/yourself, your direct reports/);
    expect((await ticketPosts(rt, tooLong)).map((p) => p.text).join('\n')).toMatch(/maximum/);
    expect(await desk.linkOf(forBob)).toMatchObject({ state: 'refused', refusal: 'forbidden', requestId: null });
    expect(await desk.linkOf(tooLong)).toMatchObject({ state: 'refused', refusal: 'outside_policy', requestId: null });
    const rows = await s.tdb.db.select({ id: accessRequests.id }).from(accessRequests).where(inArray(accessRequests.ticketRef, [`rt-test#${forBob}`, `rt-test#${tooLong}`]));
    expect(rows).toEqual([]);
  });

  it('refuses a decision from the requester on their own ticket', async () => {
    const ticket = await desk.openTicket('alice', { Entitlement: 'Engineering group', Duration: '1h', Justification: 'pairing with the platform team' });
    const link = await desk.linkOf(ticket);
    await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === link.requestId), 'the approval task');
    await desk.asUser('alice', 'POST', `/ticket/${ticket}/correspond`, { Content: '/approve', ContentType: 'text/plain' });
    await waitFor(async () => (await ticketPosts(rt, ticket)).some((p) => /did not record this decision/i.test(p.text)), 'the refusal');
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
