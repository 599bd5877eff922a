import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_SUFFIX, demoGroupDn } from '../../activities/connectors/ldap/seed.js';
import { ldapModify } from '../helpers/ldap.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

let s: Stack;
let tok: Record<string, string>;
let ent: Record<string, string>;
const admin = () => ({ url: s.slapd.url, rootDn: s.slapd.rootDn, rootPassword: s.slapd.rootPassword });
const member = (op: 'add' | 'delete', group: string, dn: string) =>
  ldapModify(admin(), `dn: ${demoGroupDn(DEMO_SUFFIX, group)}\nchangetype: modify\n${op}: member\nmember: ${dn}\n`);

async function lease(group: 'engineering' | 'finance-readers' | 'prod-admins', token: string | undefined) {
  const r = await s.call('POST', '/v1/access-requests', token, { entitlementId: ent[group], durationSeconds: 3600, justification: 'reconciliation fixture' });
  await waitFor(async () => (await s.call('POST', `/v1/access-requests/${r.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval');
  await s.waitForStatus(r.body.id, ['active']);
  return r.body.id as string;
}
async function reconcile() {
  const r = await s.call('POST', '/v1/reconciliation/run', tok.operator, { systemId: s.catalog.systemId });
  expect(r.status).toBe(202);
  return s.rt.temporal.workflow.getHandle(r.body.workflowId).result();
}
const findings = async (q = '') => (await s.call('GET', `/v1/reconciliation/findings?systemId=${s.catalog.systemId}${q}`, tok.operator)).body.items as Array<{ kind: string; account: string; status: string }>;

beforeAll(async () => {
  s = await startStack();
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ent = { ...s.catalog.entitlements };
});
afterAll(async () => {
  await s?.stop();
});

describe('reconciliation against the real directory', () => {
  it('finds each kind of drift made behind our back and remediates per policy', async () => {
    // Lifecycle state: alice holds engineering; carol held finance-readers, then it was revoked.
    await lease('engineering', tok.alice);
    const ended = await lease('finance-readers', tok.carol);
    await s.call('POST', `/v1/access-requests/${ended}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(ended, ['revoked']);

    // Someone edits the directory directly.
    await member('add', 'engineering', s.userDn('bob')); // unauthorized, medium risk → left open
    await member('add', 'prod-admins', s.userDn('dave')); // unauthorized, privileged → removed
    await member('add', 'finance-readers', `uid=ghost,ou=people,${DEMO_SUFFIX}`); // no identity → orphaned
    await member('add', 'finance-readers', s.userDn('carol')); // revoked earlier → failed revocation, re-driven
    await member('delete', 'engineering', s.userDn('alice')); // granted but absent → missing grant

    const counts = await reconcile();
    expect(counts).toMatchObject({ unauthorized_access: 2, orphaned_account: 1, failed_revocation: 1, missing_grant: 1, remediated: 2 });
    const f = await findings();
    const view = f.map((x) => [x.kind, x.account.split(',')[0], x.status]).sort();
    expect(view).toEqual(
      [
        ['failed_revocation', 'uid=carol', 'remediated'],
        ['missing_grant', 'uid=alice', 'open'],
        ['orphaned_account', 'uid=ghost', 'open'],
        ['unauthorized_access', 'uid=bob', 'open'],
        ['unauthorized_access', 'uid=dave', 'remediated'],
      ].sort(),
    );
    // Remediation really happened on the target (ldapsearch), and only there.
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('dave'));
    expect(await s.ldapMembers('finance-readers')).not.toContain(s.userDn('carol'));
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('bob'));

    // Fixed by hand, then a rerun: the finding resolves; nothing is duplicated.
    await member('delete', 'engineering', s.userDn('bob'));
    await reconcile();
    const again = await findings('&status=open');
    expect(again.map((x) => [x.kind, x.account.split(',')[0]]).sort()).toEqual([
      ['missing_grant', 'uid=alice'],
      ['orphaned_account', 'uid=ghost'],
    ]);
    expect((await findings('&status=resolved')).map((x) => x.account.split(',')[0])).toEqual(['uid=bob']);
  });

  it('schedules reconciliation for every registered system, and guards its routes', async () => {
    const sys = await s.call('POST', '/v1/systems', tok.operator, {
      name: 'scheduled-directory',
      kind: 'ldap',
      config: (await s.tdb.db.query.systems.findFirst())!.config,
      secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_TEST_LDAP' },
      ownerId: s.catalog.identities.carol,
    });
    expect(sys.status).toBe(201);
    const d = await s.rt.temporal.schedule.getHandle(`reconcile/${sys.body.id}`).describe();
    expect(d.action).toMatchObject({ type: 'startWorkflow', workflowType: 'reconciliationWorkflow' });
    expect(d.spec.intervals?.[0]?.every).toBe(60 * 60 * 1000);
    expect((await s.call('POST', '/v1/reconciliation/run', tok.alice, { systemId: sys.body.id })).status).toBe(403);
    expect((await s.call('POST', '/v1/reconciliation/run', tok.operator, { systemId: '00000000-0000-4000-8000-000000000000' })).status).toBe(404);
    expect((await s.call('GET', '/v1/reconciliation/findings?kind=bogus', tok.operator)).status).toBe(400);
  });
});
