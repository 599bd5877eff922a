/**
 * The demo's service desk: a private Request Tracker 5 under the data dir (the server the tests
 * run, activities/connectors/service-desk/rt-server.ts), the `service_desk` row accessloop
 * follows it by, and RT users for the demo's people, so a person can sign in and open a ticket.
 * Optional like the demo directory: without RT installed the demo runs without it.
 */
import { randomBytes } from 'node:crypto';
import { readFile, rename, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { z } from 'zod';
import { parseDeskConfig } from '../activities/connectors/service-desk/registry.js';
import { ensureRtUser, rtInstalled, startRtServer, type RtGroupKey, type RtServer } from '../activities/connectors/service-desk/rt-server.js';
import type { Db } from '../db/client.js';
import { serviceDesks } from '../db/schema.js';
import type { DemoCatalog } from './demo-catalog.js';

export const DEMO_DESK_NAME = 'demo-rt';
export const DEMO_RT_SECRET_ENV = 'ACCESSLOOP_SECRET_DEMO_RT';
const DEMO_RT_PORT = 8380;
/** In `<dataDir>/rt`: the demo people's RT passwords, made once, kept across restarts. */
export const DEMO_RT_USERS_FILE = 'demo-users.json';

/**
 * RT users named like the demo identities, because the loop maps a ticket's creator and a
 * reply's author to an identity by username: alice and dave open requests, bob (owner of the
 * demo entitlements) and carol (manager) answer them.
 */
const DEMO_RT_USERS: ReadonlyArray<{ name: keyof DemoCatalog['identities']; groups: RtGroupKey[] }> = [
  { name: 'alice', groups: ['requesters'] },
  { name: 'bob', groups: ['approvers'] },
  { name: 'carol', groups: ['approvers'] },
  { name: 'dave', groups: ['requesters'] },
];

export interface DemoDeskOptions {
  /** The demo's data dir; RT keeps its database, tokens and logs in `<dataDir>/rt` across restarts. */
  dataDir: string;
  db: Db;
  /** Identity that owns the desk row. */
  ownerId: string;
  /** Receives the integration user's token under ACCESSLOOP_SECRET_DEMO_RT, which the desk row references. */
  env: Record<string, string | undefined>;
  say: (m: string) => void;
  /** RT's stop is pushed here once it runs. */
  stops: Array<() => Promise<void>>;
  /** Port on 127.0.0.1; 8380 when free, else a free one, when omitted. */
  port?: number;
}

export interface DemoDesk {
  /** RT's base URL (web UI and REST 2.0 under /REST/2.0). */
  url: string;
  deskId: string;
  /** Token of RT's `requester`, who may open tickets in the queue: for the README's curl. */
  requesterToken?: string;
  /** The demo people's RT sign-ins (web UI and REST basic auth); empty when they could not be set up. */
  users: DemoRtUser[];
  /** Where the passwords are kept (0600), for the line that points a person at them. */
  usersFile: string;
}

export interface DemoRtUser {
  name: string;
  password: string;
  groups: RtGroupKey[];
}

/** Starts the demo RT and registers it as desk `demo-rt`; undefined, with a note, when RT is not installed or does not start. */
export async function startDemoDesk(opts: DemoDeskOptions): Promise<DemoDesk | undefined> {
  const { say } = opts;
  if (!rtInstalled()) {
    say('demo service desk not started: Request Tracker 5 is not installed (bash temporal/provision.sh --for test installs it)');
    return undefined;
  }
  const dataDir = path.join(path.resolve(opts.dataDir), 'rt');
  say('starting the demo service desk (Request Tracker 5 on 127.0.0.1)');
  const rt = await startRtServer({ dataDir, ...(opts.port !== undefined ? { port: opts.port } : { preferredPort: DEMO_RT_PORT }), say }).catch((e: unknown) => {
    // Without the log lines the error carries: those stay in the file.
    say(`demo service desk not started: ${(e as Error).message.split(/; last log lines:|\n/)[0]} (log: ${path.join(dataDir, 'rt.log')})`);
    return undefined;
  });
  if (!rt) return undefined;
  opts.stops.push(() => rt.stop());
  opts.env[DEMO_RT_SECRET_ENV] = rt.tokens.integration;

  const config = { url: rt.url, queue: rt.fixture.queue.name, user: rt.fixture.users.integration.name, loop: { pollIntervalMs: 1000 } };
  // The same check a desk registered over the API gets: a config the loop could not run fails here.
  parseDeskConfig('rt', config);
  // Idempotent by the unique name. RT's port may differ between starts (8380 taken), so an
  // existing row gets the current URL and keeps the rest of its config as it was.
  const [row] = await opts.db
    .insert(serviceDesks)
    .values({ name: DEMO_DESK_NAME, kind: 'rt', config, secretRefs: { token: DEMO_RT_SECRET_ENV }, ownerId: opts.ownerId })
    .onConflictDoUpdate({ target: serviceDesks.name, set: { config: sql`jsonb_set(${serviceDesks.config}, '{url}', to_jsonb(${rt.url}::text))` } })
    .returning({ id: serviceDesks.id });
  if (!row) throw new Error(`service desk ${DEMO_DESK_NAME} was neither inserted nor updated`);
  say(`demo service desk: ${rt.url} (queue "${rt.fixture.queue.name}")`);
  const usersFile = path.join(dataDir, DEMO_RT_USERS_FILE);
  // Without people to sign in the desk still works for tickets opened over REST: a note, not a failed demo.
  const users = await ensureDemoRtUsers(rt, usersFile).catch((e: unknown) => {
    say(`demo RT users not set up: ${(e as Error).message}`);
    return [];
  });
  return { url: rt.url, deskId: row.id, requesterToken: rt.tokens.requester, users, usersFile };
}

const usersFileSchema = z.object({ users: z.record(z.string(), z.object({ password: z.string().min(1) })) });

/** What an earlier start kept; a missing or unreadable file means new passwords, which are then set. */
async function readSavedUsers(usersFile: string): Promise<z.infer<typeof usersFileSchema> | undefined> {
  try {
    return usersFileSchema.parse(JSON.parse(await readFile(usersFile, 'utf8')));
  } catch {
    return undefined;
  }
}

/**
 * The demo people as RT users, each with a password made on first start and read from
 * `usersFile` after. RT is arranged before the file is written, so a start that dies in between
 * makes new passwords next time and sets them on the users it already made.
 */
async function ensureDemoRtUsers(rt: RtServer, usersFile: string): Promise<DemoRtUser[]> {
  const saved = await readSavedUsers(usersFile);
  const users: DemoRtUser[] = [];
  for (const u of DEMO_RT_USERS) {
    const password = saved?.users[u.name]?.password ?? randomBytes(18).toString('base64url');
    await ensureRtUser(rt, u.name, { groups: u.groups, password });
    users.push({ name: u.name, password, groups: u.groups });
  }
  const groupName = (g: RtGroupKey) => (g === 'requesters' ? rt.fixture.requestersGroup.name : rt.fixture.approversGroup.name);
  const file = {
    url: rt.url,
    queue: rt.fixture.queue.name,
    users: Object.fromEntries(users.map((u) => [u.name, { password: u.password, groups: u.groups.map(groupName) }])),
  };
  const tmp = `${usersFile}.${process.pid}`;
  await writeFile(tmp, `${JSON.stringify(file, null, 2)}\n`, { mode: 0o600 });
  await rename(tmp, usersFile);
  return users;
}
