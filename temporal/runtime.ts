import { randomBytes, randomUUID } from 'node:crypto';
import { readFile, writeFile, mkdir } from 'node:fs/promises';
import type { Server } from 'node:http';
import path from 'node:path';
import type { Client } from '@temporalio/client';
import type { NativeConnection, Worker } from '@temporalio/worker';
import { createConnectorRegistry, type ConnectorRegistry } from '../activities/connectors/registry.js';
import { appendAudit } from '../activities/domain/audit.js';
import { createMetrics, type Metrics } from '../activities/domain/metrics.js';
import { createNotifier } from '../activities/domain/notifier.js';
import { createCredentialVault } from '../activities/domain/vault.js';
import { formatProblems } from '../activities/domain/policy/load.js';
import { createPolicyService, PolicyError, type PolicyService } from '../activities/domain/policy/service.js';
import { createApp } from '../api/app.js';
import { createAccessRequestService } from '../api/services/access-requests.js';
import { createRequestWatch } from '../api/services/request-watch.js';
import { createDeskRequestOps } from '../api/services/desk-requests.js';
import { assertMigrated, closeDb, createDb, migrateDb, type Db } from '../db/client.js';
import { startEmbeddedPostgres, type EmbeddedPostgres } from '../db/embedded.js';
import { ensureBootstrapToken, seedDemo, type DemoCatalog } from './demo-catalog.js';
import { connectClient, connectWorkerConnection, ensureSearchAttributes } from './client.js';
import { createDataConverter, keyRing, LOCAL_PAYLOAD_KEY_ID, type PayloadKeyRing } from './codec.js';
import type { Config } from './config.js';
import { freePort, resolveTemporalBinary, startDevServer, type DevServer } from './dev-server.js';
import type { Logger } from './logger.js';
import { serviceDesks, systems } from '../db/schema.js';
import { loadEvidenceSigner } from '../activities/domain/evidence/signing.js';
import { ensureCheckpointSchedule, ensureReconcileSchedule, ensureSentinelSchedule } from './schedules.js';
import { ensureServiceDeskWorkflow } from './desk-workflows.js';
import { ensureReviewCampaignWorkflows, ensureReviewSchedules } from './review-workflows.js';
import { startDemoDesk, type DemoDesk } from './demo-desk.js';
import { workerPolling } from './readiness.js';
import { createWorker, installTemporalRuntime } from './worker.js';

export interface RuntimeOptions {
  config: Config;
  log: Logger;
  api: boolean;
  worker: boolean;
  /** Progress lines for a person watching the terminal. */
  say?: (msg: string) => void;
  /** Env the connectors resolve secret refs from (defaults to process.env). */
  env?: Record<string, string | undefined>;
}

export interface Runtime {
  config: Config;
  db: Db;
  temporal: Client;
  temporalAddress: string;
  metrics: Metrics;
  policies: PolicyService;
  connectors: ConnectorRegistry;
  worker?: Worker;
  server?: Server;
  apiUrl?: string;
  uiUrl?: string;
  demo?: DemoCatalog & { desk?: DemoDesk; ldapUrl?: string; ldapBindDn?: string; ldapPassword?: string; sshCa?: { publicKeyPath: string; krlPath: string } };
  stop(): Promise<void>;
}

const DEMO_LDAP_SECRET_ENV = 'ACCESSLOOP_SECRET_DEMO_LDAP';
const DEMO_SSH_CA_SECRET_ENV = 'ACCESSLOOP_SECRET_DEMO_SSH_CA';

/**
 * Composes the process: Temporal (given address or embedded dev server), Postgres (given URL
 * or embedded PGlite), migrations, the demo catalog, the worker and the API. `stop()` undoes
 * it in reverse: drain HTTP, shut the worker down, close connections, stop embedded servers.
 */
export async function startRuntime(opts: RuntimeOptions): Promise<Runtime> {
  const { config, log } = opts;
  const say = opts.say ?? ((m: string) => log.info(m));
  const env = opts.env ?? process.env;
  const stops: Array<() => Promise<void>> = [];
  const stopAll = async () => {
    for (const s of stops.reverse()) await s().catch((e) => log.warn({ err: e }, 'shutdown step failed'));
  };

  try {
    installTemporalRuntime(log);
    await mkdir(config.ACCESSLOOP_DATA_DIR, { recursive: true });

    // ---- Temporal
    let temporalAddress = config.TEMPORAL_ADDRESS;
    let dev: DevServer | undefined;
    if (!temporalAddress) {
      const binary = await resolveTemporalBinary({ cliPath: config.TEMPORAL_CLI_PATH, say });
      say(`starting Temporal dev server (${binary})`);
      dev = await startDevServer({
        binary,
        dbFile: path.join(config.ACCESSLOOP_DATA_DIR, 'temporal.sqlite'),
        port: config.TEMPORAL_DEV_PORT,
        uiPort: config.TEMPORAL_UI_PORT,
        say,
        logDir: config.ACCESSLOOP_DATA_DIR,
        namespace: config.TEMPORAL_NAMESPACE,
        // The UI decrypts payloads in the browser through our codec endpoint (PORT 0: not known yet).
        ...(opts.api && config.PORT !== 0 ? { codecEndpoint: `${config.ACCESSLOOP_PUBLIC_URL ?? `http://localhost:${config.PORT}`}/codec` } : {}),
      });
      stops.push(() => dev!.stop());
      temporalAddress = dev.address;
    }
    const dataConverter = createDataConverter(config, await loadPayloadKeyRing(config));
    const temporal = await connectClient(config, temporalAddress, dataConverter);
    stops.push(() => temporal.connection.close());
    await ensureSearchAttributes(temporal, config.TEMPORAL_NAMESPACE, (m) => log.warn(m));

    // ---- Postgres
    let dbUrl = config.DATABASE_URL;
    let embedded: EmbeddedPostgres | undefined;
    if (!dbUrl) {
      say('starting embedded PGlite (set DATABASE_URL to use a Postgres server)');
      embedded = await startEmbeddedPostgres(path.join(config.ACCESSLOOP_DATA_DIR, 'pglite'), await freePort());
      stops.push(() => embedded!.stop());
      dbUrl = embedded.url;
    }
    const db = createDb(dbUrl, { max: embedded ? 1 : config.ACCESSLOOP_DB_POOL_SIZE });
    stops.push(() => closeDb(db));
    // skip is for a shared Postgres the operator migrates; the embedded PGlite is this process's own
    if (config.ACCESSLOOP_MIGRATE === 'skip' && !embedded) await assertMigrated(db);
    else await migrateDb(db);
    if (config.ACCESSLOOP_BOOTSTRAP_TOKEN) await ensureBootstrapToken(db, config.ACCESSLOOP_BOOTSTRAP_TOKEN);

    const metrics = createMetrics();
    const connectorEnv: Record<string, string | undefined> = { ...env };

    // ---- Demo catalog (a private slapd when OpenLDAP is installed)
    let demo: Runtime['demo'];
    if (config.ACCESSLOOP_DEMO) demo = await startDemo(config, db, connectorEnv, say, stops);

    const policies = createPolicyService(db);
    if (config.ACCESSLOOP_POLICY_FILE) {
      // A bad file stops the start with line-precise problems; the active version stays as it was.
      const file = path.resolve(config.ACCESSLOOP_POLICY_FILE);
      try {
        const source = `file:${path.basename(file)}`;
        // Published by configuration, not by a person: the chain says so (actor `system/startup`).
        const r = await policies.publish(await readFile(file, 'utf8'), source, 'startup', (tx, version) =>
          appendAudit(tx, { idempotencyKey: `startup/policy/${version}/${randomUUID()}`, actorType: 'system', actorId: 'startup', action: 'policy.published', policyVersion: version, data: { source } }),
        );
        say(`policy ${r.version} ${r.changed ? 'published' : 'unchanged'} from ${file}`);
      } catch (e) {
        if (e instanceof PolicyError) throw new Error(`${e.message}:\n${formatProblems(e.problems, file)}`);
        throw e;
      }
    }

    const actionLinkSecret = await loadActionLinkSecret(config);
    const vault = createCredentialVault(await loadCredentialKey(config));
    const notifier = createNotifier(
      {
        webhookUrl: config.ACCESSLOOP_NOTIFY_WEBHOOK_URL,
        webhookSecret: config.ACCESSLOOP_NOTIFY_WEBHOOK_SECRET,
        publicUrl: config.ACCESSLOOP_PUBLIC_URL ?? `http://localhost:${config.PORT}`,
        linkSecret: actionLinkSecret,
        linkTtlSeconds: config.ACCESSLOOP_ACTION_LINK_TTL_SECONDS,
      },
      db,
      log,
    );

    const connectors = createConnectorRegistry({ db, env: connectorEnv });
    // Reconciliation schedules for every system already registered (new ones get theirs on creation).
    for (const s of await db.select({ id: systems.id }).from(systems)) await ensureReconcileSchedule(temporal, config, s.id);
    await ensureSentinelSchedule(temporal, config);
    await ensureCheckpointSchedule(temporal, config);
    // Every registered desk has its loop running (registering one through the API starts it too).
    for (const d of await db.select({ id: serviceDesks.id }).from(serviceDesks)) await ensureServiceDeskWorkflow(temporal, config, d.id);
    // Every open access-review campaign has its workflow (docs/reviews.md).
    await ensureReviewCampaignWorkflows(temporal, config, db);
    await ensureReviewSchedules(temporal, config, (await policies.active()).document);
    stops.push(() => connectors.close());

    // ---- Worker
    let worker: Worker | undefined;
    let workerConn: NativeConnection | undefined;
    let workerDone: Promise<void> | undefined;
    if (opts.worker) {
      workerConn = await connectWorkerConnection(config, temporalAddress);
      stops.push(() => workerConn!.close());
      worker = await createWorker({
        connection: workerConn,
        namespace: config.TEMPORAL_NAMESPACE,
        taskQueue: config.TEMPORAL_TASK_QUEUE,
        deps: {
          db,
          connectors,
          log,
          metrics,
          policies,
          notifier,
          vault,
          temporal,
          // Loaded once, on the first checkpoint (the API loads the same key for bundles).
          evidenceSigner: once(() => loadEvidenceSigner({ key: config.ACCESSLOOP_EVIDENCE_SIGNING_KEY, dataDir: config.ACCESSLOOP_DATA_DIR })),
          // The service desk acts through the same request rules as the API (activities never import api/).
          requests: createDeskRequestOps({ service: createAccessRequestService({ db, temporal, config, policies }), temporal }),
          publicUrl: config.ACCESSLOOP_PUBLIC_URL ?? `http://localhost:${config.PORT}`,
          secretEnv: connectorEnv,
        },
        dataConverter,
      });
      workerDone = worker.run();
      workerDone.catch((e) => log.error({ err: e }, 'worker stopped with an error'));
      stops.push(async () => {
        if (worker!.getState() === 'RUNNING') worker!.shutdown();
        await workerDone!.catch(() => {});
      });
    }

    // ---- API
    let server: Server | undefined;
    let apiUrl: string | undefined;
    if (opts.api) {
      // PGlite over its socket serves one connection at a time and no LISTEN: long polls re-read instead.
      const requestWatch = await createRequestWatch(db.$client, log, { listen: !embedded });
      const app = createApp({ db, temporal, config, log, metrics, policies, actionLinkSecret, vault, requestWatch, ...(worker ? { workerReady: () => workerPolling(worker!) } : {}) });
      server = await new Promise<Server>((resolve, reject) => {
        const s = app.listen(config.PORT, config.HOST, () => resolve(s));
        s.on('error', reject);
      });
      const addr = server.address();
      const port = typeof addr === 'object' && addr ? addr.port : config.PORT;
      apiUrl = `http://${config.HOST === '0.0.0.0' ? 'localhost' : config.HOST}:${port}`;
      stops.push(
        () =>
          new Promise<void>((resolve) => {
            server!.close(() => resolve());
            server!.closeIdleConnections();
          }),
      );
      // Runs first (stops run in reverse): open long polls answer with what they have, so the drain does not wait out their timeouts.
      stops.push(() => requestWatch.close());
    }

    return {
      config,
      db,
      temporal,
      temporalAddress,
      metrics,
      policies,
      connectors,
      ...(worker ? { worker } : {}),
      ...(server ? { server } : {}),
      ...(apiUrl ? { apiUrl } : {}),
      ...(dev?.uiUrl ? { uiUrl: dev.uiUrl } : {}),
      ...(demo ? { demo } : {}),
      stop: stopAll,
    };
  } catch (e) {
    await stopAll();
    throw e;
  }
}

async function startDemo(config: Config, db: Db, env: Record<string, string | undefined>, say: (m: string) => void, stops: Array<() => Promise<void>>) {
  const tokensFile = path.join(config.ACCESSLOOP_DATA_DIR, 'demo-tokens.json');
  const saved = await readFile(tokensFile, 'utf8')
    .then((s) => JSON.parse(s) as { tokens?: DemoCatalog['tokens']; ldapPassword?: string })
    .catch(() => undefined);
  let directory: Parameters<typeof seedDemo>[1];
  let ldap: { ldapUrl: string; ldapBindDn: string; ldapPassword: string } | undefined;
  try {
    const { startSlapd } = await import('../activities/connectors/ldap/slapd.js');
    const { DEMO_SUFFIX, DEMO_PLACEHOLDER_DN, demoSeedLdif } = await import('../activities/connectors/ldap/seed.js');
    const password = saved?.ldapPassword ?? randomBytes(18).toString('base64url');
    const rootDn = `cn=admin,${DEMO_SUFFIX}`;
    say('starting the demo directory (OpenLDAP slapd on 127.0.0.1)');
    const slapd = await startSlapd({
      dataDir: path.join(config.ACCESSLOOP_DATA_DIR, 'slapd'),
      port: await preferredPort(3389),
      suffix: DEMO_SUFFIX,
      rootDn,
      rootPassword: password,
      seedLdif: demoSeedLdif(DEMO_SUFFIX),
      say,
    });
    stops.push(() => slapd.stop());
    env[DEMO_LDAP_SECRET_ENV] = password;
    directory = { url: slapd.url, bindDn: rootDn, suffix: DEMO_SUFFIX, placeholderDn: DEMO_PLACEHOLDER_DN, secretEnv: DEMO_LDAP_SECRET_ENV };
    ldap = { ldapUrl: slapd.url, ldapBindDn: rootDn, ldapPassword: password };
  } catch (e) {
    say(`demo directory not started: ${(e as Error).message}`);
  }
  const ssh = await demoSshCa(config, env, say);
  const catalog = await seedDemo(db, directory, saved?.tokens, { ...(ssh ? { ssh: ssh.seed } : {}) });
  await writeFile(tokensFile, JSON.stringify({ tokens: catalog.tokens, ldapPassword: ldap?.ldapPassword }, null, 2), { mode: 0o600 });
  // Request Tracker as the demo's service desk, when it is installed (bash temporal/provision.sh --for test).
  const desk = await startDemoDesk({ dataDir: config.ACCESSLOOP_DATA_DIR, db, ownerId: catalog.identities.carol, env, say, stops });
  return { ...catalog, ...(ldap ?? {}), ...(ssh ? { sshCa: { publicKeyPath: ssh.publicKeyPath, krlPath: ssh.seed.krlPath } } : {}), ...(desk ? { desk } : {}) };
}

/**
 * The demo's SSH certificate authority: a CA key made once in the data dir (ssh-keygen), so a
 * server configured with `TrustedUserCAKeys <ca.pub>` and `RevokedKeys <krl>` honours the demo's
 * just-in-time certificates. Skipped, with a note, where ssh-keygen is missing.
 */
async function demoSshCa(config: Config, env: Record<string, string | undefined>, say: (m: string) => void) {
  const dir = path.join(path.resolve(config.ACCESSLOOP_DATA_DIR), 'ssh-ca');
  try {
    const keyPath = path.join(dir, 'ca');
    let privateKey = await readFile(keyPath, 'utf8').catch(() => undefined);
    if (!privateKey) {
      const { generateCaKeyPair } = await import('../activities/connectors/ssh-ca/ca.js');
      privateKey = (await generateCaKeyPair(dir, 'ca')).privateKey;
    }
    env[DEMO_SSH_CA_SECRET_ENV] = privateKey;
    return { publicKeyPath: `${keyPath}.pub`, seed: { stateDir: path.join(dir, 'state'), krlPath: path.join(dir, 'revoked.krl'), secretEnv: DEMO_SSH_CA_SECRET_ENV } };
  } catch (e) {
    say(`demo SSH CA not created: ${(e as Error).message}`);
    return undefined;
  }
}

/** The action-link HMAC key: configured, or generated once per data dir (API and worker share it there). */
async function loadActionLinkSecret(config: Config): Promise<Buffer> {
  if (config.ACCESSLOOP_ACTION_LINK_SECRET) return Buffer.from(config.ACCESSLOOP_ACTION_LINK_SECRET, 'utf8');
  return dataDirKey(config, 'action-link.key');
}

/** The AES-256 key sealing issued credentials until delivery: configured, or generated once per data dir. */
async function loadCredentialKey(config: Config): Promise<Buffer> {
  if (config.ACCESSLOOP_CREDENTIAL_KEY) return Buffer.from(config.ACCESSLOOP_CREDENTIAL_KEY, 'hex');
  return dataDirKey(config, 'credential.key');
}

/**
 * Payload encryption keys: the configured rotation list, or one key generated once per data
 * dir. A generated key already on disk stays accepted for decryption after keys are configured,
 * so histories sealed before the switch keep opening.
 */
async function loadPayloadKeyRing(config: Config): Promise<PayloadKeyRing> {
  const configured = config.ACCESSLOOP_PAYLOAD_KEYS;
  if (!configured) return keyRing([{ id: LOCAL_PAYLOAD_KEY_ID, key: await dataDirKey(config, 'payload.key') }]);
  const local = await readFile(path.join(config.ACCESSLOOP_DATA_DIR, 'payload.key'), 'utf8').catch(() => undefined);
  const keepLocal = local?.trim() && !configured.some((k) => k.id === LOCAL_PAYLOAD_KEY_ID);
  return keyRing(keepLocal ? [...configured, { id: LOCAL_PAYLOAD_KEY_ID, key: Buffer.from(local!.trim(), 'hex') }] : configured);
}

async function dataDirKey(config: Config, name: string): Promise<Buffer> {
  const file = path.join(config.ACCESSLOOP_DATA_DIR, name);
  const existing = await readFile(file, 'utf8').catch(() => undefined);
  if (existing?.trim()) return Buffer.from(existing.trim(), 'hex');
  const key = randomBytes(32);
  await writeFile(file, key.toString('hex'), { mode: 0o600, flag: 'wx' }).catch(async () => undefined);
  // Another process may have won the race: use what is on disk.
  return Buffer.from((await readFile(file, 'utf8')).trim(), 'hex');
}

async function preferredPort(p: number): Promise<number> {
  const net = await import('node:net');
  return new Promise((resolve) => {
    const s = net.createServer();
    s.once('error', () => freePort().then(resolve));
    s.listen(p, '127.0.0.1', () => s.close(() => resolve(p)));
  });
}

/** A lazy value computed once; a failure is not kept, so the next call tries again. */
function once<T>(make: () => Promise<T>): () => Promise<T> {
  let p: Promise<T> | undefined;
  return () => {
    p ??= make().catch((e: unknown) => {
      p = undefined;
      throw e;
    });
    return p;
  };
}
