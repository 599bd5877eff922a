/**
 * PostgreSQL connector against the machine's PostgreSQL (127.0.0.1:5432, trust auth).
 *
 * Each run uses a scratch database and roles carrying a per-run prefix (roles are
 * cluster-wide); both are dropped in afterAll. The truth is read with the psql CLI
 * (test/helpers/postgres.ts), never through the connector.
 *
 * The shared server cannot be stopped, so the contract runs with { stoppable: false };
 * unavailability is covered by a closed port, a silent TCP server and terminated backends.
 */
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  classifyPostgresError,
  createPostgresConnector,
  postgresAccountFor,
  quoteIdent,
  type PostgresSystemConfig,
} from '../../activities/connectors/postgres/connector.js';
import { ConnectorError, type Connector } from '../../activities/connectors/types.js';
import { freePort } from '../../temporal/dev-server.js';
import { describeConnectorContract, expectConnectorError } from '../helpers/connector-contract.js';
import { withSilentServer } from '../helpers/silent-server.js';
import {
  loginUrl,
  psql,
  psqlCanLogin,
  psqlCreateRole,
  psqlCreateRoleSync,
  psqlDropRolesWithPrefix,
  psqlMembershipsWithPrefix,
  psqlRoleCanLogin,
  psqlRoleMembers,
  psqlRolesWithPrefix,
} from '../helpers/postgres.js';

/** The machine's Postgres (trust auth); same default as test/helpers/db.ts. */
const ADMIN_URL = process.env.TEST_DATABASE_URL ?? 'postgres://postgres@127.0.0.1:5432/test';
const admin = new URL(ADMIN_URL);
const PREFIX = `t${randomBytes(3).toString('hex')}_`;
const DB_NAME = `accessloop_pgc_${randomBytes(5).toString('hex')}`;
const SCRATCH_URL = loginUrl(ADMIN_URL, decodeURIComponent(admin.username) || 'postgres', DB_NAME);
const READERS = `${PREFIX}readers`;
const WRITERS = `${PREFIX}writers`;
const VICTIM = `${PREFIX}victim`;
const TIMEOUT_MS = 2000;
/** Not a secret with trust auth; must still never show up in errors. */
const ADMIN_PASSWORD = `pw-${randomUUID()}`;

const config: PostgresSystemConfig = {
  host: admin.hostname || '127.0.0.1',
  port: Number(admin.port || 5432),
  database: DB_NAME,
  user: decodeURIComponent(admin.username) || 'postgres',
  sslmode: 'disable',
  accountTemplate: `${PREFIX}{username}`,
  timeoutMs: TIMEOUT_MS,
};

const openConnectors: Connector[] = [];
function connector(overrides: Partial<PostgresSystemConfig> = {}, password = ADMIN_PASSWORD): Connector {
  const c = createPostgresConnector({ ...config, ...overrides }, { password });
  openConnectors.push(c);
  return c;
}

let roleSeq = 0;
/** A fresh role name with the run prefix (not created). */
const freshName = (tag: string) => `${PREFIX}${tag}${++roleSeq}`;

async function createLoginRole(tag: string): Promise<string> {
  const name = freshName(tag);
  await psqlCreateRole(SCRATCH_URL, name, { login: true });
  return name;
}

/** Everything our run's roles look like: role names and memberships. */
async function snapshot(): Promise<{ roles: string[]; memberships: string[] }> {
  return { roles: await psqlRolesWithPrefix(SCRATCH_URL, PREFIX), memberships: await psqlMembershipsWithPrefix(SCRATCH_URL, PREFIX) };
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/** A long-lived psql session fed through stdin (for open transactions and sessions). */
function psqlSession(url: string, vars: Record<string, string> = {}): {
  child: ChildProcessWithoutNullStreams;
  output: () => string;
  errors: () => string;
  exited: Promise<number | null>;
} {
  const args = [url, '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1'];
  for (const [k, v] of Object.entries(vars)) args.push('-v', `${k}=${v}`);
  const env = { ...process.env };
  delete env.PGPASSWORD;
  const child = spawn('psql', args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.setEncoding('utf8').on('data', (d: string) => (out += d));
  child.stderr.setEncoding('utf8').on('data', (d: string) => (err += d));
  child.stdin.on('error', () => undefined);
  const exited = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
  return { child, output: () => out, errors: () => err, exited };
}

beforeAll(async () => {
  await psql(ADMIN_URL, `select format('CREATE DATABASE %I', :'db') \\gexec\n`, { db: DB_NAME });
  for (const role of [READERS, WRITERS, VICTIM]) await psqlCreateRole(SCRATCH_URL, role);
});

afterAll(async () => {
  for (const c of openConnectors) await c.close().catch(() => undefined);
  await psql(ADMIN_URL, `select format('DROP DATABASE IF EXISTS %I WITH (FORCE)', :'db') \\gexec\n`, { db: DB_NAME }).catch((e: unknown) =>
    console.error(`dropping ${DB_NAME} failed: ${String(e)}`),
  );
  await psqlDropRolesWithPrefix(ADMIN_URL, PREFIX);
  const left = await psqlRolesWithPrefix(ADMIN_URL, PREFIX);
  if (left.length > 0) console.error(`roles left behind: ${left.join(', ')}`);
});

let accountSeq = 0;
describeConnectorContract(
  'postgres',
  async () => {
    const c = connector();
    return {
      connector: c,
      // login roles are created on demand (synchronously, through psql)
      account: () => {
        const name = postgresAccountFor(config, { username: `contract${++accountSeq}` });
        psqlCreateRoleSync(SCRATCH_URL, name, { login: true });
        return name;
      },
      resource: READERS,
      missingResource: `${PREFIX}no_such_group_${randomBytes(3).toString('hex')}`,
      readTruth: async (m) => (await psqlRoleMembers(SCRATCH_URL, m.resource)).includes(m.account),
      timeoutMs: TIMEOUT_MS,
      teardown: () => c.close(),
    };
  },
  { stoppable: false },
);

describe('postgres names', () => {
  it('renders account names from the template and validates them', () => {
    expect(postgresAccountFor({ accountTemplate: 'app_{username}' }, { username: 'Jöns "J" O\'Neil' })).toBe('app_Jöns "J" O\'Neil');
    expect(postgresAccountFor({ accountTemplate: '{username}' }, { username: 'é'.repeat(31) + 'x' })).toHaveLength(32); // 63 bytes
    for (const [template, username] of [
      ['{username}', ''],
      ['{username}', 'a\0b'],
      ['{username}', 'é'.repeat(32)], // 64 bytes
      ['{username}', 'x'.repeat(64)],
      ['x{other}', 'alice'],
      ['{username}', '\ud800'],
    ] as const) {
      let caught: unknown;
      try {
        postgresAccountFor({ accountTemplate: template }, { username });
      } catch (err) {
        caught = err;
      }
      expect(caught, `${template} / ${JSON.stringify(username)}`).toBeInstanceOf(ConnectorError);
      expect((caught as ConnectorError).type).toBe('InvalidInput');
    }
  });

  it('quotes identifiers by doubling double quotes', () => {
    expect(quoteIdent('a"; drop role x; --')).toBe('"a""; drop role x; --"');
    expect(quoteIdent('back\\slash')).toBe('"back\\slash"');
    expect(quoteIdent('""')).toBe('""""""');
  });

  it('classifies server and socket errors and never leaks the password', () => {
    const secret = 'hunter2-secret';
    const pgErr = (code: string, message: string) => Object.assign(new Error(message), { code });
    const cases: Array<[unknown, string, boolean]> = [
      [pgErr('28P01', `password authentication failed for user "x" (${secret})`), 'PermissionDenied', false],
      [pgErr('42501', 'permission denied to grant role "r"'), 'PermissionDenied', false],
      [pgErr('57P01', 'terminating connection due to administrator command'), 'TargetUnavailable', true],
      [pgErr('08006', 'connection failure'), 'TargetUnavailable', true],
      [pgErr('57014', 'canceling statement due to statement timeout'), 'Timeout', true],
      [pgErr('53300', 'too many connections'), 'Throttled', true],
      [pgErr('3D000', 'database "x" does not exist'), 'InvalidConfig', false],
      [pgErr('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:1'), 'TargetUnavailable', true],
      [pgErr('CONNECT_TIMEOUT', 'write CONNECT_TIMEOUT 10.0.0.1:5432'), 'Timeout', true],
      [pgErr('CONNECTION_CLOSED', 'write CONNECTION_CLOSED 127.0.0.1:5432'), 'TargetUnavailable', true],
    ];
    for (const [err, type, retryable] of cases) {
      const ce = classifyPostgresError(err, 'op', secret);
      expect(ce.type, ce.message).toBe(type);
      expect(ce.retryable).toBe(retryable);
      expect(ce.message).not.toContain(secret);
    }
  });

  it('rejects an invalid configuration', () => {
    for (const bad of [
      { timeoutMs: 50 },
      { sslmode: 'verify-full' },
      { port: 0 },
      { host: 'a,b' },
      { database: '' },
      { user: '' },
      { accountTemplate: '' },
    ] as Array<Partial<Record<keyof PostgresSystemConfig, unknown>>>) {
      let caught: unknown;
      try {
        createPostgresConnector({ ...config, ...bad } as PostgresSystemConfig, { password: 'x' });
      } catch (err) {
        caught = err;
      }
      expect(caught, JSON.stringify(bad)).toBeInstanceOf(ConnectorError);
      expect((caught as ConnectorError).type).toBe('InvalidConfig');
    }
  });
});

describe('postgres connector', () => {
  it('grants hostile role names as exactly that role and changes nothing else', async () => {
    const c = connector();
    const hostile = [
      `${PREFIX}a"; drop role "${VICTIM}"; --`,
      `${PREFIX}Robert'); DROP TABLE students; --`,
      `${PREFIX}with space`,
      `${PREFIX}"quoted"`,
      `${PREFIX}back\\slash\\`,
      `${PREFIX}$1 :'role' %I`,
      `${PREFIX}new\nline`,
      `${PREFIX}UPPER`,
      `${PREFIX}ünïx ${'é'.repeat(24)}`, // 63 bytes exactly
    ];
    expect(Buffer.byteLength(hostile.at(-1) ?? '', 'utf8')).toBe(63);
    for (const name of hostile) await psqlCreateRole(SCRATCH_URL, name, { login: true });
    // hostile names as the resource (group) too
    const hostileGroup = `${PREFIX}grp"; GRANT "${WRITERS}" TO "${PREFIX}UPPER"; --`;
    await psqlCreateRole(SCRATCH_URL, hostileGroup);
    const plain = await createLoginRole('plain');

    const before = await snapshot();
    const readersBefore = await psqlRoleMembers(SCRATCH_URL, READERS);
    for (const account of hostile) {
      const m = { account, resource: READERS };
      expect(await c.check(m)).toEqual({ present: false });
      expect(await c.grant(m)).toEqual({ changed: true });
      expect(await psqlRoleMembers(SCRATCH_URL, READERS)).toEqual([...readersBefore, account].sort());
      expect(await c.check(m)).toEqual({ present: true });
      expect(await c.list(READERS)).toContain(account);
      expect(await c.grant(m)).toEqual({ changed: false });
      expect(await c.revoke(m)).toEqual({ changed: true });
      expect(await psqlRoleMembers(SCRATCH_URL, READERS)).toEqual(readersBefore);
    }
    // the lower-case spelling is a different role: identifiers are always quoted, never folded
    await expectConnectorError(c.grant({ account: `${PREFIX}upper`, resource: READERS }), 'NoSuchAccount');

    const m = { account: plain, resource: hostileGroup };
    expect(await c.grant(m)).toEqual({ changed: true });
    expect(await psqlRoleMembers(SCRATCH_URL, hostileGroup)).toEqual([plain]);
    expect(await c.list(hostileGroup)).toEqual([plain]);
    expect(await psqlRoleMembers(SCRATCH_URL, WRITERS)).toEqual([]);
    expect(await c.revoke(m)).toEqual({ changed: true });

    expect(await snapshot()).toEqual(before);
    expect(before.roles).toContain(VICTIM);
  });

  it('refuses NUL, empty, over-long and malformed names with InvalidInput before any network call', async () => {
    // pointed at a closed port: any network attempt would be TargetUnavailable instead
    const offline = connector({ port: await freePort() });
    const online = connector();
    const before = await snapshot();
    const fresh = await createLoginRole('inv');
    const bad = [
      '',
      `${PREFIX}nul\0`,
      `\0`,
      'x'.repeat(64),
      `${PREFIX}${'é'.repeat(28)}`, // 8 + 56 = 64 bytes
      `${PREFIX}a"; drop role "${VICTIM}"; --${'x'.repeat(40)}`,
      `${PREFIX}\ud800`,
    ];
    for (const c of [offline, online]) {
      for (const name of bad) {
        for (const m of [
          { account: name, resource: READERS },
          { account: fresh, resource: name },
        ]) {
          for (const call of [() => c.grant(m), () => c.revoke(m), () => c.check(m)]) {
            const err = await expectConnectorError(call(), 'InvalidInput');
            expect(err.retryable).toBe(false);
          }
        }
        await expectConnectorError(c.list(name), 'InvalidInput');
        await expectConnectorError(c.disableAccount!(name), 'InvalidInput');
        await expectConnectorError(c.enableAccount!(name), 'InvalidInput');
        await expectConnectorError(c.accountDisabled!(name), 'InvalidInput');
      }
      await expectConnectorError(c.grant(undefined as never), 'InvalidInput');
    }
    const after = await snapshot();
    expect(after.memberships).toEqual(before.memberships);
    expect(after.roles.filter((r) => r !== fresh)).toEqual(before.roles);
  });

  it('a missing account: grant is NoSuchAccount, revoke/check report absent', async () => {
    const c = connector();
    const missing = postgresAccountFor(config, { username: `gone${randomBytes(3).toString('hex')}` });
    const m = { account: missing, resource: READERS };
    const err = await expectConnectorError(c.grant(m), 'NoSuchAccount');
    expect(err.retryable).toBe(false);
    expect(await c.revoke(m)).toEqual({ changed: false });
    expect(await c.check(m)).toEqual({ present: false });
    // unknown resource wins over unknown account
    await expectConnectorError(c.grant({ account: missing, resource: `${PREFIX}nogroup` }), 'NoSuchResource');
  });

  it('concurrent grants and revokes of one membership report changed=true exactly once', async () => {
    const c = connector();
    const other = connector();
    const m = { account: await createLoginRole('conc'), resource: WRITERS };
    const grants = await Promise.all([c.grant(m), other.grant(m), c.grant(m)]);
    expect(grants.map((r) => r.changed).sort()).toEqual([false, false, true]);
    expect(await psqlRoleMembers(SCRATCH_URL, WRITERS)).toEqual([m.account]);
    const revokes = await Promise.all([c.revoke(m), other.revoke(m), c.revoke(m)]);
    expect(revokes.map((r) => r.changed).sort()).toEqual([false, false, true]);
    expect(await psqlRoleMembers(SCRATCH_URL, WRITERS)).toEqual([]);
  });

  it('sees memberships changed behind its back', async () => {
    const c = connector();
    const account = await createLoginRole('behind');
    const m = { account, resource: READERS };
    await psql(SCRATCH_URL, `select format('GRANT %I TO %I', :'g', :'r') \\gexec\n`, { g: READERS, r: account });
    expect(await c.check(m)).toEqual({ present: true });
    expect(await c.grant(m)).toEqual({ changed: false });
    await psql(SCRATCH_URL, `select format('REVOKE %I FROM %I', :'g', :'r') \\gexec\n`, { g: READERS, r: account });
    expect(await c.check(m)).toEqual({ present: false });
    expect(await c.revoke(m)).toEqual({ changed: false });
  });

  it('a closed port gives retryable errors within the timeout', async () => {
    const timeoutMs = 1000;
    const c = connector({ port: await freePort(), timeoutMs });
    const account = postgresAccountFor(config, { username: 'nobody' });
    const m = { account, resource: READERS };
    for (const call of [
      () => c.grant(m),
      () => c.check(m),
      () => c.revoke(m),
      () => c.list(READERS),
      () => c.disableAccount!(account),
      () => c.enableAccount!(account),
      () => c.accountDisabled!(account),
    ]) {
      const started = Date.now();
      const err = await expectConnectorError(call(), 'TargetUnavailable', 'Timeout');
      expect(err.retryable).toBe(true);
      expect(err.message).not.toContain(ADMIN_PASSWORD);
      expect(Date.now() - started).toBeLessThan(timeoutMs + 2000);
    }
  });

  it('a server that accepts TCP but never answers is Timeout within the configured timeout', async () => {
    await withSilentServer(async (port) => {
      const c = connector({ port, timeoutMs: 300 });
      for (const call of [() => c.check({ account: `${PREFIX}x`, resource: READERS }), () => c.list(READERS)]) {
        const started = Date.now();
        const err = await expectConnectorError(call(), 'Timeout');
        expect(err.retryable).toBe(true);
        expect(Date.now() - started).toBeLessThan(300 + 2000);
      }
    });
  });

  it('a statement blocked past the timeout is a retryable Timeout, and the connector recovers', async () => {
    const timeoutMs = 1000;
    const c = connector({ timeoutMs });
    const account = await createLoginRole('blocked');
    const m = { account, resource: READERS };
    // another session grants the same membership and keeps its transaction open
    const holder = psqlSession(SCRATCH_URL, { g: READERS, r: account });
    try {
      holder.child.stdin.write(`begin;\nselect format('GRANT %I TO %I', :'g', :'r') \\gexec\nselect 'ready';\n`);
      await waitFor('holder ready', async () => (holder.output().includes('ready') ? true : undefined));
      const started = Date.now();
      const err = await expectConnectorError(c.grant(m), 'Timeout');
      expect(err.retryable).toBe(true);
      expect(Date.now() - started).toBeLessThan(timeoutMs + 2000);
    } finally {
      holder.child.stdin.end('rollback;\n');
      await holder.exited;
    }
    expect(await psqlRoleMembers(SCRATCH_URL, READERS)).not.toContain(account);
    expect(await c.grant(m)).toEqual({ changed: true });
    expect(await psqlRoleMembers(SCRATCH_URL, READERS)).toContain(account);
    expect(await c.revoke(m)).toEqual({ changed: true });
  });

  it('reconnects after its backends are terminated (57P01) without failing the next call', async () => {
    const c = connector();
    const m = { account: await createLoginRole('reconn'), resource: READERS };
    // two pooled connections in use
    expect(await Promise.all([c.check(m), c.list(READERS)])).toEqual([{ present: false }, expect.any(Array)]);
    const killed = await psql(
      SCRATCH_URL,
      `select count(*) from (select pg_terminate_backend(pid) from pg_stat_activity where datname = :'db' and application_name = 'accessloop-connector') t;\n`,
      { db: DB_NAME },
    );
    expect(Number(killed.trim())).toBeGreaterThanOrEqual(2); // ours and earlier tests' connectors
    expect(await c.grant(m)).toEqual({ changed: true });
    expect(await psqlRoleMembers(SCRATCH_URL, READERS)).toContain(m.account);
    expect(await c.revoke(m)).toEqual({ changed: true });
    expect(await psqlRoleMembers(SCRATCH_URL, READERS)).not.toContain(m.account);
  });

  it('a connector that is closed refuses further calls', async () => {
    const c = connector();
    expect(await c.check({ account: `${PREFIX}x`, resource: READERS })).toEqual({ present: false });
    await c.close();
    await expectConnectorError(c.check({ account: `${PREFIX}x`, resource: READERS }), 'InvalidConfig');
  });
});

describe('postgres admin credentials (pg_hba is trust for 127.0.0.1 here)', () => {
  let weakAdmin: string;
  let weakPassword: string;

  beforeAll(async () => {
    weakAdmin = freshName('weakadmin');
    weakPassword = `pw-${randomUUID()}`;
    await psqlCreateRole(SCRATCH_URL, weakAdmin, { login: true, password: weakPassword });
    // pg_hba here is trust for 127.0.0.1, so a wrong password cannot be provoked for real;
    // the 28P01 → PermissionDenied mapping and its redaction are tested on synthetic errors.
  });

  it('a non-superuser admin without ADMIN OPTION gets PermissionDenied and changes nothing', async () => {
    const secret = `wrong-${randomUUID()}`; // ignored by trust auth, must not leak either
    const c = connector({ user: weakAdmin }, secret);
    const account = await createLoginRole('victimacct');
    const member = await createLoginRole('member');
    await psql(SCRATCH_URL, `select format('GRANT %I TO %I', :'g', :'r') \\gexec\n`, { g: WRITERS, r: member });
    const before = await snapshot();
    // reads work: pg_roles and pg_auth_members are readable by everyone
    expect(await c.check({ account, resource: READERS })).toEqual({ present: false });
    expect(await c.list(WRITERS)).toEqual([member]);
    expect(await c.accountDisabled!(account)).toEqual({ exists: true, disabled: false });
    for (const call of [
      () => c.grant({ account, resource: READERS }),
      () => c.revoke({ account: member, resource: WRITERS }),
      () => c.disableAccount!(account),
    ]) {
      const err = await expectConnectorError(call(), 'PermissionDenied');
      expect(err.retryable).toBe(false);
      expect(err.message).not.toContain(secret);
      expect(JSON.stringify(err)).not.toContain(secret);
    }
    expect(await snapshot()).toEqual(before);
    expect(await psqlRoleCanLogin(SCRATCH_URL, account)).toBe(true);
  });

  it('an unknown admin role is PermissionDenied, an unknown database InvalidConfig', async () => {
    const nobody = connector({ user: `${PREFIX}no_such_admin` });
    const err = await expectConnectorError(nobody.list(READERS), 'PermissionDenied');
    expect(err.retryable).toBe(false);
    const nodb = connector({ database: `${DB_NAME}_missing` });
    await expectConnectorError(nodb.list(READERS), 'InvalidConfig');
  });
});

describe('postgres account disable (NOLOGIN)', () => {
  function accounts(c: Connector) {
    const { disableAccount, enableAccount, accountDisabled } = c;
    if (!disableAccount || !enableAccount || !accountDisabled) throw new Error('postgres connector lacks account disable/enable');
    return {
      disable: (a: string) => disableAccount.call(c, a),
      enable: (a: string) => enableAccount.call(c, a),
      disabled: (a: string) => accountDisabled.call(c, a),
    };
  }

  const sessionsOf = async (role: string) =>
    Number((await psql(SCRATCH_URL, `select count(*) from pg_stat_activity where usename = :'r';\n`, { r: role })).trim());

  it('disable blocks logins and terminates open sessions; enable restores; both idempotent', async () => {
    const c = accounts(connector());
    const user = postgresAccountFor(config, { username: `o'brien "x" ${randomBytes(2).toString('hex')}` });
    await psqlCreateRole(SCRATCH_URL, user, { login: true });
    const other = await createLoginRole('other');
    const userUrl = loginUrl(SCRATCH_URL, user, DB_NAME);
    expect(await psqlCanLogin(userUrl)).toBe(true);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: false });

    // an open session of the user
    const session = psqlSession(userUrl);
    session.child.stdin.write('select pg_sleep(60);\n');
    await waitFor('session of the user', async () => ((await sessionsOf(user)) > 0 ? true : undefined));

    expect(await c.disable(user)).toEqual({ changed: true });
    const code = await Promise.race([session.exited, new Promise((r) => setTimeout(() => r('still running'), 5000))]);
    if (code === 'still running') session.child.kill('SIGKILL');
    expect(code).not.toBe('still running');
    expect(code).not.toBe(0);
    expect(session.errors()).toMatch(/terminating connection due to administrator command/);
    expect(await sessionsOf(user)).toBe(0);

    expect(await psqlCanLogin(userUrl)).toBe(false);
    expect(await psqlRoleCanLogin(SCRATCH_URL, user)).toBe(false);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: true });
    expect(await c.disable(user)).toEqual({ changed: false });
    // only that role
    expect(await psqlCanLogin(loginUrl(SCRATCH_URL, other, DB_NAME))).toBe(true);
    expect(await c.disabled(other)).toEqual({ exists: true, disabled: false });

    expect(await c.enable(user)).toEqual({ changed: true });
    expect(await c.enable(user)).toEqual({ changed: false });
    expect(await psqlCanLogin(userUrl)).toBe(true);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: false });
  });

  it('a missing account is NoSuchAccount for disable/enable and exists=false for accountDisabled', async () => {
    const c = accounts(connector());
    const missing = postgresAccountFor(config, { username: `gone${randomBytes(3).toString('hex')}` });
    for (const call of [() => c.disable(missing), () => c.enable(missing)]) {
      const err = await expectConnectorError(call(), 'NoSuchAccount');
      expect(err.retryable).toBe(false);
    }
    expect(await c.disabled(missing)).toEqual({ exists: false, disabled: false });
  });

  it("refuses to disable the connector's own admin role", async () => {
    const c = accounts(connector());
    await expectConnectorError(c.disable(config.user), 'InvalidInput');
    expect(await psqlRoleCanLogin(SCRATCH_URL, config.user)).toBe(true);
  });
});
