/**
 * The Request Tracker service-desk adapter (activities/connectors/service-desk/rt.ts) against a
 * private RT 5 (test/helpers/rt.ts). Tickets are arranged with the requester's and root's tokens;
 * what RT holds afterwards is read back with root's token over REST, never through the adapter.
 * Each test works on its own ticket; the outage test stops RT and runs last.
 */
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRtServiceDesk, type RtServiceDeskConfig } from '../../activities/connectors/service-desk/rt.js';
import type { DeskEvent, DeskPost, ServiceDesk } from '../../activities/connectors/service-desk/types.js';
import { ConnectorError } from '../../activities/connectors/types.js';
import { expectConnectorError } from '../helpers/connector-contract.js';
import { ticketHistory, ticketPosts, ticketStatus, type RtCollection, type RtTransaction } from '../helpers/desk.js';
import { rtCall, startRt, type RtHandle } from '../helpers/rt.js';
import { withSilentServer } from '../helpers/silent-server.js';

const REQUEST = { Entitlement: 'prod-admins', Subject: 'alice', Duration: 'PT8H', Justification: 'incident 4711' };

let rt: RtHandle;
let dataDir: string;
let desk: ServiceDesk;
const desks: ServiceDesk[] = [];

function adapter(overrides: Partial<RtServiceDeskConfig> = {}, token = rt.token): ServiceDesk {
  const d = createRtServiceDesk({ url: rt.url, token, queue: rt.fixture.queue.name, user: rt.fixture.users.integration.name, ...overrides });
  desks.push(d);
  return d;
}

const asAdmin = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rt.adminToken, method, route, body);
const asRequester = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rt.requesterToken, method, route, body);

async function openTicket(subject: string, extra: Record<string, unknown> = {}): Promise<string> {
  const res = await asRequester<{ id: string }>('POST', '/ticket', {
    Queue: rt.fixture.queue.name,
    Requestor: rt.fixture.users.requester.name,
    Subject: subject,
    Content: `Please grant alice prod-admins (${subject}).`,
    ContentType: 'text/plain',
    CustomFields: REQUEST,
    ...extra,
  });
  expect(res.status).toBe(201);
  return res.body.id;
}

async function adminSet(id: string, change: Record<string, unknown>): Promise<void> {
  const res = await asAdmin<string[]>('PUT', `/ticket/${id}`, change);
  expect(res.status).toBe(200);
  expect(res.body).toHaveLength(1);
}

/** Root's count of the ticket's comments and replies that carry the marker line. */
async function adminPostsCarrying(id: string, marker: string): Promise<number> {
  return (await ticketPosts(rt, id)).filter((p) => p.text.split('\n').includes(`[accessloop:${marker}]`)).length;
}

/** Every event after `cursor`, read in pages of `limit`. */
async function drain(d: ServiceDesk, cursor: string | null, limit: number): Promise<{ events: DeskEvent[]; next: string | null; calls: number }> {
  const events: DeskEvent[] = [];
  let next = cursor;
  for (let calls = 1; ; calls++) {
    const page = await d.events(next, limit);
    expect(page.events.length).toBeLessThanOrEqual(limit);
    events.push(...page.events);
    if (page.events.length === 0) {
      expect(page.next).toBe(next);
      return { events, next, calls };
    }
    next = page.next;
  }
}

function expectNoSecret(err: ConnectorError): void {
  for (const text of [err.message, err.stack ?? '', String(err.cause ?? ''), (err.cause as Error | undefined)?.stack ?? '']) expect(text).not.toContain(rt.token);
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-rt-desk-'));
  rt = await startRt({ dataDir });
  desk = adapter();
});

afterAll(async () => {
  for (const d of desks) await d.close();
  await rt?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('Request Tracker service desk', () => {
  it('reads a requester\'s ticket as a created event and a ticket, with its fields and its creator as the requester', async () => {
    const before = await desk.head();
    // The requestor named on create is free text; who really asked is the token's owner.
    const id = await openTicket('Access to prod-admins for alice', { Requestor: 'root' });

    const { events } = await drain(desk, before, 100);
    expect(events.map((e) => [e.ticketRef, e.kind])).toEqual([[id, 'created']]);
    expect(events[0]).toMatchObject({ actor: 'requester', self: false, text: 'Please grant alice prod-admins (Access to prod-admins for alice).' });
    expect(events[0]?.at).toBeInstanceOf(Date);

    const ticket = await desk.ticket(id);
    expect(ticket).toMatchObject({
      ref: id,
      status: 'new',
      state: 'open',
      requester: 'requester',
      title: 'Access to prod-admins for alice',
      fields: { entitlement: 'prod-admins', subject: 'alice', duration: 'PT8H', justification: 'incident 4711' },
      due: null,
    });
    expect(ticket?.updatedAt.getTime()).toBeGreaterThanOrEqual(ticket?.createdAt.getTime() ?? Infinity);
    expect((await asAdmin<{ Requestor: { id: string }[] }>('GET', `/ticket/${id}`)).body.Requestor.map((r) => r.id)).toEqual(['root']);
  });

  it('reports each change as an event of its kind, in RT\'s order, and marks the integration\'s own post as self', async () => {
    const id = await openTicket('changes');
    const after = await desk.head();
    expect((await asRequester('POST', `/ticket/${id}/correspond`, { Content: 'It is for the failover.', ContentType: 'text/plain' })).status).toBe(201);
    await adminSet(id, { Status: 'stalled' });
    await adminSet(id, { Due: '2026-12-24 18:00:00' });
    await adminSet(id, { CustomFields: { Duration: 'PT4H' } });
    expect(await desk.post({ ticketRef: id, marker: `changes-${id}`, text: 'Received; waiting for approval.', visibility: 'internal' })).toEqual({ posted: true });

    const { events } = await drain(desk, after, 100);
    expect(events.every((e) => e.ticketRef === id)).toBe(true);
    // Each event carries only what applies to its kind.
    expect(events.map(({ cursor: _c, ticketRef: _t, at: _a, ...rest }) => rest)).toStrictEqual([
      { kind: 'reply', actor: 'requester', self: false, text: 'It is for the failover.' },
      // RT opens a new ticket on any reply (RT_System, a scrip).
      { kind: 'status', actor: 'RT_System', self: false, field: 'status', oldValue: 'new', newValue: 'open', state: 'open' },
      { kind: 'status', actor: 'root', self: false, field: 'status', oldValue: 'open', newValue: 'stalled', state: 'open' },
      { kind: 'due', actor: 'root', self: false, field: 'due', newValue: '2026-12-24T18:00:00.000Z' },
      { kind: 'field', actor: 'root', self: false, field: 'duration', oldValue: 'PT8H', newValue: 'PT4H' },
      { kind: 'comment', actor: 'accessloop', self: true, text: `Received; waiting for approval.\n\n[accessloop:changes-${id}]` },
    ]);
    expect((await desk.ticket(id))?.due?.toISOString()).toBe('2026-12-24T18:00:00.000Z');
  });

  it('resumes from a cursor with nothing old and nothing twice, past the mail records it may not see', async () => {
    const start = await desk.head();
    const ids = [await openTicket('cursor one'), await openTicket('cursor two')];
    for (const id of ids) expect((await asRequester('POST', `/ticket/${id}/correspond`, { Content: 'more', ContentType: 'text/plain' })).status).toBe(201);
    // RT writes an EmailRecord for each autoreply; accessloop may not see them, and RT drops them
    // from a page after paging, so a query that kept them would stall on a short page.
    const all = await asAdmin<RtCollection<RtTransaction>>('GET', `/transactions?query=${encodeURIComponent(`ObjectType = 'RT::Ticket' AND id > ${start ?? 0}`)}&per_page=100&fields=Type`);
    expect(all.body.items.filter((t) => t.Type === 'EmailRecord').length).toBeGreaterThan(0);

    const whole = await drain(desk, start, 1000);
    expect(whole.events.map((e) => [e.ticketRef, e.kind])).toEqual([
      [ids[0], 'created'],
      [ids[1], 'created'],
      [ids[0], 'reply'],
      [ids[0], 'status'],
      [ids[1], 'reply'],
      [ids[1], 'status'],
    ]);
    const oneByOne = await drain(desk, start, 1);
    expect(oneByOne.calls).toBe(7);
    expect(oneByOne.events).toEqual(whole.events);
    expect(oneByOne.next).toBe(whole.next);
    const cursors = whole.events.map((e) => Number(e.cursor));
    expect(cursors).toEqual([...cursors].sort((a, b) => a - b));
    expect(new Set(cursors).size).toBe(cursors.length);

    // Again from the end: nothing; then exactly the one new change.
    expect(await desk.events(whole.next, 10)).toEqual({ events: [], next: whole.next });
    await adminSet(ids[1] as string, { Status: 'stalled' });
    const fresh = await desk.events(whole.next, 10);
    expect(fresh.events.map((e) => [e.ticketRef, e.kind, e.newValue])).toEqual([[ids[1], 'status', 'stalled']]);
    expect(await desk.head()).toBe(fresh.next);
  });

  it('posts a write-back once per marker, reading the marker back from RT, and ignores a marker typed by someone else', async () => {
    const id = await openTicket('idempotent');
    const post: DeskPost = { ticketRef: id, marker: `grant/${id}:granted`, text: 'Granted prod-admins to alice, read back at 10:00.', visibility: 'internal' };
    expect(await desk.post(post)).toEqual({ posted: true });
    expect(await desk.post(post)).toEqual({ posted: false });
    // A new adapter has no memory of the first post: only RT's history can tell it.
    const restarted = adapter();
    expect(await restarted.hasMarker(id, post.marker)).toBe(true);
    expect(await restarted.post(post)).toEqual({ posted: false });
    expect(await adminPostsCarrying(id, post.marker)).toBe(1);

    // The requester writes the next marker in a reply: it is not the integration's post.
    const next = `grant/${id}:expired`;
    expect((await asRequester('POST', `/ticket/${id}/correspond`, { Content: `please stop\n[accessloop:${next}]`, ContentType: 'text/plain' })).status).toBe(201);
    expect(await restarted.hasMarker(id, next)).toBe(false);
    expect(await restarted.post({ ...post, marker: next, text: 'Expired.' })).toEqual({ posted: true });
    expect(await adminPostsCarrying(id, next)).toBe(2);
    expect(await desk.hasMarker(id, next)).toBe(true);
  });

  it('ends resolved with one final reply on a rejected ticket, although the reply reopens it first', async () => {
    const id = await openTicket('reopen pitfall');
    await adminSet(id, { Status: 'rejected' });
    expect(await desk.post({ ticketRef: id, marker: `final-${id}`, text: 'Removal verified at 10:05.', visibility: 'requester', state: 'resolved' })).toEqual({ posted: true });
    expect(await ticketStatus(rt, id)).toBe('resolved');
    const statuses = (await ticketHistory(rt, id)).filter((t) => t.Type === 'Status').map((t) => [t.Creator.id, t.OldValue, t.NewValue]);
    expect(statuses).toEqual([
      ['root', 'new', 'rejected'],
      ['RT_System', 'rejected', 'open'],
      ['accessloop', 'open', 'resolved'],
    ]);
    // Same status again in a comment: RT says it "can't change" to the status it already has.
    expect(await desk.post({ ticketRef: id, marker: `again-${id}`, text: 'Still resolved.', visibility: 'internal', state: 'resolved' })).toEqual({ posted: true });
    expect(await ticketStatus(rt, id)).toBe('resolved');
    expect((await desk.ticket(id))?.state).toBe('resolved');
  });

  it('returns null for a ticket RT does not have, and refuses a ref that is not an RT id or a post to a missing ticket', async () => {
    expect(await desk.ticket('999999')).toBeNull();
    await expectConnectorError(desk.ticket('RT-12'), 'InvalidInput');
    const err = await expectConnectorError(desk.post({ ticketRef: '999999', marker: 'm-missing', text: 'x', visibility: 'internal' }), 'NoSuchResource');
    expect(err.retryable).toBe(false);
  });

  it('fails a status RT refuses, without retrying, even though RT answers 201, and a repeat stays a failure', async () => {
    const id = await openTicket('refused');
    // The integration user holds no DeleteTicket: a queue whose "rejected" is RT's deleted.
    const deleting = adapter({ statuses: { rejected: 'deleted' } });
    const post: DeskPost = { ticketRef: id, marker: `reject-${id}`, text: 'Rejected by policy.', visibility: 'internal', state: 'rejected' };
    const err = await expectConnectorError(deleting.post(post), 'PermissionDenied');
    expect(err.retryable).toBe(false);
    expect(err.message).toContain(`ticket ${id}`);
    expect(err.message).not.toContain('Rejected by policy');
    expect(await ticketStatus(rt, id)).toBe('new');
    expect(await adminPostsCarrying(id, post.marker)).toBe(1);
    await expectConnectorError(deleting.post(post), 'PermissionDenied');
    expect(await ticketStatus(rt, id)).toBe('new');
    expect(await adminPostsCarrying(id, post.marker)).toBe(1);

    // A status the lifecycle does not have, and a state the contract does not write.
    await expectConnectorError(adapter({ statuses: { resolved: 'cancelled' } }).post({ ...post, marker: `cancel-${id}`, state: 'resolved' }), 'InvalidInput');
    const before = (await ticketHistory(rt, id)).length;
    await expectConnectorError(desk.post({ ...post, marker: `delete-${id}`, state: 'deleted' as unknown as DeskPost['state'] }), 'InvalidInput');
    expect((await ticketHistory(rt, id)).length).toBe(before);
    expect(await ticketStatus(rt, id)).toBe('new');
  });

  it('completes the status of its own unfinished post on a repeat, but never over a person\'s later change', async () => {
    const deleting = adapter({ statuses: { rejected: 'deleted', resolved: 'deleted' } });
    const unfinished = await openTicket('unfinished');
    const post: DeskPost = { ticketRef: unfinished, marker: `reject-${unfinished}`, text: 'Rejected by policy.', visibility: 'internal', state: 'rejected' };
    await expectConnectorError(deleting.post(post), 'PermissionDenied');
    expect(await desk.post(post)).toEqual({ posted: false });
    expect(await ticketStatus(rt, unfinished)).toBe('rejected');
    expect(await adminPostsCarrying(unfinished, post.marker)).toBe(1);

    const overridden = await openTicket('overridden');
    const final: DeskPost = { ticketRef: overridden, marker: `final-${overridden}`, text: 'Removal verified.', visibility: 'internal', state: 'resolved' };
    await expectConnectorError(deleting.post(final), 'PermissionDenied');
    await adminSet(overridden, { Status: 'stalled' });
    expect(await desk.post(final)).toEqual({ posted: false });
    expect(await ticketStatus(rt, overridden)).toBe('stalled');
  });

  it('classifies a refused token, a wrong URL, an unknown queue and a hung server', async () => {
    const bogusToken = '1-31-00000000000000000000000000000000';
    const denied = await expectConnectorError(adapter({}, bogusToken).events(null, 10), 'PermissionDenied');
    expect(denied.message).toContain('401');
    expect(denied.message).not.toContain(bogusToken);
    await expectConnectorError(adapter({ url: `${rt.url}/rt` }).events(null, 10), 'InvalidConfig');
    expect((await expectConnectorError(adapter({ queue: 'No such queue' }).events(null, 10), 'InvalidConfig')).message).toContain('no such queue');
    await expectConnectorError(adapter({ fieldNames: { duration: 'Length' } }).ticket('1'), 'InvalidConfig');
    // The REST base itself and a trailing slash name the same API.
    expect(await adapter({ url: rt.restUrl }).head()).toBe(await adapter({ url: `${rt.url}/` }).head());
    expect(() => adapter({ url: `http://user:pw@127.0.0.1:${rt.port}` })).toThrow(ConnectorError);

    await withSilentServer(async (port) => {
      const started = Date.now();
      const err = await expectConnectorError(adapter({ url: `http://127.0.0.1:${port}`, timeoutMs: 300 }).events(null, 10), 'Timeout');
      expect(err.retryable).toBe(true);
      expect(Date.now() - started).toBeLessThan(300 + 2000);
    });
  });

  it('throws a retryable TargetUnavailable without the token while RT is down', async () => {
    const id = await openTicket('outage');
    const cursor = await desk.head();
    await rt.stop();
    const fresh = adapter();
    const failures = [
      await expectConnectorError(desk.events(cursor, 10), 'TargetUnavailable'),
      await expectConnectorError(fresh.events(cursor, 10), 'TargetUnavailable'),
      await expectConnectorError(desk.post({ ticketRef: id, marker: `down-${id}`, text: 'Granted.', visibility: 'internal' }), 'TargetUnavailable'),
      await expectConnectorError(desk.ticket(id), 'TargetUnavailable'),
    ];
    for (const err of failures) {
      expect(err.retryable).toBe(true);
      expectNoSecret(err);
    }

    // Back up: the same adapters carry on where they were.
    await rt.start();
    expect(await desk.post({ ticketRef: id, marker: `down-${id}`, text: 'Granted.', visibility: 'internal' })).toEqual({ posted: true });
    expect((await fresh.events(cursor, 10)).events.map((e) => [e.ticketRef, e.kind, e.self])).toEqual([[id, 'comment', true]]);
  });
});
