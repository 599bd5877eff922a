/**
 * The demo's service desk: a private Request Tracker 5 under the data dir (the server the tests
 * run, activities/connectors/service-desk/rt-server.ts) and the `service_desk` row accessloop
 * follows it by. Optional like the demo directory: without RT installed the demo runs without it.
 */
import path from 'node:path';
import { sql } from 'drizzle-orm';
import { parseDeskConfig } from '../activities/connectors/service-desk/registry.js';
import { rtInstalled, startRtServer } from '../activities/connectors/service-desk/rt-server.js';
import type { Db } from '../db/client.js';
import { serviceDesks } from '../db/schema.js';

export const DEMO_DESK_NAME = 'demo-rt';
export const DEMO_RT_SECRET_ENV = 'ACCESSLOOP_SECRET_DEMO_RT';
const DEMO_RT_PORT = 8380;

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
  return { url: rt.url, deskId: row.id, requesterToken: rt.tokens.requester };
}
