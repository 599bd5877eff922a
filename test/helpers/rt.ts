/**
 * The private Request Tracker 5 of the tests (docs/rt.md): the server the demo also runs
 * (activities/connectors/service-desk/rt-server.ts), on a temp dir unless told otherwise, with
 * the tokens under the names the tests use, a REST 2.0 call, and more users for a test's cast.
 */
import { mkdtemp } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { ensureRtUser, RT_FIELDS, RT_NOT_INSTALLED, startRtServer, type RtFieldName, type RtFixture, type RtGroupKey, type RtServer } from '../../activities/connectors/service-desk/rt-server.js';

export { RT_FIELDS, RT_NOT_INSTALLED, type RtFieldName, type RtFixture };

export interface StartRtOptions {
  /** Holds the site config, rt.sqlite, tokens, logs; a temp dir when omitted. Reused as is when it already has a database. */
  dataDir?: string;
  /** Port on 127.0.0.1; a free one is picked when omitted. */
  port?: number;
  /** Progress lines (building the template, an RT a killed run left on this directory). */
  say?: (msg: string) => void;
}

export interface RtHandle {
  /** http://127.0.0.1:<port> (RT's WebPath is empty, so the UI is at the root). */
  url: string;
  /** `${url}/REST/2.0` */
  restUrl: string;
  port: number;
  dataDir: string;
  /** Token of `accessloop`, the least-privilege integration user (`Authorization: token …`). */
  token: string;
  /** Token of `requester`, a member of "Access requesters": may open tickets in the queue and see its own. */
  requesterToken: string;
  /** Token of `root` (SuperUser): arranging tests only, never what the product would hold. */
  adminToken: string;
  fixture: RtFixture;
  /** Every line RT wrote to stdout/stderr (LogToSTDERR at warning), oldest first. */
  logLines(): string[];
  /** SIGTERM, SIGKILL after 10 s; resolves once it has exited. */
  stop(): Promise<void>;
  /** Starts again on the same port, database and tokens. No-op when running. */
  start(): Promise<void>;
  pid(): number | undefined;
  /** The server itself (mints tokens for users a test adds). */
  server: RtServer;
}

export async function startRt(opts: StartRtOptions = {}): Promise<RtHandle> {
  const dataDir = opts.dataDir ?? (await mkdtemp(path.join(os.tmpdir(), 'accessloop-rt-')));
  const server = await startRtServer({ dataDir, ...(opts.port !== undefined ? { port: opts.port } : {}), ...(opts.say ? { say: opts.say } : {}) });
  return {
    url: server.url,
    restUrl: server.restUrl,
    port: server.port,
    dataDir: server.dataDir,
    token: server.tokens.integration,
    requesterToken: server.tokens.requester,
    adminToken: server.tokens.admin,
    fixture: server.fixture,
    logLines: server.logLines,
    stop: server.stop,
    start: server.start,
    pid: server.pid,
    server,
  };
}

export interface RtResponse<T = unknown> {
  status: number;
  /** Parsed JSON (REST 2.0 answers JSON, errors included: `{"message": "..."}`). */
  body: T;
  /** The Location header of a 201 (a path such as /REST/2.0/ticket/7, not a full URL). */
  location: string | null;
}

/** One REST 2.0 call as `token`'s owner: plain fetch, JSON in and out. */
export async function rtCall<T = unknown>(restUrl: string, token: string, method: string, route: string, body?: unknown): Promise<RtResponse<T>> {
  const res = await fetch(`${restUrl}${route}`, {
    method,
    headers: { Authorization: `token ${token}`, ...(body === undefined ? {} : { 'Content-Type': 'application/json' }) },
    ...(body === undefined ? {} : { body: JSON.stringify(body) }),
    signal: AbortSignal.timeout(30_000),
  });
  const text = await res.text();
  let parsed: unknown;
  try {
    parsed = text === '' ? undefined : JSON.parse(text);
  } catch {
    throw new Error(`RT answered ${method} ${route} with ${res.status} and a body that is not JSON: ${text.slice(0, 300)}`);
  }
  return { status: res.status, body: parsed as T, location: res.headers.get('location') };
}

export type RtGroup = RtGroupKey;

/**
 * A privileged RT user in the named groups of the fixture, with an API token of its own: arranged
 * as root by the server's own ensureRtUser (as the demo's people are), the token minted with RT's
 * Perl API, which REST 2.0 in RT 5.0.3 has no route for.
 */
export async function addRtUser(rt: RtHandle, username: string, opts: { groups: RtGroup[] }): Promise<{ id: number; token: string }> {
  const { id } = await ensureRtUser(rt.server, username, { groups: opts.groups });
  return { id, token: await rt.server.mintToken(username, `accessloop tests (${username})`) };
}
