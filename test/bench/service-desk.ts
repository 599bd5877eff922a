/**
 * The service desk in the loop (issue 12), run by `npm run bench`, against a private Request
 * Tracker 5, the product's own runtime and slapd:
 *  1. ticket created → access verified in slapd (auto-approved), and removal verified → ticket
 *     resolved, p50/p99 over BENCH_DESK_TICKETS tickets opened a few at a time;
 *  2. a 60 s RT outage with 100 live ticket-started leases: all revoked through the API while RT
 *     is down, then the time from RT answering again until the outbox is drained, with every
 *     post checked on RT as written once.
 */
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import os from 'node:os';
import { and, eq, gt, inArray, isNotNull, isNull, max, sql } from 'drizzle-orm';
import { accessRequests, deskOutbox, grants, identities, serviceDesks, ticketLinks } from '../../db/schema.js';
import { asRoot, rtTime, startDeskStack, ticketHistory, ticketStatus, type RtCollection } from '../helpers/desk.js';
import { waitFor } from '../helpers/stack-core.js';
import { pool, summary } from './stats.js';

const TICKETS = Number(process.env.BENCH_DESK_TICKETS ?? 30);
const OUTAGE_LEASES = Number(process.env.BENCH_DESK_OUTAGE_LEASES ?? 100);
const OUTAGE_S = Number(process.env.BENCH_DESK_OUTAGE_SECONDS ?? 60);
const CONCURRENCY = 5;
const WARMUP = 1;
/** Tickets opened one at a time before the measured ones: the loop's floor when the desk is otherwise idle. */
const ALONE = 5;
/** The loop's default (activities/connectors/service-desk/registry.ts), stated rather than inherited so the section says what it measured. */
const POLL_INTERVAL_MS = 1000;
/** Long enough that every grant is verified before its lease ends, short enough to keep the section to minutes. */
const SHORT_LEASE_S = 20;
const ENTITLEMENT = 'Finance reports (read)';
const MARKER = /\[accessloop:([A-Za-z0-9._:/-]{1,200})\]/g;

const CLK_TCK = Number(execFileSync('getconf', ['CLK_TCK'], { encoding: 'utf8' }).trim());

/** CPU seconds (user + system) a process has used, from /proc: how busy the single RT process was. */
function cpuSeconds(pid: number | undefined): number {
  if (pid === undefined) throw new Error('desk bench: RT is not running');
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime 14, stime 15.
  const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(f[11]) + Number(f[12])) / CLK_TCK;
}

export async function benchServiceDesk(temporalAddress: string, say: (m: string) => void): Promise<{ section: string; summary: string }> {
  say(`service desk: private RT 5, ${TICKETS} tickets ${CONCURRENCY} at a time, then ${OUTAGE_LEASES} leases through a ${OUTAGE_S} s RT outage`);
  // Low-risk access for oneself or for a non-human identity one owns is approved by the policy:
  // one RT requester can then open tickets for many subjects, each an auto-approved lease.
  const deskStack = await startDeskStack({
    temporalAddress,
    name: 'bench-rt',
    rtUsers: { alice: ['requesters'] },
    policy: {
      apiVersion: 'accessloop/v1',
      policies: [
        {
          name: 'default',
          stages: [{ name: 'owner', approvers: ['entitlement_owner'] }],
          conditions: [
            {
              name: 'low-self-or-owned',
              when: 'entitlement.risk_tier == "low" && (request.self_request || (subject.kind == "service_account" && subject.owner_id == requester.id))',
              effect: 'auto_approve',
              reason: 'low-risk self-service',
            },
          ],
        },
      ],
    },
    pollIntervalMs: POLL_INTERVAL_MS,
    // Production timing, as the main bench stack: the test stack's 3 s verification deadline would flag slow-but-fine removals.
    env: { ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS: '300', ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS: '60' },
  });
  try {
    const { rt, stack, deskId } = deskStack;
    const db = stack.rt.db;
    const operator = deskStack.tokens.operator!;
    const alice = stack.catalog.identities.alice!;
    const integrationUser = rt.fixture.users.integration.name;

    // Service accounts owned by alice: no directory entry behind them, which groupOfNames does
    // not need (the demo slapd has no referential integrity), so the membership is real in slapd.
    const accounts = await db
      .insert(identities)
      .values(Array.from({ length: WARMUP + ALONE + TICKETS + OUTAGE_LEASES }, (_, i) => ({ kind: 'service_account' as const, username: `svc-desk-${String(i).padStart(3, '0')}`, displayName: `Desk bench account ${i}`, ownerId: alice })))
      .returning({ id: identities.id, username: identities.username });

    async function openTicket(subject: string, duration: string): Promise<{ ticket: string; sentAt: number; answeredAt: number }> {
      const sentAt = Date.now();
      const res = await deskStack.asUser<{ id: string }>('alice', 'POST', '/ticket', {
        Queue: rt.fixture.queue.name,
        Requestor: 'alice',
        Subject: 'Read access for a reporting job',
        Content: 'Please grant the access in the fields.',
        ContentType: 'text/plain',
        CustomFields: { Entitlement: ENTITLEMENT, Subject: subject, Duration: duration, Justification: 'nightly finance report export job' },
      });
      if (res.status !== 201) throw new Error(`POST /ticket: ${res.status} ${JSON.stringify(res.body)}`);
      return { ticket: String(res.body.id), sentAt, answeredAt: Date.now() };
    }

    /** Waits for the ticket's lease to be verified in slapd; returns the request and the DB timestamps. */
    async function accessVerified(ticket: string) {
      return waitFor(
        async () => {
          const [row] = await db
            .select({ requestId: ticketLinks.requestId, ticketCreatedAt: ticketLinks.ticketCreatedAt, takenInAt: ticketLinks.createdAt, state: ticketLinks.state, grantVerifiedAt: grants.grantVerifiedAt })
            .from(ticketLinks)
            .leftJoin(grants, eq(grants.requestId, ticketLinks.requestId))
            .where(and(eq(ticketLinks.deskId, deskId), eq(ticketLinks.ticketRef, ticket)));
          if (row && row.state !== 'linked' && row.state !== 'closed') throw new Error(`ticket ${ticket} was not taken in (link ${row.state})`);
          return row?.grantVerifiedAt ? row : undefined;
        },
        `ticket ${ticket}: access verified`,
        60_000,
        50,
      );
    }

    async function lifecycle(subject: string, duration: string) {
      const t = await openTicket(subject, duration);
      const v = await accessVerified(t.ticket);
      return { ...t, requestId: v.requestId!, ticketCreatedAt: v.ticketCreatedAt!.getTime(), takenInAt: v.takenInAt.getTime(), grantVerifiedAt: v.grantVerifiedAt!.getTime() };
    }

    const undelivered = async (linkIds?: string[]) =>
      db.$count(deskOutbox, and(isNull(deskOutbox.deliveredAt), linkIds ? inArray(deskOutbox.linkId, linkIds) : inArray(deskOutbox.linkId, db.select({ id: ticketLinks.id }).from(ticketLinks).where(eq(ticketLinks.deskId, deskId)))));

    // ---- 1. latency: ticket → access verified, removal verified → ticket resolved
    const sinceStart = Date.now();
    const elapsed = () => `${((Date.now() - sinceStart) / 1000).toFixed(0)} s`;
    say(`service desk: ${WARMUP} warm-up ticket, ${ALONE} one at a time, then ${TICKETS} tickets (${SHORT_LEASE_S} s leases), ${CONCURRENCY} at a time`);
    await lifecycle(accounts[0]!.username, `${SHORT_LEASE_S}s`);
    const alone: Array<Awaited<ReturnType<typeof lifecycle>>> = [];
    await pool(accounts.slice(WARMUP, WARMUP + ALONE), 1, async (a) => void alone.push(await lifecycle(a.username, `${SHORT_LEASE_S}s`)));
    const measured: Array<Awaited<ReturnType<typeof lifecycle>>> = [];
    const phase = { at: Date.now(), cpu: cpuSeconds(rt.pid()) };
    await pool(accounts.slice(WARMUP + ALONE, WARMUP + ALONE + TICKETS), CONCURRENCY, async (a) => void measured.push(await lifecycle(a.username, `${SHORT_LEASE_S}s`)));
    say(`service desk: ${TICKETS} tickets in, access verified (${elapsed()})`);
    const ids = measured.map((m) => m.requestId);
    const ended = await waitFor(
      async () => {
        const rows = await db
          .select({ requestId: ticketLinks.requestId, ticketRef: ticketLinks.ticketRef, closedAt: ticketLinks.closedAt, finalState: ticketLinks.finalState, removalVerifiedAt: grants.removalVerifiedAt })
          .from(ticketLinks)
          .innerJoin(grants, eq(grants.requestId, ticketLinks.requestId))
          .where(and(inArray(ticketLinks.requestId, ids), isNotNull(ticketLinks.closedAt), isNotNull(grants.removalVerifiedAt)));
        return rows.length === ids.length ? rows : undefined;
      },
      'every measured ticket resolved',
      SHORT_LEASE_S * 1000 + 120_000,
      100,
    );
    if (ended.some((r) => r.finalState !== 'resolved')) throw new Error('desk bench: a ticket ended other than resolved');
    const phaseBusy = (cpuSeconds(rt.pid()) - phase.cpu) / ((Date.now() - phase.at) / 1000);
    say(`service desk: ${TICKETS} tickets resolved (${elapsed()})`);
    const resolvedTxn = new Map<string, number>();
    const notes: number[] = [];
    await pool(ended, CONCURRENCY, async (r) => {
      const h = await ticketHistory(rt, r.ticketRef);
      const t = h.find((x) => x.Type === 'Status' && x.NewValue === 'resolved');
      if (!t || t.Creator.id !== integrationUser) throw new Error(`ticket ${r.ticketRef}: RT shows no resolve by ${integrationUser}`);
      resolvedTxn.set(r.requestId!, rtTime(t.Created));
      notes.push(h.filter((x) => (x.Type === 'Comment' || x.Type === 'Correspond') && x.Creator.id === integrationUser).length);
    });
    const alone1 = summary(alone.map((m) => m.grantVerifiedAt - m.sentAt));
    const aloneIn = summary(alone.map((m) => m.takenInAt - m.sentAt));
    const aloneInToAccess = summary(alone.map((m) => m.grantVerifiedAt - m.takenInAt));
    const aloneCreate = summary(alone.map((m) => m.answeredAt - m.sentAt));
    const takenIn = summary(measured.map((m) => m.takenInAt - m.sentAt));
    const inToAccess = summary(measured.map((m) => m.grantVerifiedAt - m.takenInAt));
    const notesS = summary(notes);
    const toAccess = summary(measured.map((m) => m.grantVerifiedAt - m.sentAt));
    const toAccessRt = summary(measured.map((m) => m.grantVerifiedAt - m.ticketCreatedAt));
    const createCall = summary(measured.map((m) => m.answeredAt - m.sentAt));
    const toResolved = summary(ended.map((r) => r.closedAt!.getTime() - r.removalVerifiedAt!.getTime()));
    const toResolvedRt = summary(ended.map((r) => resolvedTxn.get(r.requestId!)! - r.removalVerifiedAt!.getTime()));

    // ---- 2. the outage: 100 live leases, RT down for 60 s, every lease revoked meanwhile
    const outageAccounts = accounts.slice(WARMUP + ALONE + TICKETS);
    say(`service desk: ${OUTAGE_LEASES} ticket-started leases`);
    const t = Date.now();
    const live: Array<Awaited<ReturnType<typeof lifecycle>>> = [];
    await pool(outageAccounts, CONCURRENCY, async (a) => void live.push(await lifecycle(a.username, '1h')));
    const setupSeconds = (Date.now() - t) / 1000;
    say(`service desk: ${OUTAGE_LEASES} leases live (${elapsed()})`);
    const liveIds = live.map((l) => l.requestId);
    const links = await db.select({ id: ticketLinks.id, ticketRef: ticketLinks.ticketRef }).from(ticketLinks).where(inArray(ticketLinks.requestId, liveIds));
    const linkIds = links.map((l) => l.id);
    // The backlog measured is the outage's own: whatever was queued before it is on the tickets first.
    await waitFor(async () => (await undelivered()) === 0, 'the write-back of the live leases', 180_000, 100);
    const [before] = await db.select({ id: max(deskOutbox.id) }).from(deskOutbox);
    const lastBefore = Number(before?.id ?? 0);

    say(`service desk: RT stopped; revoking ${OUTAGE_LEASES} leases through the API`);
    await rt.stop();
    const downAt = Date.now();
    const revokeStart = Date.now();
    await pool(liveIds, 10, async (id) => {
      const r = await stack.call('POST', `/v1/access-requests/${id}/revoke`, operator, { reason: 'manual' });
      if (r.status !== 202 && r.status !== 200) throw new Error(`revoke: ${r.status} ${JSON.stringify(r.body)}`);
    });
    const revoked = await waitFor(
      async () => {
        const rows = await db
          .select({ removalVerifiedAt: grants.removalVerifiedAt })
          .from(grants)
          .innerJoin(accessRequests, eq(accessRequests.id, grants.requestId))
          .where(and(inArray(grants.requestId, liveIds), eq(grants.status, 'revoked'), isNotNull(grants.removalVerifiedAt), eq(accessRequests.status, 'revoked')));
        return rows.length === liveIds.length ? rows : undefined;
      },
      'every lease revoked and verified while RT is down',
      downAt + OUTAGE_S * 1000 - Date.now(),
      100,
    );
    const revokeSeconds = (Math.max(...revoked.map((r) => r.removalVerifiedAt!.getTime())) - revokeStart) / 1000;
    const members = await stack.ldapMembers('finance-readers');
    if (members.some((m) => /^uid=svc-desk-\d{3},/.test(m))) throw new Error('desk bench: a revoked account is still in slapd');
    // The outage is the scenario's fixed length, not a condition to wait for.
    await new Promise((r) => setTimeout(r, Math.max(0, downAt + OUTAGE_S * 1000 - Date.now())));
    const backlogRows = await undelivered(linkIds);
    const deliveredDuring = await db.$count(deskOutbox, and(gt(deskOutbox.id, lastBefore), isNotNull(deskOutbox.deliveredAt)));
    if (deliveredDuring > 0) throw new Error('desk bench: rows were marked delivered while RT was down');
    const [health] = await db.select({ failingSince: serviceDesks.failingSince, lastErrorType: serviceDesks.lastErrorType }).from(serviceDesks).where(eq(serviceDesks.id, deskId));

    say(`service desk: ${backlogRows} write-back rows queued; RT started again (${elapsed()})`);
    await rt.start();
    const upAt = Date.now();
    const cpuAtUp = cpuSeconds(rt.pid());
    const outageSeconds = (upAt - downAt) / 1000;
    await waitFor(
      async () => {
        if ((await undelivered(linkIds)) > 0) return false;
        return (await db.$count(ticketLinks, and(inArray(ticketLinks.id, linkIds), eq(ticketLinks.state, 'closed'), eq(ticketLinks.finalState, 'resolved')))) === linkIds.length;
      },
      'the outbox drained and every ticket resolved',
      300_000,
      100,
    );
    const drainBusy = (cpuSeconds(rt.pid()) - cpuAtUp) / ((Date.now() - upAt) / 1000);
    const [span] = await db
      .select({ first: sql<Date>`min(${deskOutbox.deliveredAt})`, last: sql<Date>`max(${deskOutbox.deliveredAt})` })
      .from(deskOutbox)
      .where(and(inArray(deskOutbox.linkId, linkIds), gt(deskOutbox.id, lastBefore)));
    const [closed] = await db.select({ last: sql<Date>`max(${ticketLinks.closedAt})` }).from(ticketLinks).where(inArray(ticketLinks.id, linkIds));
    const ms = (d: Date | string) => new Date(d).getTime();
    const firstDeliveryS = (ms(span!.first) - upAt) / 1000;
    const drainS = (Math.max(ms(span!.last), ms(closed!.last)) - upAt) / 1000;
    const [healthAfter] = await db.select({ failingSince: serviceDesks.failingSince }).from(serviceDesks).where(eq(serviceDesks.id, deskId));

    // What RT holds, read as root: every ticket resolved, and every marker of ours on it once.
    say(`service desk: outbox drained; reading the tickets back from RT (${elapsed()})`);
    let afterPosts = 0;
    let duplicates = 0;
    let notResolved = 0;
    const perTicket: number[] = [];
    await pool(links, CONCURRENCY, async (l) => {
      if ((await ticketStatus(rt, l.ticketRef)) !== 'resolved') notResolved++;
      const atts = await asRoot<RtCollection<{ Content?: string; Creator: { id: string }; TransactionId: { id: string } }>>(rt, 'GET', `/ticket/${l.ticketRef}/attachments?fields=Content,Creator,TransactionId&per_page=100`);
      const txnOf = new Map<string, string>();
      for (const a of atts.body.items) {
        if (a.Creator.id !== integrationUser) continue;
        for (const [, marker] of (a.Content ?? '').matchAll(MARKER)) {
          const seen = txnOf.get(marker!);
          if (seen !== undefined && seen !== a.TransactionId.id) duplicates++;
          txnOf.set(marker!, a.TransactionId.id);
        }
      }
      const after = [...txnOf.keys()].filter((m) => /^w\d+$/.test(m) && Number(m.slice(1)) > lastBefore).length;
      perTicket.push(after);
      afterPosts += after;
    });
    if (duplicates > 0 || notResolved > 0 || perTicket.some((n) => n === 0)) throw new Error(`desk bench: ${duplicates} duplicate markers, ${notResolved} tickets not resolved, ${perTicket.filter((n) => n === 0).length} tickets without an outage post`);

    const f0 = (x: number) => `${Math.round(x)} ms`;
    const f2 = (x: number) => `${x.toFixed(2)} s`;
    const per = summary(perTicket);
    const range = (a: number, b: number) => (a === b ? String(a) : `${a}–${b}`);
    return {
      summary: `desk: ticket → access verified p50 ${f0(toAccess.p50)} p99 ${f0(toAccess.p99)} (poll ${POLL_INTERVAL_MS} ms); removal verified → resolved p50 ${f0(toResolved.p50)} p99 ${f0(toResolved.p99)}; ${OUTAGE_S} s outage: ${OUTAGE_LEASES} revoked in ${f2(revokeSeconds)}, ${backlogRows} rows drained ${f2(drainS)} after RT answered, ${afterPosts} posts, 0 duplicates`,
      section: `
## Service desk: ticket → access → resolved, and a desk outage

A private Request Tracker 5.0.3 (SQLite, one process, on 127.0.0.1) is the desk of a stack of its
own (API, worker, Postgres, slapd) on the run's Temporal server. The desk loop polls RT every
**${POLL_INTERVAL_MS} ms** (the default \`loop.pollIntervalMs\`): each round reads the queue's transactions
after the stored cursor, takes new tickets in through the API's submission rules, then posts the
outbox. One RT user, alice, opens every ticket for *${ENTITLEMENT}* (low risk) over REST.
Each names as its subject a different service account that alice owns, so that one requester
can hold many leases at once. The published policy approves low-risk access for oneself or for
an owned service account automatically, so no person is in the timed path. The accounts have no
directory entry: \`groupOfNames\` does not need one, and the membership is written to slapd and read back.

**Latency.** After ${WARMUP} warm-up ticket, ${ALONE} tickets are opened one at a time, the next one once the
previous one's access is verified. Then ${TICKETS} tickets are opened ${CONCURRENCY} at a time. Each asks for a
${SHORT_LEASE_S} s lease, which then expires; the resolves are measured on the ${TICKETS}. The timestamps are:

- *ticket created*: the client's clock just before \`POST /ticket\`. RT's own \`Created\` keeps only
  whole seconds; it is in the second column.
- *access verified*: \`grant.grant_verified_at\`.
- *removal verified*: \`grant.removal_verified_at\`.
- *ticket resolved*: \`ticket_link.closed_at\`, written when the post that sets \`resolved\` has been
  accepted by RT. RT's own \`Status → resolved\` transaction time (whole seconds, so up to 1 s
  early) is in the second column.

| | n | p50 | p99 | max | from RT's clock: p50 | p99 |
|---|---:|---:|---:|---:|---:|---:|
| ticket created → access verified, one ticket at a time | ${alone1.n} | ${f0(alone1.p50)} | ${f0(alone1.p99)} | ${f0(alone1.max)} | | |
| ticket created → access verified, ${CONCURRENCY} at a time | ${toAccess.n} | ${f0(toAccess.p50)} | ${f0(toAccess.p99)} | ${f0(toAccess.max)} | ${f0(toAccessRt.p50)} | ${f0(toAccessRt.p99)} |
| of which: created → taken in (\`ticket_link.created_at\`) | ${takenIn.n} | ${f0(takenIn.p50)} | ${f0(takenIn.p99)} | ${f0(takenIn.max)} | | |
| of which: taken in → access verified | ${inToAccess.n} | ${f0(inToAccess.p50)} | ${f0(inToAccess.p99)} | ${f0(inToAccess.max)} | | |
| removal verified → ticket resolved | ${toResolved.n} | ${f0(toResolved.p50)} | ${f0(toResolved.p99)} | ${f0(toResolved.max)} | ${f0(toResolvedRt.p50)} | ${f0(toResolvedRt.p99)} |

Taken in means the loop has inserted the \`ticket_link\` row, in the request row's own transaction.
One at a time, that took ${f0(aloneIn.p50)} at p50 (max ${f0(aloneIn.max)}), and taken in → access verified
${f0(aloneInToAccess.p50)}. The \`POST /ticket\` call itself (RT's scrips and autoreply run inside it) took
${f0(aloneCreate.p50)} at p50 one at a time, and ${f0(createCall.p50)} with ${CONCURRENCY} open at a time. Each ticket received
${range(notesS.min, notesS.max)} notes from accessloop over its life: a round posts all of a ticket's undelivered rows as one
note, so a lifecycle spread over several rounds gets several notes.

**Outage.** ${OUTAGE_LEASES} leases are started from tickets in the same way, ${CONCURRENCY} at a time (${f2(setupSeconds)}), and
their write-back is left to reach the tickets. RT is then stopped for ${outageSeconds.toFixed(1)} s. During the outage,
all ${OUTAGE_LEASES} leases are revoked through the API (\`POST …/revoke\`, 10 at a time). Every lease proceeds
without the desk: all ${OUTAGE_LEASES} memberships were removed and verified **${f2(revokeSeconds)}** after the first
revoke, and \`ldapsearch\` confirms that none is left. Meanwhile the loop records the desk as failing
(\`failing_since\` ${health?.failingSince ? 'set' : 'not set'}, \`${health?.lastErrorType ?? 'none'}\`) and queues **${backlogRows}** outbox rows. None is marked delivered
while RT is down. Then RT is started again. The clock runs from the moment RT answers its
readiness check until every \`desk_outbox\` row of these tickets is delivered and every ticket is
closed \`resolved\`. Afterwards each ticket is read back from RT as root, to check that every
\`[accessloop:<marker>]\` appears in one transaction only.

| leases | revoked + verified while RT down | rows queued | RT answering → first post recorded | → outbox empty, all resolved | posts after restart | per ticket | duplicate markers |
|---:|---:|---:|---:|---:|---:|---:|---:|
| ${OUTAGE_LEASES} | ${f2(revokeSeconds)} | ${backlogRows} | ${f2(firstDeliveryS)} | **${f2(drainS)}** | ${afterPosts} | ${range(per.min, per.max)} | ${duplicates} |

After the drain, the desk's \`failing_since\` is ${healthAfter?.failingSince ? 'still set' : 'cleared'}, and ${OUTAGE_LEASES - notResolved} of ${OUTAGE_LEASES} tickets show \`resolved\` in RT.

Reading:

- **Intake.** One ticket at a time, the wait to be taken in (${f0(aloneIn.p50)} at p50) is the \`POST /ticket\`
  itself, half a poll interval of ${POLL_INTERVAL_MS} ms on average, and the round's reads. With ${CONCURRENCY} open at a time,
  taken in → access verified stays at ${f0(inToAccess.p50)}, but the wait to be taken in grows to ${f0(takenIn.p50)}, which is
  ${(takenIn.p50 / POLL_INTERVAL_MS).toFixed(1)}× the poll interval. RT serves one call at a time, so its calls wait for each other. The
  requester's \`POST /ticket\` shows this (${f0(aloneCreate.p50)} → ${f0(createCall.p50)}), and every call of the loop waits in the
  same queue. A round is also serial: the transaction search; a \`GET\` of each new ticket, and of each
  ticket whose custom-field transactions RT records after the create; the text of each note; then
  each post with its marker read-back. So under load, the wait is the length of the loop's round on
  a shared RT, and the poll interval is the smaller part of it. Over that phase, the RT process used
  ${(phaseBusy * 100).toFixed(0)}% of one core (its CPU seconds over wall seconds, from /proc). The ${os.cpus().length} cores are shared with
  Postgres, Temporal and the Node process.
- **Resolve.** The resolve is posted in the first round that starts after the removal is verified.
  Posts go oldest backlog first, so with tickets still arriving it queues behind their notes in the same way.
- **Outage.** The outage costs the leases nothing, because they never call the desk. After the restart,
  the rows of each ticket (${backlogRows} in all) went out together, as one note under one marker
  (${range(per.min, per.max)} per ticket). The ${afterPosts} posts took ${f2(drainS)}, with RT at ${(drainBusy * 100).toFixed(0)}% of one core. Each post
  is a reply to the requester that also sets \`resolved\`; a round delivers up to 50 tickets.
`,
    };
  } finally {
    await deskStack.stop();
  }
}
