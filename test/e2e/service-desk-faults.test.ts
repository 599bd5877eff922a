/**
 * The service desk in the loop (issue 12) under faults and bad input, end to end: a private
 * Request Tracker 5, the product's own runtime and a private slapd, as in service-desk.test.ts.
 * slapd stopped during a removal, RT stopped for a whole lifecycle, a crash between post and
 * record, tickets closed behind the loop's back or moved out of its reach, a moving Due date, and
 * tickets edited or written wrongly. What RT holds is read back as root over REST, the directory
 * with ldapsearch, and the loop's bookkeeping from the database.
 */
import { and, asc, eq, inArray, isNull, max } from 'drizzle-orm';
import { afterAll, afterEach, beforeAll, describe, expect, inject, it } from 'vitest';
import { describeAuditEvent } from '../../activities/domain/desk-writeback.js';
import { accessRequests, auditEvents, deskOutbox, entitlements, identities, reconciliationFindings, ticketLinks } from '../../db/schema.js';
import { asRoot, lowRiskSelfServicePolicy, putPolicy, startDeskStack, ticketHistory, ticketPosts, ticketStatus, type DeskStack, type RtPost } from '../helpers/desk.js';
import type { RtHandle } from '../helpers/rt.js';
import { waitFor, type Stack } from '../helpers/stack.js';

const DESK = 'rt-faults';
const MARKER_LINE = /^\[accessloop:(w(\d+))\]$/;

let desk: DeskStack;
let rt: RtHandle;
let s: Stack;
let deskId: string;
let tok: Record<string, string>;

const publishPolicy = (reconciliation?: { revokeWithoutTicket: boolean }) => putPolicy(s, lowRiskSelfServicePolicy(reconciliation));

beforeAll(async () => {
  desk = await startDeskStack({
    temporalAddress: inject('temporalAddress'),
    name: DESK,
    rtUsers: { alice: ['requesters'], mallory: ['requesters'], bob: ['approvers'] },
    policy: lowRiskSelfServicePolicy(),
  });
  ({ rt, stack: s, deskId, tokens: tok } = desk);
}, 240_000);

afterAll(async () => {
  await desk?.stop();
});

// One open request per subject and entitlement: whatever a test left live (it failed midway) is
// ended, so the next test's ticket is not refused as a duplicate.
afterEach(async () => {
  const live = await s.tdb.db
    .select({ id: accessRequests.id })
    .from(accessRequests)
    .where(inArray(accessRequests.status, ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified']));
  for (const { id } of live) await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' });
  for (const { id } of live) await s.waitForStatus(id, ['revoked', 'cancelled', 'rejected', 'failed'], 40_000);
}, 60_000);

// ---- RT, read as root ---------------------------------------------------------------------------

/** The integration user's posts with their write-back marker (`[accessloop:w<outbox id>]`). */
async function ourPosts(ticket: string): Promise<Array<RtPost & { marker: string; through: number; lines: string[] }>> {
  const out = [];
  for (const p of await ticketPosts(rt, ticket)) {
    if (p.creator !== rt.fixture.users.integration.name) continue;
    const lines = p.text.split(/\r?\n/).map((l) => l.trim()).filter((l) => l !== '');
    const m = lines.map((l) => MARKER_LINE.exec(l)).find((x) => x);
    if (!m) continue;
    out.push({ ...p, marker: m[1]!, through: Number(m[2]), lines: lines.filter((l) => !MARKER_LINE.test(l)) });
  }
  return out;
}

const postSaying = (ticket: string, re: RegExp, what: string, timeoutMs = 20_000) => waitFor(async () => (await ticketPosts(rt, ticket)).find((p) => re.test(p.text)), what, timeoutMs, 250);

async function setTicket(ticket: string, body: Record<string, unknown>, as?: string): Promise<string[]> {
  const res = as ? await desk.asUser<string[]>(as, 'PUT', `/ticket/${ticket}`, body) : await asRoot<string[]>(rt, 'PUT', `/ticket/${ticket}`, body);
  expect(res.status, JSON.stringify(res.body)).toBe(200);
  // A 200 can carry a refused change: every message must be a change RT made.
  for (const m of res.body) expect(m).not.toMatch(/denied|could not|isn't a valid|not allowed/i);
  return res.body;
}

/** RT stores dates as 'YYYY-MM-DD HH:MM:SS' in UTC (docs/rt.md, "Due"). */
const rtDue = (d: Date) => d.toISOString().slice(0, 19).replace('T', ' ');
/** A moment `ms` from now, on a whole second (RT keeps seconds). */
const wholeSecondsFromNow = (ms: number) => new Date(Math.ceil((Date.now() + ms) / 1000) * 1000);

// ---- accessloop, read through its API and database ------------------------------------------------

async function linkedRequest(ticket: string): Promise<string> {
  return waitFor(async () => (await s.tdb.db.select().from(ticketLinks).where(and(eq(ticketLinks.deskId, deskId), eq(ticketLinks.ticketRef, ticket))))[0]?.requestId ?? undefined, `a request from ticket ${ticket}`);
}

const request = async (id: string) => (await s.call('GET', `/v1/access-requests/${id}`, tok.operator)).body;
const deskView = async () => (await s.call('GET', `/v1/service-desks/${deskId}`, tok.operator)).body;

async function activeFromTicket(user: string, entitlement: string, duration: string, justification: string) {
  const ticket = await desk.openTicket(user, { Entitlement: entitlement, Duration: duration, Justification: justification });
  const id = await linkedRequest(ticket);
  const active = await s.waitForStatus(id, ['active']);
  return { ticket, id, active };
}

async function awaitApprovalTask(requestId: string) {
  await waitFor(async () => (await s.call('GET', '/v1/approvals/pending', tok.bob)).body.items?.some((i: { requestId: string }) => i.requestId === requestId), 'the approval task');
}

/** A ticket for an owner-approved entitlement, approved by its owner (bob) through the API. */
async function approvedFromTicket(user: string, entitlement: string, justification: string) {
  const ticket = await desk.openTicket(user, { Entitlement: entitlement, Duration: '1h', Justification: justification });
  const id = await linkedRequest(ticket);
  await awaitApprovalTask(id);
  expect((await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve' })).status).toBe(200);
  const active = await s.waitForStatus(id, ['active']);
  return { ticket, id, active };
}

/** Nothing left to write back on the ticket's link. */
async function allDelivered(linkId: string) {
  await waitFor(
    async () => (await s.tdb.db.select({ id: deskOutbox.id }).from(deskOutbox).where(and(eq(deskOutbox.linkId, linkId), isNull(deskOutbox.deliveredAt)))).length === 0,
    'every write-back delivered',
    30_000,
    200,
  );
}

async function expectRevokedAndVerified(id: string, group: Parameters<Stack['ldapMembers']>[0], uid: string, reason: string) {
  const done = await s.waitForStatus(id, ['revoked'], 40_000);
  expect(done.grant.revokeReason).toBe(reason);
  expect(done.removalVerifiedAt).toBeTruthy();
  expect(await s.ldapMembers(group)).not.toContain(s.userDn(uid));
  return done;
}

async function checkTickets(): Promise<void> {
  expect((await s.call('POST', `/v1/service-desks/${deskId}/check-tickets`, tok.operator)).status).toBe(202);
}

/** The ticket check's finding for a ticket ref (`<desk>#<ticket>`), in the given status. */
async function findingOf(account: string, what: string, status: 'open' | 'remediated' = 'open') {
  return waitFor(
    async () => (await s.tdb.db.select().from(reconciliationFindings).where(and(eq(reconciliationFindings.account, account), eq(reconciliationFindings.status, status))))[0],
    what,
    20_000,
    200,
  );
}

/** Names the renderer uses: every entitlement's name and every identity's username. */
async function allNames(): Promise<Record<string, string>> {
  const names: Record<string, string> = {};
  for (const e of await s.tdb.db.select({ id: entitlements.id, name: entitlements.name }).from(entitlements)) names[e.id] = e.name;
  for (const i of await s.tdb.db.select({ id: identities.id, username: identities.username }).from(identities)) names[i.id] = i.username;
  return names;
}

describe('the service desk under faults and bad input', () => {
  it('keeps the ticket open while slapd is down during a revoke, and resolves it only after the removal is verified', async () => {
    const { ticket, id } = await activeFromTicket('alice', 'Finance reports (read)', '1h', 'quarter close reconciliation work');
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('alice'));

    await s.slapd.stop();
    let unverifiedPost: RtPost;
    try {
      expect((await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
      // ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS is 3 in the stack: the removal is flagged, not closed.
      await s.waitForStatus(id, ['revocation_unverified'], 30_000);
      unverifiedPost = await postSaying(ticket, /removal NOT verified/i, 'the unverified removal on the ticket');
      expect(unverifiedPost.creator).toBe(rt.fixture.users.integration.name);
      expect(unverifiedPost.text).not.toMatch(/removal verified on the target/i);
      expect(['new', 'open']).toContain(await ticketStatus(rt, ticket));
      expect((await request(id)).status).toBe('revocation_unverified');
    } finally {
      await s.slapd.start();
    }

    await expectRevokedAndVerified(id, 'finance-readers', 'alice', 'manual');
    await waitFor(async () => (await ticketStatus(rt, ticket)) === 'resolved', 'the ticket resolved', 30_000, 250);
    const verified = await postSaying(ticket, /removal verified on the target/i, 'the verified removal on the ticket');
    const statuses = (await ticketHistory(rt, ticket)).filter((t) => t.Type === 'Status');
    const resolved = statuses.filter((t) => t.NewValue === 'resolved');
    expect(resolved).toHaveLength(1);
    // Resolved by the post that carries the verified removal, after the unverified one.
    expect(Number(resolved[0]!.id)).toBeGreaterThan(unverifiedPost!.txn);
    expect(verified.txn).toBeGreaterThan(unverifiedPost!.txn);
    expect(statuses.filter((t) => Number(t.id) < unverifiedPost!.txn).map((t) => t.NewValue)).not.toContain('resolved');
  });

  it('runs a whole lifecycle while RT is stopped, then writes every event back exactly once and in order', async () => {
    const ticket = await desk.openTicket('alice', { Entitlement: 'Engineering group', Duration: '1h', Justification: 'incident follow-up this week' });
    const link = await desk.linkOf(ticket);
    const id = link.requestId!;
    await awaitApprovalTask(id);
    // What happened before the outage is on the ticket already (up to the open approval stage): the
    // rest must follow it, not repeat it.
    await waitFor(async () => (await ourPosts(ticket)).some((p) => p.lines.some((l) => / Approval stage 1 \(owner\) opened /.test(l))), 'the approval stage on the ticket');
    await allDelivered(link.id);
    const before = await ourPosts(ticket);
    expect(before.length).toBeGreaterThan(0);

    await rt.stop();
    try {
      const t0 = Date.now();
      expect((await s.call('POST', `/v1/access-requests/${id}/decision`, tok.bob, { decision: 'approve', comment: 'fine while the desk is down' })).status).toBe(200);
      await s.waitForStatus(id, ['active'], 30_000);
      expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));
      expect((await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
      await expectRevokedAndVerified(id, 'engineering', 'alice', 'manual');
      // The lease never waited on the desk.
      expect(Date.now() - t0).toBeLessThan(30_000);
      const failing = await waitFor(async () => {
        const d = await deskView();
        return d.health?.failingSince ? d : undefined;
      }, 'the desk health to show failing', 20_000, 200);
      expect(failing.health.lastErrorType).toBeTruthy();
      expect(failing.backlog.pendingWriteBacks).toBeGreaterThan(0);
    } finally {
      await rt.start();
    }

    await waitFor(async () => (await ticketStatus(rt, ticket)) === 'resolved', 'the ticket resolved after RT is back', 60_000, 300);
    await allDelivered(link.id);
    await waitFor(async () => (await deskView()).health?.failingSince === null, 'the desk health to clear', 20_000, 200);

    const ours = await ourPosts(ticket);
    expect(ours.slice(0, before.length).map((p) => p.marker)).toEqual(before.map((p) => p.marker));
    const through = ours.map((p) => p.through);
    expect(new Set(through).size).toBe(through.length);
    expect(through).toEqual([...through].sort((a, b) => a - b));

    // Each post holds exactly the outbox rows after the previous marker, up to its own, rendered in audit order.
    const rows = await s.tdb.db
      .select({ outboxId: deskOutbox.id, auditSeq: deskOutbox.auditSeq, text: deskOutbox.text, event: auditEvents })
      .from(deskOutbox)
      .leftJoin(auditEvents, eq(auditEvents.seq, deskOutbox.auditSeq))
      .where(eq(deskOutbox.linkId, link.id))
      .orderBy(asc(deskOutbox.id));
    expect(rows.every((r) => r.event)).toBe(true);
    expect(through.at(-1)).toBe(rows.at(-1)!.outboxId);
    const names = await allNames();
    let prev = 0;
    for (const p of ours) {
      const expected = rows.filter((r) => r.outboxId > prev && r.outboxId <= p.through).map((r) => describeAuditEvent(r.event!, names));
      expect.soft(p.lines.filter((l) => !l.startsWith('Evidence: ')), `post ${p.marker}`).toEqual(expected);
      prev = p.through;
    }

    // Every audit event of the request up to the verified removal went out, once, in the order of the audit chain.
    const timeline: Array<{ seq: number; action: string }> = (await request(id)).timeline;
    const sent = rows.map((r) => Number(r.auditSeq));
    expect(sent).toEqual([...sent].sort((a, b) => a - b));
    expect(timeline.filter((t) => t.seq <= sent.at(-1)!).map((t) => t.seq)).toEqual(sent);
    expect(rows.at(-1)!.event!.action).toBe('grant.removal_verified');
    const actions = rows.map((r) => r.event!.action);
    for (const a of ['request.approved', 'grant.applied', 'grant.verified', 'grant.revoke_requested', 'grant.removal_verified']) expect(actions).toContain(a);
    // Resolved once, by the last post.
    const resolved = (await ticketHistory(rt, ticket)).filter((t) => t.Type === 'Status' && t.NewValue === 'resolved');
    expect(resolved).toHaveLength(1);
    expect(Number(resolved[0]!.id)).toBeGreaterThan(ours.at(-1)!.txn);
  });

  it('posts a batch once when the worker died between the post and its record', async () => {
    const { ticket, id } = await activeFromTicket('alice', 'Finance reports (read)', '1h', 'audit sample for the controllers');
    const link = await desk.linkOf(ticket);
    await waitFor(async () => (await ourPosts(ticket)).some((p) => /verified; it expires at/.test(p.text)), 'the grant on the ticket');
    await allDelivered(link.id);

    /** Undoes the record of the link's last delivered batch, as if the worker died right after posting it. */
    async function forgetLastDelivery(): Promise<{ marker: string; through: number }> {
      return s.tdb.db.transaction(async (tx) => {
        const [last] = await tx.select({ at: max(deskOutbox.deliveredAt) }).from(deskOutbox).where(eq(deskOutbox.linkId, link.id));
        const batch = await tx.select({ id: deskOutbox.id }).from(deskOutbox).where(and(eq(deskOutbox.linkId, link.id), eq(deskOutbox.deliveredAt, last!.at!)));
        const through = Math.max(...batch.map((r) => r.id));
        const previous = (await tx.select({ id: deskOutbox.id }).from(deskOutbox).where(eq(deskOutbox.linkId, link.id))).map((r) => r.id).filter((i) => !batch.some((b) => b.id === i));
        await tx.update(deskOutbox).set({ deliveredAt: null }).where(and(eq(deskOutbox.linkId, link.id), eq(deskOutbox.deliveredAt, last!.at!)));
        await tx
          .update(ticketLinks)
          .set({ pendingMarker: `w${through}`, pendingThrough: through, deliveredThrough: previous.length ? Math.max(...previous) : 0 })
          .where(eq(ticketLinks.id, link.id));
        return { marker: `w${through}`, through };
      });
    }

    async function expectDeliveredOnce(replayed: { marker: string; through: number }, postsBefore: number) {
      await waitFor(
        async () => {
          const [l] = await s.tdb.db.select().from(ticketLinks).where(eq(ticketLinks.id, link.id));
          return l?.pendingMarker === null && l.deliveredThrough === replayed.through;
        },
        'the replayed batch recorded',
        20_000,
        200,
      );
      await allDelivered(link.id);
      const ours = await ourPosts(ticket);
      expect(ours.filter((p) => p.marker === replayed.marker)).toHaveLength(1);
      expect(ours).toHaveLength(postsBefore);
    }

    const before = (await ourPosts(ticket)).length;
    const replayed = await forgetLastDelivery();
    expect((await ourPosts(ticket)).at(-1)!.marker).toBe(replayed.marker);
    await expectDeliveredOnce(replayed, before);

    // The same for the post that resolves the ticket: one post, one status change.
    expect((await s.call('POST', `/v1/access-requests/${id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
    await expectRevokedAndVerified(id, 'finance-readers', 'alice', 'manual');
    await waitFor(async () => (await ticketStatus(rt, ticket)) === 'resolved', 'the ticket resolved', 30_000, 250);
    await allDelivered(link.id);
    const closing = (await ourPosts(ticket)).length;
    const final = await forgetLastDelivery();
    await expectDeliveredOnce(final, closing);
    expect((await ticketHistory(rt, ticket)).filter((t) => t.Type === 'Status' && t.NewValue === 'resolved')).toHaveLength(1);
    expect(await ticketStatus(rt, ticket)).toBe('resolved');
  });

  it('notes a ticket resolved while its access is live, reports it, and revokes it when the policy says so', async () => {
    const t = await activeFromTicket('alice', 'Finance reports (read)', '1h', 'board pack preparation');
    await allDelivered((await desk.linkOf(t.ticket)).id);
    await setTicket(t.ticket, { Status: 'resolved' });
    await postSaying(t.ticket, /resolved while its access is still active/i, 'the note on the resolved ticket');
    // Neither reopened (a person decided) nor revoked (nobody asked).
    expect(await ticketStatus(rt, t.ticket)).toBe('resolved');
    expect((await request(t.id)).status).toBe('active');
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('alice'));

    await checkTickets();
    const finding = await findingOf(t.active.ticketRef, 'the finding for the resolved ticket');
    expect(finding).toMatchObject({ kind: 'ticket_closed', status: 'open', account: `${DESK}#${t.ticket}`, entitlementId: s.catalog.entitlements['finance-readers'], identityId: s.catalog.identities.alice });
    expect((await request(t.id)).status).toBe('active');

    try {
      await publishPolicy({ revokeWithoutTicket: true });
      await checkTickets();
      await expectRevokedAndVerified(t.id, 'finance-readers', 'alice', 'ticket');
      const remediated = await findingOf(t.active.ticketRef, 'the finding remediated', 'remediated');
      expect(remediated).toMatchObject({ id: finding.id, kind: 'ticket_closed', status: 'remediated' });
      expect(remediated.remediatedAt).toBeTruthy();
    } finally {
      await publishPolicy();
    }
    // The verified removal is said on the ticket; the status the person set stands.
    await postSaying(t.ticket, /removal verified on the target/i, 'the verified removal on the resolved ticket');
    expect(await ticketStatus(rt, t.ticket)).toBe('resolved');
  });

  it('keeps a ticket a person resolved while its access is live resolved for the rest of the story', async () => {
    const t = await activeFromTicket('alice', 'Finance reports (read)', '1h', 'cash flow forecast update');
    await allDelivered((await desk.linkOf(t.ticket)).id);
    await setTicket(t.ticket, { Status: 'resolved' });
    await postSaying(t.ticket, /resolved while its access is still active/i, 'the note on the resolved ticket');
    // News the requester would hear as a reply (a moved end) arrives after the person closed the ticket.
    const ext = await s.call('POST', `/v1/access-requests/${t.id}/extend`, tok.alice, { durationSeconds: 7200, justification: 'the forecast runs another hour' });
    expect(ext.status, JSON.stringify(ext.body)).toBeLessThan(300);
    await postSaying(t.ticket, /Lease extended by alice/i, 'the extension on the ticket');
    expect(await ticketStatus(rt, t.ticket)).toBe('resolved');
    expect((await ticketHistory(rt, t.ticket)).filter((x) => x.Type === 'Status').at(-1)).toMatchObject({ Creator: { id: 'root' }, NewValue: 'resolved' });
  });

  it('reports live access whose ticket was deleted behind the loop\'s back, and revokes it when the policy says so', async () => {
    const t = await approvedFromTicket('alice', 'Engineering group', 'release train duty this sprint');
    await allDelivered((await desk.linkOf(t.ticket)).id);
    // Behind the loop's back: moved out of the queue its transactions leave the desk's feed; deleted
    // there; a newer event (another ticket's) moves the cursor past the deletion; moved back.
    await setTicket(t.ticket, { Queue: 'General' });
    await setTicket(t.ticket, { Status: 'deleted' });
    const later = await desk.openTicket('alice', { Justification: 'no entitlement named here' });
    await desk.linkOf(later);
    await setTicket(t.ticket, { Queue: rt.fixture.queue.name });
    expect(await ticketStatus(rt, t.ticket)).toBe('deleted');
    expect((await request(t.id)).status).toBe('active');

    await checkTickets();
    const finding = await findingOf(t.active.ticketRef, 'the finding for the deleted ticket');
    expect(finding).toMatchObject({ kind: 'ticket_closed', status: 'open', account: `${DESK}#${t.ticket}`, entitlementId: s.catalog.entitlements.engineering, identityId: s.catalog.identities.alice });
    expect((await request(t.id)).status).toBe('active');
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    try {
      await publishPolicy({ revokeWithoutTicket: true });
      await checkTickets();
      await expectRevokedAndVerified(t.id, 'engineering', 'alice', 'ticket');
      expect(await findingOf(t.active.ticketRef, 'the finding remediated', 'remediated')).toMatchObject({ id: finding.id, kind: 'ticket_closed' });
    } finally {
      await publishPolicy();
    }
  });

  it('moves the end of access with the ticket\'s Due date, within the entitlement\'s maximum', async () => {
    const { ticket, id, active } = await activeFromTicket('alice', 'Finance reports (read)', '1h', 'forecast model refresh');
    const expiresAt = async () => Date.parse((await request(id)).expiresAt);
    expect(Math.abs(Date.parse(active.expiresAt) - (Date.now() + 3600_000))).toBeLessThan(60_000);

    const later = wholeSecondsFromNow(2 * 3600_000);
    await setTicket(ticket, { Due: rtDue(later) }, 'alice');
    await waitFor(async () => Math.abs((await expiresAt()) - later.getTime()) <= 2000, 'the lease extended to the Due date');
    await postSaying(ticket, /Lease extended by alice/i, 'the extension on the ticket');

    // Beyond Finance's 30-day maximum: refused on the ticket, nothing moves.
    const tooLate = wholeSecondsFromNow(31 * 86400_000);
    await setTicket(ticket, { Due: rtDue(tooLate) }, 'alice');
    const refusal = await postSaying(ticket, /did not move the end of access/i, 'the refusal of a Due past the maximum');
    expect(refusal.text).toMatch(/Nothing was changed/);
    expect(Math.abs((await expiresAt()) - later.getTime())).toBeLessThanOrEqual(2000);

    const sooner = wholeSecondsFromNow(20_000);
    await setTicket(ticket, { Due: rtDue(sooner) }, 'alice');
    await waitFor(async () => Math.abs((await expiresAt()) - sooner.getTime()) <= 2000, 'the lease shortened to the Due date');
    expect((await request(id)).timeline.map((t: { action: string }) => t.action)).toContain('grant.shortened');

    const done = await expectRevokedAndVerified(id, 'finance-readers', 'alice', 'expired');
    // Ended at the moved end, not at the hour it was asked for.
    expect(Date.parse(done.grant.revokedAt ?? done.removalVerifiedAt) - sooner.getTime()).toBeLessThan(10_000);
    await waitFor(async () => (await ticketStatus(rt, ticket)) === 'resolved', 'the ticket resolved', 30_000, 250);
  });

  it('answers bad input mid-flight on the ticket and changes nothing it should not', async () => {
    // An entitlement edited on a pending ticket is not applied.
    const pending = await desk.openTicket('alice', { Entitlement: 'Engineering group', Duration: '1h', Justification: 'pairing on the build system' });
    const pendingId = await linkedRequest(pending);
    await awaitApprovalTask(pendingId);
    await setTicket(pending, { CustomFields: { Entitlement: 'Finance reports (read)' } });
    const notApplied = await postSaying(pending, /did not apply the change to the entitlement field/i, 'the reply to the edited entitlement');
    expect(notApplied.text).toMatch(/Nothing was changed/);
    const still = await request(pendingId);
    expect(still.entitlementId).toBe(s.catalog.entitlements.engineering);
    expect(still.status).toBe('pending_approval');

    // An unknown command.
    expect((await desk.asUser('alice', 'POST', `/ticket/${pending}/correspond`, { Content: '/grant-me now please', ContentType: 'text/plain' })).status).toBe(201);
    await postSaying(pending, /does not know the command \/grant-me/i, 'the reply to the unknown command');
    expect((await request(pendingId)).status).toBe('pending_approval');
    expect((await s.call('POST', `/v1/access-requests/${pendingId}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
    await s.waitForStatus(pendingId, ['cancelled', 'revoked'], 30_000);

    // A malformed duration is refused; corrected, the ticket is taken in.
    const soon = await desk.openTicket('alice', { Entitlement: 'Finance reports (read)', Duration: 'soon', Justification: 'ad hoc variance analysis' });
    const refused = await postSaying(soon, /could not accept this request/i, 'the refusal of the duration');
    expect(refused.text).toMatch(/duration/i);
    expect(await desk.linkOf(soon)).toMatchObject({ state: 'refused', refusal: 'malformed_field', requestId: null });
    await setTicket(soon, { CustomFields: { Duration: '1h' } });
    const fixedId = await linkedRequest(soon);
    expect(await desk.linkOf(soon)).toMatchObject({ state: 'linked', refusal: null });
    const fixed = await s.waitForStatus(fixedId, ['active']);
    expect(fixed.ticketRef).toBe(`${DESK}#${soon}`);
    expect(fixed.durationSeconds).toBe(3600);
    expect((await s.call('POST', `/v1/access-requests/${fixedId}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
    await expectRevokedAndVerified(fixedId, 'finance-readers', 'alice', 'manual');

    // A desk user who is nobody in accessloop.
    const stranger = await desk.openTicket('mallory', { Entitlement: 'Finance reports (read)', Duration: '1h', Justification: 'just looking around here' });
    await postSaying(stranger, /not an active identity in accessloop/i, 'the refusal of the unknown requester');
    expect(await desk.linkOf(stranger)).toMatchObject({ state: 'refused', refusal: 'unknown_requester', requestId: null });
    expect(await s.tdb.db.select({ id: accessRequests.id }).from(accessRequests).where(eq(accessRequests.ticketRef, `${DESK}#${stranger}`))).toEqual([]);
    expect(await ticketStatus(rt, stranger)).not.toBe('resolved');
  });

  it('holds up only the write-back of a ticket moved out of the desk\'s reach; the rest of the desk flows on', async () => {
    const t = await approvedFromTicket('alice', 'Production administrators', 'storage migration cutover');
    const link = await desk.linkOf(t.ticket);
    await allDelivered(link.id);
    await setTicket(t.ticket, { Queue: 'General' });
    try {
      // The lease never waits for the desk; its write-back waits, held for an operator.
      expect((await s.call('POST', `/v1/access-requests/${t.id}/revoke`, tok.operator, { reason: 'manual' })).status).toBe(202);
      await expectRevokedAndVerified(t.id, 'prod-admins', 'alice', 'manual');
      const other = await desk.openTicket('alice', { Entitlement: 'No such thing', Justification: 'is the desk still answering' });
      await postSaying(other, /could not accept/i, 'a refusal on another ticket while one is out of reach');
      const d = await deskView();
      expect(d.health.failingSince).toBeNull();
      expect(d.backlog.pendingWriteBacks).toBeGreaterThan(0);
      expect((await s.tdb.db.select({ id: deskOutbox.id }).from(deskOutbox).where(and(eq(deskOutbox.linkId, link.id), isNull(deskOutbox.deliveredAt)))).length).toBeGreaterThan(0);
    } finally {
      await setTicket(t.ticket, { Queue: rt.fixture.queue.name });
    }
  });

  it('reports live access whose ticket moved out of the desk\'s reach as without a ticket', async () => {
    const t = await approvedFromTicket('alice', 'Production administrators', 'database failover rehearsal');
    await allDelivered((await desk.linkOf(t.ticket)).id);
    // Another queue: the integration user may no longer see the ticket (RT answers 403).
    await setTicket(t.ticket, { Queue: 'General' });
    try {
      await checkTickets();
      expect(await findingOf(t.active.ticketRef, 'the finding for the ticket out of reach')).toMatchObject({
        kind: 'ticket_missing',
        account: `${DESK}#${t.ticket}`,
        entitlementId: s.catalog.entitlements['prod-admins'],
        identityId: s.catalog.identities.alice,
      });
      expect((await request(t.id)).status).toBe('active');
    } finally {
      await setTicket(t.ticket, { Queue: rt.fixture.queue.name });
      // The check also starts the desk's loop when it is not running (should it have ended on this).
      await checkTickets();
    }
  });
});
