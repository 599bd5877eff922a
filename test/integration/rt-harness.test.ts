/**
 * The private Request Tracker the ticket integration runs against (test/helpers/rt.ts):
 * a ticket's life over REST 2.0 with the tokens of the requester and of the least-privilege
 * `accessloop` user, what that user can not do, where the server listens, and a restart.
 * The steps share one ticket, so they run in order. Then the users a test adds (addRtUser): an
 * approver who reads and answers but changes nothing, a requester who withdraws its own ticket.
 */
import { execFile } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { canConnect } from '../../activities/connectors/child-process.js';
import { addRtUser, rtCall, startRt, type RtHandle } from '../helpers/rt.js';

const execFileAsync = promisify(execFile);

interface TicketBody {
  id: number;
  Status: string;
  Subject: string;
  Queue: { id: string };
  Creator: { id: string };
  Requestor: { id: string }[];
  CustomFields: { id: string; name: string; values: string[] }[];
}
interface Txn {
  id: string;
  Type: string;
  Creator: { id: string };
  Field?: string;
  OldValue?: string;
  NewValue?: string;
}
interface Collection<T> {
  count: number;
  items: T[];
}

const REQUEST = {
  Entitlement: 'prod-admins',
  Subject: 'alice',
  Duration: 'PT8H',
  Justification: 'incident 4711: database failover',
};

let rt: RtHandle;
let dataDir: string;
let ticketId: number;

const asRequester = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rt.requesterToken, method, route, body);
const asAccessloop = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rt.token, method, route, body);
const asAdmin = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, rt.adminToken, method, route, body);

function fieldValues(t: TicketBody): Record<string, string[]> {
  return Object.fromEntries(t.CustomFields.map((cf) => [cf.name, cf.values]));
}

/** Resolves with the connect error's code (ECONNREFUSED, ...), or 'connected'. */
function connectOutcome(host: string, port: number): Promise<string> {
  return new Promise((resolve) => {
    const sock = net.connect({ host, port });
    sock.setTimeout(5000, () => {
      sock.destroy();
      resolve('timeout');
    });
    sock.once('connect', () => {
      sock.destroy();
      resolve('connected');
    });
    sock.once('error', (err: NodeJS.ErrnoException) => resolve(err.code ?? err.message));
  });
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-rt-harness-'));
  const started = Date.now();
  rt = await startRt({ dataDir, say: (m) => console.log(`[rt] ${m}`) });
  console.log(`[rt] private RT on ${rt.url} answered after ${((Date.now() - started) / 1000).toFixed(1)} s`);
});

afterAll(async () => {
  await rt?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

describe('private Request Tracker', () => {
  it('listens on 127.0.0.1 only', async () => {
    const { stdout } = await execFileAsync('ss', ['-Hltn', `sport = :${rt.port}`]);
    const local = stdout.trim().split('\n').filter(Boolean).map((line) => line.trim().split(/\s+/)[3]);
    expect(local).toEqual([`127.0.0.1:${rt.port}`]);

    // The same check from the outside: this machine's other addresses reach a server bound to
    // every interface (the control), but not RT.
    const addresses = Object.values(os.networkInterfaces())
      .flatMap((list) => list ?? [])
      .filter((a) => !a.internal && a.family === 'IPv4')
      .map((a) => a.address);
    const control = net.createServer((s) => s.destroy());
    await new Promise<void>((resolve) => control.listen(0, '0.0.0.0', resolve));
    try {
      const controlPort = (control.address() as net.AddressInfo).port;
      for (const address of addresses) {
        expect(await connectOutcome(address, controlPort)).toBe('connected');
        expect(await connectOutcome(address, rt.port)).toBe('ECONNREFUSED');
      }
    } finally {
      await new Promise((r) => control.close(r));
    }
  });

  it('a requester opens a ticket in "Access requests" with the custom fields set, and both users read it back', async () => {
    const created = await asRequester<{ id: string; type: string; _url: string }>('POST', '/ticket', {
      Queue: rt.fixture.queue.name,
      // REST 2.0 does not make the creator a requestor: without this the requester could not see the ticket.
      Requestor: rt.fixture.users.requester.name,
      Subject: 'Access to prod-admins for alice',
      Content: 'Please grant alice prod-admins for the failover.',
      ContentType: 'text/plain',
      CustomFields: REQUEST,
    });
    expect(created.status).toBe(201);
    expect(created.body.type).toBe('ticket');
    ticketId = Number(created.body.id);
    expect(created.location).toBe(`/REST/2.0/ticket/${ticketId}`);
    expect(created.body._url).toBe(`${rt.restUrl}/ticket/${ticketId}`);

    const mine = await asRequester<TicketBody>('GET', `/ticket/${ticketId}`);
    expect(mine.status).toBe(200);
    expect(Number(mine.body.Queue.id)).toBe(rt.fixture.queue.id);
    expect(mine.body.Status).toBe('new');
    expect(mine.body.Creator.id).toBe(rt.fixture.users.requester.name);
    expect(mine.body.Requestor.map((r) => r.id)).toEqual([rt.fixture.users.requester.name]);
    const expected = Object.fromEntries(Object.entries(REQUEST).map(([k, v]) => [k, [v]]));
    expect(fieldValues(mine.body)).toEqual(expected);

    const seenByAccessloop = await asAccessloop<TicketBody>('GET', `/ticket/${ticketId}`);
    expect(seenByAccessloop.status).toBe(200);
    expect(fieldValues(seenByAccessloop.body)).toEqual(expected);
    for (const cf of seenByAccessloop.body.CustomFields) expect(Number(cf.id)).toBe(rt.fixture.customFields[cf.name as keyof typeof REQUEST]);
  });

  it('accessloop comments and resolves; the history shows each step, and hides the comment from the requester', async () => {
    const comment = await asAccessloop<string[]>('POST', `/ticket/${ticketId}/comment`, {
      Content: 'accessloop: access request received, waiting for approval',
      ContentType: 'text/plain',
    });
    expect(comment.status).toBe(201);
    expect(comment.body).toEqual(['Comments added']);
    const commentTxn = /^\/REST\/2\.0\/transaction\/(\d+)$/.exec(comment.location ?? '')?.[1];
    expect(commentTxn).toBeDefined();

    const resolved = await asAccessloop<string[]>('PUT', `/ticket/${ticketId}`, { Status: 'resolved' });
    expect(resolved.status).toBe(200);
    expect(resolved.body).toEqual([`Ticket ${ticketId}: Status changed from 'new' to 'resolved'`]);
    expect((await asAccessloop<TicketBody>('GET', `/ticket/${ticketId}`)).body.Status).toBe('resolved');

    const history = await asAccessloop<Collection<Txn>>('GET', `/ticket/${ticketId}/history?fields=Type,Creator,Field,OldValue,NewValue&per_page=100`);
    expect(history.status).toBe(200);
    const steps = history.body.items.map((t) => [t.Type, t.Creator.id, t.Field ?? '', t.OldValue ?? '', t.NewValue ?? '']);
    expect(steps).toEqual([
      ['Create', 'requester', '', '', ''],
      ['Comment', 'accessloop', '', '', ''],
      ['Status', 'accessloop', 'Status', 'new', 'resolved'],
    ]);
    expect(history.body.items[1]?.id).toBe(commentTxn);

    const text = await asAccessloop<Collection<{ Content: string; ContentType: string }>>('GET', `/transaction/${commentTxn}/attachments?fields=Content,ContentType`);
    expect(text.body.items).toEqual([expect.objectContaining({ ContentType: 'text/plain', Content: 'accessloop: access request received, waiting for approval' })]);

    // Comments are staff-only (ShowTicketComments), so the requester sees the rest of the story.
    const requesterView = await asRequester<Collection<Txn>>('GET', `/ticket/${ticketId}/history?fields=Type`);
    expect(requesterView.body.items.map((t) => t.Type)).toEqual(['Create', 'Status']);
  });

  it('finds the queue\'s tickets changed since a time, and its transactions after a cursor', async () => {
    const history = await asAccessloop<Collection<Txn>>('GET', `/ticket/${ticketId}/history?fields=Type`);
    const [createTxn, ...later] = history.body.items.map((t) => t.id);
    const q = encodeURIComponent(`ObjectType = 'RT::Ticket' AND TicketQueue = '${rt.fixture.queue.name}' AND id > ${createTxn}`);
    const since = await asAccessloop<Collection<Txn>>('GET', `/transactions?query=${q}&orderby=id&fields=Type,ObjectId`);
    expect(since.status).toBe(200);
    expect(since.body.items.map((t) => t.id)).toEqual(later);

    const ticket = (await asAccessloop<TicketBody & { LastUpdated: string }>('GET', `/ticket/${ticketId}`)).body;
    // TicketSQL dates are 'YYYY-MM-DD HH:MM:SS' in the user's time zone (UTC here); LastUpdated comes back as ISO 8601 with Z.
    const sqlTime = (iso: string) => iso.replace('T', ' ').replace('Z', '');
    const changedSince = async (op: string, iso: string) => {
      const query = encodeURIComponent(`Queue = '${rt.fixture.queue.name}' AND LastUpdated ${op} '${sqlTime(iso)}'`);
      const res = await asAccessloop<Collection<{ id: string }>>('GET', `/tickets?query=${query}&orderby=LastUpdated&fields=LastUpdated,Status`);
      expect(res.status).toBe(200);
      return res.body.items.map((t) => Number(t.id));
    };
    expect(await changedSince('>=', ticket.LastUpdated)).toEqual([ticketId]);
    expect(await changedSince('>', ticket.LastUpdated)).toEqual([]);
  });

  it('accessloop holds no right beyond working the tickets of its queue', async () => {
    const queue = await asAccessloop<{ message: string }>('POST', '/queue', { Name: 'Shadow queue' });
    expect(queue.status).toBe(403);
    expect((await asAdmin('GET', `/queue/${encodeURIComponent('Shadow queue')}`)).status).toBe(404);

    const elsewhere = await asAdmin<{ id: string }>('POST', '/ticket', { Queue: 'General', Subject: 'not an access request' });
    expect(elsewhere.status).toBe(201);
    expect((await asAccessloop('GET', `/ticket/${elsewhere.body.id}`)).status).toBe(403);
    const general = await asAccessloop<Collection<unknown>>('GET', `/tickets?query=${encodeURIComponent("Queue = 'General'")}`);
    expect(general.body.count).toBe(0);
    expect((await asAdmin<Collection<unknown>>('GET', `/tickets?query=${encodeURIComponent("Queue = 'General'")}`)).body.count).toBe(1);

    const open = await asAccessloop('POST', '/ticket', { Queue: rt.fixture.queue.name, Subject: 'made up request' });
    expect(open.status).toBe(403);

    // What was requested is the requester's word: accessloop may read it, not rewrite it. RT
    // answers 200 with the refusal in the message list, so the value is read back.
    const rewrite = await asAccessloop<string[]>('PUT', `/ticket/${ticketId}`, { CustomFields: { Entitlement: 'domain-admins' } });
    expect(rewrite.status).toBe(200);
    expect(rewrite.body).toEqual(["Could not add a new value to custom field 'Entitlement': Permission Denied"]);
    expect(fieldValues((await asAdmin<TicketBody>('GET', `/ticket/${ticketId}`)).body).Entitlement).toEqual([REQUEST.Entitlement]);

    // And the requester reaches only its own tickets, in its queue.
    expect((await asRequester('GET', `/ticket/${elsewhere.body.id}`)).status).toBe(403);
    expect((await asRequester('POST', '/ticket', { Queue: 'General', Subject: 'x' })).status).toBe(403);
  });

  it("root signs in with its data dir's own password, not the one rt-setup-database gives it", async () => {
    const basic = async (password: string) =>
      (await fetch(`${rt.restUrl}/rt`, { headers: { Authorization: `Basic ${Buffer.from(`root:${password}`).toString('base64')}` }, signal: AbortSignal.timeout(30_000) })).status;
    expect(rt.server.rootPassword).toMatch(/^[0-9a-f]{36}$/);
    expect(await basic('password')).toBe(401);
    expect(await basic(rt.server.rootPassword!)).toBe(200);
  });

  it('a restart on the same data keeps the ticket and the tokens', async () => {
    const pidBefore = rt.pid();
    expect(pidBefore).toBeDefined();
    await rt.stop();
    expect(rt.pid()).toBeUndefined();
    expect(await canConnect(rt.port)).toBe(false);
    await rt.start();
    expect(rt.pid()).not.toBe(pidBefore);
    const again = await asAccessloop<TicketBody>('GET', `/ticket/${ticketId}`);
    expect(again.status).toBe(200);
    expect(again.body.Status).toBe('resolved');
    expect(fieldValues(again.body)).toEqual(Object.fromEntries(Object.entries(REQUEST).map(([k, v]) => [k, [v]])));
  });
});

describe('the cast a test adds (addRtUser)', () => {
  const openRequest = async (token: string, requestor: string, subject: string) => {
    const res = await rtCall<{ id: string }>(rt.restUrl, token, 'POST', '/ticket', {
      Queue: rt.fixture.queue.name,
      Requestor: requestor,
      Subject: subject,
      Content: `Please grant alice prod-admins (${subject}).`,
      ContentType: 'text/plain',
      CustomFields: REQUEST,
    });
    expect(res.status).toBe(201);
    return Number(res.body.id);
  };
  const groupMembers = async (groupId: number) => {
    const res = await asAdmin<Collection<{ id: number | string; type: string }>>('GET', `/group/${groupId}/members?per_page=100`);
    expect(res.status).toBe(200);
    return res.body.items.map((m) => Number(m.id));
  };

  it('an approver in "Access approvers" reads and answers any ticket of the queue, and changes neither what was requested nor its state', async () => {
    const approver = await addRtUser(rt, 'approver-ann', { groups: ['approvers'] });
    expect(await groupMembers(rt.fixture.approversGroup.id)).toEqual([approver.id]);
    expect(await groupMembers(rt.fixture.requestersGroup.id)).not.toContain(approver.id);
    expect((await asAdmin<{ Privileged: number }>('GET', `/user/${approver.id}`)).body.Privileged).toBe(1);
    const asApprover = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, approver.token, method, route, body);

    const id = await openRequest(rt.requesterToken, rt.fixture.users.requester.name, 'approver reads this');
    const seen = await asApprover<TicketBody>('GET', `/ticket/${id}`);
    expect(seen.status).toBe(200);
    expect(fieldValues(seen.body)).toEqual(Object.fromEntries(Object.entries(REQUEST).map(([k, v]) => [k, [v]])));
    const search = await asApprover<Collection<{ id: string }>>('GET', `/tickets?query=${encodeURIComponent(`Queue = '${rt.fixture.queue.name}' AND id = ${id}`)}`);
    expect(search.body.items.map((t) => Number(t.id))).toEqual([id]);

    expect((await asApprover<string[]>('POST', `/ticket/${id}/comment`, { Content: 'approver: checking with the owner', ContentType: 'text/plain' })).body).toEqual(['Comments added']);
    expect((await asApprover<string[]>('POST', `/ticket/${id}/correspond`, { Content: 'approver: why prod-admins?', ContentType: 'text/plain' })).body).toEqual(['Correspondence added']);

    const rewrite = await asApprover<string[]>('PUT', `/ticket/${id}`, { CustomFields: { Entitlement: 'domain-admins' } });
    expect(rewrite.body).toEqual(["Could not add a new value to custom field 'Entitlement': Permission Denied"]);
    const resolve = await asApprover<string[]>('PUT', `/ticket/${id}`, { Status: 'resolved' });
    expect(resolve.body).toEqual([`Ticket ${id}: Permission Denied`]);

    const truth = (await asAdmin<TicketBody>('GET', `/ticket/${id}`)).body;
    expect(fieldValues(truth).Entitlement).toEqual([REQUEST.Entitlement]);
    // The reply opened the new ticket (RT's own scrip, as RT_System), nothing more.
    expect(truth.Status).toBe('open');
    const history = await asAdmin<Collection<Txn>>('GET', `/ticket/${id}/history?fields=Type,Creator,Field,OldValue,NewValue&per_page=100`);
    expect(history.body.items.filter((t) => t.Creator.id === 'approver-ann').map((t) => t.Type)).toEqual(['Comment', 'Correspond']);
    expect(history.body.items.filter((t) => t.Type === 'Status').map((t) => [t.Creator.id, t.OldValue, t.NewValue])).toEqual([['RT_System', 'new', 'open']]);

    // Approving rights cover this queue only, and open nothing.
    const elsewhere = await asAdmin<{ id: string }>('POST', '/ticket', { Queue: 'General', Subject: 'not an access request' });
    expect((await asApprover('GET', `/ticket/${elsewhere.body.id}`)).status).toBe(403);
    expect((await asApprover('POST', '/ticket', { Queue: rt.fixture.queue.name, Subject: 'made up request' })).status).toBe(403);
  });

  it('a requester withdraws its own ticket (rejected) and moves its Due date, through the Requestor role only', async () => {
    // The group grants no ModifyTicket: the role does, so it reaches only the requester's own tickets.
    expect(rt.fixture.rights.requesters).not.toContain('ModifyTicket');
    expect(rt.fixture.rights.requestorRole).toContain('ModifyTicket');

    const id = await openRequest(rt.requesterToken, rt.fixture.users.requester.name, 'requester withdraws this');
    const dueOf = async () => (await asAdmin<{ Due: string }>('GET', `/ticket/${id}`)).body.Due;
    // Due is written as RT stores it, 'YYYY-MM-DD HH:MM:SS' in UTC. An ISO 8601 value is stored
    // verbatim (the answer still reads as a change) and every later read shows it unset.
    expect((await asRequester<string[]>('PUT', `/ticket/${id}`, { Due: '2030-01-01T10:00:00Z' })).body).toEqual([`Ticket ${id}: Due changed from Not set to Tue Jan 01 10:00:00 2030`]);
    expect(await dueOf()).toBe('1970-01-01T00:00:00Z');
    expect((await asRequester<string[]>('PUT', `/ticket/${id}`, { Due: '2030-01-02 10:00:00' })).body).toEqual([
      `Ticket ${id}: Due changed from Tue Jan 01 10:00:00 2030 to Wed Jan 02 10:00:00 2030`,
    ]);
    expect(await dueOf()).toBe('2030-01-02T10:00:00Z');
    expect((await asRequester<string[]>('PUT', `/ticket/${id}`, { Status: 'rejected' })).body).toEqual([`Ticket ${id}: Status changed from 'new' to 'rejected'`]);
    // ModifyTicket does not reach the custom fields: what was asked for stays as asked.
    const rewrite = await asRequester<string[]>('PUT', `/ticket/${id}`, { CustomFields: { Entitlement: 'domain-admins' } });
    expect(rewrite.body).toEqual(["Could not add a new value to custom field 'Entitlement': Permission Denied"]);
    const truth = (await asAdmin<TicketBody & { Due: string }>('GET', `/ticket/${id}`)).body;
    expect([truth.Status, truth.Due, fieldValues(truth).Entitlement]).toEqual(['rejected', '2030-01-02T10:00:00Z', [REQUEST.Entitlement]]);

    // Another member of "Access requesters" opens and withdraws its own, and cannot touch this one.
    const other = await addRtUser(rt, 'requester-bob', { groups: ['requesters'] });
    expect(await groupMembers(rt.fixture.requestersGroup.id)).toEqual([rt.fixture.users.requester.id, other.id].sort((a, b) => a - b));
    const asOther = <T>(method: string, route: string, body?: unknown) => rtCall<T>(rt.restUrl, other.token, method, route, body);
    expect((await asOther('GET', `/ticket/${id}`)).status).toBe(403);
    const reopen = await asOther<unknown>('PUT', `/ticket/${id}`, { Status: 'open', Due: '2031-01-01 00:00:00' });
    expect(reopen.status).toBe(403);
    const after = (await asAdmin<TicketBody & { Due: string }>('GET', `/ticket/${id}`)).body;
    expect([after.Status, after.Due]).toEqual(['rejected', '2030-01-02T10:00:00Z']);

    const own = await openRequest(other.token, 'requester-bob', 'bob asks and withdraws');
    expect((await asOther<string[]>('PUT', `/ticket/${own}`, { Status: 'rejected' })).body).toEqual([`Ticket ${own}: Status changed from 'new' to 'rejected'`]);
  });
});
