import { Context } from '@temporalio/activity';
import { and, asc, eq, inArray, isNull, lte, sql } from 'drizzle-orm';
import { accessRequests, auditEvents, deskOutbox, entitlements, grants, identities, reconciliationFindings, serviceDesks, ticketLinks, type ServiceDesk as DeskRow } from '../db/schema.js';
import { appendAudit, type Tx } from './domain/audit.js';
import { parseTicketCommand, parseTicketRequest, refusalText } from './domain/desk-intake.js';
import { renderWriteBack, type WriteBackItem } from './domain/desk-writeback.js';
import { parseDeskConfig, resolveDeskSecrets, deskKinds, type DeskLoopSettings } from './connectors/service-desk/registry.js';
import type { DeskEvent, DeskTicket, ServiceDesk } from './connectors/service-desk/types.js';
import { ConnectorError } from './connectors/types.js';
import type { ActivityDeps, RequestOps } from './deps.js';

type Deps = Pick<ActivityDeps, 'db' | 'log' | 'notifier' | 'policies' | 'requests' | 'publicUrl' | 'secretEnv'>;

/** One pump activity runs this long, then returns so the workflow's history records progress. */
const PUMP_BUDGET_MS = 4 * 60_000;
const EVENTS_PER_READ = 100;
/** A desk event that fails this often for a reason that is not an outage is skipped, said on the ticket, and alerted. */
const MAX_EVENT_ATTEMPTS = 3;
const LINKS_PER_ROUND = 50;
/** Request states in which the access is, or is about to be, live: a ticket that closes then does not close the access. */
const LIVE_STATES = ['scheduled', 'granting', 'active', 'revoking', 'revocation_unverified'] as const;
const REVOCABLE_STATES = ['pending_approval', 'scheduled', 'granting', 'active'];

/** A failure that says nothing about the event itself: the desk, our database or Temporal is away. The round stops; nothing is skipped. */
function isOutage(e: unknown): boolean {
  if (e instanceof ConnectorError) return true;
  const code = (e as { code?: unknown } | null)?.code;
  if (typeof code === 'string' && (/^CONNECT|^CONNECTION_|^ECONN|^ETIMEDOUT|^EPIPE/.test(code) || ['57P01', '57P02', '57P03', '53300', '08000', '08001', '08003', '08006'].includes(code))) return true;
  // gRPC UNAVAILABLE / DEADLINE_EXCEEDED from the Temporal client
  return typeof code === 'number' && (code === 14 || code === 4);
}

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

const errorType = (e: unknown) => (e instanceof ConnectorError ? e.type : e instanceof Error ? e.name : 'Error');

/** The request's own ticket reference, as the API, the Temporal UI (TicketRef) and the audit trail show it. */
export const ticketRefOf = (deskName: string, ref: string) => `${deskName}#${ref}`;

interface OpenDesk {
  row: DeskRow;
  desk: ServiceDesk;
  loop: DeskLoopSettings;
  /**
   * Tickets read during this round. A ticket read while handling a page already holds every
   * change of that page (they happened before the read), so the field events that follow a
   * created ticket cost no further call to the desk.
   */
  seen: Map<string, DeskTicket | null>;
}

/**
 * The service desk in the loop (docs/architecture.md, "Service desk"): intake and ticket actions
 * from the desk's events after a durable cursor, write-back from the outbox the audit chain
 * fills, and the ticket check that finds live access without a current ticket.
 */
export function createServiceDeskActivities({ db, log, notifier, policies, requests, publicUrl, secretEnv }: Deps) {
  const env = secretEnv ?? process.env;

  async function openDesk(deskId: string): Promise<OpenDesk> {
    const [row] = await db.select().from(serviceDesks).where(eq(serviceDesks.id, deskId));
    if (!row) throw new ConnectorError('InvalidConfig', 'service desk not found');
    const { adapter, loop } = parseDeskConfig(row.kind, row.config);
    const desk = deskKinds[row.kind]!.create(adapter, resolveDeskSecrets(row.kind, row.secretRefs, env));
    return { row, desk, loop, seen: new Map() };
  }

  // ---- health --------------------------------------------------------------------------------

  async function markReached(d: OpenDesk): Promise<void> {
    const r = d.row;
    const stale = !r.reachedAt || Date.now() - r.reachedAt.getTime() > 10_000;
    if (!stale && !r.failingSince) return;
    const [row] = await db.update(serviceDesks).set({ reachedAt: new Date(), failingSince: null, lastErrorType: null, alertedAt: null }).where(eq(serviceDesks.id, r.id)).returning();
    if (r.failingSince) log.info({ deskId: r.id, downForMs: Date.now() - r.failingSince.getTime() }, 'service desk reachable again');
    d.row = row ?? r;
  }

  /** Records the failure; past `alertAfterSeconds` of failing, the desk's owner is alerted, once per run of failures. */
  async function markFailing(deskId: string, type: string, alertAfterSeconds: number, ownerId?: string): Promise<void> {
    const [row] = await db
      .update(serviceDesks)
      .set({ failingSince: sql`coalesce(${serviceDesks.failingSince}, now())`, lastErrorType: type })
      .where(eq(serviceDesks.id, deskId))
      .returning();
    if (!row?.failingSince || row.alertedAt) return;
    if (Date.now() - row.failingSince.getTime() < alertAfterSeconds * 1000) return;
    const since = row.failingSince.toISOString();
    log.warn({ deskId, errorType: type, since }, 'service desk unreachable past the alert threshold');
    await db.transaction((tx) =>
      appendAudit(tx, { idempotencyKey: `service-desk/${deskId}/failing/${since}`, actorType: 'workflow', actorId: 'serviceDeskWorkflow', action: 'service_desk.failing', data: { deskId, errorType: type, since } }),
    );
    await notifier.alert({ idempotencyKey: `service-desk/${deskId}/failing/${since}`, recipientIds: [ownerId ?? row.ownerId], data: { kind: 'service_desk_failing', deskId, errorType: type, since } });
    await db.update(serviceDesks).set({ alertedAt: new Date() }).where(eq(serviceDesks.id, deskId));
  }

  // ---- replies and links -----------------------------------------------------------------------

  /** Queues a reply to something the desk sent (`desk:<cursor>`, once per event), on the ticket's link, making a `refused` link when there is none. */
  async function reply(tx: Tx, deskId: string, ticketRef: string, cursor: string, text: string, refusal?: string, note = false): Promise<void> {
    const [link] = await tx
      .insert(ticketLinks)
      .values({ deskId, ticketRef, state: 'refused', refusal: refusal ?? 'not_a_request' })
      .onConflictDoUpdate({ target: [ticketLinks.deskId, ticketLinks.ticketRef], set: refusal ? { refusal: sql`case when ${ticketLinks.state} = 'refused' then ${refusal} else ${ticketLinks.refusal} end` } : { deskId } })
      .returning({ id: ticketLinks.id });
    await tx.insert(deskOutbox).values({ linkId: link!.id, source: `${note ? 'desk-note' : 'desk'}:${cursor}`, text }).onConflictDoNothing();
  }

  const replyNow = (deskId: string, ev: DeskEvent, text: string, refusal?: string) => db.transaction((tx) => reply(tx, deskId, ev.ticketRef, ev.cursor, text, refusal));
  /** An internal note: it must not reopen a ticket a person just closed. */
  const noteNow = (deskId: string, ev: DeskEvent, text: string) => db.transaction((tx) => reply(tx, deskId, ev.ticketRef, ev.cursor, text, undefined, true));

  async function linkOf(deskId: string, ticketRef: string) {
    const [row] = await db
      .select({ link: ticketLinks, request: accessRequests })
      .from(ticketLinks)
      .leftJoin(accessRequests, eq(accessRequests.id, ticketLinks.requestId))
      .where(and(eq(ticketLinks.deskId, deskId), eq(ticketLinks.ticketRef, ticketRef)));
    return row;
  }

  async function identityByUsername(username: string) {
    const [row] = await db.select({ id: identities.id, status: identities.status }).from(identities).where(eq(identities.username, username));
    return row?.status === 'active' ? row : undefined;
  }

  /** A uuid or a username (case as stored). */
  async function identityByRef(ref: string) {
    const byId = UUID.test(ref);
    const [row] = await db.select({ id: identities.id }).from(identities).where(byId ? eq(identities.id, ref) : eq(identities.username, ref));
    return row;
  }

  /** The catalog item a ticket names: its id, or its name (case-insensitive; two of the same name is ambiguous). */
  async function entitlementByRef(ref: string): Promise<{ id: string } | 'ambiguous' | undefined> {
    if (UUID.test(ref)) {
      const [row] = await db.select({ id: entitlements.id }).from(entitlements).where(eq(entitlements.id, ref));
      return row;
    }
    const rows = await db
      .select({ id: entitlements.id })
      .from(entitlements)
      .where(sql`lower(${entitlements.name}) = lower(${ref})`)
      .limit(2);
    return rows.length > 1 ? 'ambiguous' : rows[0];
  }

  /**
   * The ticket, or null when the desk has none of ours by that ref. A refusal for one ticket
   * while the queue still answers (RT: the ticket was moved to a queue we may not see) means it
   * is no longer ours; a refusal of the queue itself is the desk's problem and is thrown.
   */
  async function ticketOrGone(d: OpenDesk, ref: string): Promise<DeskTicket | null> {
    const known = d.seen.get(ref);
    if (known !== undefined) return known;
    let t: DeskTicket | null;
    try {
      t = await d.desk.ticket(ref);
    } catch (e) {
      if (!(e instanceof ConnectorError) || e.type !== 'PermissionDenied') throw e;
      await d.desk.head();
      t = null;
    }
    d.seen.set(ref, t);
    return t;
  }

  // ---- events ----------------------------------------------------------------------------------

  /** A new ticket (or a refused one whose fields changed) through the same submission rules as the API. */
  async function intake(d: OpenDesk, ops: RequestOps, ev: DeskEvent): Promise<void> {
    const deskId = d.row.id;
    const existing = await linkOf(deskId, ev.ticketRef);
    if (existing && existing.link.state !== 'refused') return; // handled before (a replayed event)
    const ticket = await ticketOrGone(d, ev.ticketRef);
    if (!ticket || ticket.state !== 'open') return;
    const refuse = (code: string, message: string) => replyNow(deskId, ev, refusalText({ code, message }), code);

    const parsed = parseTicketRequest(ticket);
    if (!parsed.ok) return replyNow(deskId, ev, refusalText(parsed.refusal), parsed.refusal.code);
    const requester = await identityByUsername(ticket.requester);
    if (!requester) return refuse('unknown_requester', 'the ticket was opened by a desk user who is not an active identity in accessloop (matched by username).');
    const ent = await entitlementByRef(parsed.value.entitlementRef);
    if (ent === 'ambiguous') return refuse('ambiguous_entitlement', 'more than one catalog item has that name; give the entitlement id instead.');
    if (!ent) return refuse('unknown_entitlement', 'no catalog item has that id or name.');
    let subjectId: string | undefined;
    if (parsed.value.subjectRef) {
      const subject = await identityByRef(parsed.value.subjectRef);
      if (!subject) return refuse('unknown_subject', 'no identity has that username or id.');
      subjectId = subject.id;
    }
    const result = await ops.submit(
      {
        requesterId: requester.id,
        subjectId,
        entitlementId: ent.id,
        durationSeconds: parsed.value.durationSeconds,
        justification: parsed.value.justification,
        ticketRef: ticketRefOf(d.row.name, ticket.ref),
        channel: `desk:${deskId}:${ev.cursor}`,
      },
      async (tx, requestId) => {
        await tx
          .insert(ticketLinks)
          .values({ deskId, ticketRef: ev.ticketRef, requestId, state: 'linked', ticketCreatedAt: ticket.createdAt })
          .onConflictDoUpdate({ target: [ticketLinks.deskId, ticketLinks.ticketRef], set: { requestId, state: 'linked', refusal: null, ticketCreatedAt: ticket.createdAt } });
      },
    );
    if (!result.ok) return refuse(result.code, result.message);
    log.info({ deskId, ticketRef: ev.ticketRef, requestId: result.value.id }, 'ticket taken in');
  }

  /** A request field edited after the request was made: never applied; the ticket is told. A refused ticket is taken in again. */
  async function fieldChanged(d: OpenDesk, ops: RequestOps, ev: DeskEvent): Promise<void> {
    const found = await linkOf(d.row.id, ev.ticketRef);
    if (!found) return;
    if (found.link.state === 'refused') return intake(d, ops, ev);
    const req = found.request;
    // The justification is evidence of why access was asked for: an edit after intake changes no access, and is not applied.
    if (found.link.state !== 'linked' || !req || ev.field === 'justification') return;
    const ticket = await ticketOrGone(d, ev.ticketRef);
    if (!ticket) return;
    const parsed = parseTicketRequest(ticket);
    const now = parsed.ok ? parsed.value : undefined;
    const ent = now ? await entitlementByRef(now.entitlementRef) : undefined;
    const subject = now?.subjectRef ? await identityByRef(now.subjectRef) : undefined;
    const sameEntitlement = ent !== undefined && ent !== 'ambiguous' && ent.id === req.entitlementId;
    const sameSubject = now?.subjectRef ? subject?.id === req.subjectId : req.subjectId === req.requesterId;
    const sameDuration = now?.durationSeconds === undefined || now.durationSeconds === req.requestedDurationSeconds;
    if (sameEntitlement && sameSubject && sameDuration) return; // the values the request was made with (RT records them after the create)
    const what = !sameEntitlement ? 'entitlement' : !sameSubject ? 'subject' : 'duration';
    const hint = what === 'duration' ? 'change the ticket\'s Due date to move the end of access' : 'open a new ticket for different access';
    await replyNow(d.row.id, ev, `accessloop did not apply the change to the ${what} field: this ticket's request was made with the earlier value and is ${req.status.replace(/_/g, ' ')}. To change it, ${hint}. Nothing was changed.`);
  }

  async function dueChanged(d: OpenDesk, ops: RequestOps, ev: DeskEvent): Promise<void> {
    const found = await linkOf(d.row.id, ev.ticketRef);
    if (found?.link.state !== 'linked' || !found.request || !ev.newValue) return;
    const actor = await identityByUsername(ev.actor);
    if (!actor) return replyNow(d.row.id, ev, 'accessloop did not move the end of access: the desk user who changed the Due date is not an active identity in accessloop. Nothing was changed.');
    const expiresAt = new Date(ev.newValue);
    if (Number.isNaN(expiresAt.getTime())) return;
    const r = await ops.setExpiry({ requestId: found.request.id, actorId: actor.id, expiresAt, justification: 'end date changed on the ticket', channel: `desk:${d.row.id}:${ev.cursor}` });
    if (!r.ok) await replyNow(d.row.id, ev, `accessloop did not move the end of access to ${expiresAt.toISOString()}: ${r.message} Nothing was changed.`);
  }

  async function statusChanged(d: OpenDesk, ops: RequestOps, ev: DeskEvent): Promise<void> {
    const found = await linkOf(d.row.id, ev.ticketRef);
    if (found?.link.state !== 'linked' || !found.request) return;
    const req = found.request;
    if ((ev.state === 'rejected' || ev.state === 'deleted') && REVOCABLE_STATES.includes(req.status)) {
      const r = await ops.revokeForTicket({ requestId: req.id, deskName: d.row.name, deskActor: ev.actor, channel: `desk:${d.row.id}:${ev.cursor}` });
      if (!r.ok && r.code !== 'not_revocable' && r.code !== 'closed') await noteNow(d.row.id, ev, `accessloop could not end this access: ${r.message}`);
      return;
    }
    if (ev.state === 'resolved' && (LIVE_STATES as readonly string[]).includes(req.status)) {
      // Not reopened (a person decided), not revoked (nobody asked): the ticket check reports it.
      await noteNow(d.row.id, ev, `Note from accessloop: this ticket was resolved while its access is still ${req.status.replace(/_/g, ' ')}. accessloop resolves it itself once removal is verified; the access remains until it expires or is revoked, and is reported as access without a current ticket.`);
    }
  }

  async function command(d: OpenDesk, ops: RequestOps, ev: DeskEvent): Promise<void> {
    const cmd = ev.text ? parseTicketCommand(ev.text) : undefined;
    if (!cmd) return;
    const deskId = d.row.id;
    if (cmd.kind === 'unknown') return replyNow(deskId, ev, `accessloop does not know the command ${cmd.word}: reply with /approve or /reject (optionally followed by a comment) on the first line. Nothing was changed.`);
    if (!d.loop.ticketDecisions) return replyNow(deskId, ev, 'Decisions from tickets are turned off for this desk: decide through the approval link or the API. Nothing was changed.');
    const found = await linkOf(deskId, ev.ticketRef);
    if (found?.link.state !== 'linked' || !found.request) return replyNow(deskId, ev, 'accessloop has no request on this ticket to decide. Nothing was changed.');
    const approver = await identityByUsername(ev.actor);
    if (!approver) return replyNow(deskId, ev, 'accessloop did not record this decision: the desk user is not an active identity in accessloop (matched by username). Nothing was changed.');
    const r = await ops.decide({ requestId: found.request.id, approverId: approver.id, decision: cmd.decision, comment: cmd.comment, channel: `desk:${deskId}:${ev.cursor}` });
    if (!r.ok) await replyNow(deskId, ev, `accessloop did not record this decision: ${r.message}${r.message.endsWith('.') ? '' : '.'} Nothing was changed.`);
  }

  async function handle(d: OpenDesk, ops: RequestOps, ev: DeskEvent): Promise<void> {
    if (ev.self) return;
    switch (ev.kind) {
      case 'created':
        return intake(d, ops, ev);
      case 'field':
        return fieldChanged(d, ops, ev);
      case 'due':
        return dueChanged(d, ops, ev);
      case 'status':
        return statusChanged(d, ops, ev);
      case 'reply':
      case 'comment':
        return command(d, ops, ev);
      default:
        return;
    }
  }

  /** An event that keeps failing for a reason that is not an outage: skipped, said on the ticket, audited and alerted, so the desk is not stuck behind it. */
  async function skipEvent(d: OpenDesk, ev: DeskEvent, err: unknown): Promise<void> {
    const type = errorType(err);
    log.error({ deskId: d.row.id, cursor: ev.cursor, kind: ev.kind, errorType: type }, 'service desk event skipped after repeated failures');
    const key = `service-desk/${d.row.id}/skipped/${ev.cursor}`;
    await db.transaction(async (tx) => {
      await reply(tx, d.row.id, ev.ticketRef, ev.cursor, 'accessloop could not process this change and has alerted its operators. Nothing was changed.', 'processing_failed');
      await appendAudit(tx, { idempotencyKey: key, actorType: 'workflow', actorId: 'serviceDeskWorkflow', action: 'service_desk.event_skipped', data: { deskId: d.row.id, cursor: ev.cursor, kind: ev.kind, errorType: type } });
    });
    await notifier.alert({ idempotencyKey: key, recipientIds: [d.row.ownerId], data: { kind: 'service_desk_event_skipped', deskId: d.row.id, cursor: ev.cursor, errorType: type } });
  }

  // ---- write-back --------------------------------------------------------------------------------

  /**
   * Posts one link's undelivered rows as one note, in order, once. The batch and its marker are
   * committed before the post, so after a crash the same batch is posted again under the same
   * marker, which the adapter finds and skips; the delivery is recorded after the post.
   */
  async function deliverLink(d: OpenDesk, linkId: string): Promise<void> {
    const batch = await db.transaction(async (tx) => {
      const [link] = await tx.select().from(ticketLinks).where(eq(ticketLinks.id, linkId)).for('update', { skipLocked: true });
      if (!link) return undefined;
      if (link.pendingMarker && link.pendingThrough) return { link, marker: link.pendingMarker, through: link.pendingThrough };
      const [last] = await tx
        .select({ id: sql<number>`max(${deskOutbox.id})`.mapWith(Number) })
        .from(deskOutbox)
        .where(and(eq(deskOutbox.linkId, linkId), isNull(deskOutbox.deliveredAt)));
      if (!last?.id) return undefined;
      const marker = `w${last.id}`;
      await tx.update(ticketLinks).set({ pendingMarker: marker, pendingThrough: last.id }).where(eq(ticketLinks.id, linkId));
      return { link, marker, through: last.id };
    });
    if (!batch) return;
    const rows = await db
      .select({ outboxId: deskOutbox.id, source: deskOutbox.source, text: deskOutbox.text, event: auditEvents })
      .from(deskOutbox)
      .leftJoin(auditEvents, eq(auditEvents.seq, deskOutbox.auditSeq))
      .where(and(eq(deskOutbox.linkId, linkId), isNull(deskOutbox.deliveredAt), lte(deskOutbox.id, batch.through)))
      .orderBy(asc(deskOutbox.id));
    const requestId = batch.link.requestId;
    const wb = renderWriteBack(rows as WriteBackItem[], {
      requestId: requestId ?? '',
      evidenceUrl: `${(publicUrl ?? 'http://localhost:3000').replace(/\/$/, '')}/v1/evidence/${requestId ?? ''}`,
      names: await namesFor(rows as WriteBackItem[], requestId),
    });
    const final = wb.state === 'resolved' || wb.state === 'rejected' ? wb.state : undefined;
    // Access a person ended by rejecting or deleting the ticket, or a ticket a person resolved
    // while its access was live: the rest of the story is said in internal notes, which change
    // no status, and the status they chose stands (a reply would reopen the ticket, and setting
    // a state would undo their decision).
    const closedByPerson = (requestId ? await revokedForTicket(requestId) : false) || (await closedOnTheDesk(linkId));
    const state = closedByPerson ? undefined : wb.state;
    const visibility = closedByPerson || rows.every((r) => r.source.startsWith('desk-note:')) ? 'internal' : wb.visibility;
    if (rows.length) {
      await d.desk.post({ ticketRef: batch.link.ticketRef, marker: batch.marker, text: wb.text, visibility, ...(state ? { state } : {}) });
    }
    await db.transaction(async (tx) => {
      await tx
        .update(deskOutbox)
        .set({ deliveredAt: new Date() })
        .where(and(eq(deskOutbox.linkId, linkId), isNull(deskOutbox.deliveredAt), lte(deskOutbox.id, batch.through)));
      await tx
        .update(ticketLinks)
        .set({
          deliveredThrough: batch.through,
          pendingMarker: null,
          pendingThrough: null,
          // A ticket a person closed first is not one accessloop resolved: kept apart for the KPIs.
          ...(final && batch.link.state === 'linked' ? { state: 'closed' as const, closedAt: new Date(), finalState: closedByPerson ? 'closed_on_desk' : final } : {}),
        })
        .where(eq(ticketLinks.id, linkId));
    });
  }

  /** A person resolved the ticket while its access was live (the loop noted it): from then on, notes only. */
  async function closedOnTheDesk(linkId: string): Promise<boolean> {
    const [row] = await db
      .select({ id: deskOutbox.id })
      .from(deskOutbox)
      .where(and(eq(deskOutbox.linkId, linkId), sql`${deskOutbox.source} like 'desk-note:%'`))
      .limit(1);
    return row !== undefined;
  }

  async function revokedForTicket(requestId: string): Promise<boolean> {
    const [row] = await db
      .select({ seq: auditEvents.seq })
      .from(auditEvents)
      .where(and(eq(auditEvents.requestId, requestId), eq(auditEvents.action, 'request.revoke_submitted'), sql`${auditEvents.data}->>'reason' = 'ticket'`))
      .limit(1);
    return row !== undefined;
  }

  /** Usernames for the identities a batch names, and the entitlement's name: the ticket reads as people would say it. */
  async function namesFor(items: WriteBackItem[], requestId: string | null): Promise<Record<string, string>> {
    const ids = new Set<string>();
    for (const i of items) {
      if (i.event?.actorType === 'identity' && UUID.test(i.event.actorId)) ids.add(i.event.actorId);
      const data = i.event?.data as { approverIds?: unknown; added?: unknown } | undefined;
      for (const list of [data?.approverIds, data?.added]) if (Array.isArray(list)) for (const a of list) if (typeof a === 'string' && UUID.test(a)) ids.add(a);
    }
    const names: Record<string, string> = {};
    if (requestId) {
      const [r] = await db
        .select({ entitlementId: entitlements.id, name: entitlements.name, subjectId: accessRequests.subjectId, requesterId: accessRequests.requesterId })
        .from(accessRequests)
        .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
        .where(eq(accessRequests.id, requestId));
      if (r) {
        names[r.entitlementId] = r.name;
        ids.add(r.subjectId).add(r.requesterId);
      }
    }
    if (ids.size) {
      for (const p of await db.select({ id: identities.id, username: identities.username }).from(identities).where(inArray(identities.id, [...ids]))) names[p.id] = p.username;
    }
    return names;
  }

  /**
   * Every link with something to post, oldest first. A ticket that refuses our post (deleted,
   * moved out of our rights) holds up only itself: its batch stays pending, visible in the
   * desk's backlog, and the owner is alerted once; the desk being away ends the round.
   */
  async function deliverAll(d: OpenDesk, stuck: Set<string>): Promise<number> {
    const links = await db
      .select({ id: deskOutbox.linkId, first: sql<number>`min(${deskOutbox.id})`.mapWith(Number) })
      .from(deskOutbox)
      .innerJoin(ticketLinks, eq(ticketLinks.id, deskOutbox.linkId))
      .where(and(eq(ticketLinks.deskId, d.row.id), isNull(deskOutbox.deliveredAt)))
      .groupBy(deskOutbox.linkId)
      .orderBy(sql`min(${deskOutbox.id})`)
      .limit(LINKS_PER_ROUND + stuck.size);
    let delivered = 0;
    for (const l of links) {
      if (stuck.has(l.id)) continue;
      Context.current().heartbeat();
      try {
        await deliverLink(d, l.id);
        delivered++;
      } catch (e) {
        if (!(e instanceof ConnectorError) || e.retryable || e.type === 'PermissionDenied' && !(await ticketRefused(d, l.id))) throw e;
        stuck.add(l.id);
        log.error({ deskId: d.row.id, linkId: l.id, errorType: e.type }, 'write-back refused by the desk; held for an operator');
        await notifier.alert({ idempotencyKey: `service-desk/${d.row.id}/writeback-refused/${l.id}/${l.first}`, recipientIds: [d.row.ownerId], data: { kind: 'service_desk_writeback_refused', deskId: d.row.id, linkId: l.id, errorType: e.type } });
      }
    }
    return delivered;
  }

  /** Whether a refusal is this ticket's (it is gone or no longer ours) rather than the whole desk's (our token lost its rights). */
  async function ticketRefused(d: OpenDesk, linkId: string): Promise<boolean> {
    const [link] = await db.select({ ticketRef: ticketLinks.ticketRef }).from(ticketLinks).where(eq(ticketLinks.id, linkId));
    if (!link) return true;
    const t = await ticketOrGone(d, link.ticketRef).catch(() => undefined);
    return t === null || t?.state === 'deleted';
  }

  // ---- the activities ----------------------------------------------------------------------------

  return {
    /**
     * One pump: rounds of (events after the cursor → handled, cursor stored after each) then
     * (outbox → posted), every `pollIntervalMs`, for a few minutes. The desk being away ends a
     * round, not the pump; after `alertAfterSeconds` of it the owner is alerted.
     */
    async pumpServiceDesk(input: { deskId: string }): Promise<{ events: number; delivered: number }> {
      const ctx = Context.current();
      const ops = requests;
      if (!ops) throw new ConnectorError('InvalidConfig', 'this worker has no request rules wired for service desks');
      const until = Date.now() + PUMP_BUDGET_MS;
      const attempts = new Map<string, number>();
      const stuck = new Set<string>();
      let events = 0;
      let delivered = 0;
      let d: OpenDesk | undefined;
      while (Date.now() < until) {
        ctx.heartbeat();
        let busy = false;
        let pollMs = d?.loop.pollIntervalMs ?? 1000;
        try {
          d ??= await openDesk(input.deskId);
          pollMs = d.loop.pollIntervalMs;
          let cursor = d.row.cursor;
          if (cursor === null) {
            // A desk starts from now: its history before registration is not replayed as requests.
            cursor = (await d.desk.head()) ?? '0';
            await db.update(serviceDesks).set({ cursor }).where(eq(serviceDesks.id, d.row.id));
            d.row = { ...d.row, cursor };
          }
          d.seen.clear();
          const page = await d.desk.events(cursor, EVENTS_PER_READ);
          for (const ev of page.events) {
            ctx.heartbeat();
            try {
              await handle(d, ops, ev);
            } catch (e) {
              if (isOutage(e)) throw e;
              const n = (attempts.get(ev.cursor) ?? 0) + 1;
              attempts.set(ev.cursor, n);
              log.warn({ deskId: d.row.id, cursor: ev.cursor, kind: ev.kind, attempt: n, errorType: errorType(e) }, 'service desk event failed');
              if (n < MAX_EVENT_ATTEMPTS) throw e;
              await skipEvent(d, ev, e);
            }
            await db.update(serviceDesks).set({ cursor: ev.cursor }).where(eq(serviceDesks.id, d.row.id));
            d.row = { ...d.row, cursor: ev.cursor };
            events++;
          }
          busy = page.events.length === EVENTS_PER_READ;
          delivered += await deliverAll(d, stuck);
          await markReached(d);
        } catch (e) {
          if (ctx.cancellationSignal.aborted) throw e;
          const type = errorType(e);
          if (!(e instanceof ConnectorError) && isOutage(e)) throw e; // our database or Temporal: the activity retry is the backoff
          log.warn({ deskId: input.deskId, errorType: type }, 'service desk round failed');
          await markFailing(input.deskId, type, d?.loop.alertAfterSeconds ?? 300, d?.row.ownerId);
          if (e instanceof ConnectorError && !e.retryable) {
            // A refused token, a bad config: re-read the row next round (an operator may fix it), slowly.
            await d?.desk.close().catch(() => undefined);
            d = undefined;
            pollMs = Math.max(pollMs, 10_000);
          }
        }
        if (!busy) await ctx.sleep(pollMs);
      }
      await d?.desk.close().catch(() => undefined);
      return { events, delivered };
    },

    async ticketCheckIntervalSeconds(input: { deskId: string }): Promise<number> {
      const [row] = await db.select({ kind: serviceDesks.kind, config: serviceDesks.config }).from(serviceDesks).where(eq(serviceDesks.id, input.deskId));
      if (!row) return 300;
      try {
        return parseDeskConfig(row.kind, row.config).loop.ticketCheckIntervalSeconds;
      } catch {
        return 300;
      }
    },

    /**
     * Reconciliation against the desk: every live lease that came from a ticket of this desk is
     * looked up there; a ticket resolved, rejected or deleted (behind the loop's back, or in an
     * event it never saw) or gone is a finding, revoked when the policy says so.
     */
    async checkDeskTickets(input: { deskId: string }): Promise<{ checked: number; findings: number; revoked: number; intervalSeconds: number }> {
      const d = await openDesk(input.deskId);
      try {
        const policy = (await policies.active()).document.reconciliation;
        const live = await db
          .select({ link: ticketLinks, requestId: accessRequests.id, status: accessRequests.status, ticketRef: accessRequests.ticketRef, subjectId: accessRequests.subjectId, entitlementId: accessRequests.entitlementId, systemId: entitlements.systemId, grantId: grants.id })
          .from(ticketLinks)
          .innerJoin(accessRequests, eq(accessRequests.id, ticketLinks.requestId))
          .innerJoin(entitlements, eq(entitlements.id, accessRequests.entitlementId))
          .leftJoin(grants, eq(grants.requestId, accessRequests.id))
          .where(and(eq(ticketLinks.deskId, d.row.id), eq(ticketLinks.state, 'linked'), inArray(accessRequests.status, [...LIVE_STATES])));
        const runId = `desk-check/${d.row.id}/${Date.now()}`;
        const seen: string[] = [];
        let findings = 0;
        let revoked = 0;
        for (const l of live) {
          Context.current().heartbeat();
          const ticket = await ticketOrGone(d, l.link.ticketRef);
          const kind = !ticket || ticket.state === 'deleted' ? (ticket ? 'ticket_closed' : 'ticket_missing') : ticket.state === 'open' ? undefined : 'ticket_closed';
          if (!kind) continue;
          findings++;
          const account = l.ticketRef ?? ticketRefOf(d.row.name, l.link.ticketRef);
          const detail = ticket ? `ticket is ${ticket.status} while access is ${l.status}` : `the desk has no such ticket while access is ${l.status}`;
          let status: 'open' | 'remediated' = 'open';
          if (policy.revokeWithoutTicket && requests && REVOCABLE_STATES.includes(l.status)) {
            const r = await requests.revokeForTicket({ requestId: l.requestId, deskName: d.row.name, deskActor: 'ticket check', channel: `${runId}/${l.requestId}` });
            if (r.ok) {
              status = 'remediated';
              revoked++;
            }
          }
          // Found (or refreshed) as open first, so a remediation closes that same finding rather than adding a second one.
          const [row] = await db
            .insert(reconciliationFindings)
            .values({ runId, systemId: l.systemId, entitlementId: l.entitlementId, kind, account, identityId: l.subjectId, grantId: l.grantId, detail, status: 'open' })
            .onConflictDoUpdate({
              target: [reconciliationFindings.entitlementId, reconciliationFindings.account, reconciliationFindings.kind],
              targetWhere: eq(reconciliationFindings.status, 'open'),
              set: { runId, detail },
            })
            .returning({ id: reconciliationFindings.id });
          if (status === 'remediated') await db.update(reconciliationFindings).set({ status, remediatedAt: new Date() }).where(eq(reconciliationFindings.id, row!.id));
          seen.push(row!.id);
        }
        // Open ticket findings of this desk that this check no longer sees were settled elsewhere.
        const prefix = `${ticketRefOf(d.row.name, '')}%`;
        await db
          .update(reconciliationFindings)
          .set({ status: 'resolved' })
          .where(
            and(
              inArray(reconciliationFindings.kind, ['ticket_closed', 'ticket_missing']),
              eq(reconciliationFindings.status, 'open'),
              sql`${reconciliationFindings.account} like ${prefix}`,
              seen.length ? sql`${reconciliationFindings.id} not in (${sql.join(seen.map((s) => sql`${s}`), sql`, `)})` : undefined,
            ),
          );
        await db.transaction((tx) =>
          appendAudit(tx, { idempotencyKey: `${runId}/done`, actorType: 'workflow', actorId: 'serviceDeskWorkflow', action: 'service_desk.tickets_checked', data: { deskId: d.row.id, checked: live.length, findings, revoked } }),
        );
        return { checked: live.length, findings, revoked, intervalSeconds: d.loop.ticketCheckIntervalSeconds };
      } finally {
        await d.desk.close().catch(() => undefined);
      }
    },
  };
}
