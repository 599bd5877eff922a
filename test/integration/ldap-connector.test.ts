/**
 * LDAP connector against a private slapd (127.0.0.1, temp dir, demo seed).
 * The truth is read with the OpenLDAP CLI (ldapsearch), never through the connector.
 */
import { execFile } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createLdapConnector, ldapAccountFor, parseGeneralizedTime, type LdapSystemConfig } from '../../activities/connectors/ldap/connector.js';
import { canonicalDn, escapeDnValue, escapeFilterValue, normalizeDn, parseDn, renderAccountDn } from '../../activities/connectors/ldap/dn.js';
import {
  DEMO_PLACEHOLDER_DN,
  DEMO_SUFFIX,
  DEMO_USER_PASSWORD,
  demoGroupDn,
  demoSeedLdif,
  demoUserDn,
} from '../../activities/connectors/ldap/seed.js';
import { startSlapd, type SlapdHandle } from '../../activities/connectors/ldap/slapd.js';
import { ConnectorError, type Connector } from '../../activities/connectors/types.js';
import { describeConnectorContract, expectConnectorError } from '../helpers/connector-contract.js';
import { withSilentServer } from '../helpers/silent-server.js';
import { countMemberModifications, ldapBindWorks, ldapModify, ldapsearchMembers } from '../helpers/ldap.js';

const execFileAsync = promisify(execFile);

const SUFFIX = DEMO_SUFFIX;
const ROOT_DN = `cn=admin,${SUFFIX}`;
const ROOT_PASSWORD = `pw-${randomUUID()}`;
const TIMEOUT_MS = 2000;
const ENGINEERING = demoGroupDn(SUFFIX, 'engineering');
const FINANCE = demoGroupDn(SUFFIX, 'finance-readers');
const PROD_ADMINS = demoGroupDn(SUFFIX, 'prod-admins');
const ALL_GROUPS = [ENGINEERING, FINANCE, PROD_ADMINS];

let slapd: SlapdHandle;
let dataDir: string;
let config: LdapSystemConfig;
const openConnectors: Connector[] = [];

function connector(overrides: Partial<LdapSystemConfig> = {}, password = ROOT_PASSWORD): Connector {
  const c = createLdapConnector({ ...config, ...overrides }, { bindPassword: password });
  openConnectors.push(c);
  return c;
}

async function snapshot(): Promise<Record<string, string[]>> {
  const out: Record<string, string[]> = {};
  for (const g of ALL_GROUPS) out[g] = (await ldapsearchMembers(slapd, g)).sort();
  return out;
}

async function waitFor<T>(what: string, probe: () => T | undefined | Promise<T | undefined>, timeoutMs = 10_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await probe();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

/**
 * Issues a marker search with the CLI and waits until slapd has logged it; every
 * operation the connector completed before is then in the log too.
 * Returns the index of the marker's SRCH line and its connection number.
 */
async function logMarker(): Promise<{ index: number; conn: string }> {
  const marker = `marker-${randomUUID()}`;
  await execFileAsync('ldapsearch', [
    '-x', '-LLL', '-H', slapd.url, '-D', ROOT_DN, '-w', ROOT_PASSWORD, '-b', SUFFIX, '-s', 'base', `(description=${marker})`, '1.1',
  ]);
  return waitFor('marker in slapd log', () => {
    const lines = slapd.logLines();
    const index = lines.findIndex((l) => l.includes(marker) && / SRCH /.test(l));
    if (index < 0) return undefined;
    const conn = /conn=(\d+)/.exec(lines[index] ?? '')?.[1] ?? '';
    return { index, conn };
  });
}

beforeAll(async () => {
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-ldap-'));
  slapd = await startSlapd({
    dataDir,
    suffix: SUFFIX,
    rootDn: ROOT_DN,
    rootPassword: ROOT_PASSWORD,
    seedLdif: demoSeedLdif(SUFFIX),
  });
  config = {
    url: slapd.url,
    bindDn: ROOT_DN,
    baseDn: SUFFIX,
    accountDnTemplate: `uid={username},ou=people,${SUFFIX}`,
    memberAttribute: 'member',
    placeholderMember: DEMO_PLACEHOLDER_DN,
    timeoutMs: TIMEOUT_MS,
  };
});

afterAll(async () => {
  for (const c of openConnectors) await c.close().catch(() => undefined);
  await slapd?.stop();
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
});

let accountSeq = 0;
describeConnectorContract('ldap', async () => {
  const c = connector();
  return {
    connector: c,
    account: () => ldapAccountFor(config, { username: `contract-${++accountSeq}-${randomUUID().slice(0, 8)}` }),
    resource: ENGINEERING,
    missingResource: `cn=no-such-group-${randomUUID().slice(0, 8)},ou=groups,${SUFFIX}`,
    readTruth: async (m) => {
      const members = await ldapsearchMembers(slapd, m.resource);
      return members.some((v) => normalizeDn(v) === normalizeDn(m.account));
    },
    stopTarget: () => slapd.stop(),
    startTarget: () => slapd.start(),
    timeoutMs: TIMEOUT_MS,
    teardown: () => c.close(),
  };
});

describe('ldap DN helpers', () => {
  it('escapes DN values per RFC 4514', () => {
    expect(escapeDnValue('a,b+c"d\\e<f>g;h=i')).toBe('a\\,b\\+c\\"d\\\\e\\<f\\>g\\;h\\=i');
    expect(escapeDnValue('#lead')).toBe('\\#lead');
    expect(escapeDnValue(' both ')).toBe('\\ both\\ ');
    expect(escapeDnValue('mid#dle sp')).toBe('mid#dle sp');
    expect(escapeDnValue('nul\0x')).toBe('nul\\00x');
    expect(escapeDnValue('tab\tnl\n')).toBe('tab\\09nl\\0a');
    expect(escapeDnValue('Jöns')).toBe('Jöns');
  });

  it('escapes filter values per RFC 4515', () => {
    expect(escapeFilterValue('*)(uid=*\\\0')).toBe('\\2a\\29\\28uid=\\2a\\5c\\00');
  });

  it('renders account DNs and rejects bad placeholders and values', () => {
    const t = 'uid={username},ou=people,dc=x';
    expect(renderAccountDn(t, { username: 'a,b' })).toBe('uid=a\\,b,ou=people,dc=x');
    for (const vars of [{ username: '' }, { username: 'a\0b' }, { username: 'x'.repeat(257) }, { other: 'a' }]) {
      expect(() => renderAccountDn(t, vars)).toThrow(ConnectorError);
      try {
        renderAccountDn(t, vars);
      } catch (err) {
        expect((err as ConnectorError).type).toBe('InvalidInput');
      }
    }
    expect(renderAccountDn(t, { username: 'x'.repeat(256) })).toContain('x'.repeat(256));
  });

  it('normalizes DNs for comparison', () => {
    expect(normalizeDn('UID=Alice , OU=People,dc=Example')).toBe('uid=alice,ou=people,dc=example');
    expect(normalizeDn('cn=a\\2cb,dc=x')).toBe(normalizeDn('CN = A\\,B , DC = X'));
    expect(normalizeDn('cn=\\ x\\ ,dc=y')).not.toBe(normalizeDn('cn=x,dc=y'));
    expect(normalizeDn('cn=a\\,dc=b')).not.toBe(normalizeDn('cn=a,dc=b'));
    expect(canonicalDn('uid=alice\\2Cou\\3Dgroups, ou=People,dc=x')).toBe('uid=alice\\,ou\\=groups,ou=People,dc=x');
    expect(canonicalDn('uid=\\20trail\\20,dc=x')).toBe('uid=\\ trail\\ ,dc=x');
  });
});

describe('ldap connector specifics', () => {
  it('renders hostile usernames to escaped DNs that add exactly that literal member', async () => {
    const c = connector();
    const people = `ou=people,${SUFFIX}`;
    const cases: Array<[string, string]> = [
      ['alice,ou=groups', `uid=alice\\,ou\\=groups,${people}`],
      ['*', `uid=*,${people}`],
      [')(uid=*', `uid=)(uid\\=*,${people}`],
      ['bob)(|(uid=*))', `uid=bob)(|(uid\\=*)),${people}`],
      ['x\\', `uid=x\\\\,${people}`],
      ['"quoted"', `uid=\\"quoted\\",${people}`],
      ['#lead', `uid=\\#lead,${people}`],
      [' trail ', `uid=\\ trail\\ ,${people}`],
    ];
    const before = await snapshot();
    const added: string[] = [];
    for (const [username, expectedDn] of cases) {
      const dn = ldapAccountFor(config, { username });
      expect(dn).toBe(expectedDn);
      // the rendered DN has exactly the template's structure with the literal value
      const rdns = parseDn(dn);
      expect(rdns).toHaveLength(4);
      expect(rdns[0]).toEqual([{ type: 'uid', value: username }]);

      const prev = await ldapsearchMembers(slapd, PROD_ADMINS);
      expect(await c.grant({ account: dn, resource: PROD_ADMINS })).toEqual({ changed: true });
      const now = await ldapsearchMembers(slapd, PROD_ADMINS);
      const fresh = now.filter((v) => !prev.includes(v));
      expect(fresh).toHaveLength(1);
      expect(now).toHaveLength(prev.length + 1);
      const stored = fresh[0] ?? '';
      expect(normalizeDn(stored)).toBe(normalizeDn(dn));
      expect(parseDn(stored)[0]).toEqual([{ type: 'uid', value: username }]);
      expect(await c.check({ account: dn, resource: PROD_ADMINS })).toEqual({ present: true });
      expect(await c.list(PROD_ADMINS)).toContain(dn);
      added.push(dn);
    }
    // nobody real was granted by accident, other groups untouched
    const after = await snapshot();
    const prodMembers = (after[PROD_ADMINS] ?? []).map(normalizeDn);
    for (const user of ['alice', 'bob']) expect(prodMembers).not.toContain(normalizeDn(demoUserDn(SUFFIX, user)));
    expect(after[ENGINEERING]).toEqual(before[ENGINEERING]);
    expect(after[FINANCE]).toEqual(before[FINANCE]);
    expect(prodMembers.sort()).toEqual([...(before[PROD_ADMINS] ?? []), ...added].map(normalizeDn).sort());

    for (const dn of added) expect(await c.revoke({ account: dn, resource: PROD_ADMINS })).toEqual({ changed: true });
    expect(await snapshot()).toEqual(before);
  });

  it('refuses filter-like resources or reports them missing, never matching other entries', async () => {
    const c = connector();
    const before = await snapshot();
    const account = ldapAccountFor(config, { username: `filter-${randomUUID().slice(0, 8)}` });
    const resources = [
      '*',
      ')(uid=*',
      '(cn=engineering)',
      `cn=*,ou=groups,${SUFFIX}`,
      `cn=engineering)(member=*,ou=groups,${SUFFIX}`,
      `cn=${escapeDnValue('*)(objectClass=*')},ou=groups,${SUFFIX}`,
      `(|(cn=*))`,
    ];
    for (const resource of resources) {
      for (const call of [
        () => c.grant({ account, resource }),
        () => c.check({ account, resource }),
        () => c.list(resource),
      ]) {
        const err = await expectConnectorError(call(), 'InvalidInput', 'NoSuchResource');
        expect(err.retryable).toBe(false);
      }
    }
    expect(await snapshot()).toEqual(before);
  });

  it('hostile inputs are refused before any network call', async () => {
    const c = connector(); // fresh: not connected yet
    const start = await logMarker();
    for (const m of [
      { account: `uid=a\0,ou=people,${SUFFIX}`, resource: FINANCE },
      { account: 'x'.repeat(5000), resource: FINANCE },
      { account: `uid=a,ou=people,${SUFFIX}`, resource: `${FINANCE}\0` },
      { account: `uid=a,ou=people,${SUFFIX}`, resource: 'y'.repeat(1025) },
    ]) {
      await expectConnectorError(c.grant(m), 'InvalidInput');
      await expectConnectorError(c.revoke(m), 'InvalidInput');
      await expectConnectorError(c.check(m), 'InvalidInput');
    }
    await expectConnectorError(c.list(`${FINANCE}\0`), 'InvalidInput');
    const end = await logMarker();
    const between = slapd.logLines().slice(start.index + 1, end.index);
    const foreign = between.filter((l) => /conn=\d+/.test(l) && !l.includes(`conn=${start.conn} `) && !l.includes(`conn=${end.conn} `));
    expect(foreign).toEqual([]);
  });

  it('never reports or removes the placeholder member', async () => {
    const c = connector();
    expect(await c.list(FINANCE)).not.toContain(DEMO_PLACEHOLDER_DN);
    expect(await c.check({ account: DEMO_PLACEHOLDER_DN, resource: FINANCE })).toEqual({ present: true });
    await expectConnectorError(c.revoke({ account: DEMO_PLACEHOLDER_DN, resource: FINANCE }), 'InvalidInput');
    await expectConnectorError(c.revoke({ account: DEMO_PLACEHOLDER_DN.toUpperCase(), resource: FINANCE }), 'InvalidInput');
    expect(await ldapsearchMembers(slapd, FINANCE)).toContain(DEMO_PLACEHOLDER_DN);
  });

  it('wrong bind password is PermissionDenied and the password is not leaked', async () => {
    const wrong = `wrong-${randomUUID()}`;
    const c = connector({}, wrong);
    const m = { account: demoUserDn(SUFFIX, 'alice'), resource: FINANCE };
    for (const call of [() => c.check(m), () => c.grant(m), () => c.list(FINANCE)]) {
      const err = await expectConnectorError(call(), 'PermissionDenied');
      expect(err.retryable).toBe(false);
      expect(err.message).not.toContain(wrong);
      expect(JSON.stringify(err)).not.toContain(wrong);
    }
    expect(await ldapsearchMembers(slapd, FINANCE)).not.toContain(m.account);
  });

  it('granting twice sends exactly one modify to slapd', async () => {
    const c = connector();
    const account = demoUserDn(SUFFIX, 'carol');
    const start = await logMarker();
    expect(await c.grant({ account, resource: FINANCE })).toEqual({ changed: true });
    expect(await c.grant({ account, resource: FINANCE })).toEqual({ changed: false });
    const end = await logMarker();
    const window = slapd.logLines().slice(start.index, end.index);
    expect(countMemberModifications(window, FINANCE)).toBe(1);
    expect(countMemberModifications(window, ENGINEERING)).toBe(0);

    expect(await c.revoke({ account, resource: FINANCE })).toEqual({ changed: true });
    expect(await c.revoke({ account, resource: FINANCE })).toEqual({ changed: false });
    const end2 = await logMarker();
    expect(countMemberModifications(slapd.logLines().slice(end.index, end2.index), FINANCE)).toBe(1);
  });

  it('treats typeOrValueExists on add and noSuchAttribute on delete as no change', async () => {
    const c = connector();
    const account = demoUserDn(SUFFIX, 'dave');
    // Added behind the connector's back; the connector is then asked for the same DN spelled
    // with the numeric OID of uid, which our read does not recognise but the server does:
    // the modify/add fails with typeOrValueExists (20) and must report changed=false.
    await ldapModify(slapd, `dn: ${FINANCE}\nchangetype: modify\nadd: member\nmember: ${account}\n`);
    const oidSpelling = `0.9.2342.19200300.100.1.1=dave,ou=people,${SUFFIX}`;
    expect(await c.grant({ account: oidSpelling, resource: FINANCE })).toEqual({ changed: false });
    expect((await ldapsearchMembers(slapd, FINANCE)).filter((v) => normalizeDn(v) === normalizeDn(account))).toHaveLength(1);

    // Two concurrent revokes both read "present"; the second delete gets noSuchAttribute (16).
    const results = await Promise.all([
      c.revoke({ account, resource: FINANCE }),
      c.revoke({ account, resource: FINANCE }),
    ]);
    expect(results.map((r) => r.changed).sort()).toEqual([false, true]);
    expect((await ldapsearchMembers(slapd, FINANCE)).map(normalizeDn)).not.toContain(normalizeDn(account));

    // Same for concurrent grants (typeOrValueExists on the loser).
    const grants = await Promise.all([c.grant({ account, resource: FINANCE }), c.grant({ account, resource: FINANCE })]);
    expect(grants.map((r) => r.changed).sort()).toEqual([false, true]);
    expect(await c.revoke({ account, resource: FINANCE })).toEqual({ changed: true });
  });

  it('reconnects on the first call after slapd restarts', async () => {
    const c = connector();
    const m = { account: demoUserDn(SUFFIX, 'bob'), resource: ENGINEERING };
    expect(await c.check(m)).toEqual({ present: false });
    const oldPid = slapd.pid();
    await slapd.stop();
    expect(slapd.pid()).toBeUndefined();
    await slapd.start();
    expect(slapd.pid()).not.toBe(oldPid);
    expect(await c.grant(m)).toEqual({ changed: true });
    expect(await ldapsearchMembers(slapd, ENGINEERING)).toContain(m.account);
    expect(await c.revoke(m)).toEqual({ changed: true });
  });

  it('maps a server that accepts TCP but never answers to Timeout within the configured timeout', async () => {
    await withSilentServer(async (port) => {
      const c = connector({ url: `ldap://127.0.0.1:${port}`, timeoutMs: 300 });
      const started = Date.now();
      const err = await expectConnectorError(c.check({ account: demoUserDn(SUFFIX, 'alice'), resource: FINANCE }), 'Timeout');
      expect(err.retryable).toBe(true);
      expect(Date.now() - started).toBeLessThan(300 + 2000);
    });
  });

  it('rejects an invalid configuration', () => {
    for (const bad of [{ url: 'http://example.test' }, { timeoutMs: 50 }, { memberAttribute: 'member)(x' }]) {
      let caught: unknown;
      try {
        createLdapConnector({ ...config, ...bad }, { bindPassword: 'x' });
      } catch (err) {
        caught = err;
      }
      expect(caught).toBeInstanceOf(ConnectorError);
      expect((caught as ConnectorError).type).toBe('InvalidConfig');
    }
  });
});

describe('ldap account disable (ppolicy pwdAccountLockedTime)', () => {
  /** The connector's optional account methods, asserted present. */
  function accounts(c: Connector) {
    const { disableAccount, enableAccount, accountDisabled } = c;
    if (!disableAccount || !enableAccount || !accountDisabled) throw new Error('LDAP connector lacks account disable/enable');
    return {
      disable: (a: string) => disableAccount.call(c, a),
      enable: (a: string) => enableAccount.call(c, a),
      disabled: (a: string) => accountDisabled.call(c, a),
    };
  }

  /** pwdAccountLockedTime as stored, read with the CLI (operational: requested by name). */
  const lockValues = (dn: string) => ldapsearchMembers(slapd, dn, 'pwdAccountLockedTime');

  it('disable locks the account (bind fails, checked with ldapwhoami); enable unlocks it; both idempotent', async () => {
    const c = accounts(connector());
    const user = demoUserDn(SUFFIX, 'bob');
    const other = demoUserDn(SUFFIX, 'carol');
    expect(await ldapBindWorks(slapd.url, user, DEMO_USER_PASSWORD)).toBe(true);
    expect(await ldapBindWorks(slapd.url, user, 'not-the-password')).toBe(false);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: false });

    const start = await logMarker();
    expect(await c.disable(user)).toEqual({ changed: true });
    expect(await c.disable(user)).toEqual({ changed: false });
    const mid = await logMarker();
    expect(countMemberModifications(slapd.logLines().slice(start.index, mid.index), user)).toBe(1);

    expect(await lockValues(user)).toEqual(['000001010000Z']);
    expect(await ldapBindWorks(slapd.url, user, DEMO_USER_PASSWORD)).toBe(false);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: true });
    // only that account: others still bind, the root DN still works (through the connector too)
    expect(await ldapBindWorks(slapd.url, other, DEMO_USER_PASSWORD)).toBe(true);
    expect(await c.disabled(other)).toEqual({ exists: true, disabled: false });
    expect(await ldapBindWorks(slapd.url, ROOT_DN, ROOT_PASSWORD)).toBe(true);

    expect(await c.enable(user)).toEqual({ changed: true });
    expect(await c.enable(user)).toEqual({ changed: false });
    const end = await logMarker();
    expect(countMemberModifications(slapd.logLines().slice(mid.index, end.index), user)).toBe(1);

    expect(await lockValues(user)).toEqual([]);
    expect(await ldapBindWorks(slapd.url, user, DEMO_USER_PASSWORD)).toBe(true);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: false });
  });

  it('turns a lock set behind its back with another value into the administrative lock', async () => {
    const c = accounts(connector());
    const user = demoUserDn(SUFFIX, 'dave');
    await ldapModify(slapd, `dn: ${user}\nchangetype: modify\nreplace: pwdAccountLockedTime\npwdAccountLockedTime: 20200101000000Z\n`);
    expect(await c.disabled(user)).toEqual({ exists: true, disabled: false });
    expect(await c.disable(user)).toEqual({ changed: true });
    expect(await lockValues(user)).toEqual(['000001010000Z']);
    expect(await c.enable(user)).toEqual({ changed: true });
    expect(await lockValues(user)).toEqual([]);
    expect(await ldapBindWorks(slapd.url, user, DEMO_USER_PASSWORD)).toBe(true);
  });

  it('a missing account is NoSuchAccount for disable/enable and exists=false for accountDisabled', async () => {
    const c = accounts(connector());
    const missing = ldapAccountFor(config, { username: `gone-${randomUUID().slice(0, 8)}` });
    for (const call of [() => c.disable(missing), () => c.enable(missing)]) {
      const err = await expectConnectorError(call(), 'NoSuchAccount');
      expect(err.retryable).toBe(false);
    }
    // missing parent too
    const orphan = `uid=x,ou=nowhere-${randomUUID().slice(0, 8)},${SUFFIX}`;
    await expectConnectorError(c.disable(orphan), 'NoSuchAccount');
    expect(await c.disabled(missing)).toEqual({ exists: false, disabled: false });
    expect(await c.disabled(orphan)).toEqual({ exists: false, disabled: false });
  });

  it('hostile or out-of-tree account DNs are refused before any network call', async () => {
    const conn = connector(); // fresh: not connected yet
    const c = accounts(conn);
    const start = await logMarker();
    for (const account of [
      `uid=a\0,ou=people,${SUFFIX}`,
      'x'.repeat(5000),
      `uid=a,ou=people,${SUFFIX}`.padEnd(1025, 'x'),
      '',
      '(uid=*)',
      'uid=alice,ou=people,dc=elsewhere,dc=test',
    ]) {
      await expectConnectorError(c.disable(account), 'InvalidInput');
      await expectConnectorError(c.enable(account), 'InvalidInput');
      await expectConnectorError(c.disabled(account), 'InvalidInput');
    }
    const end = await logMarker();
    const between = slapd.logLines().slice(start.index + 1, end.index);
    const foreign = between.filter((l) => /conn=\d+/.test(l) && !l.includes(`conn=${start.conn} `) && !l.includes(`conn=${end.conn} `));
    expect(foreign).toEqual([]);
  });
});

describe('ldap last use (lastbind → pwdLastSuccess)', () => {
  it('reports an account’s last successful bind as slapd records it, null before the first, and exists=false for none', async () => {
    const c = connector();
    if (!c.lastUsed) throw new Error('LDAP connector lacks lastUsed');
    const lastUsed = c.lastUsed.bind(c);
    const user = demoUserDn(SUFFIX, 'erin-lastbind');
    await ldapModify(slapd, `dn: ${user}\nchangetype: add\nobjectClass: inetOrgPerson\nuid: erin-lastbind\ncn: Erin\nsn: Erin\nuserPassword: ${DEMO_USER_PASSWORD}\n`);
    expect(await lastUsed(user)).toEqual({ exists: true, at: null });
    // a failed bind is not a use
    expect(await ldapBindWorks(slapd.url, user, 'not-the-password')).toBe(false);
    expect(await lastUsed(user)).toEqual({ exists: true, at: null });

    const before = Math.floor(Date.now() / 1000) * 1000;
    expect(await ldapBindWorks(slapd.url, user, DEMO_USER_PASSWORD)).toBe(true);
    const seen = await lastUsed(user);
    // The same value the directory shows to ldapsearch.
    const [raw] = await ldapsearchMembers(slapd, user, 'pwdLastSuccess');
    expect(raw).toMatch(/^\d{14}Z$/);
    expect(seen.exists).toBe(true);
    expect(seen.at?.getTime()).toBe(parseGeneralizedTime(raw!)!.getTime());
    expect(seen.at!.getTime()).toBeGreaterThanOrEqual(before);
    expect(seen.at!.getTime()).toBeLessThanOrEqual(Date.now());

    expect(await lastUsed(ldapAccountFor(config, { username: `gone-${randomUUID().slice(0, 8)}` }))).toEqual({ exists: false, at: null });
  });

  it('parses GeneralizedTime, with or without fractions, and refuses anything else', () => {
    expect(parseGeneralizedTime('20261202103000Z')?.toISOString()).toBe('2026-12-02T10:30:00.000Z');
    expect(parseGeneralizedTime('20261202103000.123Z')?.toISOString()).toBe('2026-12-02T10:30:00.000Z');
    for (const bad of ['', '2026-12-02', '20261202103000', '20261302103000Z x']) expect(parseGeneralizedTime(bad)).toBeNull();
  });
});
