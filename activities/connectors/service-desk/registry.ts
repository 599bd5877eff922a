/**
 * The desk kinds accessloop can follow, and the settings of the loop around any of them. A
 * desk's stored config is the adapter's own config plus an optional `loop` object; secrets are
 * references to `ACCESSLOOP_SECRET_*` variables, resolved on the worker like a system's.
 */
import { z } from 'zod';
import { SECRET_ENV_PREFIX } from '../registry.js';
import { ConnectorError } from '../types.js';
import { createRtServiceDesk, rtServiceDeskConfigSchema } from './rt.js';
import type { ServiceDesk } from './types.js';

export const deskLoopSchema = z.strictObject({
  /** How often the desk is asked for new events: intake latency is about this. */
  pollIntervalMs: z.number().int().min(200).max(60_000).default(1000),
  /** How often every live ticket-linked lease is checked against its ticket (reconciliation). */
  ticketCheckIntervalSeconds: z.number().int().min(10).max(86_400).default(300),
  /** How long the desk may be unreachable (or refuse us) before a person is alerted. */
  alertAfterSeconds: z.number().int().min(10).max(86_400).default(300),
  /** Whether `/approve` and `/reject` replies on a ticket decide (with the API's eligibility rules). */
  ticketDecisions: z.boolean().default(true),
});
export type DeskLoopSettings = z.output<typeof deskLoopSchema>;

interface DeskKind {
  configSchema: z.ZodType<Record<string, unknown>>;
  secrets: readonly string[];
  create(config: Record<string, unknown>, secrets: Record<string, string>): ServiceDesk;
}

export const deskKinds: Record<string, DeskKind> = {
  rt: {
    configSchema: rtServiceDeskConfigSchema as unknown as z.ZodType<Record<string, unknown>>,
    secrets: ['token'],
    create: (config, secrets) => createRtServiceDesk({ ...(rtServiceDeskConfigSchema.parse(config) as z.input<typeof rtServiceDeskConfigSchema>), token: secrets.token! }),
  },
};

/** Splits a stored (or submitted) desk config into the adapter's part and the loop's; throws ZodError on bad input. */
export function parseDeskConfig(kind: string, config: Record<string, unknown>): { adapter: Record<string, unknown>; loop: DeskLoopSettings } {
  const k = deskKinds[kind];
  if (!k) throw new ConnectorError('InvalidConfig', `unknown service desk kind ${kind}`);
  const { loop, ...adapter } = config;
  const parsedLoop = deskLoopSchema.safeParse(loop ?? {});
  // Issues of the loop part are named as the caller wrote them: `loop.pollIntervalMs`.
  if (!parsedLoop.success) throw new z.ZodError(parsedLoop.error.issues.map((i) => ({ ...i, path: ['loop', ...i.path] })));
  return { adapter: k.configSchema.parse(adapter), loop: parsedLoop.data };
}

/** Secret references must name `ACCESSLOOP_SECRET_*` variables; the values are read only on the worker. */
export function resolveDeskSecrets(kind: string, refs: Record<string, string>, env: Record<string, string | undefined>): Record<string, string> {
  const k = deskKinds[kind];
  if (!k) throw new ConnectorError('InvalidConfig', `unknown service desk kind ${kind}`);
  const out: Record<string, string> = {};
  for (const name of k.secrets) {
    const ref = refs[name];
    if (!ref || !ref.startsWith(SECRET_ENV_PREFIX)) throw new ConnectorError('InvalidConfig', `secret ${name} must reference an environment variable named ${SECRET_ENV_PREFIX}*`);
    const value = env[ref];
    if (value === undefined) throw new ConnectorError('InvalidConfig', `environment variable ${ref} (secret ${name}) is not set on this worker`);
    out[name] = value;
  }
  return out;
}
