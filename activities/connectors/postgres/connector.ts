/**
 * PostgreSQL connector: role membership through postgres.js.
 *
 * `resource` is a group role (the entitlement), `account` a login role. A grant is
 * `GRANT "resource" TO "account"`, a revoke `REVOKE "resource" FROM "account"`; both read
 * pg_auth_members first (inside a transaction holding an advisory lock on the pair, so
 * concurrent calls through our connectors report changed=true exactly once).
 *
 * Role names are never interpolated into SQL text except as quoted identifiers
 * (`"` doubled inside, see quoteIdent), and only after validation: 1..63 bytes of
 * well-formed UTF-8 without NUL. Catalog reads pass names as bind parameters.
 *
 * Membership is direct membership (a pg_auth_members row), not inherited membership
 * through nested groups. check/revoke of an account role that does not exist report
 * "absent" (a missing role holds no memberships, e.g. after a leaver's role was dropped);
 * grant to a missing account is NoSuchAccount.
 *
 * Account disable/enable toggles LOGIN (`ALTER ROLE ... NOLOGIN` / `LOGIN`); disabling
 * also terminates the role's open sessions. The admin role therefore needs CREATEROLE
 * (or superuser) and, to terminate sessions, membership in pg_signal_backend (or in the
 * account role). Note that Postgres cannot tell a disabled login role from a group role:
 * enableAccount on a group role's name would make it a login role, so account templates
 * should not be able to render group role names (e.g. use a prefix).
 *
 * Non-human credentials (issueCredential): the account becomes a LOGIN role with a freshly
 * generated password and `VALID UNTIL` the lease's end. The password never reaches the server
 * in clear: we send a SCRAM-SHA-256 verifier (what psql's \password does), so statement logs
 * (`log_statement = all`) and pg_stat_activity never show it. Issuing again rotates (the old
 * password stops working at once; sessions already open stay, as with any password change).
 * revokeCredential removes the password, makes the role NOLOGIN with `VALID UNTIL '-infinity'`
 * and terminates its sessions; credentialActive reads both facts back.
 */
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { z } from 'zod';
import {
  ConnectorError,
  type ChangeResult,
  type CheckResult,
  type Connector,
  type ConnectorErrorType,
  type GrantResult,
  type IssuedCredential,
  type Membership,
} from '../types.js';
import { NETWORK_ERROR_CODES } from '../network.js';
import { redact } from '../redact.js';

/** NAMEDATALEN - 1: longer identifiers are silently truncated by the server. */
export const MAX_ROLE_NAME_BYTES = 63;

/** Longest value accepted for one template placeholder (the rendered name is limited anyway). */
const MAX_PLACEHOLDER_VALUE_LENGTH = 256;

export const postgresSystemConfigSchema = z.object({
  host: z
    .string()
    .min(1)
    .regex(/^[^\s,]+$/, 'host must be a single host name, IP address or socket directory')
    .default('127.0.0.1'),
  port: z.number().int().min(1).max(65_535).default(5432),
  database: z.string().min(1).max(MAX_ROLE_NAME_BYTES).refine((s) => !s.includes('\0'), 'database must not contain NUL'),
  /** The admin login (needs CREATEROLE, or ADMIN OPTION on the group roles it manages). */
  user: z.string().min(1).max(MAX_ROLE_NAME_BYTES).refine((s) => !s.includes('\0'), 'user must not contain NUL'),
  sslmode: z.enum(['disable', 'require']).default('disable'),
  /** e.g. `{username}` or `app_{username}`; rendered into the login role name (not escaped: always quoted). */
  accountTemplate: z.string().min(1),
  timeoutMs: z.number().int().min(100).max(60_000).default(5000),
});

/** A parsed config (defaults filled in). */
export type PostgresSystemConfig = z.infer<typeof postgresSystemConfigSchema>;
/** What createPostgresConnector accepts: defaulted fields may be omitted. */
export type PostgresSystemConfigInput = z.input<typeof postgresSystemConfigSchema>;

export interface PostgresSecrets {
  password: string;
}

// ---------------------------------------------------------------------------------------
// Names

/** Lone UTF-16 surrogates cannot be encoded as UTF-8 (the server would get U+FFFD). */
const LONE_SURROGATE = /\p{Cs}/u;

/**
 * Validates a role name: a non-empty string without NUL, well-formed, at most 63 bytes
 * of UTF-8. Anything else is allowed because names are always quoted.
 */
export function validateRoleName(kind: 'account' | 'resource', name: unknown): string {
  if (typeof name !== 'string' || name.length === 0) {
    throw new ConnectorError('InvalidInput', `${kind} role name must be a non-empty string`);
  }
  if (name.includes('\0')) throw new ConnectorError('InvalidInput', `${kind} role name contains a NUL byte`);
  if (LONE_SURROGATE.test(name)) throw new ConnectorError('InvalidInput', `${kind} role name is not valid Unicode`);
  if (Buffer.byteLength(name, 'utf8') > MAX_ROLE_NAME_BYTES) {
    throw new ConnectorError('InvalidInput', `${kind} role name is longer than ${MAX_ROLE_NAME_BYTES} bytes`);
  }
  return name;
}

/** A quoted SQL identifier: `"` around, every `"` inside doubled. Only for validated names. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

/**
 * A SCRAM-SHA-256 verifier in PostgreSQL's `rolpassword` format (RFC 5802/7677 keys):
 * `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. Sending it instead of the
 * password keeps the password out of the server's logs. Generated passwords are ASCII, so
 * SASLprep leaves them unchanged.
 */
export function scramSha256Verifier(password: string, iterations = 4096, salt: Buffer = randomBytes(16)): string {
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const clientKey = createHmac('sha256', salted).update('Client Key').digest();
  const storedKey = createHash('sha256').update(clientKey).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  return `SCRAM-SHA-256$${iterations}:${salt.toString('base64')}$${storedKey.toString('base64')}:${serverKey.toString('base64')}`;
}

/** Only these characters can appear in a verifier, so it is safe inside a SQL string literal. */
const VERIFIER_SHAPE = /^SCRAM-SHA-256\$\d+:[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+:[A-Za-z0-9+/=]+$/;

/** 32 characters from a 192-bit random value; URL-safe so it can go into connection strings. */
function generatePassword(): string {
  return randomBytes(24).toString('base64url');
}

/**
 * Login role name for a user: `{name}` placeholders of the template are replaced by the
 * values (verbatim). Throws InvalidInput for an unknown placeholder, an empty value or a
 * value with NUL, and when the result is not a valid role name.
 */
export function postgresAccountFor(config: Pick<PostgresSystemConfigInput, 'accountTemplate'>, vars: { username: string }): string {
  const values: Readonly<Record<string, string | undefined>> = vars;
  const name = config.accountTemplate.replace(/\{([^{}]*)\}/g, (_match, key: string) => {
    if (!Object.prototype.hasOwnProperty.call(values, key)) {
      throw new ConnectorError('InvalidInput', `account template uses unknown placeholder {${key}}`);
    }
    const value = values[key];
    if (typeof value !== 'string' || value.length === 0) throw new ConnectorError('InvalidInput', `value for {${key}} is empty`);
    if (value.includes('\0')) throw new ConnectorError('InvalidInput', `value for {${key}} contains a NUL byte`);
    if (value.length > MAX_PLACEHOLDER_VALUE_LENGTH) {
      throw new ConnectorError('InvalidInput', `value for {${key}} is longer than ${MAX_PLACEHOLDER_VALUE_LENGTH} characters`);
    }
    return value;
  });
  return validateRoleName('account', name);
}

// ---------------------------------------------------------------------------------------
// Error classification

// A unix socket path that is missing means the server is not running.
const NETWORK_CODES: ReadonlySet<string> = new Set([...NETWORK_ERROR_CODES, 'ENOENT']);

const TIMEOUT_CODES = new Set(['ETIMEDOUT', 'CONNECT_TIMEOUT']);

/** SQLSTATE → type; classes (first two characters) are looked up after exact codes. */
const SQLSTATE_TYPES = new Map<string, ConnectorErrorType>([
  ['42501', 'PermissionDenied'], // insufficient_privilege
  ['28P01', 'PermissionDenied'], // invalid_password
  ['28000', 'PermissionDenied'], // invalid_authorization_specification (no such role, no pg_hba entry, NOLOGIN)
  ['3D000', 'InvalidConfig'], // invalid_catalog_name: database does not exist
  ['57014', 'Timeout'], // query_canceled (statement_timeout)
  ['55P03', 'Timeout'], // lock_not_available (lock_timeout)
  ['57P01', 'TargetUnavailable'], // admin_shutdown (also pg_terminate_backend)
  ['57P02', 'TargetUnavailable'], // crash_shutdown
  ['57P03', 'TargetUnavailable'], // cannot_connect_now (starting up)
  ['57P04', 'TargetUnavailable'], // database_dropped
  ['53300', 'Throttled'], // too_many_connections
  ['53400', 'Throttled'], // configuration_limit_exceeded
  ['0LP01', 'InvalidInput'], // invalid_grant_operation (e.g. circular membership)
  ['42704', 'InvalidInput'], // undefined_object: re-classified by the caller when it is a role
  ['25006', 'TargetUnavailable'], // read_only_sql_transaction: hot standby
]);

const SQLSTATE_CLASS_TYPES = new Map<string, ConnectorErrorType>([
  ['08', 'TargetUnavailable'], // connection exception
  ['28', 'PermissionDenied'], // invalid authorization
  ['40', 'TargetUnavailable'], // serialization failure / deadlock: retry
  ['53', 'TargetUnavailable'], // insufficient resources
  ['57', 'TargetUnavailable'], // operator intervention
  ['58', 'TargetUnavailable'], // system error
  ['XX', 'TargetUnavailable'], // internal error (e.g. "tuple concurrently updated")
  ['22', 'InvalidInput'], // data exception
  ['42', 'InvalidInput'], // syntax error or access rule violation
  ['0L', 'InvalidInput'], // invalid grantor
  ['0P', 'InvalidInput'], // invalid role specification
]);

/** SQLSTATE of a server error (postgres.js PostgresError), if it is one. */
export function sqlState(err: unknown): string | undefined {
  if (err instanceof ConnectorError) return sqlState(err.cause);
  if (!(err instanceof postgres.PostgresError)) return undefined;
  return typeof err.code === 'string' ? err.code : undefined;
}

/**
 * Maps a postgres.js / socket error to a ConnectorError. The message never contains the
 * password; the raw error is kept as `cause`.
 */
export function classifyPostgresError(err: unknown, what: string, password = ''): ConnectorError {
  if (err instanceof ConnectorError) return err;
  const raw = err instanceof Error ? err.message : String(err);
  const detail = redact(raw.split('\n')[0] ?? raw, password);
  const code = (err as { code?: unknown } | null)?.code;
  const isServerError = err instanceof postgres.PostgresError || (typeof code === 'string' && /^[0-9A-Z]{5}$/.test(code));
  if (isServerError && typeof code === 'string') {
    const type = SQLSTATE_TYPES.get(code) ?? SQLSTATE_CLASS_TYPES.get(code.slice(0, 2)) ?? 'TargetUnavailable';
    return new ConnectorError(type, `${what}: SQLSTATE ${code}: ${detail}`, { cause: err });
  }
  if ((typeof code === 'string' && TIMEOUT_CODES.has(code)) || /timed? ?out/i.test(raw)) {
    return new ConnectorError('Timeout', `${what}: ${detail}`, { cause: err });
  }
  if (typeof code === 'string' && NETWORK_CODES.has(code)) {
    return new ConnectorError('TargetUnavailable', `${what}: ${detail}`, { cause: err });
  }
  if (typeof code === 'string' && /^(SASL_|AUTH_|MESSAGE_NOT_SUPPORTED)/.test(code)) {
    const type: ConnectorErrorType = code.startsWith('SASL_SIGNATURE') ? 'PermissionDenied' : 'InvalidConfig';
    return new ConnectorError(type, `${what}: ${detail}`, { cause: err });
  }
  if (/ssl|tls|certificate/i.test(raw) || (typeof code === 'string' && /^ERR_SSL|^ERR_TLS|CERT/.test(code))) {
    return new ConnectorError('InvalidConfig', `${what}: TLS: ${detail}`, { cause: err });
  }
  // Unknown failure: treat as transient so the workflow retries (with its own limits).
  return new ConnectorError('TargetUnavailable', `${what}: unexpected error: ${detail}`, { cause: err });
}

/** The connection died under the query (server restart, pg_terminate_backend, reset). */
function connectionLost(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'CONNECTION_CLOSED' || code === 'ECONNRESET' || code === 'EPIPE' || sqlState(err) === '57P01';
}

// ---------------------------------------------------------------------------------------

interface PairState {
  resource_exists: boolean;
  account_exists: boolean;
  present: boolean;
}

type Tag = postgres.Sql | postgres.TransactionSql;

/** Existence of both roles and of the direct membership, names as parameters. */
async function readPair(sql: Tag, m: Membership): Promise<PairState> {
  const rows = await sql<PairState[]>`
    select
      exists(select 1 from pg_catalog.pg_roles where rolname = ${m.resource}) as resource_exists,
      exists(select 1 from pg_catalog.pg_roles where rolname = ${m.account}) as account_exists,
      exists(
        select 1
          from pg_catalog.pg_auth_members am
          join pg_catalog.pg_roles g on g.oid = am.roleid
          join pg_catalog.pg_roles r on r.oid = am.member
         where g.rolname = ${m.resource} and r.rolname = ${m.account}
      ) as present`;
  const row = rows[0];
  if (!row) throw new ConnectorError('TargetUnavailable', 'membership read returned no row');
  return row;
}

/** Serialises our own mutations of one membership (database-scoped, released at commit). */
async function lockPair(sql: postgres.TransactionSql, m: Membership): Promise<void> {
  await sql`select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext(${`accessloop:role:${m.resource}`}), pg_catalog.hashtext(${m.account}))`;
}

async function readLogin(sql: Tag, account: string): Promise<{ rolcanlogin: boolean } | undefined> {
  const rows = await sql<{ rolcanlogin: boolean }[]>`select rolcanlogin from pg_catalog.pg_roles where rolname = ${account}`;
  return rows[0];
}

/**
 * Ends the role's open sessions. Called after the commit that stopped new logins (and again on
 * a repeated call, in case an earlier attempt failed between the two steps). True if any ended.
 */
async function terminateSessions(sql: Tag, account: string): Promise<boolean> {
  const killed = await sql<{ terminated: boolean }[]>`
    select pg_catalog.pg_terminate_backend(pid) as terminated
      from pg_catalog.pg_stat_activity
     where usename = ${account} and pid <> pg_catalog.pg_backend_pid()`;
  return killed.some((k) => k.terminated);
}

interface CredentialState {
  exists: boolean;
  can_login: boolean;
  /** VALID UNTIL not set, or later than now. */
  unexpired: boolean;
  sessions: number;
}

async function readCredential(sql: Tag, account: string): Promise<CredentialState> {
  const rows = await sql<CredentialState[]>`
    select
      exists(select 1 from pg_catalog.pg_roles where rolname = ${account}) as exists,
      coalesce((select rolcanlogin from pg_catalog.pg_roles where rolname = ${account}), false) as can_login,
      coalesce((select rolvaliduntil is null or rolvaliduntil > now() from pg_catalog.pg_roles where rolname = ${account}), false) as unexpired,
      (select count(*)::int from pg_catalog.pg_stat_activity where usename = ${account} and pid <> pg_catalog.pg_backend_pid()) as sessions`;
  const row = rows[0];
  if (!row) throw new ConnectorError('TargetUnavailable', 'credential read returned no row');
  return row;
}

/** Serialises our own credential changes of one role. */
async function lockAccount(sql: postgres.TransactionSql, account: string): Promise<void> {
  await sql`select pg_catalog.pg_advisory_xact_lock(pg_catalog.hashtext('accessloop:login'), pg_catalog.hashtext(${account}))`;
}

/** A timestamptz literal for VALID UNTIL (ISO 8601 from a Date: digits, `-:.TZ` only). */
function validUntilLiteral(notAfter: Date): string {
  if (!(notAfter instanceof Date) || Number.isNaN(notAfter.getTime())) throw new ConnectorError('InvalidInput', 'notAfter must be a valid date');
  if (notAfter.getTime() <= Date.now()) throw new ConnectorError('InvalidInput', 'notAfter must be in the future');
  return `'${notAfter.toISOString()}'`;
}

export function createPostgresConnector(config: PostgresSystemConfigInput, secrets: PostgresSecrets): Connector {
  const parsed = postgresSystemConfigSchema.safeParse(config);
  if (!parsed.success) {
    throw new ConnectorError('InvalidConfig', `invalid PostgreSQL system config: ${z.prettifyError(parsed.error)}`, { cause: parsed.error });
  }
  const cfg: PostgresSystemConfig = parsed.data;
  const password = typeof secrets?.password === 'string' ? secrets.password : '';
  const where = `${cfg.user}@${cfg.host}:${cfg.port}/${cfg.database}`;
  /** Client-side bound on one whole operation; server-side timeouts normally fire first. */
  const deadlineMs = cfg.timeoutMs + 500;

  let pool: postgres.Sql | undefined;
  let closed = false;

  const getPool = (): postgres.Sql => {
    if (closed) throw new ConnectorError('InvalidConfig', 'PostgreSQL connector is closed');
    pool ??= postgres({
      host: cfg.host,
      port: cfg.port,
      database: cfg.database,
      user: cfg.user,
      // a function: an empty password must not fall back to $PGPASSWORD
      password: () => password,
      ssl: cfg.sslmode === 'require' ? 'require' : false,
      max: 2,
      connect_timeout: cfg.timeoutMs / 1000,
      idle_timeout: 60,
      // postgres.js delays reconnects exponentially (up to 20 s) after failed connects, which
      // would turn a quick "unavailable" into a deadline Timeout; callers (Temporal) pace retries
      backoff: (retries: number) => Math.min(0.01 * 2 ** retries, 0.2),
      fetch_types: false,
      onnotice: () => undefined,
      connection: {
        application_name: 'accessloop-connector',
        statement_timeout: cfg.timeoutMs,
        lock_timeout: cfg.timeoutMs,
        idle_in_transaction_session_timeout: Math.max(cfg.timeoutMs * 2, 10_000),
      },
    });
    return pool;
  };

  /** Drops the pool (destroying its sockets); the next call builds a new one. */
  const discard = (sql: postgres.Sql) => {
    if (pool === sql) pool = undefined;
    sql.end({ timeout: 0 }).catch(() => undefined);
  };

  /**
   * Runs one operation with a deadline. postgres.js reconnects by itself, but the first
   * queries on connections that died while idle (server restart, pg_terminate_backend)
   * fail with CONNECTION_CLOSED or the backend's late 57P01: such an operation is tried
   * again, up to three times (each of the two pooled connections can fail that way), within
   * the same deadline. Every operation is idempotent (read first, in one transaction), so a
   * retry is no different from the caller's own (a COMMIT whose answer was lost shows up as
   * changed=false). A pool stuck past the deadline is thrown away.
   */
  const run = async <T>(what: string, op: (sql: postgres.Sql) => Promise<T>): Promise<T> => {
    let timer: NodeJS.Timeout | undefined;
    let timedOut = false;
    const deadline = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        reject(new ConnectorError('Timeout', `${what}: no answer from ${where} within ${cfg.timeoutMs} ms`));
      }, deadlineMs);
    });
    deadline.catch(() => undefined);
    try {
      for (let attempt = 0; ; attempt++) {
        const sql = getPool();
        const work = op(sql);
        work.catch(() => undefined);
        try {
          return await Promise.race([work, deadline]);
        } catch (err) {
          if (timedOut) {
            discard(sql);
          } else if (attempt < 3 && connectionLost(err)) {
            continue;
          }
          throw classifyPostgresError(err, `${what} (${where})`, password);
        }
      }
    } finally {
      clearTimeout(timer);
    }
  };

  const validate = (m: Membership): Membership => ({
    // resource first: with both invalid the resource is the one reported
    resource: validateRoleName('resource', m?.resource),
    account: validateRoleName('account', m?.account),
  });

  const noSuchResource = (resource: string) => new ConnectorError('NoSuchResource', `PostgreSQL role ${resource} not found`);
  const noSuchAccount = (account: string) => new ConnectorError('NoSuchAccount', `PostgreSQL role ${account} not found`);

  /** A 42704 (role does not exist) from a mutation: the role was dropped after our read. */
  const undefinedRole = async (err: unknown, m: Membership, onMissingAccount: () => ChangeResult): Promise<ChangeResult> => {
    if (sqlState(err) !== '42704') throw err;
    const state = await run(`PostgreSQL read of ${m.resource} membership`, (sql) => readPair(sql, m));
    if (!state.resource_exists) throw noSuchResource(m.resource);
    if (!state.account_exists) return onMissingAccount();
    throw err;
  };

  const validateAccount = (input: unknown): string => validateRoleName('account', input);

  return {
    kind: 'postgres',

    async grant(input: Membership): Promise<GrantResult> {
      const m = validate(input);
      try {
        return await run(`PostgreSQL GRANT ${m.resource} TO ${m.account}`, (sql) =>
          sql.begin(async (tx) => {
            await lockPair(tx, m);
            const state = await readPair(tx, m);
            if (!state.resource_exists) throw noSuchResource(m.resource);
            if (!state.account_exists) throw noSuchAccount(m.account);
            if (state.present) return { changed: false };
            await tx.unsafe(`GRANT ${quoteIdent(m.resource)} TO ${quoteIdent(m.account)}`);
            return { changed: true };
          }),
        );
      } catch (err) {
        // granted concurrently by someone else: pg_auth_members unique index
        if (sqlState(err) === '23505') return { changed: false };
        return undefinedRole(err, m, () => {
          throw noSuchAccount(m.account);
        });
      }
    },

    async revoke(input: Membership): Promise<ChangeResult> {
      const m = validate(input);
      try {
        return await run(`PostgreSQL REVOKE ${m.resource} FROM ${m.account}`, (sql) =>
          sql.begin(async (tx) => {
            await lockPair(tx, m);
            const state = await readPair(tx, m);
            if (!state.resource_exists) throw noSuchResource(m.resource);
            if (!state.present) return { changed: false };
            await tx.unsafe(`REVOKE ${quoteIdent(m.resource)} FROM ${quoteIdent(m.account)}`);
            // PostgreSQL 16+ keeps memberships granted by other grantors (only a WARNING)
            if ((await readPair(tx, m)).present) {
              throw new ConnectorError(
                'PermissionDenied',
                `PostgreSQL REVOKE ${m.resource} FROM ${m.account} left the membership in place (granted by another role)`,
              );
            }
            return { changed: true };
          }),
        );
      } catch (err) {
        return undefinedRole(err, m, () => ({ changed: false }));
      }
    },

    async check(input: Membership): Promise<CheckResult> {
      const m = validate(input);
      const state = await run(`PostgreSQL read of ${m.resource} membership`, (sql) => readPair(sql, m));
      if (!state.resource_exists) throw noSuchResource(m.resource);
      return { present: state.present };
    },

    async list(resource: string): Promise<string[]> {
      const group = validateRoleName('resource', resource);
      const rows = await run(`PostgreSQL read of ${group} members`, (sql) =>
        sql<{ member: string | null }[]>`
          select r.rolname::text as member
            from pg_catalog.pg_roles g
            left join pg_catalog.pg_auth_members am on am.roleid = g.oid
            left join pg_catalog.pg_roles r on r.oid = am.member
           where g.rolname = ${group}
           order by 1`,
      );
      if (rows.length === 0) throw noSuchResource(group);
      // PostgreSQL 16+ may hold one row per grantor
      return [...new Set(rows.map((r) => r.member).filter((v): v is string => v !== null))];
    },

    async disableAccount(input: string): Promise<ChangeResult> {
      const account = validateAccount(input);
      if (account === cfg.user) throw new ConnectorError('InvalidInput', 'refusing to disable the connector\'s own admin role');
      const what = `PostgreSQL disable of ${account}`;
      return run(what, async (sql) => {
        const flipped = await sql.begin(async (tx) => {
          const role = await readLogin(tx, account);
          if (!role) throw noSuchAccount(account);
          if (!role.rolcanlogin) return false;
          await tx.unsafe(`ALTER ROLE ${quoteIdent(account)} NOLOGIN`);
          return true;
        });
        return { changed: (await terminateSessions(sql, account)) || flipped };
      });
    },

    async enableAccount(input: string): Promise<ChangeResult> {
      const account = validateAccount(input);
      return run(`PostgreSQL enable of ${account}`, (sql) =>
        sql.begin(async (tx) => {
          const role = await readLogin(tx, account);
          if (!role) throw noSuchAccount(account);
          if (role.rolcanlogin) return { changed: false };
          await tx.unsafe(`ALTER ROLE ${quoteIdent(account)} LOGIN`);
          return { changed: true };
        }),
      );
    },

    /** disabled = the role exists and cannot log in (rolcanlogin false). */
    async accountDisabled(input: string): Promise<{ disabled: boolean; exists: boolean }> {
      const account = validateAccount(input);
      const role = await run(`PostgreSQL read of ${account}`, (sql) => readLogin(sql, account));
      if (!role) return { exists: false, disabled: false };
      return { exists: true, disabled: !role.rolcanlogin };
    },

    async issueCredential(input: string, opts: { notAfter: Date }): Promise<IssuedCredential> {
      const account = validateAccount(input);
      if (account === cfg.user) throw new ConnectorError('InvalidInput', 'refusing to issue a credential for the connector\'s own admin role');
      const until = validUntilLiteral(opts?.notAfter);
      const secret = generatePassword();
      const verifier = scramSha256Verifier(secret);
      if (!VERIFIER_SHAPE.test(verifier)) throw new ConnectorError('InvalidInput', 'unexpected verifier shape');
      await run(`PostgreSQL credential for ${account}`, (sql) =>
        sql.begin(async (tx) => {
          await lockAccount(tx, account);
          const role = await readLogin(tx, account);
          const verb = role ? 'ALTER' : 'CREATE';
          await tx.unsafe(`${verb} ROLE ${quoteIdent(account)} LOGIN PASSWORD '${verifier}' VALID UNTIL ${until}`);
        }),
      );
      return { kind: 'password', credentialId: account, material: secret, notAfter: opts.notAfter };
    },

    async extendCredential(input: string, opts: { notAfter: Date }): Promise<ChangeResult> {
      const account = validateAccount(input);
      const until = validUntilLiteral(opts?.notAfter);
      return run(`PostgreSQL credential validity of ${account}`, (sql) =>
        sql.begin(async (tx) => {
          await lockAccount(tx, account);
          const state = await readCredential(tx, account);
          // Never revive a revoked credential: only a live login gets a later end.
          if (!state.exists || !state.can_login) throw noSuchAccount(account);
          await tx.unsafe(`ALTER ROLE ${quoteIdent(account)} VALID UNTIL ${until}`);
          return { changed: true };
        }),
      );
    },

    async revokeCredential(input: string): Promise<ChangeResult> {
      const account = validateAccount(input);
      if (account === cfg.user) throw new ConnectorError('InvalidInput', 'refusing to revoke the connector\'s own admin role');
      return run(`PostgreSQL credential revoke of ${account}`, async (sql) => {
        const flipped = await sql.begin(async (tx) => {
          await lockAccount(tx, account);
          const state = await readCredential(tx, account);
          if (!state.exists) return false;
          await tx.unsafe(`ALTER ROLE ${quoteIdent(account)} NOLOGIN PASSWORD NULL VALID UNTIL '-infinity'`);
          return state.can_login;
        });
        return { changed: (await terminateSessions(sql, account)) || flipped };
      });
    },

    /** Active while the role can log in before VALID UNTIL, or any session of it is still open. */
    async credentialActive(input: string): Promise<{ active: boolean }> {
      const account = validateAccount(input);
      const state = await run(`PostgreSQL read of ${account} credential`, (sql) => readCredential(sql, account));
      return { active: (state.can_login && state.unexpired) || state.sessions > 0 };
    },

    async close(): Promise<void> {
      closed = true;
      const p = pool;
      pool = undefined;
      if (p) await p.end({ timeout: 1 }).catch(() => undefined);
    },
  };
}
