import path from 'node:path';
import { z } from 'zod';

/**
 * The one configuration loader (DESIGN §3): environment → zod, parsed once at start.
 * Every piece (API, worker, dev-server provisioning, tests) receives the parsed object
 * rather than reading process.env on its own.
 */
const optionalString = z
  .string()
  .optional()
  .transform((v) => (v === undefined || v.trim() === '' ? undefined : v));

const seconds = (dflt: number) => z.coerce.number().int().positive().default(dflt);

export const configSchema = z
  .object({
    PORT: z.coerce.number().int().min(0).max(65535).default(3000),
    HOST: z.string().default('127.0.0.1'),
    ACCESSLOOP_DATA_DIR: z.string().default('./.data'),
    DATABASE_URL: optionalString,
    TEMPORAL_ADDRESS: optionalString,
    TEMPORAL_NAMESPACE: z.string().default('default'),
    TEMPORAL_TASK_QUEUE: z.string().default('accessloop'),
    TEMPORAL_CLI_PATH: optionalString,
    TEMPORAL_UI_PORT: z.coerce.number().int().min(1).max(65535).default(8233),
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
    ACCESSLOOP_PUBLIC_URL: optionalString,
    /** Notifications (approval requests, reminders, escalations) are POSTed here, signed per Standard Webhooks. */
    ACCESSLOOP_NOTIFY_WEBHOOK_URL: optionalString,
    ACCESSLOOP_NOTIFY_WEBHOOK_SECRET: optionalString,
    /** HMAC key of approval action links; unset → generated once into the data dir (set it when running several processes). */
    ACCESSLOOP_ACTION_LINK_SECRET: optionalString.refine((v) => v === undefined || v.length >= 32, { message: 'ACCESSLOOP_ACTION_LINK_SECRET must be at least 32 characters' }),
    ACCESSLOOP_ACTION_LINK_TTL_SECONDS: seconds(24 * 3600),
    /** AES-256 key (64 hex characters) sealing issued credentials until their owner reads them; unset → generated once into the data dir. */
    ACCESSLOOP_CREDENTIAL_KEY: optionalString.refine((v) => v === undefined || /^[0-9a-fA-F]{64}$/.test(v), { message: 'ACCESSLOOP_CREDENTIAL_KEY must be 64 hex characters (32 bytes)' }),
    /** Standard Webhooks secrets HR events are signed with (comma-separated: several during rotation). */
    ACCESSLOOP_HR_WEBHOOK_SECRETS: optionalString,
    /** How often each system is reconciled (a Temporal Schedule per system). */
    ACCESSLOOP_RECONCILE_INTERVAL_MINUTES: z.coerce.number().int().min(1).max(7 * 24 * 60).default(60),
    /** YAML/JSON approval policy published at start when it differs from the active version. */
    ACCESSLOOP_POLICY_FILE: optionalString,
    ACCESSLOOP_BODY_LIMIT: z.string().default('64kb'),
    ACCESSLOOP_DEMO: z
      .enum(['true', 'false'])
      .default('true')
      .transform((v) => v === 'true'),
    LOG_LEVEL: z.enum(['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']).default('info'),
  })
  .superRefine((c, ctx) => {
    if ((c.TEMPORAL_TLS_CERT_PATH === undefined) !== (c.TEMPORAL_TLS_KEY_PATH === undefined)) {
      ctx.addIssue({
        code: 'custom',
        path: ['TEMPORAL_TLS_CERT_PATH'],
        message: 'TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together',
      });
    }
  });

export type Config = z.output<typeof configSchema>;

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
