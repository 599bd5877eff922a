import path from 'node:path';
import { z } from 'zod';

/**
 * The one configuration loader (docs/architecture.md#3-runtime-pieces): environment → zod, parsed once at start.
 * Every piece (API, worker, dev-server provisioning, tests) receives the parsed object
 * rather than reading process.env on its own.
 */
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v));

const seconds = (dflt: number) => z.coerce.number().int().positive().default(dflt);

/** `id:hex64,id:hex64`; problems name the entry and id, never the key. */
function parsePayloadKeys(v: string | undefined, ctx: z.RefinementCtx): Array<{ id: string; key: Buffer }> | undefined {
  if (v === undefined) return undefined;
  const keys: Array<{ id: string; key: Buffer }> = [];
  v.split(',').forEach((entry, i) => {
    const m = /^\s*([A-Za-z0-9._-]{1,64}):([0-9a-fA-F]{64})\s*$/.exec(entry);
    if (!m) ctx.addIssue({ code: 'custom', message: `entry ${i + 1} must be <id>:<64 hex characters> (id: letters, digits, . _ -)` });
    else if (keys.some((k) => k.id === m[1])) ctx.addIssue({ code: 'custom', message: `key id "${m[1]}" appears twice` });
    else keys.push({ id: m[1]!, key: Buffer.from(m[2]!, 'hex') });
  });
  return keys;
}

function parseOrigins(v: string | undefined, ctx: z.RefinementCtx): string[] | undefined {
  if (v === undefined) return undefined;
  return v.split(',').map((raw) => {
    const s = raw.trim();
    // An origin is scheme://host[:port] exactly; the browser sends it that way and we compare strings.
    const ok = URL.canParse(s) && new URL(s).origin === s;
    if (!ok) ctx.addIssue({ code: 'custom', message: `"${s}" is not an origin (scheme://host[:port], no path or trailing slash)` });
    return s;
  });
}

/**
 * Standard Webhooks secrets, comma-separated: `whsec_<base64>` (or the bare base64). The library
 * decodes them strictly at start (express builds the verifiers), so a bad one would otherwise
 * stop the start with the decoder's "incorrect padding", naming neither the variable nor the form.
 */
const STRICT_BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
function checkHrSecrets(v: string | undefined, ctx: z.RefinementCtx): void {
  if (v === undefined) return;
  const entries = v.split(',').map((x) => x.trim());
  entries.forEach((entry, i) => {
    const b64 = entry.startsWith('whsec_') ? entry.slice('whsec_'.length) : entry;
    // Problems name the entry's position, never its value: it is a secret.
    if (b64 === '' || !STRICT_BASE64.test(b64)) {
      ctx.addIssue({ code: 'custom', message: `secret ${i + 1} of ${entries.length}: each comma-separated secret must be whsec_<base64> (standard alphabet, = padding, not empty), e.g. whsec_ followed by \`openssl rand -base64 24\`` });
    }
  });
}

/** The notification signing secret: `whsec_<base64>` or any other text (its UTF-8 bytes are the key); never an empty key. */
function checkNotifySecret(v: string | undefined, ctx: z.RefinementCtx): void {
  if (v === undefined || !v.startsWith('whsec_')) return;
  if (Buffer.from(v.slice('whsec_'.length), 'base64').length === 0) {
    ctx.addIssue({ code: 'custom', message: 'whsec_<base64> must decode to at least one byte (or use a plain-text secret without the whsec_ prefix)' });
  }
}

const httpUrl = (what: string) =>
  optionalString.refine((v) => v === undefined || (URL.canParse(v) && ['http:', 'https:'].includes(new URL(v).protocol)), { message: `must be an http(s) URL (${what})` });

export const configSchema = z
  .object({
    PORT: z.coerce.number({ error: 'must be a port number 0-65535 (0: any free port)' }).int().min(0).max(65535).default(3000),
    HOST: z.string().default('127.0.0.1'),
    ACCESSLOOP_DATA_DIR: z.string().default('./.data'),
    DATABASE_URL: optionalString.refine((v) => v === undefined || /^postgres(ql)?:\/\//.test(v), { message: 'must be a postgres:// or postgresql:// connection URL' }),
    TEMPORAL_ADDRESS: optionalString.refine((v) => v === undefined || /^[^\s/:]+:\d{1,5}$|^\[[0-9a-fA-F:]+\]:\d{1,5}$/.test(v), { message: 'must be host:port (e.g. temporal.internal:7233), no scheme' }),
    TEMPORAL_NAMESPACE: z.string().default('default'),
    TEMPORAL_TASK_QUEUE: z.string().default('accessloop'),
    TEMPORAL_CLI_PATH: optionalString,
    TEMPORAL_UI_PORT: z.coerce.number({ error: 'must be a port number 1-65535' }).int().min(1).max(65535).default(8233),
    /** The embedded dev server's gRPC port (`npm start` without TEMPORAL_ADDRESS); 0 picks a free one. */
    TEMPORAL_DEV_PORT: z.coerce.number({ error: 'must be a port number 0-65535 (0: any free port)' }).int().min(0).max(65535).default(7233),
    TEMPORAL_TLS: z
      .enum(['true', 'false'])
      .default('false')
      .transform((v) => v === 'true'),
    TEMPORAL_TLS_CERT_PATH: optionalString,
    TEMPORAL_TLS_KEY_PATH: optionalString,
    TEMPORAL_TLS_CA_PATH: optionalString,
    TEMPORAL_TLS_SERVER_NAME: optionalString,
    TEMPORAL_API_KEY: optionalString,
    ACCESSLOOP_BOOTSTRAP_TOKEN: optionalString.refine((v) => v === undefined || v.length >= 24, {
      message: 'ACCESSLOOP_BOOTSTRAP_TOKEN must be at least 24 characters',
    }),
    /** How long a revocation may stay unverified before the lease becomes `revocation_unverified`. */
    ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS: seconds(300),
    /** Ceiling of the backoff between read-backs once a revocation is overdue. */
    ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS: seconds(60),
    /** Default approval stage timeout when an entitlement's policy does not set one. */
    ACCESSLOOP_APPROVAL_TIMEOUT_SECONDS: seconds(72 * 3600),
    /** Where approvers reach the API (action links point here); default http://localhost:PORT. */
    ACCESSLOOP_PUBLIC_URL: httpUrl('where approvers reach the API, e.g. https://access.example.com'),
    /** Notifications (approval requests, reminders, escalations) are POSTed here, signed per Standard Webhooks. */
    ACCESSLOOP_NOTIFY_WEBHOOK_URL: httpUrl('the endpoint notifications are POSTed to'),
    ACCESSLOOP_NOTIFY_WEBHOOK_SECRET: optionalString.superRefine(checkNotifySecret),
    /** HMAC key of approval action links; unset → generated once into the data dir (set it when running several processes). */
    ACCESSLOOP_ACTION_LINK_SECRET: optionalString.refine((v) => v === undefined || v.length >= 32, { message: 'ACCESSLOOP_ACTION_LINK_SECRET must be at least 32 characters' }),
    ACCESSLOOP_ACTION_LINK_TTL_SECONDS: seconds(24 * 3600),
    /** AES-256 key (64 hex characters) sealing issued credentials until their owner reads them; unset → generated once into the data dir. */
    ACCESSLOOP_CREDENTIAL_KEY: optionalString.refine((v) => v === undefined || /^[0-9a-fA-F]{64}$/.test(v), { message: 'ACCESSLOOP_CREDENTIAL_KEY must be 64 hex characters (32 bytes)' }),
    /** Payload encryption keys `id:hex64,…`: the first encrypts, all decrypt (rotation); unset → one generated into the data dir. */
    ACCESSLOOP_PAYLOAD_KEYS: optionalString.transform(parsePayloadKeys),
    /** false: new payloads go out in plaintext (encrypted ones still decrypt). */
    ACCESSLOOP_PAYLOAD_ENCRYPTION: z.enum(['true', 'false']).default('true').transform((v) => v === 'true'),
    /** Codec endpoint auth: auto = no token only with the embedded dev server on loopback, else a bearer token (operator/auditor). */
    ACCESSLOOP_CODEC_AUTH: z.enum(['auto', 'token', 'none']).default('auto'),
    /** Origins of the Temporal UI allowed to call the codec endpoint (comma-separated); default: the dev server's UI. */
    ACCESSLOOP_UI_ORIGIN: optionalString.transform(parseOrigins),
    /** Standard Webhooks secrets HR events are signed with (comma-separated: several during rotation). */
    ACCESSLOOP_HR_WEBHOOK_SECRETS: optionalString.superRefine(checkHrSecrets),
    /** How often each system is reconciled (a Temporal Schedule per system). */
    ACCESSLOOP_RECONCILE_INTERVAL_MINUTES: z.coerce.number().int().min(1).max(7 * 24 * 60).default(60),
    /** How often the sentinel checks the database and the targets (a Temporal Schedule). */
    ACCESSLOOP_SENTINEL_INTERVAL_SECONDS: z.coerce.number().int().min(1).max(24 * 3600).default(60),
    /** How often the audit log gets a signed checkpoint (docs/audit.md): the most a stream deleted afterwards can go unnoticed by the checkpoints. */
    ACCESSLOOP_CHECKPOINT_INTERVAL_SECONDS: z.coerce.number().int().min(1).max(24 * 3600).default(300),
    /** How long past a deadline (expiry, grant, removal, termination) before the sentinel calls it a finding. */
    ACCESSLOOP_SENTINEL_GRACE_SECONDS: z.coerce.number().int().min(0).max(7 * 86400).default(120),
    /** Running lease workflows the sentinel describes per run for a failing workflow task (a rotating batch; see activities/sentinel.ts). */
    ACCESSLOOP_SENTINEL_WORKFLOW_DESCRIBE_BATCH: z.coerce.number({ error: 'must be a whole number 0-100000' }).int().min(0).max(100_000).default(500),
    /** Postgres connections per process; replicas × this must fit the server's max_connections. */
    ACCESSLOOP_DB_POOL_SIZE: z.coerce.number({ error: 'must be a number of connections 1-200' }).int().min(1).max(200).default(10),
    /** How old the KPI gauges on /metrics may get: a scrape is served from the last snapshot and, when older, starts a refresh in the background. */
    ACCESSLOOP_METRICS_REFRESH_SECONDS: z.coerce.number({ error: 'must be a number of seconds 1-3600' }).int().min(1).max(3600).default(30),
    /** When set, /metrics answers only `Authorization: Bearer <this value>` (at least 24 characters). */
    ACCESSLOOP_METRICS_TOKEN: optionalString.refine((v) => v === undefined || v.length >= 24, { message: 'ACCESSLOOP_METRICS_TOKEN must be at least 24 characters' }),
    /** Ed25519 seed (64 hex characters) signing evidence bundles; unset → generated once into the data dir. Share it across API replicas. */
    ACCESSLOOP_EVIDENCE_SIGNING_KEY: optionalString.refine((v) => v === undefined || /^[0-9a-fA-F]{64}$/.test(v), { message: 'ACCESSLOOP_EVIDENCE_SIGNING_KEY must be 64 hex characters (32 bytes)' }),
    /** YAML/JSON approval policy published at start when it differs from the active version. */
    ACCESSLOOP_POLICY_FILE: optionalString,
    ACCESSLOOP_BODY_LIMIT: z
      .string()
      .regex(/^\d+(\.\d+)?\s*(b|kb|mb|gb)?$/i, { message: 'must be a size such as 64kb, 1mb or 65536 (bytes)' })
      .default('64kb'),
    ACCESSLOOP_DEMO: z
      .enum(['true', 'false'])
      .default('true')
      .transform((v) => v === 'true'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
    /**
     * auto: each start applies pending migrations, under a Postgres advisory lock so replicas
     * starting together take turns. skip: never; the start refuses a database whose schema is
     * behind (the operator runs `npm run db:migrate` before rolling out).
     */
    ACCESSLOOP_MIGRATE: z.enum(['auto', 'skip']).default('auto'),
    /**
     * true: several API/worker processes share one task queue and database. Keys a lone process
     * would generate into its own data dir must then come from configuration (see MULTI_PROCESS_SHARED_ENV).
     */
    ACCESSLOOP_MULTI_PROCESS: z
      .enum(['true', 'false'])
      .default('false')
      .transform((v) => v === 'true'),
    /**
     * `npm run worker` only: when set, a plain HTTP listener for a supervisor's probes (GET /healthz,
     * GET /readyz: the worker polling and the database answering). 0 picks a free port; unset: none.
     */
    ACCESSLOOP_WORKER_HEALTH_PORT: optionalString.pipe(z.coerce.number<string | undefined>({ error: 'must be a port number 0-65535 (0: any free port)' }).int().min(0).max(65535).optional()),
    /** Where that listener binds; loopback unless the supervisor probes from elsewhere (e.g. 0.0.0.0 for a kubelet). */
    ACCESSLOOP_WORKER_HEALTH_HOST: optionalString.transform((v) => v ?? '127.0.0.1'),
  })
  .superRefine((c, ctx) => {
    if (c.ACCESSLOOP_MULTI_PROCESS) {
      const missing = missingSharedEnv(c);
      if (missing.length > 0) {
        // One issue naming them all: an operator fixes the deployment in one go. Names only, never values.
        ctx.addIssue({
          code: 'custom',
          path: ['ACCESSLOOP_MULTI_PROCESS'],
          message:
            `several processes need the same keys and servers from configuration, or each would generate its own ` +
            `that the others cannot read; set ${missing.join(', ')} (the same values in every replica)`,
        });
      }
      if (c.ACCESSLOOP_DEMO) {
        ctx.addIssue({
          code: 'custom',
          path: ['ACCESSLOOP_DEMO'],
          message:
            'must be false with ACCESSLOOP_MULTI_PROCESS=true (it defaults to true, for npm start): the demo seeds a catalog ' +
            'and demo tokens on every start, which the replicas would race on and which has no place in a production deployment; ' +
            'set ACCESSLOOP_DEMO=false on every API replica (npm run worker already does)',
        });
      }
    }
    if ((c.TEMPORAL_TLS_CERT_PATH === undefined) !== (c.TEMPORAL_TLS_KEY_PATH === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['TEMPORAL_TLS_CERT_PATH'],
        message: 'TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together',
      });
    }
  });

export type Config = z.output<typeof configSchema>;

/**
 * What every process of a multi-process deployment must be given rather than make for itself:
 * the shared servers (a lone process embeds its own Temporal and PGlite) and every key that is
 * otherwise generated once into ACCESSLOOP_DATA_DIR (a replica's key is unreadable to the others:
 * action links, sealed credentials, encrypted payloads and evidence signatures would not verify).
 */
export const MULTI_PROCESS_SHARED_ENV = [
  'DATABASE_URL',
  'TEMPORAL_ADDRESS',
  'ACCESSLOOP_ACTION_LINK_SECRET',
  'ACCESSLOOP_CREDENTIAL_KEY',
  'ACCESSLOOP_PAYLOAD_KEYS',
  'ACCESSLOOP_EVIDENCE_SIGNING_KEY',
] as const;

function missingSharedEnv(c: { [K in (typeof MULTI_PROCESS_SHARED_ENV)[number]]: unknown } & { ACCESSLOOP_PAYLOAD_ENCRYPTION: boolean }): string[] {
  return MULTI_PROCESS_SHARED_ENV.filter((name) => {
    // with encryption off no payload is sealed, so no key needs sharing
    if (name === 'ACCESSLOOP_PAYLOAD_KEYS' && !c.ACCESSLOOP_PAYLOAD_ENCRYPTION) return false;
    return c[name] === undefined;
  });
}

export class ConfigError extends Error {}

export function loadConfig(env: Record<string, string | undefined> = process.env): Config {
  const parsed = configSchema.safeParse(env);
  if (!parsed.success) {
    const lines = parsed.error.issues.map((i) => `  ${i.path.join('.') || '(env)'}: ${i.message}`);
    throw new ConfigError(`invalid configuration:\n${lines.join('\n')}`);
  }
  return { ...parsed.data, ACCESSLOOP_DATA_DIR: path.resolve(parsed.data.ACCESSLOOP_DATA_DIR) };
}

/** Lifecycle timing the API hands to each workflow (kept in the workflow input so a run is self-describing). */
export function lifecycleTiming(c: Config) {
  return {
    revokeVerifyDeadlineSeconds: c.ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS,
    verifyMaxIntervalSeconds: c.ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS,
    defaultApprovalTimeoutSeconds: c.ACCESSLOOP_APPROVAL_TIMEOUT_SECONDS,
  };
}
