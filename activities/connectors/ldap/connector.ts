/**
 * LDAP connector: group membership (`member` of a groupOfNames, by default) through ldapts.
 *
 * `resource` is the group DN, `account` the member DN. Every mutation reads first so
 * that repeated grants/revokes report changed=false without touching the directory,
 * and the typeOrValueExists / noSuchAttribute races are treated as "already done".
 *
 * Account disable/enable (leavers/rehires) uses the OpenLDAP ppolicy overlay:
 * `pwdAccountLockedTime: 000001010000Z` locks the entry until the attribute is removed
 * (binds as it fail with invalidCredentials). The server needs the ppolicy overlay with a
 * policy of `pwdLockout: TRUE` applying to the account (see slapd.ts), and the bind DN
 * needs write access to that operational attribute (the root DN has it).
 */
import { Change, Attribute, Client, ResultCodeError } from 'ldapts';
import { z } from 'zod';
import { ConnectorError, type ChangeResult, type CheckResult, type Connector, type ConnectorErrorType, type Membership } from '../types.js';
import { NETWORK_ERROR_CODES } from '../network.js';
import { redact } from '../redact.js';
import { canonicalDn, isDnWithin, normalizeDn, parseDn, renderAccountDn } from './dn.js';

export const MAX_DN_LENGTH = 1024;

/** ppolicy operational attribute holding the lock; not returned unless requested by name. */
const LOCK_ATTRIBUTE = 'pwdAccountLockedTime';
/** Written by slapd on every successful bind when the database has `lastbind on` (OpenLDAP 2.5+): the account's last use. */
const LAST_BIND_ATTRIBUTE = 'pwdLastSuccess';

/** An LDAP GeneralizedTime in UTC (`20261202103000Z`, optionally with fractions); null when it is not one. */
export function parseGeneralizedTime(v: string): Date | null {
  const m = /^(\d{4})(\d{2})(\d{2})(\d{2})(\d{2})(\d{2})(?:[.,]\d+)?Z$/.exec(v);
  if (!m) return null;
  const d = new Date(Date.UTC(+m[1]!, +m[2]! - 1, +m[3]!, +m[4]!, +m[5]!, +m[6]!));
  return Number.isNaN(d.getTime()) ? null : d;
}
/** pwdAccountLockedTime value meaning "locked by an administrator until removed". */
export const ADMIN_LOCK_TIME = '000001010000Z';

export const ldapSystemConfigSchema = z.object({
  url: z
    .string()
    .regex(/^ldaps?:\/\/[^\s/]+\/?$/i, 'url must be ldap://host[:port] or ldaps://host[:port]'),
  bindDn: z.string().min(1),
  baseDn: z.string().min(1),
  /** e.g. `uid={username},ou=people,dc=accessloop,dc=test`; placeholders are DN-escaped. */
  accountDnTemplate: z.string().min(1),
  memberAttribute: z
    .string()
    .regex(/^[A-Za-z][A-Za-z0-9-]*$/, 'memberAttribute must be an attribute type name')
    .default('member'),
  /** A DN that keeps groupOfNames groups non-empty: never listed, never removed. */
  placeholderMember: z.string().min(1).optional(),
  timeoutMs: z.number().int().min(100).max(60_000).default(5000),
});

export type LdapSystemConfig = z.infer<typeof ldapSystemConfigSchema>;

export interface LdapSecrets {
  bindPassword: string;
}

/** Account DN for a user, rendered from the configured template with escaped values. */
export function ldapAccountFor(config: Pick<LdapSystemConfig, 'accountDnTemplate'>, vars: { username: string }): string {
  return renderAccountDn(config.accountDnTemplate, vars);
}

// ---------------------------------------------------------------------------------------
// Error classification

/** LDAP result codes (RFC 4511 §4.1.9). */
const RC = {
  operationsError: 1,
  protocolError: 2,
  timeLimitExceeded: 3,
  sizeLimitExceeded: 4,
  authMethodNotSupported: 7,
  strongerAuthRequired: 8,
  referral: 10,
  adminLimitExceeded: 11,
  unavailableCriticalExtension: 12,
  confidentialityRequired: 13,
  noSuchAttribute: 16,
  undefinedAttributeType: 17,
  inappropriateMatching: 18,
  constraintViolation: 19,
  typeOrValueExists: 20,
  invalidAttributeSyntax: 21,
  noSuchObject: 32,
  aliasProblem: 33,
  invalidDNSyntax: 34,
  aliasDereferencingProblem: 36,
  inappropriateAuthentication: 48,
  invalidCredentials: 49,
  insufficientAccessRights: 50,
  busy: 51,
  unavailable: 52,
  unwillingToPerform: 53,
  loopDetect: 54,
  namingViolation: 64,
  objectClassViolation: 65,
  notAllowedOnNonLeaf: 66,
  notAllowedOnRDN: 67,
  entryAlreadyExists: 68,
  objectClassModsProhibited: 69,
  affectsMultipleDSAs: 71,
  other: 80,
} as const;

const CODE_TYPES = new Map<number, ConnectorErrorType>([
  [RC.noSuchObject, 'NoSuchResource'],
  [RC.referral, 'NoSuchResource'],
  [RC.invalidCredentials, 'PermissionDenied'],
  [RC.insufficientAccessRights, 'PermissionDenied'],
  [RC.inappropriateAuthentication, 'PermissionDenied'],
  [RC.authMethodNotSupported, 'InvalidConfig'],
  [RC.strongerAuthRequired, 'InvalidConfig'],
  [RC.confidentialityRequired, 'InvalidConfig'],
  [RC.unavailableCriticalExtension, 'InvalidConfig'],
  [RC.undefinedAttributeType, 'InvalidConfig'],
  [RC.noSuchAttribute, 'InvalidInput'],
  [RC.typeOrValueExists, 'InvalidInput'],
  [RC.inappropriateMatching, 'InvalidInput'],
  [RC.constraintViolation, 'InvalidInput'],
  [RC.invalidAttributeSyntax, 'InvalidInput'],
  [RC.aliasProblem, 'InvalidInput'],
  [RC.invalidDNSyntax, 'InvalidInput'],
  [RC.aliasDereferencingProblem, 'InvalidInput'],
  [RC.namingViolation, 'InvalidInput'],
  [RC.objectClassViolation, 'InvalidInput'],
  [RC.notAllowedOnNonLeaf, 'InvalidInput'],
  [RC.notAllowedOnRDN, 'InvalidInput'],
  [RC.entryAlreadyExists, 'InvalidInput'],
  [RC.objectClassModsProhibited, 'InvalidInput'],
  [RC.affectsMultipleDSAs, 'InvalidInput'],
  [RC.protocolError, 'InvalidInput'],
  [RC.operationsError, 'TargetUnavailable'],
  [RC.busy, 'TargetUnavailable'],
  [RC.unavailable, 'TargetUnavailable'],
  [RC.unwillingToPerform, 'TargetUnavailable'],
  [RC.loopDetect, 'TargetUnavailable'],
  [RC.other, 'TargetUnavailable'],
  [RC.timeLimitExceeded, 'Timeout'],
  [RC.adminLimitExceeded, 'Throttled'],
  [RC.sizeLimitExceeded, 'Throttled'],
]);

const NETWORK_CODES = NETWORK_ERROR_CODES;

/**
 * Maps an ldapts / socket error to a ConnectorError. The message never contains the
 * bind password; the raw error is kept as `cause`.
 */
export function classifyLdapError(err: unknown, what: string, bindPassword = ''): ConnectorError {
  if (err instanceof ConnectorError) return err;
  const raw = err instanceof Error ? err.message : String(err);
  const detail = redact(raw.split('\n')[0] ?? raw, bindPassword);
  if (err instanceof ResultCodeError) {
    const type = CODE_TYPES.get(err.code) ?? 'TargetUnavailable';
    return new ConnectorError(type, `${what}: LDAP result ${err.code} (${err.name}): ${detail}`, { cause: err });
  }
  const code = (err as { code?: unknown } | null)?.code;
  if (code === 'ETIMEDOUT' || /timed out|timeout/i.test(raw)) {
    return new ConnectorError('Timeout', `${what}: ${detail}`, { cause: err });
  }
  if (
    (typeof code === 'string' && NETWORK_CODES.has(code)) ||
    /socket|connection closed|connection not established|ECONNREFUSED|ECONNRESET|EPIPE/i.test(raw)
  ) {
    return new ConnectorError('TargetUnavailable', `${what}: ${detail}`, { cause: err });
  }
  // Unknown failure: treat as transient so the workflow retries (with its own limits).
  return new ConnectorError('TargetUnavailable', `${what}: unexpected error: ${detail}`, { cause: err });
}

// ---------------------------------------------------------------------------------------
// Input validation

/** descr (RFC 4512 keystring) or numeric OID. */
const ATTRIBUTE_TYPE = /^(?:[A-Za-z][A-Za-z0-9-]*|\d+(?:\.\d+)*)$/;

function validateDn(kind: 'account' | 'resource', dn: unknown): string {
  if (typeof dn !== 'string' || dn.trim() === '') {
    throw new ConnectorError('InvalidInput', `${kind} DN must be a non-empty string`);
  }
  if (dn.includes('\0')) throw new ConnectorError('InvalidInput', `${kind} DN contains a NUL byte`);
  if (dn.length > MAX_DN_LENGTH) {
    throw new ConnectorError('InvalidInput', `${kind} DN is longer than ${MAX_DN_LENGTH} characters`);
  }
  let rdns: ReturnType<typeof parseDn>;
  try {
    rdns = parseDn(dn);
  } catch {
    throw new ConnectorError('InvalidInput', `${kind} is not a valid DN`);
  }
  if (rdns.length === 0 || !rdns.every((rdn) => rdn.every((ava) => ATTRIBUTE_TYPE.test(ava.type)))) {
    throw new ConnectorError('InvalidInput', `${kind} is not a valid DN`);
  }
  return dn;
}

// ---------------------------------------------------------------------------------------

function valuesOf(entry: Record<string, unknown>, attribute: string): string[] {
  const wanted = attribute.toLowerCase();
  const out: string[] = [];
  for (const [key, value] of Object.entries(entry)) {
    // attribute descriptions may carry options (member;x-foo); match the type only
    if (key.toLowerCase().split(';')[0] !== wanted) continue;
    const list = Array.isArray(value) ? value : [value];
    for (const v of list) {
      if (typeof v === 'string') out.push(v);
      else if (Buffer.isBuffer(v)) out.push(v.toString('utf8'));
    }
  }
  return out;
}

export function createLdapConnector(config: LdapSystemConfig, secrets: LdapSecrets): Connector {
  const parsed = ldapSystemConfigSchema.safeParse(config);
  if (!parsed.success) {
    throw new ConnectorError('InvalidConfig', `invalid LDAP system config: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  }
  const cfg = parsed.data;
  const password = secrets.bindPassword;
  const placeholder = cfg.placeholderMember ? normalizeDn(cfg.placeholderMember) : undefined;

  let current: { client: Client; ready: Promise<Client> } | undefined;
  let closed = false;

  const discard = (client: Client) => {
    if (current?.client === client) current = undefined;
    client.unbind().catch(() => undefined);
  };

  /** A bound client; shared by concurrent callers, rebuilt after any connection failure. */
  const getClient = async (): Promise<Client> => {
    if (closed) throw new ConnectorError('InvalidConfig', 'LDAP connector is closed');
    if (!password) {
      // an empty password would be an unauthenticated (anonymous) bind, RFC 4513 §5.1.2
      throw new ConnectorError('InvalidConfig', 'LDAP bind password is empty');
    }
    if (current) {
      const { client, ready } = current;
      let usable: Client | undefined;
      try {
        usable = await ready;
      } catch {
        // the bind failed; the caller that created it already reported and discarded it
      }
      if (usable && client.isConnected && client.isBound) return usable;
      if (current?.client === client) discard(client);
    }
    const client = new Client({ url: cfg.url, timeout: cfg.timeoutMs, connectTimeout: cfg.timeoutMs });
    const ready = client.bind(cfg.bindDn, password).then(
      () => client,
      (err: unknown) => {
        discard(client);
        throw classifyLdapError(err, `LDAP bind as ${cfg.bindDn} at ${cfg.url}`, password);
      },
    );
    current = { client, ready };
    return ready;
  };

  /** Runs one operation on a bound client; drops the connection on transport failures. */
  const run = async <T>(what: string, op: (client: Client) => Promise<T>): Promise<T> => {
    const client = await getClient();
    try {
      return await op(client);
    } catch (err) {
      const classified = classifyLdapError(err, what, password);
      const protocolLevel = err instanceof ResultCodeError || err instanceof ConnectorError;
      if (!protocolLevel || classified.retryable) discard(client);
      throw classified;
    }
  };

  /** Member values of the group exactly as stored. */
  const readMembers = (group: string): Promise<string[]> =>
    run(`LDAP read of ${cfg.memberAttribute} on ${group}`, async (client) => {
      const { searchEntries } = await client.search(group, {
        scope: 'base',
        filter: '(objectClass=*)',
        attributes: [cfg.memberAttribute],
        sizeLimit: 1,
      });
      const entry = searchEntries[0];
      if (!entry) throw new ConnectorError('NoSuchResource', `LDAP group ${group} not found`);
      return valuesOf(entry, cfg.memberAttribute);
    });

  const validate = (m: Membership): { account: string; resource: string } => {
    const account = validateDn('account', m?.account);
    const resource = validateDn('resource', m?.resource);
    checkResource(resource);
    return { account, resource };
  };

  const checkResource = (resource: string): void => {
    if (!isDnWithin(resource, cfg.baseDn)) {
      throw new ConnectorError('InvalidInput', `resource DN is not a valid DN under ${cfg.baseDn}`);
    }
  };

  const validateAccount = (account: unknown): string => {
    const dn = validateDn('account', account);
    if (!isDnWithin(dn, cfg.baseDn)) {
      throw new ConnectorError('InvalidInput', `account DN is not a valid DN under ${cfg.baseDn}`);
    }
    return dn;
  };

  const isNoSuchObject = (err: unknown): boolean => {
    const cause = err instanceof ConnectorError ? err.cause : err;
    return cause instanceof ResultCodeError && cause.code === RC.noSuchObject;
  };

  /** pwdAccountLockedTime values of the account; undefined when the entry does not exist. */
  /** An operational attribute of an account entry (only returned when asked for by name); undefined when the entry does not exist. */
  const readOperational = async (account: string, attribute: string): Promise<string[] | undefined> => {
    try {
      return await run(`LDAP read of ${attribute} on ${account}`, async (client) => {
        const { searchEntries } = await client.search(account, { scope: 'base', filter: '(objectClass=*)', attributes: [attribute], sizeLimit: 1 });
        const entry = searchEntries[0];
        return entry ? valuesOf(entry, attribute) : undefined;
      });
    } catch (err) {
      if (isNoSuchObject(err)) return undefined;
      throw err;
    }
  };
  const readLock = (account: string) => readOperational(account, LOCK_ATTRIBUTE);

  const noSuchAccount = (account: string, cause?: unknown) =>
    new ConnectorError('NoSuchAccount', `LDAP account ${account} not found`, cause === undefined ? undefined : { cause });

  const findMember = async (m: { account: string; resource: string }): Promise<string | undefined> => {
    const wanted = normalizeDn(m.account);
    const members = await readMembers(m.resource);
    return members.find((v) => normalizeDn(v) === wanted);
  };

  return {
    kind: 'ldap',

    async grant(input: Membership): Promise<ChangeResult> {
      const m = validate(input);
      if ((await findMember(m)) !== undefined) return { changed: false };
      try {
        await run(`LDAP add ${cfg.memberAttribute} to ${m.resource}`, (client) =>
          client.modify(
            m.resource,
            new Change({ operation: 'add', modification: new Attribute({ type: cfg.memberAttribute, values: [m.account] }) }),
          ),
        );
      } catch (err) {
        const cause = err instanceof ConnectorError ? err.cause : undefined;
        if (cause instanceof ResultCodeError && cause.code === RC.typeOrValueExists) return { changed: false };
        throw err;
      }
      return { changed: true };
    },

    async revoke(input: Membership): Promise<ChangeResult> {
      const m = validate(input);
      if (placeholder !== undefined && normalizeDn(m.account) === placeholder) {
        throw new ConnectorError('InvalidInput', 'refusing to remove the placeholder member');
      }
      const stored = await findMember(m);
      if (stored === undefined) return { changed: false };
      try {
        await run(`LDAP delete ${cfg.memberAttribute} from ${m.resource}`, (client) =>
          client.modify(
            m.resource,
            // delete the value as stored, so the server's matching agrees with ours
            new Change({ operation: 'delete', modification: new Attribute({ type: cfg.memberAttribute, values: [stored] }) }),
          ),
        );
      } catch (err) {
        const cause = err instanceof ConnectorError ? err.cause : undefined;
        if (cause instanceof ResultCodeError && cause.code === RC.noSuchAttribute) return { changed: false };
        throw err;
      }
      return { changed: true };
    },

    async check(input: Membership): Promise<CheckResult> {
      const m = validate(input);
      return { present: (await findMember(m)) !== undefined };
    },

    async list(resource: string): Promise<string[]> {
      const group = validateDn('resource', resource);
      checkResource(group);
      const members = await readMembers(group);
      // canonical spelling: slapd returns e.g. `uid=a\2Cb,...`; we return `uid=a\,b,...`,
      // which is what ldapAccountFor renders. Compare with normalizeDn for case.
      return members.filter((v) => placeholder === undefined || normalizeDn(v) !== placeholder).map(canonicalDn);
    },

    async disableAccount(input: string): Promise<ChangeResult> {
      const account = validateAccount(input);
      const lock = await readLock(account);
      if (lock === undefined) throw noSuchAccount(account);
      // any other value is an automatic (possibly expiring) lockout: make it permanent
      if (lock.length === 1 && lock[0] === ADMIN_LOCK_TIME) return { changed: false };
      try {
        await run(`LDAP lock of ${account}`, (client) =>
          client.modify(
            account,
            new Change({ operation: 'replace', modification: new Attribute({ type: LOCK_ATTRIBUTE, values: [ADMIN_LOCK_TIME] }) }),
          ),
        );
      } catch (err) {
        if (isNoSuchObject(err)) throw noSuchAccount(account, err instanceof ConnectorError ? err.cause : err);
        throw err;
      }
      return { changed: true };
    },

    async enableAccount(input: string): Promise<ChangeResult> {
      const account = validateAccount(input);
      const lock = await readLock(account);
      if (lock === undefined) throw noSuchAccount(account);
      if (lock.length === 0) return { changed: false };
      try {
        await run(`LDAP unlock of ${account}`, (client) =>
          client.modify(account, new Change({ operation: 'delete', modification: new Attribute({ type: LOCK_ATTRIBUTE }) })),
        );
      } catch (err) {
        if (isNoSuchObject(err)) throw noSuchAccount(account, err instanceof ConnectorError ? err.cause : err);
        const cause = err instanceof ConnectorError ? err.cause : undefined;
        // removed concurrently: already in the wanted state
        if (cause instanceof ResultCodeError && cause.code === RC.noSuchAttribute) return { changed: false };
        throw err;
      }
      return { changed: true };
    },

    /** disabled = locked by an administrator (ADMIN_LOCK_TIME), i.e. what disableAccount sets. */
    async accountDisabled(input: string): Promise<{ disabled: boolean; exists: boolean }> {
      const account = validateAccount(input);
      const lock = await readLock(account);
      if (lock === undefined) return { exists: false, disabled: false };
      return { exists: true, disabled: lock.includes(ADMIN_LOCK_TIME) };
    },

    async lastUsed(input: string): Promise<{ exists: boolean; at: Date | null }> {
      const account = validateAccount(input);
      const values = await readOperational(account, LAST_BIND_ATTRIBUTE);
      if (values === undefined) return { exists: false, at: null };
      const at = values[0] ? parseGeneralizedTime(values[0]) : null;
      return { exists: true, at };
    },

    async close(): Promise<void> {
      closed = true;
      const c = current;
      current = undefined;
      if (c) await c.client.unbind().catch(() => undefined);
    },
  };
}
