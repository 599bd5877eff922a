/**
 * Independent PostgreSQL verification through the `psql` CLI (never through our connector).
 *
 * Values (role names) are passed as psql variables (`-v name=value`) and referenced as
 * `:'name'` (a quoted literal) or through `format('%I', :'name')` + `\gexec` (a quoted
 * identifier), so the helpers are injection-safe themselves. psql only interpolates
 * variables in scripts, not in `-c` strings, so the SQL goes in on stdin (`-f -`).
 */
import { execFileSync, spawn } from 'node:child_process';

export interface PsqlResult {
  code: number | null;
  stdout: string;
  stderr: string;
}

function psqlArgs(url: string, vars: Record<string, string>): string[] {
  const args = [url, '-X', '-A', '-t', '-q', '-v', 'ON_ERROR_STOP=1'];
  for (const [k, v] of Object.entries(vars)) {
    if (v.includes('\0')) throw new Error(`psql variable ${k} cannot hold a NUL byte`);
    args.push('-v', `${k}=${v}`);
  }
  args.push('-f', '-');
  return args;
}

/** Environment for psql: no password or service from the caller's environment. */
function psqlEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, PGCONNECT_TIMEOUT: '5' };
  delete env.PGPASSWORD;
  delete env.PGSERVICE;
  delete env.PGOPTIONS;
  return env;
}

/** Runs a psql script (stdin) and resolves with its exit code and output; never rejects on exit codes. */
export function psqlRaw(url: string, script: string, vars: Record<string, string> = {}, timeoutMs = 30_000): Promise<PsqlResult> {
  return new Promise((resolve, reject) => {
    const child = spawn('psql', psqlArgs(url, vars), { env: psqlEnv(), stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (err) => {
      clearTimeout(timer);
      reject(err);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stdout, stderr });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(script);
  });
}

/** Runs a psql script and resolves with stdout; rejects on a non-zero exit. */
export async function psql(url: string, script: string, vars: Record<string, string> = {}): Promise<string> {
  const r = await psqlRaw(url, script, vars);
  if (r.code !== 0) throw new Error(`psql failed (exit ${String(r.code)}): ${r.stderr.trim()}`);
  return r.stdout;
}

/** Synchronous psql script (for fixtures that must return a value synchronously). */
export function psqlSync(url: string, script: string, vars: Record<string, string> = {}): string {
  return execFileSync('psql', psqlArgs(url, vars), { input: script, env: psqlEnv(), encoding: 'utf8', timeout: 30_000 });
}

const hex = (s: string) => Buffer.from(s, 'hex').toString('utf8');

/**
 * Direct members (pg_auth_members) of the role `groupRole`, sorted. Names travel hex-encoded
 * so that any character (newline, `|`, quotes) survives. Rejects when the role does not exist.
 */
export async function psqlRoleMembers(adminUrl: string, groupRole: string): Promise<string[]> {
  const out = await psql(
    adminUrl,
    `select 'g' from pg_catalog.pg_roles where rolname = :'role';
select distinct 'm' || encode(convert_to(r.rolname::text, 'UTF8'), 'hex')
  from pg_catalog.pg_auth_members am
  join pg_catalog.pg_roles g on g.oid = am.roleid
  join pg_catalog.pg_roles r on r.oid = am.member
 where g.rolname = :'role';
`,
    { role: groupRole },
  );
  const lines = out.split('\n').filter((l) => l !== '');
  if (!lines.includes('g')) throw new Error(`role ${JSON.stringify(groupRole)} does not exist`);
  return lines
    .filter((l) => l.startsWith('m'))
    .map((l) => hex(l.slice(1)))
    .sort();
}

/** Every (group, member) pair among roles whose name starts with `prefix`, as `group\u0000member`, sorted. */
export async function psqlMembershipsWithPrefix(adminUrl: string, prefix: string): Promise<string[]> {
  const out = await psql(
    adminUrl,
    `select distinct encode(convert_to(g.rolname::text, 'UTF8'), 'hex') || ' ' || encode(convert_to(r.rolname::text, 'UTF8'), 'hex')
  from pg_catalog.pg_auth_members am
  join pg_catalog.pg_roles g on g.oid = am.roleid
  join pg_catalog.pg_roles r on r.oid = am.member
 where starts_with(g.rolname::text, :'prefix') or starts_with(r.rolname::text, :'prefix');
`,
    { prefix },
  );
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map((l) => {
      const [g = '', r = ''] = l.split(' ');
      return `${hex(g)}\u0000${hex(r)}`;
    })
    .sort();
}

/** Names of all roles starting with `prefix`, sorted. */
export async function psqlRolesWithPrefix(adminUrl: string, prefix: string): Promise<string[]> {
  const out = await psql(
    adminUrl,
    `select encode(convert_to(rolname::text, 'UTF8'), 'hex') from pg_catalog.pg_roles where starts_with(rolname::text, :'prefix');\n`,
    { prefix },
  );
  return out
    .split('\n')
    .filter((l) => l !== '')
    .map(hex)
    .sort();
}

/** `rolcanlogin` of a role, or undefined when it does not exist. */
export async function psqlRoleCanLogin(adminUrl: string, role: string): Promise<boolean | undefined> {
  const out = (await psql(adminUrl, `select rolcanlogin from pg_catalog.pg_roles where rolname = :'role';\n`, { role })).trim();
  return out === '' ? undefined : out === 't';
}

export interface RoleOptions {
  /** LOGIN (default false: NOLOGIN). */
  login?: boolean;
  /** PASSWORD (passed as a psql variable, quoted with %L). */
  password?: string;
}

function createRoleScript(opts: RoleOptions): { script: string; vars: Record<string, string> } {
  const attrs = opts.login ? 'LOGIN' : 'NOLOGIN';
  if (opts.password === undefined) {
    return { script: `select format('CREATE ROLE %I ${attrs}', :'role') \\gexec\n`, vars: {} };
  }
  return { script: `select format('CREATE ROLE %I ${attrs} PASSWORD %L', :'role', :'password') \\gexec\n`, vars: { password: opts.password } };
}

/** Creates a role with psql (name quoted by the server's format('%I')). */
export function psqlCreateRoleSync(adminUrl: string, role: string, opts: RoleOptions = {}): void {
  const { script, vars } = createRoleScript(opts);
  psqlSync(adminUrl, script, { ...vars, role });
}

export async function psqlCreateRole(adminUrl: string, role: string, opts: RoleOptions = {}): Promise<void> {
  const { script, vars } = createRoleScript(opts);
  await psql(adminUrl, script, { ...vars, role });
}

/** Drops every role whose name starts with `prefix` (after terminating their sessions). */
export async function psqlDropRolesWithPrefix(adminUrl: string, prefix: string): Promise<void> {
  await psql(
    adminUrl,
    `select pg_terminate_backend(pid) from pg_catalog.pg_stat_activity where starts_with(usename::text, :'prefix') \\g /dev/null
select format('DROP ROLE IF EXISTS %I', rolname) from pg_catalog.pg_roles where starts_with(rolname::text, :'prefix') \\gexec
`,
    { prefix },
  );
}

/**
 * Whether `psql <url> -c 'select 1'` can log in: true on success, false when the server
 * refuses the login (NOLOGIN role, bad password, unknown role). Anything else rejects.
 */
export async function psqlCanLogin(url: string): Promise<boolean> {
  const r = await psqlRaw(url, 'select 1;\n');
  if (r.code === 0 && r.stdout.trim() === '1') return true;
  if (/not permitted to log in|password authentication failed|role .* does not exist|no pg_hba\.conf entry/.test(r.stderr)) return false;
  throw new Error(`psql login check failed (exit ${String(r.code)}): ${r.stderr.trim()}`);
}

/** A postgres:// URL for `user` (percent-encoded, so any role name works) on the given server and database. */
export function loginUrl(base: string, user: string, database?: string, password?: string): string {
  const u = new URL(base);
  u.username = encodeURIComponent(user);
  u.password = password === undefined ? '' : encodeURIComponent(password);
  if (database !== undefined) u.pathname = `/${encodeURIComponent(database)}`;
  return u.toString();
}
