import { createHash } from 'node:crypto';
import { eq } from 'drizzle-orm';
import type { Db } from '../../db/client.js';
import { systems, type Identity, type System } from '../../db/schema.js';
import { createLdapConnector, ldapAccountFor, ldapSystemConfigSchema } from './ldap/connector.js';
import { normalizeDn } from './ldap/dn.js';
import { createPostgresConnector, postgresAccountFor, postgresSystemConfigSchema } from './postgres/connector.js';
import { createSshCaConnector, sshCaAccountFor, sshCaSystemConfigSchema } from './ssh-ca/connector.js';
import { ConnectorError, type Connector } from './types.js';

/**
 * Secret references name environment variables. Only this prefix may be referenced, so an
 * operator registering a system cannot make the worker send DATABASE_URL (or any other
 * process secret) to a server of their choosing.
 */
export const SECRET_ENV_PREFIX = 'ACCESSLOOP_SECRET_';

interface ConnectorKind {
  /** Validates a system's non-secret config; throws ZodError on bad input. */
  parseConfig(config: unknown): unknown;
  /** Secret names this kind needs (values come from env through secretRefs). */
  secrets: readonly string[];
  create(config: unknown, secrets: Record<string, string>): Connector;
  /** The target-side account for an identity on this system. */
  accountFor(config: unknown, identity: Pick<Identity, 'username'>): string;
  /** Comparable form of an account as `list` returns it (DNs compare case-insensitively). */
  normalizeAccount(account: string): string;
}

export const connectorKinds: Record<string, ConnectorKind> = {
  ldap: {
    parseConfig: (c) => ldapSystemConfigSchema.parse(c),
    secrets: ['bindPassword'],
    create: (c, s) => createLdapConnector(ldapSystemConfigSchema.parse(c), { bindPassword: s.bindPassword ?? '' }),
    accountFor: (c, i) => ldapAccountFor(ldapSystemConfigSchema.parse(c), { username: i.username }),
    normalizeAccount: (a) => normalizeDn(a),
  },
  postgres: {
    parseConfig: (c) => postgresSystemConfigSchema.parse(c),
    secrets: ['password'],
    create: (c, s) => createPostgresConnector(postgresSystemConfigSchema.parse(c), { password: s.password ?? '' }),
    accountFor: (c, i) => postgresAccountFor(postgresSystemConfigSchema.parse(c), { username: i.username }),
    // Role names are case-sensitive once quoted: compare them as they are.
    normalizeAccount: (a) => a,
  },
  ssh_ca: {
    parseConfig: (c) => sshCaSystemConfigSchema.parse(c),
    secrets: ['caPrivateKey'],
    create: (c, s) => createSshCaConnector(sshCaSystemConfigSchema.parse(c), { caPrivateKey: s.caPrivateKey ?? '' }),
    accountFor: (c, i) => sshCaAccountFor(sshCaSystemConfigSchema.parse(c), { username: i.username }),
    // The account is the certificate key id's name part, compared as issued.
    normalizeAccount: (a) => a,
  },
};

export function resolveSecrets(system: Pick<System, 'kind' | 'secretRefs'>, env: Record<string, string | undefined>): Record<string, string> {
  const kind = connectorKinds[system.kind];
  if (!kind) throw new ConnectorError('InvalidConfig', `unknown system kind ${system.kind}`);
  const out: Record<string, string> = {};
  for (const name of kind.secrets) {
    const ref = system.secretRefs[name];
    if (!ref || !ref.startsWith(SECRET_ENV_PREFIX)) {
      throw new ConnectorError('InvalidConfig', `secret ${name} must reference an environment variable named ${SECRET_ENV_PREFIX}*`);
    }
    const value = env[ref];
    if (value === undefined) throw new ConnectorError('InvalidConfig', `environment variable ${ref} (secret ${name}) is not set on this worker`);
    out[name] = value;
  }
  return out;
}

export interface ConnectorRegistry {
  /** `loaded`: the system's row when the caller has just read it (one query fewer); otherwise it is read here. */
  forSystem(systemId: string, loaded?: System): Promise<{ system: System; connector: Connector; accountFor: (i: Pick<Identity, 'username'>) => string }>;
  close(): Promise<void>;
}

/**
 * Connectors are cached per system and rebuilt when the system's config or secret refs
 * change, so a long-running worker follows catalog edits without a restart.
 */
export function createConnectorRegistry(deps: { db: Pick<Db, 'select'>; env?: Record<string, string | undefined> }): ConnectorRegistry {
  const env = deps.env ?? process.env;
  const cache = new Map<string, { fingerprint: string; connector: Connector }>();
  return {
    async forSystem(systemId, loaded) {
      const [system] = loaded?.id === systemId ? [loaded] : await deps.db.select().from(systems).where(eq(systems.id, systemId));
      if (!system) throw new ConnectorError('InvalidConfig', `system ${systemId} does not exist`);
      const kind = connectorKinds[system.kind];
      if (!kind) throw new ConnectorError('InvalidConfig', `unknown system kind ${system.kind}`);
      const fingerprint = createHash('sha256').update(JSON.stringify([system.config, system.secretRefs])).digest('hex');
      let entry = cache.get(systemId);
      if (!entry || entry.fingerprint !== fingerprint) {
        await entry?.connector.close().catch(() => {});
        entry = { fingerprint, connector: kind.create(kind.parseConfig(system.config), resolveSecrets(system, env)) };
        cache.set(systemId, entry);
      }
      return { system, connector: entry.connector, accountFor: (i) => kind.accountFor(system.config, i) };
    },
    async close() {
      await Promise.all([...cache.values()].map((e) => e.connector.close().catch(() => {})));
      cache.clear();
    },
  };
}
