/**
 * Non-human credentials on a private PostgreSQL cluster with real password authentication
 * (scram-sha-256 over TCP; the machine's shared cluster trusts every login, which would hide a
 * password that should no longer work). Every outcome is read with psql, never the connector.
 */
import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createPostgresConnector } from '../../activities/connectors/postgres/connector.js';
import type { Connector } from '../../activities/connectors/types.js';
import { expectConnectorError } from '../helpers/connector-contract.js';
import { startPgCluster, type PgCluster } from '../helpers/pg-cluster.js';
import { psql, psqlCanLogin, psqlCreateRole, psqlRoleMembers } from '../helpers/postgres.js';
import { waitFor } from '../helpers/stack-core.js';

let pg: PgCluster;
let connector: Connector;
let adminUrl: string;
const READERS = 'reporting_read';

beforeAll(async () => {
  pg = await startPgCluster(`admin-${randomUUID()}`);
  adminUrl = pg.url('postgres', pg.adminPassword);
  await psqlCreateRole(adminUrl, READERS);
  connector = createPostgresConnector(
    { host: '127.0.0.1', port: pg.port, database: 'postgres', user: 'postgres', accountTemplate: 'svc_{username}', timeoutMs: 3000 },
    { password: pg.adminPassword },
  );
}, 60_000);

afterAll(async () => {
  await connector?.close();
  await pg?.stop();
});

const minutesFromNow = (n: number) => new Date(Date.now() + n * 60_000);

async function validUntil(role: string): Promise<string> {
  return (await psql(adminUrl, `select to_char(rolvaliduntil at time zone 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS') from pg_catalog.pg_roles where rolname = :'role';\n`, { role })).trim();
}

async function sessionsOf(role: string): Promise<number> {
  return Number((await psql(adminUrl, `select count(*) from pg_catalog.pg_stat_activity where usename = :'role';\n`, { role })).trim());
}

/** A psql session of `url` busy in a long query; resolves with its stderr once the server ends it. */
function longSession(url: string): { ended: Promise<{ code: number | null; stderr: string }>; kill: () => void } {
  const child = spawn('psql', [url, '-X', '-v', 'ON_ERROR_STOP=1', '-c', 'select pg_sleep(120)'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const ended = new Promise<{ code: number | null; stderr: string }>((resolve) => child.on('close', (code) => resolve({ code, stderr })));
  return { ended, kill: () => child.kill('SIGKILL') };
}

describe('PostgreSQL non-human credentials', () => {
  it('the fixture really checks passwords: a wrong password is refused', async () => {
    expect(await psqlCanLogin(pg.url('postgres', pg.adminPassword))).toBe(true);
    expect(await psqlCanLogin(pg.url('postgres', 'not-the-password'))).toBe(false);
  });

  it('issues a login with a generated password valid until the lease end; psql logs in with it', async () => {
    const notAfter = minutesFromNow(30);
    const issued = await connector.issueCredential!('svc_billing', { notAfter });
    expect(issued).toMatchObject({ kind: 'password', credentialId: 'svc_billing', notAfter });
    expect(issued.material).toMatch(/^[A-Za-z0-9_-]{32}$/);
    const out = await psql(pg.url('svc_billing', issued.material), 'select current_user;\n');
    expect(out.trim()).toBe('svc_billing');
    expect(await validUntil('svc_billing')).toBe(notAfter.toISOString().slice(0, 19));
    expect(await connector.credentialActive!('svc_billing')).toEqual({ active: true });
    // the server saw a SCRAM verifier, never the password (log_statement = all)
    expect(pg.log()).toMatch(/CREATE ROLE "svc_billing" LOGIN PASSWORD 'SCRAM-SHA-256\$4096:/);
    expect(pg.log()).not.toContain(issued.material);
  });

  it('the generated role can be granted an entitlement role like any account', async () => {
    await connector.issueCredential!('svc_reports', { notAfter: minutesFromNow(10) });
    expect(await connector.grant({ account: 'svc_reports', resource: READERS })).toMatchObject({ changed: true });
    expect(await psqlRoleMembers(adminUrl, READERS)).toContain('svc_reports');
  });

  it('rotation: the old password stops working, the new one works', async () => {
    const first = await connector.issueCredential!('svc_rotate', { notAfter: minutesFromNow(10) });
    expect(await psqlCanLogin(pg.url('svc_rotate', first.material))).toBe(true);
    const second = await connector.issueCredential!('svc_rotate', { notAfter: minutesFromNow(10) });
    expect(second.material).not.toBe(first.material);
    expect(await psqlCanLogin(pg.url('svc_rotate', first.material))).toBe(false);
    expect(await psqlCanLogin(pg.url('svc_rotate', second.material))).toBe(true);
    expect(pg.log()).not.toContain(first.material);
    expect(pg.log()).not.toContain(second.material);
  });

  it('revocation kills open sessions and refuses new logins; a second revoke changes nothing', async () => {
    const issued = await connector.issueCredential!('svc_leaver', { notAfter: minutesFromNow(10) });
    const session = longSession(pg.url('svc_leaver', issued.material));
    try {
      await waitFor(async () => (await sessionsOf('svc_leaver')) === 1, 'the service account session to be open', 10_000);
      expect(await connector.revokeCredential!('svc_leaver')).toEqual({ changed: true });
      const ended = await Promise.race([session.ended, new Promise<never>((_, rej) => setTimeout(() => rej(new Error('session survived the revoke')), 10_000))]);
      expect(ended.code).not.toBe(0);
      expect(ended.stderr).toMatch(/terminating connection due to administrator command|server closed the connection/);
    } finally {
      session.kill();
    }
    expect(await sessionsOf('svc_leaver')).toBe(0);
    expect(await psqlCanLogin(pg.url('svc_leaver', issued.material))).toBe(false);
    expect(await connector.credentialActive!('svc_leaver')).toEqual({ active: false });
    expect(await connector.revokeCredential!('svc_leaver')).toEqual({ changed: false });
    // a revoked login is never revived by an extension
    await expectConnectorError(connector.extendCredential!('svc_leaver', { notAfter: minutesFromNow(20) }), 'NoSuchAccount');
    expect(await psqlCanLogin(pg.url('svc_leaver', issued.material))).toBe(false);
  });

  it('extension moves VALID UNTIL without changing the password', async () => {
    const issued = await connector.issueCredential!('svc_extend', { notAfter: minutesFromNow(5) });
    const later = minutesFromNow(50);
    expect(await connector.extendCredential!('svc_extend', { notAfter: later })).toEqual({ changed: true });
    expect(await validUntil('svc_extend')).toBe(later.toISOString().slice(0, 19));
    expect(await psqlCanLogin(pg.url('svc_extend', issued.material))).toBe(true);
  });

  it('a credential past VALID UNTIL no longer logs in, and reads as inactive', async () => {
    const issued = await connector.issueCredential!('svc_short', { notAfter: new Date(Date.now() + 1500) });
    expect(await psqlCanLogin(pg.url('svc_short', issued.material))).toBe(true);
    await waitFor(async () => !(await psqlCanLogin(pg.url('svc_short', issued.material))), 'VALID UNTIL to pass', 15_000, 250);
    expect(await connector.credentialActive!('svc_short')).toEqual({ active: false });
  });

  it('refuses the admin role, past expiry dates and hostile names, changing nothing', async () => {
    await expectConnectorError(connector.issueCredential!('postgres', { notAfter: minutesFromNow(5) }), 'InvalidInput');
    await expectConnectorError(connector.revokeCredential!('postgres'), 'InvalidInput');
    await expectConnectorError(connector.issueCredential!('svc_past', { notAfter: new Date(Date.now() - 1000) }), 'InvalidInput');
    for (const name of ['svc\0x', 'a'.repeat(64), '']) {
      await expectConnectorError(connector.issueCredential!(name, { notAfter: minutesFromNow(5) }), 'InvalidInput');
    }
    // quotes are data, not SQL: the role is created under exactly that name
    const odd = `svc_"; DROP ROLE postgres; --`;
    const issued = await connector.issueCredential!(odd, { notAfter: minutesFromNow(5) });
    expect(await psqlCanLogin(pg.url(odd, issued.material))).toBe(true);
    expect(await psqlCanLogin(pg.url('postgres', pg.adminPassword))).toBe(true);
    expect((await psql(adminUrl, `select count(*) from pg_catalog.pg_roles where rolname = :'r';\n`, { r: 'svc_past' })).trim()).toBe('0');
  });
});
