import { randomBytes } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { DEMO_PLACEHOLDER_DN, DEMO_SUFFIX, demoGroupDn, demoSeedLdif } from '../../activities/connectors/ldap/seed.js';
import { startSlapd, type SlapdHandle } from '../../activities/connectors/ldap/slapd.js';
import { seedDemo, type DemoCatalog } from '../../temporal/demo-catalog.js';
import { loadConfig, type Config } from '../../temporal/config.js';
import { createLogger, type Logger } from '../../temporal/logger.js';
import { startRuntime, type Runtime } from '../../temporal/runtime.js';
import { createTestDatabase, type TestDatabase } from './db.js';
import { ldapsearchMembers } from './ldap.js';

export const LDAP_SECRET_ENV = 'ACCESSLOOP_SECRET_TEST_LDAP';

export interface ApiResponse<T = any> {
  status: number;
  body: T;
}

export interface Stack {
  rt: Runtime;
  config: Config;
  tdb: TestDatabase;
  slapd: SlapdHandle;
  catalog: DemoCatalog;
  /** Env a separate worker process needs to join this stack. */
  workerEnv: Record<string, string>;
  call<T = any>(method: string, path: string, token?: string, body?: unknown, headers?: Record<string, string>): Promise<ApiResponse<T>>;
  /** Group members as read by `ldapsearch` (not through our connector). */
  ldapMembers(group: 'engineering' | 'finance-readers' | 'prod-admins'): Promise<string[]>;
  userDn(uid: string): string;
  waitForStatus(requestId: string, statuses: string[], timeoutMs?: number): Promise<any>;
  stop(): Promise<void>;
}

export interface StackOptions {
  temporalAddress: string;
  /** Extra ACCESSLOOP_SECRET_* values the connectors may resolve (other targets). */
  secrets?: Record<string, string>;
  /** Run the worker in this process (default) or leave it to a child process. */
  worker?: boolean;
  env?: Record<string, string>;
  /** The runtime's logger (default: level TEST_LOG_LEVEL or error, to stdout). */
  log?: Logger;
}

/** Polls until `fn` returns a truthy value; fails with the last value seen. */
export async function waitFor<T>(fn: () => Promise<T | undefined | false>, what: string, timeoutMs = 30_000, intervalMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    const v = await fn();
    if (v) return v;
    last = v;
    if (Date.now() > until) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/**
 * The product's own composition (startRuntime) against the run's Temporal dev server, a fresh
 * Postgres database and a private slapd seeded with the demo directory.
 */
export async function startStackAt(opts: StackOptions): Promise<Stack> {
  const temporalAddress = opts.temporalAddress;
  const tdb = await createTestDatabase();
  const dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-stack-'));
  const rootPassword = randomBytes(12).toString('hex');
  const rootDn = `cn=admin,${DEMO_SUFFIX}`;
  const slapd = await startSlapd({ dataDir: path.join(dataDir, 'slapd'), suffix: DEMO_SUFFIX, rootDn, rootPassword, seedLdif: demoSeedLdif(DEMO_SUFFIX) });
  const taskQueue = `test-${randomBytes(4).toString('hex')}`;
  const baseEnv = {
    TEMPORAL_ADDRESS: temporalAddress,
    DATABASE_URL: tdb.url,
    TEMPORAL_TASK_QUEUE: taskQueue,
    ACCESSLOOP_DATA_DIR: dataDir,
    ACCESSLOOP_DEMO: 'false',
    ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS: '3',
    ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS: '1',
    LOG_LEVEL: 'warn',
    ...opts.env,
  };
  const config = loadConfig({ ...baseEnv, PORT: '0' });
  const secrets = { [LDAP_SECRET_ENV]: rootPassword, ...opts.secrets };
  const rt = await startRuntime({ config, log: opts.log ?? createLogger(process.env.TEST_LOG_LEVEL ?? 'error'), api: true, worker: opts.worker ?? true, env: secrets, say: () => {} });
  // The demo catalog without the demo policy: tests start from the built-in default (one owner stage).
  const catalog = await seedDemo(rt.db, { url: slapd.url, bindDn: rootDn, suffix: DEMO_SUFFIX, placeholderDn: DEMO_PLACEHOLDER_DN, secretEnv: LDAP_SECRET_ENV }, undefined, { policy: false });

  const stack: Stack = {
    rt,
    config,
    tdb,
    slapd,
    catalog,
    workerEnv: { ...baseEnv, ...secrets },
    async call(method, p, token, body, headers = {}) {
      const res = await fetch(`${rt.apiUrl}${p}`, {
        method,
        headers: {
          ...(token ? { authorization: `Bearer ${token}` } : {}),
          ...(body !== undefined ? { 'content-type': 'application/json' } : {}),
          ...headers,
        },
        ...(body !== undefined ? { body: typeof body === 'string' ? body : JSON.stringify(body) } : {}),
      });
      const text = await res.text();
      let parsed: unknown = text;
      try {
        parsed = JSON.parse(text);
      } catch {
        /* non-JSON body */
      }
      return { status: res.status, body: parsed as any };
    },
    ldapMembers: (group) => ldapsearchMembers({ url: slapd.url, rootDn, rootPassword }, demoGroupDn(DEMO_SUFFIX, group)),
    userDn: (uid) => `uid=${uid},ou=people,${DEMO_SUFFIX}`,
    async waitForStatus(requestId, statuses, timeoutMs = 30_000) {
      return waitFor(
        async () => {
          const r = await stack.call('GET', `/v1/access-requests/${requestId}`, catalog.tokens.operator!.token);
          return statuses.includes(r.body?.status) ? r.body : undefined;
        },
        `request ${requestId} to reach ${statuses.join('|')}`,
        timeoutMs,
      );
    },
    async stop() {
      await rt.stop();
      await slapd.stop();
      await tdb.drop();
      await rm(dataDir, { recursive: true, force: true });
    },
  };
  return stack;
}
