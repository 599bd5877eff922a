/**
 * Independent LDAP verification through the OpenLDAP command-line tools (never through
 * our connector), plus a parser for slapd's `-d 256` stats log.
 */
import { execFile, spawn } from 'node:child_process';
import { promisify } from 'node:util';
import { normalizeDn } from '../../activities/connectors/ldap/dn.js';

const execFileAsync = promisify(execFile);

export interface LdapAdminHandle {
  url: string;
  rootDn: string;
  rootPassword: string;
}

/**
 * Values of `attr` on the entry `groupDn`, read with
 * `ldapsearch -x -LLL -o ldif-wrap=no -s base`. Base64 (`attr:: `) values are decoded.
 * Rejects when ldapsearch fails (e.g. exit 32 when the entry does not exist).
 */
export async function ldapsearchMembers(h: LdapAdminHandle, groupDn: string, attr = 'member'): Promise<string[]> {
  const { stdout } = await execFileAsync(
    'ldapsearch',
    ['-x', '-LLL', '-o', 'ldif-wrap=no', '-H', h.url, '-D', h.rootDn, '-w', h.rootPassword, '-b', groupDn, '-s', 'base', attr],
    { maxBuffer: 64 * 1024 * 1024 },
  );
  return parseLdifValues(stdout, attr);
}

/** Values of `attr` (any options, any case) in unwrapped LDIF. */
export function parseLdifValues(ldif: string, attr: string): string[] {
  const wanted = attr.toLowerCase();
  const out: string[] = [];
  for (const line of ldif.split('\n')) {
    const m = /^([A-Za-z0-9.;-]+)(::?|:<) ?(.*)$/.exec(line.replace(/\r$/, ''));
    if (!m) continue;
    const [, name = '', sep, value = ''] = m;
    if (name.toLowerCase().split(';')[0] !== wanted) continue;
    out.push(sep === '::' ? Buffer.from(value, 'base64').toString('utf8') : value);
  }
  return out;
}

/**
 * Whether a simple bind as `dn` with `password` succeeds, checked with `ldapwhoami -x`:
 * true on exit 0, false on invalidCredentials (exit 49, which is also what a
 * ppolicy-locked account gets). Any other failure (connection refused, ...) rejects.
 */
export async function ldapBindWorks(url: string, dn: string, password: string): Promise<boolean> {
  try {
    await execFileAsync('ldapwhoami', ['-x', '-H', url, '-D', dn, '-w', password]);
    return true;
  } catch (err) {
    const e = err as { code?: unknown; stderr?: string; message: string };
    if (e.code === 49) return false;
    throw new Error(`ldapwhoami failed (exit ${String(e.code)}): ${(e.stderr ?? e.message).trim()}`, { cause: err });
  }
}

/** Applies an LDIF change record with `ldapmodify -x` (LDIF on stdin); resolves with stdout. */
export function ldapModify(h: LdapAdminHandle, ldif: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn('ldapmodify', ['-x', '-H', h.url, '-D', h.rootDn, '-w', h.rootPassword], {
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    child.on('error', reject);
    child.on('close', (code) => {
      if (code === 0) resolve(stdout);
      else reject(new Error(`ldapmodify exited with ${code}: ${stderr.trim() || stdout.trim()}`));
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(ldif);
  });
}

/**
 * Counts successful modify operations on `groupDn` in slapd `-d 256` (stats) output:
 *
 *   <time> <thread> conn=1001 op=1 MOD dn="cn=engineering,ou=groups,dc=accessloop,dc=test"
 *   <time> <thread> conn=1001 op=1 MOD attr=member
 *   <time> <thread> conn=1001 op=1 RESULT tag=103 err=0 qtime=0.000007 etime=0.000481 text=
 *
 * Lines of concurrent operations interleave, so the MOD and RESULT lines are paired by
 * conn/op. DNs are compared with normalizeDn.
 */
export function countMemberModifications(lines: readonly string[], groupDn: string): number {
  const wanted = normalizeDn(groupDn);
  const pending = new Set<string>();
  let count = 0;
  for (const line of lines) {
    const mod = /\bconn=(\d+) op=(\d+) MOD dn="(.*)"\s*$/.exec(line);
    if (mod) {
      if (normalizeDn(mod[3] ?? '') === wanted) pending.add(`${mod[1]}/${mod[2]}`);
      continue;
    }
    const result = /\bconn=(\d+) op=(\d+) RESULT tag=103 err=(\d+)\b/.exec(line);
    if (result) {
      const key = `${result[1]}/${result[2]}`;
      if (pending.delete(key) && result[3] === '0') count++;
    }
  }
  return count;
}
