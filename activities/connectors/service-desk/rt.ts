/**
 * Request Tracker 5 as the service desk, over REST 2.0 (docs/rt.md has the shapes this relies
 * on, observed on the private RT of the tests).
 *
 * - Events are the queue's ticket transactions in id order (TransactionSQL `id > N`): ids never
 *   repeat and never go back, so the transaction id is the cursor.
 * - Writes are comments (internal) and correspondence (requester), each ending in a marker line
 *   `[accessloop:<marker>]`. Before posting, the integration user's own earlier posts on the
 *   ticket are searched for it; only its own count, so a requester who types a marker can not
 *   suppress a write-back.
 * - RT answers 200/201 with a list of messages, one per change, and a refused change is just a
 *   message. Every status change is checked in that list; a refusal is an error, never "ok".
 *   The messages are RT's English: the integration user must keep RT's default language, or
 *   every status change fails loudly as an unrecognised answer.
 */
import { z } from 'zod';
import { ConnectorError } from '../types.js';
import { createDeskHttp } from './http.js';
import {
  REFUSALS,
  STATUS_CHANGED,
  STATUS_UNCHANGED,
  attachmentsSchema,
  errorSchema,
  htmlToText,
  isoOfDbDate,
  messagesSchema,
  queueSchema,
  restBase,
  rtDate,
  sqlString,
  ticketSchema,
  txnPageSchema,
  type Txn,
} from './rt-rest.js';
import { DESK_EVENT_TEXT_MAX, DESK_FIELD_KEYS, type DeskEvent, type DeskFieldKey, type DeskPost, type DeskState, type DeskTicket, type ServiceDesk } from './types.js';

const deskStates = ['open', 'resolved', 'rejected', 'deleted'] as const;
const fieldName = z.string().min(1).max(200);
const rtStatus = z.string().regex(/^[a-z][a-z0-9 _-]{0,63}$/, 'an RT status is a lower-case word');

export const rtServiceDeskConfigSchema = z.strictObject({
  /** RT's base URL (http://rt.example or http://rt.example/rt with a WebPath); REST 2.0 lives under it. */
  url: z
    .string()
    .regex(/^https?:\/\/[^\s/?#@]+(\/[^\s?#]*)?$/i, 'url must be http(s)://host[:port][/webpath], without credentials, query or fragment'),
  /** Queue name. */
  queue: z.string().min(1).max(200),
  /** The integration's own RT username (its posts are `self`, its markers are searched). */
  user: z.string().min(1).max(200),
  timeoutMs: z.number().int().min(100).max(120_000).default(10_000),
  /** Names of the ticket custom fields holding the request, where they differ from the defaults. */
  fieldNames: z.strictObject({ entitlement: fieldName, subject: fieldName, duration: fieldName, justification: fieldName }).partial().default({}),
  /** RT status written for each state, for queues whose lifecycle names them differently. */
  statuses: z.strictObject({ open: rtStatus, resolved: rtStatus, rejected: rtStatus }).partial().default({}),
  /** More RT statuses and the state each stands for (a custom lifecycle). */
  states: z.record(rtStatus, z.enum(deskStates)).default({}),
});

export type RtServiceDeskConfig = z.input<typeof rtServiceDeskConfigSchema>;
export type RtServiceDeskOptions = RtServiceDeskConfig & { /** An API token of `user` (Authorization: token …). */ token: string };

const DEFAULT_FIELD_NAMES: Record<DeskFieldKey, string> = { entitlement: 'Entitlement', subject: 'Subject', duration: 'Duration', justification: 'Justification' };
const DEFAULT_STATES: Record<string, DeskState> = { new: 'open', open: 'open', stalled: 'open', resolved: 'resolved', rejected: 'rejected', deleted: 'deleted' };
/** RT's own user for scrips (the reopen on correspond). */
const RT_SYSTEM = 'RT_System';
const MARKER = /^[A-Za-z0-9][A-Za-z0-9._:/-]{0,199}$/;
const MARKER_LINE = /^\[accessloop:([A-Za-z0-9][A-Za-z0-9._:/-]{0,199})\]$/;
const POST_TEXT_MAX = 100_000;
const PAGE = 100;
/** Tickets whose marker scan is remembered; a forgotten one is scanned again, from the start. */
const MARKER_CACHE_TICKETS = 1000;
const TXN_FIELDS = 'Type,ObjectId,Creator,Field,OldValue,NewValue,Created';

interface QueueInfo {
  id: string;
  /** custom field id → the request field it holds */
  keyById: Map<string, DeskFieldKey>;
}

function capText(text: string): string | undefined {
  const chars = Array.from(text.trim());
  return chars.length === 0 ? undefined : chars.slice(0, DESK_EVENT_TEXT_MAX).join('');
}

function ticketId(ref: string): string {
  if (typeof ref !== 'string' || !/^[1-9]\d{0,15}$/.test(ref)) throw new ConnectorError('InvalidInput', 'RT ticket ref must be a positive integer');
  return ref;
}

export function createRtServiceDesk(options: RtServiceDeskOptions): ServiceDesk {
  const { token, ...config } = options;
  const parsed = rtServiceDeskConfigSchema.safeParse(config);
  if (!parsed.success) throw new ConnectorError('InvalidConfig', `invalid RT service desk config: ${z.prettifyError(parsed.error)}`);
  const cfg = parsed.data;
  if (typeof token !== 'string' || !token) throw new ConnectorError('InvalidConfig', 'RT token is empty');

  const http = createDeskHttp({ baseUrl: restBase(cfg.url), desk: 'RT', headers: { Authorization: `token ${token}` }, timeoutMs: cfg.timeoutMs, secrets: [token] });
  const fieldNames = { ...DEFAULT_FIELD_NAMES, ...cfg.fieldNames };
  const statusFor: Record<Exclude<DeskState, 'deleted'>, string> = { open: 'open', resolved: 'resolved', rejected: 'rejected', ...cfg.statuses };
  const stateOf: Record<string, DeskState> = { ...DEFAULT_STATES, ...cfg.states };
  for (const [state, status] of Object.entries(statusFor)) stateOf[status] ??= state as DeskState;
  const self = cfg.user.toLowerCase();
  const isSelf = (name: string | undefined) => name?.toLowerCase() === self;

  let closed = false;
  let queueInfo: Promise<QueueInfo> | undefined;
  const markerScans = new Map<string, { scanned: number; markers: Map<string, number> }>();

  const assertOpen = () => {
    if (closed) throw new ConnectorError('InvalidConfig', 'RT service desk adapter is closed');
  };

  const parse = <T>(schema: z.ZodType<T>, body: unknown, what: string): T => {
    const r = schema.safeParse(body);
    if (!r.success) throw new ConnectorError('InvalidConfig', `RT ${what}: the answer does not have the REST 2.0 shape expected`);
    return r.data;
  };

  /** The queue's id and custom field ids, read once: accessloop sees the fields only through the queue. */
  const loadQueue = async (): Promise<QueueInfo> => {
    const what = 'read the queue';
    // RT answers 403 for a queue that does not exist as for one the user may not see.
    const res = await http.call('GET', `/queue/${encodeURIComponent(cfg.queue)}`, { what, accept: [403, 404] });
    if (res.status !== 200) throw new ConnectorError('InvalidConfig', `RT ${what}: HTTP ${res.status}, no such queue or no SeeQueue right (option queue)`);
    const q = parse(queueSchema, res.body, what);
    const idByName = new Map(q.TicketCustomFields.map((cf) => [cf.name, cf.id]));
    const keyById = new Map<string, DeskFieldKey>();
    for (const key of DESK_FIELD_KEYS) {
      const id = idByName.get(fieldNames[key]);
      if (!id) throw new ConnectorError('InvalidConfig', `RT queue has no ticket custom field named ${JSON.stringify(fieldNames[key])} (option fieldNames.${key})`);
      keyById.set(id, key);
    }
    return { id: q.id, keyById };
  };
  const queue = (): Promise<QueueInfo> => {
    if (!queueInfo) {
      const loading = loadQueue();
      queueInfo = loading;
      // A failed read (RT down) is not remembered: the next call asks again.
      loading.catch(() => {
        if (queueInfo === loading) queueInfo = undefined;
      });
    }
    return queueInfo;
  };

  const searchTransactions = async (query: string, perPage: number, order: 'ASC' | 'DESC', fields: string, what: string): Promise<Txn[]> => {
    const route = `/transactions?query=${encodeURIComponent(query)}&orderby=id&order=${order}&per_page=${perPage}&page=1&fields=${fields}`;
    return parse(txnPageSchema, (await http.call('GET', route, { what })).body, what).items;
  };

  /** The text of a transaction: its first text/plain part, else its first text/html part as text. */
  const contentOf = async (txnId: string): Promise<string> => {
    const what = `read transaction ${txnId}`;
    const res = await http.call('GET', `/transaction/${txnId}/attachments?fields=Content,ContentType&orderby=id&per_page=${PAGE}`, { what });
    const parts = parse(attachmentsSchema, res.body, what).items;
    const plain = parts.find((a) => a.ContentType?.toLowerCase().startsWith('text/plain') && a.Content?.trim());
    if (plain?.Content) return plain.Content;
    const html = parts.find((a) => a.ContentType?.toLowerCase().startsWith('text/html') && a.Content?.trim());
    return html?.Content ? htmlToText(html.Content) : '';
  };

  const toEvent = async (t: Txn, q: QueueInfo): Promise<DeskEvent> => {
    const values = (field: string) => ({ field, ...(t.OldValue ? { oldValue: t.OldValue } : {}), ...(t.NewValue ? { newValue: t.NewValue } : {}) });
    const actor = t.Creator?.id ?? '';
    const base = { cursor: t.id, ticketRef: t.ObjectId ?? '', actor, at: rtDate(t.Created) ?? new Date(0), self: isSelf(actor) };
    const withText = async (kind: 'created' | 'reply' | 'comment'): Promise<DeskEvent> => {
      const text = capText(await contentOf(t.id));
      return { ...base, kind, ...(text === undefined ? {} : { text }) };
    };
    switch (t.Type) {
      case 'Create':
        return withText('created');
      case 'Correspond':
        return withText('reply');
      case 'Comment':
        return withText('comment');
      case 'Status': {
        const state = t.NewValue ? stateOf[t.NewValue] : undefined;
        return { ...base, kind: 'status', ...values('status'), ...(state ? { state } : {}) };
      }
      case 'CustomField':
        return { ...base, kind: 'field', ...values(q.keyById.get(t.Field ?? '') ?? `customfield ${t.Field ?? ''}`) };
      default:
        if (t.Type === 'Set' && t.Field === 'Due') {
          const [oldValue, newValue] = [isoOfDbDate(t.OldValue), isoOfDbDate(t.NewValue)];
          return { ...base, kind: 'due', field: 'due', ...(oldValue ? { oldValue } : {}), ...(newValue ? { newValue } : {}) };
        }
        return { ...base, kind: 'other', ...values(t.Field ? `${t.Type}:${t.Field}` : t.Type) };
    }
  };

  /**
   * The queue's ticket transactions that the integration user can see. RT pages in SQL and drops
   * what the user may not see afterwards, so a page can come back short, or empty, with more
   * behind it. The query leaves out in SQL what these rights hide (docs/rt.md): mail records
   * (ShowOutgoingEmail is not granted; RT writes one for nearly every autoreply) and changes of
   * custom fields other than the request's. A short page then means the end.
   */
  const queueClause = (q: QueueInfo) =>
    `ObjectType = 'RT::Ticket' AND TicketQueue = ${Number(q.id)} AND Type != 'EmailRecord' AND Type != 'CommentEmailRecord'` +
    ` AND (Type != 'CustomField' OR ${[...q.keyById.keys()].map((id) => `Field = ${sqlString(id)}`).join(' OR ')})`;

  /** The id of the integration user's own transaction on the ticket that carries the marker. */
  const findMarker = async (id: string, marker: string): Promise<number | undefined> => {
    const scan = markerScans.get(id) ?? { scanned: 0, markers: new Map<string, number>() };
    markerScans.delete(id);
    markerScans.set(id, scan);
    if (markerScans.size > MARKER_CACHE_TICKETS) markerScans.delete(markerScans.keys().next().value as string);
    if (scan.markers.has(marker)) return scan.markers.get(marker);
    const mine = `ObjectType = 'RT::Ticket' AND ObjectId = ${id} AND (Type = 'Comment' OR Type = 'Correspond') AND Creator = ${sqlString(cfg.user)}`;
    for (;;) {
      const page = await searchTransactions(`${mine} AND id > ${scan.scanned}`, PAGE, 'ASC', 'Type', `history of ticket ${id}`);
      for (const t of page) {
        for (const line of (await contentOf(t.id)).split(/\r?\n/)) {
          const m = MARKER_LINE.exec(line.trim());
          if (m?.[1] && !scan.markers.has(m[1])) scan.markers.set(m[1], Number(t.id));
        }
        scan.scanned = Number(t.id);
      }
      if (page.length < PAGE) return scan.markers.get(marker);
    }
  };

  /** Throws unless RT's message for a status change says the ticket is now in `wanted`. */
  const checkStatusAnswer = (message: string | undefined, wanted: string, what: string): void => {
    const changed = message === undefined ? null : STATUS_CHANGED.exec(message);
    if (changed && changed[2] === wanted) return;
    const unchanged = message === undefined ? null : STATUS_UNCHANGED.exec(message);
    if (unchanged && unchanged[1] === wanted && unchanged[2] === wanted) return;
    const refusal = REFUSALS.find(([re]) => message !== undefined && re.test(message));
    throw new ConnectorError(refusal?.[1] ?? 'InvalidInput', `RT ${what}: status ${wanted} refused (${refusal?.[2] ?? 'unrecognised answer'})`);
  };

  /**
   * A repeated post whose first call could not set the status (refused, then the right was
   * granted) sets it now, unless a person changed the status after the post: their word stands.
   */
  const completeStatus = async (id: string, wanted: string, markerTxn: number): Promise<void> => {
    const current = await readTicket(id);
    if (!current || current.Status === wanted) return;
    const later = await searchTransactions(`ObjectType = 'RT::Ticket' AND ObjectId = ${id} AND Type = 'Status' AND id > ${markerTxn}`, PAGE, 'ASC', 'Creator', `history of ticket ${id}`);
    if (later.some((t) => !isSelf(t.Creator?.id) && t.Creator?.id !== RT_SYSTEM)) return;
    const what = `status of ticket ${id}`;
    const messages = parse(messagesSchema, (await http.call('PUT', `/ticket/${id}`, { what, body: { Status: wanted } })).body, what);
    // REST 2.0 answers an empty list when the value was already the one asked for.
    if (messages.length > 0) checkStatusAnswer(messages.at(-1), wanted, what);
  };

  const readTicket = async (id: string) => {
    const what = `read ticket ${id}`;
    const res = await http.call('GET', `/ticket/${id}`, { what, accept: [404] });
    return res.status === 404 ? null : parse(ticketSchema, res.body, what);
  };

  /** RT answers a comment on a ticket the user may not see, or that does not exist, with 400 "Permission Denied". */
  const refusedPost = async (id: string, what: string, body: unknown): Promise<ConnectorError> => {
    if (errorSchema.safeParse(body).data?.message !== 'Permission Denied') return new ConnectorError('InvalidInput', `RT ${what}: refused (HTTP 400)`);
    if ((await readTicket(id)) === null) return new ConnectorError('NoSuchResource', `RT ticket ${id} not found`);
    return new ConnectorError('PermissionDenied', `RT ${what}: refused (permission denied)`);
  };

  const validatePost = (p: DeskPost): { id: string; status?: string } => {
    const id = ticketId(p.ticketRef);
    if (typeof p.marker !== 'string' || !MARKER.test(p.marker)) throw new ConnectorError('InvalidInput', 'post marker must be 1-200 letters, digits or . _ : / -');
    if (typeof p.text !== 'string' || !p.text.trim()) throw new ConnectorError('InvalidInput', 'post text is empty');
    if (p.text.length > POST_TEXT_MAX) throw new ConnectorError('InvalidInput', `post text is longer than ${POST_TEXT_MAX} characters`);
    if (p.visibility !== 'internal' && p.visibility !== 'requester') throw new ConnectorError('InvalidInput', 'post visibility must be internal or requester');
    if (p.state === undefined) return { id };
    if (!Object.hasOwn(statusFor, p.state)) throw new ConnectorError('InvalidInput', 'post state must be open, resolved or rejected');
    return { id, status: statusFor[p.state] };
  };

  return {
    kind: 'rt',

    async events(cursor, limit) {
      assertOpen();
      if (cursor !== null && (typeof cursor !== 'string' || !/^\d{1,16}$/.test(cursor))) throw new ConnectorError('InvalidInput', 'RT cursor must be a transaction id');
      if (!Number.isInteger(limit) || limit < 1 || limit > 1000) throw new ConnectorError('InvalidInput', 'events limit must be an integer from 1 to 1000');
      const q = await queue();
      const events: DeskEvent[] = [];
      let last = cursor ?? '0';
      while (events.length < limit) {
        const perPage = Math.min(PAGE, limit - events.length);
        const page = await searchTransactions(`${queueClause(q)} AND id > ${Number(last)}`, perPage, 'ASC', TXN_FIELDS, 'transactions search');
        for (const t of page) {
          events.push(await toEvent(t, q));
          last = t.id;
        }
        if (page.length < perPage) break;
      }
      return { events, next: events.length > 0 ? last : cursor };
    },

    async head() {
      assertOpen();
      const [newest] = await searchTransactions(queueClause(await queue()), 1, 'DESC', 'Type', 'transactions search');
      return newest?.id ?? null;
    },

    async ticket(ref) {
      assertOpen();
      const id = ticketId(ref);
      const q = await queue();
      const t = await readTicket(id);
      if (!t) return null;
      const state = stateOf[t.Status];
      if (!state) throw new ConnectorError('InvalidConfig', `RT ticket ${t.id} has status ${JSON.stringify(t.Status)}, which no desk state stands for (option states)`);
      const fields: DeskTicket['fields'] = {};
      for (const cf of t.CustomFields) {
        const key = q.keyById.get(cf.id);
        const value = cf.values?.[0];
        if (key && value) fields[key] = value;
      }
      const createdAt = rtDate(t.Created) ?? new Date(0);
      return {
        ref: t.id,
        status: t.Status,
        state,
        requester: t.Creator.id,
        title: t.Subject ?? '',
        fields,
        due: rtDate(t.Due),
        createdAt,
        updatedAt: rtDate(t.LastUpdated) ?? createdAt,
      };
    },

    async post(p) {
      assertOpen();
      const { id, status } = validatePost(p);
      const found = await findMarker(id, p.marker);
      if (found !== undefined) {
        if (status) await completeStatus(id, status, found);
        return { posted: false };
      }
      const verb = p.visibility === 'internal' ? 'comment' : 'correspond';
      const what = `${verb} on ticket ${id}`;
      const body = { Content: `${p.text.trimEnd()}\n\n[accessloop:${p.marker}]`, ContentType: 'text/plain', ...(status ? { Status: status } : {}) };
      const res = await http.call('POST', `/ticket/${id}/${verb}`, { what, body, accept: [400] });
      if (res.status === 400) throw await refusedPost(id, what, res.body);
      const txn = /\/transaction\/(\d+)$/.exec(res.location ?? '')?.[1];
      if (txn) markerScans.get(id)?.markers.set(p.marker, Number(txn));
      // The text is in: a refused status now is the one thing a repeated post completes.
      if (status) checkStatusAnswer(parse(messagesSchema, res.body, what).at(-1), status, `${what} (posted)`);
      return { posted: true };
    },

    async hasMarker(ticketRef, marker) {
      assertOpen();
      const id = ticketId(ticketRef);
      if (typeof marker !== 'string' || !MARKER.test(marker)) throw new ConnectorError('InvalidInput', 'post marker must be 1-200 letters, digits or . _ : / -');
      return (await findMarker(id, marker)) !== undefined;
    },

    async close() {
      closed = true;
    },
  };
}
