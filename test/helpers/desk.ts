/**
 * The service desk's cast for e2e tests and the bench (issue 12, docs/service-desk.md): a private
 * Request Tracker 5 with the RT users a file needs, the product's stack holding the integration
 * user's token, a published policy, and the desk registered through the API with its loop
 * running. What RT holds is read back as root over REST, never through the product's adapter.
 * Free of vitest, so that the bench (run by tsx) can use it too: failures are thrown errors.
 */
import { and, eq } from 'drizzle-orm';
import { serviceDesks, ticketLinks } from '../../db/schema.js';
import { addRtUser, rtCall, startRt, type RtGroup, type RtHandle, type RtResponse } from './rt.js';
import { startStackAt, waitFor, type Stack } from './stack-core.js';

/** The ACCESSLOOP_SECRET_* variable the desk's `secretRefs.token` names: the integration user's RT token. */
export const RT_SECRET_ENV = 'ACCESSLOOP_SECRET_TEST_RT';

// ---- RT, read as root ---------------------------------------------------------------------------

/** A REST 2.0 collection page (`GET /tickets`, `/ticket/:id/history`, …); only what the tests read. */
export interface RtCollection<T> {
  count: number;
  items: T[];
}

/** A transaction as `ticketHistory` asks for it. */
export interface RtTransaction {
  id: string;
  Type: string;
  Created: string;
  Creator: { id: string };
  OldValue?: string;
  NewValue?: string;
  Field?: string;
}

/** A comment or reply on a ticket, with its transaction id and who wrote it. */
export interface RtPost {
  txn: number;
  type: string;
  creator: string;
  created: string;
  text: string;
}

/** One REST 2.0 call as root, which no product code holds: arranging and reading back only. */
export const asRoot = <T = unknown>(rt: RtHandle, method: string, route: string, body?: unknown): Promise<RtResponse<T>> => rtCall<T>(rt.restUrl, rt.adminToken, method, route, body);

async function rootGet<T>(rt: RtHandle, route: string): Promise<T> {
  const res = await asRoot<T>(rt, 'GET', route);
  if (res.status !== 200) throw new Error(`RT answered GET ${route} with ${res.status}: ${JSON.stringify(res.body)}`);
  return res.body;
}

/** The ticket's transactions, oldest first (up to 100, more than any test writes). */
export async function ticketHistory(rt: RtHandle, ticket: string): Promise<RtTransaction[]> {
  return (await rootGet<RtCollection<RtTransaction>>(rt, `/ticket/${ticket}/history?fields=Type,Created,Creator,OldValue,NewValue,Field&per_page=100`)).items;
}

/** Every comment and reply on the ticket, oldest first, with the text of all its attachments. */
export async function ticketPosts(rt: RtHandle, ticket: string): Promise<RtPost[]> {
  const out: RtPost[] = [];
  for (const t of await ticketHistory(rt, ticket)) {
    if (t.Type !== 'Comment' && t.Type !== 'Correspond') continue;
    const parts = await rootGet<RtCollection<{ Content?: string }>>(rt, `/transaction/${t.id}/attachments?fields=Content`);
    out.push({ txn: Number(t.id), type: t.Type, creator: t.Creator.id, created: t.Created, text: parts.items.map((a) => a.Content ?? '').join('\n') });
  }
  return out;
}

/** The ticket's RT status (`new`, `open`, `resolved`, `rejected`, `deleted`, …). */
export async function ticketStatus(rt: RtHandle, ticket: string): Promise<string> {
  return (await rootGet<{ Status: string }>(rt, `/ticket/${ticket}`)).Status;
}

/** RT's REST answers ISO 8601 in UTC; its database format (`YYYY-MM-DD HH:MM:SS`) is UTC too. RT keeps whole seconds. */
export const rtTime = (t: string): number => Date.parse(t.includes('T') ? t : `${t.replace(' ', 'T')}Z`);

// ---- the stack with the desk registered -----------------------------------------------------------

/** Low-risk access for oneself is approved by condition `low-self`; everything else by the entitlement's owner. */
export function lowRiskSelfServicePolicy(reconciliation?: { revokeWithoutTicket: boolean }) {
  return {
    apiVersion: 'accessloop/v1',
    ...(reconciliation ? { reconciliation } : {}),
    policies: [
      {
        name: 'default',
        stages: [{ name: 'owner', approvers: ['entitlement_owner'] }],
        conditions: [{ name: 'low-self', when: 'entitlement.risk_tier == "low" && request.self_request', effect: 'auto_approve', reason: 'low-risk self-service' }],
      },
    ],
  };
}

/** Publishes a policy document through the API (`PUT /v1/policies`) as the operator. */
export async function putPolicy(stack: Stack, policy: object): Promise<void> {
  const res = await stack.call('PUT', '/v1/policies', stack.catalog.tokens.operator!.token, JSON.stringify(policy));
  if (res.status >= 300) throw new Error(`PUT /v1/policies answered ${res.status}: ${JSON.stringify(res.body)}`);
}

export interface DeskStackOptions {
  temporalAddress: string;
  /** The desk's name, which prefixes the ticket refs of its requests (`<name>#<ticket>`). */
  name: string;
  /** RT users to add, with their fixture groups, in this order; `asUser` calls RT as them. */
  rtUsers: Record<string, RtGroup[]>;
  /** Published before the desk is registered, so that the first ticket meets it. */
  policy: object;
  /** The loop's `pollIntervalMs` (default 300, so that a test waits little for a round). */
  pollIntervalMs?: number;
  /** Extra env for the stack (startStackAt's `env`). */
  env?: Record<string, string>;
}

export type TicketLink = typeof ticketLinks.$inferSelect;

export interface DeskStack {
  rt: RtHandle;
  stack: Stack;
  deskId: string;
  /** The demo catalog's API tokens by name (operator, alice, bob, …). */
  tokens: Record<string, string>;
  /** One REST 2.0 call as a user added through `rtUsers`. */
  asUser<T = unknown>(user: string, method: string, route: string, body?: unknown): Promise<RtResponse<T>>;
  /** A ticket in the desk's queue, opened by `user` as its own requestor, with these custom fields; its id. */
  openTicket(user: string, fields: Record<string, string>, subject?: string): Promise<string>;
  /** The desk's link for the ticket, once the loop has taken the ticket in (linked or refused). */
  linkOf(ticket: string): Promise<TicketLink>;
  /** Stops the stack, then RT. */
  stop(): Promise<void>;
}

/**
 * RT, its extra users, the stack with the RT token among its secrets, the policy, and the desk
 * registered through `POST /v1/service-desks` with its loop past RT's head. On a failure it
 * stops what it started before throwing.
 */
export async function startDeskStack(opts: DeskStackOptions): Promise<DeskStack> {
  const rt = await startRt();
  let stack: Stack | undefined;
  const stop = async () => {
    try {
      await stack?.stop();
    } finally {
      await rt.stop();
    }
  };
  try {
    const rtTokens: Record<string, string> = {};
    for (const [name, groups] of Object.entries(opts.rtUsers)) rtTokens[name] = (await addRtUser(rt, name, { groups })).token;
    const s = (stack = await startStackAt({ temporalAddress: opts.temporalAddress, secrets: { [RT_SECRET_ENV]: rt.token }, env: opts.env }));
    const tokens = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
    await putPolicy(s, opts.policy);
    const desk = await s.call('POST', '/v1/service-desks', tokens.operator, {
      name: opts.name,
      kind: 'rt',
      // The ticket check runs only when asked for (POST …/check-tickets): never on its own mid-test, nor on a bench's measured paths.
      config: { url: rt.url, queue: rt.fixture.queue.name, user: rt.fixture.users.integration.name, loop: { pollIntervalMs: opts.pollIntervalMs ?? 300, ticketCheckIntervalSeconds: 3600 } },
      secretRefs: { token: RT_SECRET_ENV },
      ownerId: s.catalog.identities.carol,
    });
    if (desk.status !== 201) throw new Error(`POST /v1/service-desks answered ${desk.status}: ${JSON.stringify(desk.body)}`);
    const deskId: string = desk.body.id;
    // The loop starts from the desk's newest event: a ticket opened before it has read the head would be skipped.
    await waitFor(async () => (await s.tdb.db.select({ cursor: serviceDesks.cursor }).from(serviceDesks).where(eq(serviceDesks.id, deskId)))[0]?.cursor, 'the desk cursor', 60_000);

    const asUser = <T = unknown>(user: string, method: string, route: string, body?: unknown) => {
      const token = rtTokens[user];
      if (token === undefined) throw new Error(`no RT user ${user} in this desk stack's rtUsers`);
      return rtCall<T>(rt.restUrl, token, method, route, body);
    };
    return {
      rt,
      stack: s,
      deskId,
      tokens,
      asUser,
      async openTicket(user, fields, subject = 'Access please') {
        const res = await asUser<{ id: number }>(user, 'POST', '/ticket', {
          Queue: rt.fixture.queue.name,
          Requestor: user,
          Subject: subject,
          Content: 'Please grant the access in the fields.',
          ContentType: 'text/plain',
          CustomFields: fields,
        });
        if (res.status !== 201) throw new Error(`POST /ticket as ${user} answered ${res.status}: ${JSON.stringify(res.body)}`);
        return String(res.body.id);
      },
      linkOf: (ticket) =>
        waitFor(async () => (await s.tdb.db.select().from(ticketLinks).where(and(eq(ticketLinks.deskId, deskId), eq(ticketLinks.ticketRef, ticket))))[0], `the link of ticket ${ticket}`),
      stop,
    };
  } catch (err) {
    // The setup's failure is the one to report, not a stop that fails after it.
    await stop().catch(() => undefined);
    throw err;
  }
}
