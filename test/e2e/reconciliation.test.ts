import { eq } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { DEMO_SUFFIX, demoGroupDn } from '../../activities/connectors/ldap/seed.js';
import { accessRequests, auditEvents, grants, reconciliationFindings, reviewCampaigns, reviewItems } from '../../db/schema.js';
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
const REVIEW_S = 8;
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

  it('adopts unexplained access as a lease under a micro-review: kept stays, undecided is removed and verified', async () => {
    const put = await s.call(
      'PUT',
      '/v1/policies',
      tok.operator,
      JSON.stringify({
        apiVersion: 'accessloop/v1',
        reconciliation: { removeUnauthorized: 'none' },
        reviews: { onUnauthorized: 'micro_review', unauthorizedReviewHours: REVIEW_S / 3600, unauthorizedDeadline: 'revoke' },
        policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }],
      }),
      { 'content-type': 'application/json' },
    );
    expect(put.status, JSON.stringify(put.body)).toBe(201);
    // Added behind the lifecycle's back: alice and dave in finance-readers, neither with a grant.
    await member('add', 'finance-readers', s.userDn('alice'));
    await member('add', 'finance-readers', s.userDn('dave'));

    const counts = await reconcile();
    expect(counts).toMatchObject({ unauthorized_access: 2, adopted: 2, remediated: 0 });
    // Each lease's first step points its finding at the grant.
    const rows = await waitFor(async () => {
      const found = await s.tdb.db
        .select({ findingId: reconciliationFindings.id, account: reconciliationFindings.account, grantId: reconciliationFindings.grantId, source: grants.source, requestId: grants.requestId })
        .from(reconciliationFindings)
        .innerJoin(grants, eq(grants.id, reconciliationFindings.grantId))
        .where(eq(reconciliationFindings.kind, 'unauthorized_access'));
      const ours = found.filter((r) => r.account.includes('alice') || r.account.includes('dave'));
      return ours.length === 2 ? ours : undefined;
    }, 'both findings linked to their adopted grants');
    const adopted = Object.fromEntries(rows.map((r) => [r.account.includes('alice') ? 'alice' : 'dave', r]));
    expect(Object.keys(adopted).sort()).toEqual(['alice', 'dave']);
    for (const who of ['alice', 'dave'] as const) {
      const a = adopted[who]!;
      expect(a.source).toBe('discovered');
      const view = await s.waitForStatus(a.requestId!, ['active']);
      expect(view).toMatchObject({ adopted: true, subjectId: s.catalog.identities[who] });
      // Nobody asked for it: the evidence names reconciliation as the actor, not the holder.
      const [submitted] = await s.tdb.db.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, `request/${a.requestId}/submitted`));
      expect(submitted).toMatchObject({ actorType: 'workflow', actorId: 'reconciliationWorkflow' });
    }
    // One micro-review each, for the holders' manager (carol); never for the holder.
    type Pending = { itemId: string; grantId: string; kind: string };
    const pending = await waitFor(async () => {
      const items = (await s.call('GET', '/v1/reviews/pending', tok.carol)).body.items as Pending[];
      return items.filter((i) => i.grantId === adopted.alice!.grantId || i.grantId === adopted.dave!.grantId).length === 2 ? items : undefined;
    }, 'two unauthorized-access micro-reviews for carol');
    const itemOf = (who: 'alice' | 'dave') => pending.find((i) => i.grantId === adopted[who]!.grantId)!;
    expect(itemOf('alice').kind).toBe('micro');
    const [c] = await s.tdb.db.select({ trigger: reviewCampaigns.trigger }).from(reviewItems).innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId)).where(eq(reviewItems.id, itemOf('dave').itemId));
    expect(c!.trigger).toBe('unauthorized_access');
    expect((await s.call('POST', `/v1/review-items/${itemOf('alice').itemId}/decision`, tok.alice, { decision: 'keep', comment: 'mine' })).status).toBe(403);
    const kept = await s.call('POST', `/v1/review-items/${itemOf('alice').itemId}/decision`, tok.carol, { decision: 'keep', comment: 'alice covers the finance close this quarter' });
    expect(kept.status, JSON.stringify(kept.body)).toBe(200);

    // Dave's is left undecided: the deadline rule revokes it through the lease's verified removal.
    const ended = await s.waitForStatus(adopted.dave!.requestId!, ['revoked'], (REVIEW_S + 40) * 1000);
    expect(ended.removalVerifiedAt).toBeTruthy();
    const [daveGrant] = await s.tdb.db.select().from(grants).where(eq(grants.id, adopted.dave!.grantId!));
    expect(daveGrant).toMatchObject({ status: 'revoked', revokeReason: 'review' });
    expect(daveGrant!.removalVerifiedAt).toBeInstanceOf(Date);
    // The directory itself (ldapsearch): dave is gone, alice stays, now justified by her lease.
    const members = await s.ldapMembers('finance-readers');
    expect(members).not.toContain(s.userDn('dave'));
    expect(members).toContain(s.userDn('alice'));
    const [aliceReq] = await s.tdb.db.select({ status: accessRequests.status }).from(accessRequests).where(eq(accessRequests.id, adopted.alice!.requestId!));
    expect(aliceReq!.status).toBe('active');

    // A rerun finds nothing unexplained: both findings resolve, nothing is adopted twice.
    const again = await reconcile();
    expect(again).toMatchObject({ unauthorized_access: 0, adopted: 0 });
    const after = await s.tdb.db.select({ status: reconciliationFindings.status }).from(reconciliationFindings).where(eq(reconciliationFindings.id, adopted.alice!.findingId));
    expect(after[0]!.status).toBe('resolved');
  });
});
