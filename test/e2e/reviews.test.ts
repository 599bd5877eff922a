import { createHash, randomBytes, randomUUID } from 'node:crypto';
import { mkdtemp, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { and, eq, inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { verifyChain } from '../../activities/domain/audit.js';
import { accessRequests, auditEvents, grants, identities, notifications, reviewCampaigns, reviewItems } from '../../db/schema.js';
import { campaignDefinition } from '../../activities/domain/reviews/definition.js';
import { openCampaign } from '../../activities/domain/reviews/open.js';
import { tickCampaign } from '../../activities/domain/reviews/tick.js';
import { DEMO_USER_PASSWORD } from '../../activities/connectors/ldap/seed.js';
import { accessloop } from '../helpers/cli.js';
import { adminUrl } from '../helpers/db.js';
import { ldapBindWorks } from '../helpers/ldap.js';
import { psqlCreateRole, psqlDropRolesWithPrefix, psqlRoleMembers } from '../helpers/postgres.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

// Access reviews against the real stack: slapd and PostgreSQL targets, the Temporal dev server,
// the campaign workflow; every removal checked with ldapsearch and psql, never our connectors.
const prefix = `r${randomBytes(3).toString('hex')}_`;
const PG_SECRET = 'ACCESSLOOP_SECRET_TEST_PG';
let s: Stack;
let tok: Record<string, string>;
let ids: Record<string, string>;
let ent: Record<string, string>;
let pgEntitlement: string;

async function person(username: string, roles: string[] = ['requester', 'approver']) {
  const r = await s.call('POST', '/v1/identities', tok.operator, { kind: 'employee', username, displayName: username, managerId: ids.carol });
  expect(r.status, JSON.stringify(r.body)).toBe(201);
  const t = await s.call('POST', '/v1/tokens', tok.operator, { principalId: r.body.id, roles });
  ids[username] = r.body.id;
  tok[username] = t.body.token;
}

/** A live lease: requested by the subject, approved by the entitlement's owner (bob), verified on the target. */
async function lease(subject: string, entitlementId: string, approvers = ['bob']): Promise<{ requestId: string; grantId: string }> {
  const req = await s.call('POST', '/v1/access-requests', tok[subject], { entitlementId, durationSeconds: 1800, justification: 'access review fixture' });
  expect(req.status, JSON.stringify(req.body)).toBe(202);
  for (const a of approvers) await waitFor(async () => (await s.call('POST', `/v1/access-requests/${req.body.id}/decision`, tok[a], { decision: 'approve' })).status === 200, `approval by ${a}`);
  const done = await s.waitForStatus(req.body.id, ['active', 'failed', 'rejected', 'expired_unapproved'], 15_000).catch(async (e: Error) => {
    throw new Error(`${e.message}: ${JSON.stringify((await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.operator)).body)}`);
  });
  expect(done.status, JSON.stringify(done)).toBe('active');
  const [g] = await s.rt.db.select({ id: grants.id }).from(grants).where(eq(grants.requestId, req.body.id));
  return { requestId: req.body.id, grantId: g!.id };
}

const inSeconds = (n: number) => new Date(Date.now() + n * 1000).toISOString();
const createCampaign = (body: Record<string, unknown>) => s.call('POST', '/v1/review-campaigns', tok.operator, body);
const itemsOf = async (campaignId: string) => (await s.call('GET', `/v1/review-campaigns/${campaignId}/items`, tok.operator)).body.items as Array<Record<string, any>>;
const itemFor = async (campaignId: string, grantId: string) => (await itemsOf(campaignId)).find((i) => i.grantId === grantId)!;
const decide = (token: string | undefined, itemId: string, body: Record<string, unknown>) => s.call('POST', `/v1/review-items/${itemId}/decision`, token, body);
const waitClosed = (campaignId: string, timeoutMs = 60_000) =>
  waitFor(async () => {
    const c = (await s.call('GET', `/v1/review-campaigns/${campaignId}`, tok.operator)).body;
    return c.status === 'closed' ? c : undefined;
  }, `campaign ${campaignId} to close`, timeoutMs);
const ldapHas = async (group: 'engineering' | 'finance-readers' | 'prod-admins', uid: string) => (await s.ldapMembers(group)).includes(s.userDn(uid));

beforeAll(async () => {
  s = await startStack({ secrets: { [PG_SECRET]: 'unused-under-trust-auth' } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = { ...s.catalog.identities };
  ent = { ...s.catalog.entitlements };
  await person('erin');
  tok.dave = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: ids.dave, roles: ['requester'] })).body.token;
  await psqlCreateRole(adminUrl, `${prefix}readers`);
  await psqlCreateRole(adminUrl, `${prefix}alice`, { login: true });
  const sys = await s.call('POST', '/v1/systems', tok.operator, {
    name: 'warehouse-db',
    kind: 'postgres',
    config: { host: '127.0.0.1', port: 5432, database: s.tdb.name, user: 'postgres', accountTemplate: `${prefix}{username}` },
    secretRefs: { password: PG_SECRET },
    ownerId: ids.carol,
  });
  expect(sys.status, JSON.stringify(sys.body)).toBe(201);
  const e = await s.call('POST', '/v1/entitlements', tok.operator, { systemId: sys.body.id, name: 'Warehouse readers', resource: `${prefix}readers`, ownerId: ids.bob, riskTier: 'medium', defaultDurationSeconds: 600, maxDurationSeconds: 3600 });
  expect(e.status, JSON.stringify(e.body)).toBe(201);
  pgEntitlement = e.body.id;
}, 120_000);
afterAll(async () => {
  await s?.stop();
  await psqlDropRolesWithPrefix(adminUrl, prefix);
});

describe('access review campaigns', () => {
  it('refuses an empty scope (nothing written) and a grant nobody but its holder could review', async () => {
    const before = (await s.rt.db.select({ id: reviewCampaigns.id }).from(reviewCampaigns)).length;
    const empty = await createCampaign({ name: 'nothing', scope: { entitlementIds: [randomUUID()] }, dueAt: inSeconds(3600), reviewers: { rule: 'manager', fallbackReviewerId: ids.erin } });
    expect(empty.status).toBe(422);
    expect(empty.body.error.code).toBe('empty_scope');
    expect((await s.rt.db.select({ id: reviewCampaigns.id }).from(reviewCampaigns)).length).toBe(before);
    expect((await s.call('POST', '/v1/review-campaigns', tok.carol, { name: 'x', scope: {}, dueAt: inSeconds(60), reviewers: { rule: 'manager', fallbackReviewerId: ids.erin } })).status).toBe(403);

    // Carol's own lease: she has no manager, and she is the fallback.
    const own = await lease('carol', ent['finance-readers']!);
    const none = await createCampaign({ name: 'self', scope: { managerId: undefined, entitlementIds: [ent['finance-readers']] }, dueAt: inSeconds(3600), reviewers: { rule: 'manager', fallbackReviewerId: ids.carol } });
    expect(none.status).toBe(422);
    expect(none.body.error.code).toBe('no_eligible_reviewer');
    expect(none.body.error.details.grantIds).toEqual([own.grantId]);
    expect((await s.rt.db.select({ id: reviewCampaigns.id }).from(reviewCampaigns)).length).toBe(before);
    await s.call('POST', `/v1/access-requests/${own.requestId}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(own.requestId, ['revoked']);
  });

  it('runs a campaign across LDAP and PostgreSQL: manager reviews, no self-review, delegation, bulk keep, verified revokes, closes only after removal, signed report', async () => {
    const eng = await lease('alice', ent.engineering!);
    const pg = await lease('alice', pgEntitlement);
    const fin = await lease('dave', ent['finance-readers']!, ['bob', 'carol']); // a contractor: owner, then sponsor
    expect(await ldapHas('engineering', 'alice')).toBe(true);
    expect(await psqlRoleMembers(adminUrl, `${prefix}readers`)).toEqual([`${prefix}alice`]);
    // Alice signs in to the directory: slapd records it (pwdLastSuccess), and the review shows it.
    const boundAt = Math.floor(Date.now() / 1000) * 1000;
    expect(await ldapBindWorks(s.slapd.url, s.userDn('alice'), DEMO_USER_PASSWORD)).toBe(true);

    const c = await createCampaign({
      name: 'Q4 engineering recertification',
      scope: { entitlementIds: [ent.engineering, pgEntitlement, ent['finance-readers']] },
      dueAt: inSeconds(3600),
      reviewers: { rule: 'manager', fallbackReviewerId: ids.erin },
      reminders: { fractions: [0.5] },
    });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const campaignId = c.body.id as string;
    expect(c.body.workflowId).toBe(`review-campaign/${campaignId}`);
    expect(c.body.progress).toMatchObject({ items: 3, pending: 3 });
    const items = await itemsOf(campaignId);
    expect(items.map((i) => i.reviewerId)).toEqual([ids.carol, ids.carol, ids.carol]);
    const engItem = await itemFor(campaignId, eng.grantId);
    expect(engItem.provenance).toMatchObject({ requestId: eng.requestId, requesterId: ids.alice, approvals: [expect.objectContaining({ approverId: ids.bob })] });
    expect(engItem.provenance.policyVersion).toBeTruthy();

    // Last use, read from the targets by the workflow's first step: LDAP tells, PostgreSQL cannot.
    const seen = await waitFor(async () => (await itemFor(campaignId, eng.grantId)).lastUsedAt, 'the last use from slapd');
    expect(new Date(seen).getTime()).toBeGreaterThanOrEqual(boundAt);
    expect((await itemFor(campaignId, pg.grantId)).lastUsedAt).toBeNull();
    const pending = (await s.call('GET', '/v1/reviews/pending', tok.carol)).body.items;
    expect(pending.map((p: { grantId: string }) => p.grantId).sort()).toEqual([eng.grantId, pg.grantId, fin.grantId].sort());
    expect((await s.call('GET', '/v1/reviews/pending', tok.alice)).body.items).toEqual([]);

    // The holder never decides her own access; nor does anyone but the assigned reviewer.
    const self = await decide(tok.alice, engItem.id, { decision: 'keep', comment: 'mine' });
    expect(self.status).toBe(403);
    expect(self.body.error.code).toBe('self_review');
    expect((await decide(tok.bob, engItem.id, { decision: 'keep' })).body.error.code).toBe('not_reviewer');

    const pgItem = await itemFor(campaignId, pg.grantId);
    const noComment = await decide(tok.carol, pgItem.id, { decision: 'revoke' });
    expect(noComment.status).toBe(400);
    expect(noComment.body.error.code).toBe('comment_required');
    expect((await decide(tok.carol, pgItem.id, { decision: 'revoke', comment: 'no longer on the data team' })).status).toBe(200);
    expect((await decide(tok.carol, engItem.id, { decision: 'revoke', comment: 'moved to sales' })).status).toBe(200);
    expect((await decide(tok.carol, engItem.id, { decision: 'keep' })).body.error.code).toBe('not_pending');

    // Delegation: never to the holder; to erin, who then bulk-keeps.
    const finItem = await itemFor(campaignId, fin.grantId);
    const toSelf = await s.call('POST', `/v1/review-items/${finItem.id}/delegate`, tok.carol, { toIdentityId: ids.dave, comment: 'dave knows' });
    expect(toSelf.status).toBe(403);
    expect(toSelf.body.error.code).toBe('self_review');
    const del = await s.call('POST', `/v1/review-items/${finItem.id}/delegate`, tok.carol, { toIdentityId: ids.erin, comment: 'erin runs finance now' });
    expect(del.status, JSON.stringify(del.body)).toBe(200);
    expect(del.body).toMatchObject({ reviewerId: ids.erin, assignedReviewerId: ids.carol });
    expect((await decide(tok.carol, finItem.id, { decision: 'keep' })).body.error.code).toBe('not_reviewer');
    const bulk = await s.call('POST', '/v1/review-items/decisions', tok.erin, { itemIds: [finItem.id, engItem.id], decision: 'keep', comment: 'still needed' });
    expect(bulk.status).toBe(200);
    expect(bulk.body.decided).toBe(1);
    expect(bulk.body.results).toEqual([
      { itemId: finItem.id, status: 'kept' },
      { itemId: engItem.id, status: 'error', error: expect.objectContaining({ code: 'not_reviewer' }) },
    ]);

    // The campaign closes only once both revokes are verified removed on their targets.
    const closed = await waitClosed(campaignId);
    expect(closed.progress).toMatchObject({ items: 3, pending: 0, kept: 1, revoked: 2, removalVerified: 2, completionPercent: 100 });
    expect(await ldapHas('engineering', 'alice')).toBe(false);
    expect(await psqlRoleMembers(adminUrl, `${prefix}readers`)).toEqual([]);
    expect(await ldapHas('finance-readers', 'dave')).toBe(true);
    const revokedGrants = await s.rt.db.select().from(grants).where(eq(grants.requestId, eng.requestId));
    expect(revokedGrants[0]).toMatchObject({ status: 'revoked', revokeReason: 'review' });
    const rows = await s.rt.db.select().from(reviewItems).where(eq(reviewItems.campaignId, campaignId));
    for (const r of rows.filter((x) => x.status === 'revoked')) expect(new Date(closed.closedAt).getTime()).toBeGreaterThanOrEqual(r.removalVerifiedAt!.getTime());
    // The revoke is credited to the reviewer, attested before the signal.
    const [revokeEvent] = await s.rt.db.select().from(auditEvents).where(and(eq(auditEvents.grantId, eng.grantId), eq(auditEvents.action, 'request.revoke_submitted')));
    expect(revokeEvent).toMatchObject({ actorType: 'identity', actorId: ids.carol });
    const actions = (await s.rt.db.select({ action: auditEvents.action }).from(auditEvents)).map((a) => a.action);
    expect(actions).toEqual(expect.arrayContaining(['review.campaign_opened', 'review.item_decided', 'review.item_delegated', 'review.campaign_decided', 'review.campaign_closed']));
    expect(await verifyChain(s.rt.db)).toMatchObject({ ok: true });
    const kpis = (await s.call('GET', '/v1/metrics/kpis', tok.operator)).body.reviews;
    expect(kpis).toMatchObject({ revocations: 2, decisionToVerifiedRemoval: { n: 2 } });
    expect(kpis.decisionToVerifiedRemoval.p50Ms).toBeGreaterThan(0);
    expect(kpis.completionPercent).toBeGreaterThan(0);

    // Reports: CSV, and signed JSON that the offline verifier accepts (and refuses once edited).
    const csv = await fetch(`${s.rt.apiUrl}/v1/review-campaigns/${campaignId}/report.csv`, { headers: { authorization: `Bearer ${tok.carol}` } });
    expect(csv.headers.get('content-type')).toMatch(/text\/csv/);
    const lines = (await csv.text()).trim().split('\r\n');
    expect(lines).toHaveLength(4);
    expect(lines[0]).toMatch(/^item_id,campaign_id,grant_id/);
    expect(lines.find((l) => l.includes(pg.grantId))).toMatch(/,revoked,/);
    const report = await s.call('GET', `/v1/review-campaigns/${campaignId}/report.json`, tok.carol);
    expect(report.status).toBe(200);
    expect(report.body).toMatchObject({ format: 'accessloop.review-report/v2', summary: { items: 3, revoked: 2, kept: 1 } });
    const dir = await mkdtemp(path.join(os.tmpdir(), 'review-report-'));
    const file = path.join(dir, 'report.json');
    await writeFile(file, JSON.stringify(report.body));
    // The offline verifier, as an auditor runs it (no API: an address nothing listens on), against the published key.
    const key = path.join(dir, 'key.json');
    await writeFile(key, JSON.stringify((await s.call('GET', '/v1/evidence/public-key')).body));
    const ok = await accessloop('http://127.0.0.1:9', undefined, 'evidence', 'verify', file, '--public-key', key);
    expect(ok.code, ok.stderr).toBe(0);
    expect(ok.stdout).toContain(`review campaign ${campaignId}`);
    const edited = structuredClone(report.body);
    edited.items.find((i: { grantId: string }) => i.grantId === pg.grantId).status = 'kept';
    await writeFile(file, JSON.stringify(edited));
    const bad = await accessloop('http://127.0.0.1:9', undefined, 'evidence', 'verify', file, '--json');
    expect(bad.code).toBe(1);
    expect(JSON.parse(bad.stdout).problems.map((p: { code: string }) => p.code)).toEqual(expect.arrayContaining(['signature_invalid', 'fact_mismatch']));
  }, 120_000);

  it('applies the deadline rule at dueAt: keep and flag, with a privileged override that revokes', async () => {
    const eng = await lease('alice', ent.engineering!);
    const adm = await lease('alice', ent['prod-admins']!);
    expect(await ldapHas('prod-admins', 'alice')).toBe(true);
    const c = await createCampaign({
      name: 'deadline drill',
      scope: { entitlementIds: [ent.engineering, ent['prod-admins']], managerId: ids.carol },
      dueAt: inSeconds(6),
      reviewers: { rule: 'entitlement_owner', fallbackReviewerId: ids.erin },
      deadline: { rule: 'keep_and_flag', byRiskTier: { privileged: 'revoke' } },
    });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const admItem = await itemFor(c.body.id, adm.grantId);
    expect(admItem.reviewerId).toBe(ids.bob);
    // Privileged access is never kept without a reason.
    const bare = await decide(tok.bob, admItem.id, { decision: 'keep' });
    expect(bare.status).toBe(400);
    expect(bare.body.error.code).toBe('comment_required');

    const closed = await waitClosed(c.body.id);
    expect(closed.progress).toMatchObject({ kept: 1, revoked: 1, flagged: 1, removalVerified: 1 });
    const [engRow] = await s.rt.db.select().from(reviewItems).where(and(eq(reviewItems.campaignId, c.body.id), eq(reviewItems.grantId, eng.grantId)));
    expect(engRow).toMatchObject({ status: 'kept', flagged: true, decidedBy: 'rule:deadline' });
    const [admRow] = await s.rt.db.select().from(reviewItems).where(and(eq(reviewItems.campaignId, c.body.id), eq(reviewItems.grantId, adm.grantId)));
    expect(admRow).toMatchObject({ status: 'revoked', decidedBy: 'rule:deadline' });
    expect(admRow!.decidedAt!.getTime()).toBeGreaterThanOrEqual(new Date(c.body.dueAt).getTime());
    expect(await ldapHas('prod-admins', 'alice')).toBe(false);
    expect(await ldapHas('engineering', 'alice')).toBe(true);
    await s.call('POST', `/v1/access-requests/${eng.requestId}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(eng.requestId, ['revoked']);
  }, 120_000);

  it('cancels a campaign: what is pending is skipped, a revoke already decided still ends verified, then it ends cancelled', async () => {
    const eng = await lease('alice', ent.engineering!);
    const fin = await lease('alice', ent['finance-readers']!);
    const c = await createCampaign({
      name: 'cancel drill',
      scope: { entitlementIds: [ent.engineering, ent['finance-readers']], managerId: ids.carol },
      dueAt: inSeconds(3600),
      reviewers: { rule: 'entitlement_owner', fallbackReviewerId: ids.erin },
    });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const finItem = await itemFor(c.body.id, fin.grantId);
    const revoked = await decide(tok.bob, finItem.id, { decision: 'revoke', comment: 'no longer on the finance close' });
    expect(revoked.status, JSON.stringify(revoked.body)).toBe(200);

    const cancel = (token: string | undefined, body: unknown) => s.call('POST', `/v1/review-campaigns/${c.body.id}/cancel`, token, body);
    expect((await cancel(tok.bob, { reason: 'wrong scope' })).status).toBe(403);
    const bad = await cancel(tok.operator, {});
    expect(bad.status).toBe(400);
    expect((await itemFor(c.body.id, eng.grantId)).status).toBe('pending');
    const done = await cancel(tok.operator, { reason: 'scope drawn too wide' });
    expect(done.status, JSON.stringify(done.body)).toBe(200);
    expect(done.body).toMatchObject({ status: 'cancelled', skippedItems: expect.any(Number) });
    expect(await itemFor(c.body.id, eng.grantId)).toMatchObject({ status: 'skipped', decidedBy: 'rule:cancelled' });
    expect((await cancel(tok.operator, { reason: 'again' })).status).toBe(409);

    // The decided revoke is not undone by the cancel: removed and read back (ldapsearch), then the campaign ends.
    const ended = await waitFor(async () => {
      const v = (await s.call('GET', `/v1/review-campaigns/${c.body.id}`, tok.operator)).body;
      return v.closedAt ? v : undefined;
    }, 'the cancelled campaign to end', 60_000);
    expect(ended).toMatchObject({ status: 'cancelled', progress: { revoked: 1, removalVerified: 1 } });
    expect(await ldapHas('finance-readers', 'alice')).toBe(false);
    expect(await ldapHas('engineering', 'alice')).toBe(true);
    const [ev] = await s.rt.db.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, `review-campaign/${c.body.id}/cancelled`));
    expect(ev).toMatchObject({ action: 'review.campaign_cancelled', reason: 'scope drawn too wide' });
    await s.call('POST', `/v1/access-requests/${eng.requestId}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(eng.requestId, ['revoked']);
  }, 120_000);

  it('escalates an undecided item to the fallback reviewer at dueAt, who then decides it', async () => {
    const fin = await lease('alice', ent['finance-readers']!);
    // Dave's finance lease (the first campaign kept it) is in scope too.
    const daveLive = await s.rt.db.select().from(grants).where(and(eq(grants.identityId, ids.dave!), eq(grants.entitlementId, ent['finance-readers']!), eq(grants.status, 'active')));
    if (daveLive.length === 0) await lease('dave', ent['finance-readers']!, ['bob', 'carol']);
    const c = await createCampaign({
      name: 'escalation drill',
      scope: { entitlementIds: [ent['finance-readers']], managerId: ids.carol },
      dueAt: inSeconds(4),
      reviewers: { rule: 'manager', fallbackReviewerId: ids.erin, excludeOriginalApprover: true },
      reminders: { fractions: [0.5] },
      deadline: { rule: 'escalate', escalationSeconds: 600 },
    });
    expect(c.status, JSON.stringify(c.body)).toBe(201);
    const item = await itemFor(c.body.id, fin.grantId);
    expect(item.reviewerId).toBe(ids.carol);
    const escalated = await waitFor(async () => {
      const i = await itemFor(c.body.id, fin.grantId);
      return i.escalatedAt ? i : undefined;
    }, 'escalation to the fallback');
    expect(escalated).toMatchObject({ reviewerId: ids.erin, assignedReviewerId: ids.carol, status: 'pending' });
    // Half-way through the window carol was reminded (one message for her pending items), then erin was told of the escalation.
    const sent = await s.rt.db.select().from(notifications).where(eq(notifications.event, 'review.reminder'));
    expect(sent.filter((n) => n.idempotencyKey.startsWith(`review-campaign/${c.body.id}/reminder/1/`)).map((n) => n.recipientIds)).toContainEqual([ids.carol]);
    expect(escalated.reminders).toBe(1);
    const told = await s.rt.db.select().from(notifications).where(eq(notifications.idempotencyKey, `review-campaign/${c.body.id}/escalated/${item.id}`));
    expect(told).toEqual([expect.objectContaining({ event: 'review.escalated', recipientIds: [ids.erin] })]);
    expect((await s.call('GET', '/v1/reviews/pending', tok.erin)).body.items.map((i: { itemId: string }) => i.itemId)).toContain(item.id);
    expect((await decide(tok.carol, item.id, { decision: 'keep' })).body.error.code).toBe('not_reviewer');
    const [ev] = await s.rt.db.select().from(auditEvents).where(eq(auditEvents.idempotencyKey, `review-item/${item.id}/escalated`));
    expect(ev).toMatchObject({ action: 'review.item_escalated', data: expect.objectContaining({ from: ids.carol, to: ids.erin }) });
    expect((await decide(tok.erin, item.id, { decision: 'revoke', comment: 'not needed after the audit' })).status).toBe(200);
    // Carol approved Dave's lease as his sponsor, so the campaign excluding original approvers gave it to the fallback from the
    // start; at the deadline there was nobody left to escalate to, so the after-escalation rule kept and flagged it.
    const [daveItem] = (await itemsOf(c.body.id)).filter((i) => i.identityId === ids.dave);
    expect(daveItem).toMatchObject({ reviewerId: ids.erin, assignedReviewerId: ids.erin, status: 'kept', flagged: true, decidedBy: 'rule:deadline', provenance: expect.objectContaining({ reviewerVia: 'fallback' }) });
    await waitClosed(c.body.id);
    expect(await ldapHas('finance-readers', 'alice')).toBe(false);
  }, 120_000);

  it('opens a micro-review for each lease a newly published policy no longer allows; keeping it with a new end moves the lease', async () => {
    const fin = await lease('alice', ent['finance-readers']!);
    const doc = {
      apiVersion: 'accessloop/v1',
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }], conditions: [{ name: 'no-engineers-in-finance', when: 'entitlement.risk_tier == "low" && subject.department == "engineering"', effect: 'deny', reason: 'finance data is for finance' }] }],
      reviews: { onPolicyChange: 'micro_review', policyChangeReviewDueDays: 3, policyChangeDeadline: 'revoke' },
    };
    const pub = await s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(doc), { 'content-type': 'application/json' });
    expect(pub.status, JSON.stringify(pub.body)).toBeLessThan(300);
    expect(pub.body.impact.grants.map((g: { grantId: string }) => g.grantId)).toEqual([fin.grantId]);
    expect(pub.body.reviews).toMatchObject({ mode: 'micro_review', opened: [{ grantId: fin.grantId, campaignId: expect.any(String), itemId: expect.any(String) }], skipped: [] });
    const { campaignId, itemId } = pub.body.reviews.opened[0];
    const c = (await s.call('GET', `/v1/review-campaigns/${campaignId}`, tok.operator)).body;
    expect(c).toMatchObject({ kind: 'micro', trigger: 'policy_change', policyVersion: pub.body.version, status: 'open', progress: { items: 1, pending: 1 } });
    await waitFor(async () => (await s.rt.temporal.workflow.getHandle(`review-campaign/${campaignId}`).describe().catch(() => undefined))?.status.name === 'RUNNING', 'the micro-review workflow');
    const mine = (await s.call('GET', '/v1/reviews/pending', tok.carol)).body.items;
    expect(mine).toEqual([expect.objectContaining({ itemId, kind: 'micro', grantId: fin.grantId })]);

    // Kept, with an earlier end: the lease's own workflow moves its expiry (its shorten update).
    const newEnd = new Date(Date.now() + 10 * 60_000);
    const kept = await decide(tok.carol, itemId, { decision: 'keep', comment: 'needed until the close', newExpiresAt: newEnd.toISOString() });
    expect(kept.status, JSON.stringify(kept.body)).toBe(200);
    expect(kept.body).toMatchObject({ status: 'kept', leaseExpiresAt: newEnd.toISOString() });
    const [g] = await s.rt.db.select().from(grants).where(eq(grants.id, fin.grantId));
    expect(g!.expiresAt!.toISOString()).toBe(newEnd.toISOString());
    await waitClosed(campaignId);
  }, 120_000);

  it('runs a recurring campaign from the policy on its Temporal Schedule, and drops the schedule with the entry', async () => {
    const adm = await lease('alice', ent['prod-admins']!);
    const name = 'monthly privileged recertification';
    const doc = (campaigns: unknown[]) => ({ apiVersion: 'accessloop/v1', policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }], reviews: { campaigns } });
    const put = (d: unknown) => s.call('PUT', '/v1/policies', tok.operator, JSON.stringify(d), { 'content-type': 'application/json' });
    const pub = await put(doc([{ name, everyDays: 30, dueInDays: 7, scope: { riskTiers: ['privileged'] }, reviewers: { rule: 'entitlement_owner', fallbackReviewerId: ids.erin }, deadline: { rule: 'revoke' } }]));
    expect(pub.status, JSON.stringify(pub.body)).toBeLessThan(300);
    const scheduleId = `review-schedule/${s.config.TEMPORAL_TASK_QUEUE}/${createHash('sha256').update(name).digest('hex').slice(0, 16)}`;
    const schedule = s.rt.temporal.schedule.getHandle(scheduleId);
    expect((await schedule.describe()).spec.intervals).toEqual([expect.objectContaining({ every: 30 * 86_400_000 })]);
    await schedule.trigger();
    const [c] = await waitFor(async () => {
      const rows = await s.rt.db.select().from(reviewCampaigns).where(eq(reviewCampaigns.trigger, 'schedule'));
      return rows.length ? rows : undefined;
    }, 'the scheduled campaign');
    expect(c).toMatchObject({ kind: 'campaign', name, policyVersion: pub.body.version, createdBy: 'review-schedule' });
    expect(c!.dueAt.getTime() - c!.createdAt.getTime()).toBe(7 * 86_400_000);
    const items = await itemsOf(c!.id);
    expect(items).toEqual([expect.objectContaining({ grantId: adm.grantId, reviewerId: ids.bob, riskTier: 'privileged' })]);
    await waitFor(async () => (await s.rt.temporal.workflow.getHandle(c!.workflowId).describe().catch(() => undefined))?.status.name === 'RUNNING', 'its campaign workflow');

    expect((await put(doc([]))).status).toBeLessThan(300);
    await expect(schedule.describe()).rejects.toThrow();
  }, 120_000);

  it('keeps at most 20 revocations in flight: the pass hands out the rest as earlier ones are verified, and closes after the last', async () => {
    // The pass itself against Postgres (no workflow runs for this campaign): 25 revoked items.
    const db = s.rt.db;
    const n = 25;
    const people = await db.insert(identities).values(Array.from({ length: n }, (_, i) => ({ kind: 'employee' as const, username: `${prefix}bulk${i}`, displayName: `bulk ${i}`, managerId: ids.carol }))).returning({ id: identities.id });
    const reqs = await db
      .insert(accessRequests)
      .values(people.map((p) => ({ requesterId: p.id, subjectId: p.id, entitlementId: ent['finance-readers']!, justification: 'window', requestedDurationSeconds: 3600, status: 'active' as const, workflowId: `access-request/${randomUUID()}` })))
      .returning({ id: accessRequests.id, subjectId: accessRequests.subjectId });
    const leases = await db.insert(grants).values(reqs.map((r) => ({ identityId: r.subjectId, entitlementId: ent['finance-readers']!, requestId: r.id, source: 'request' as const, status: 'active' as const, grantedAt: new Date() }))).returning({ id: grants.id });
    const definition = campaignDefinition.parse({ name: 'window', scope: {}, dueAt: inSeconds(3600), reviewers: { rule: 'entitlement_owner', fallbackReviewerId: ids.erin } });
    const { campaign } = await openCampaign(db, { definition, kind: 'campaign', trigger: 'api', actor: { actorType: 'client', actorId: 'client:test' }, grantIds: leases.map((l) => l.id), now: new Date() });
    await db.update(reviewItems).set({ status: 'revoked', decidedAt: new Date(), decidedBy: ids.bob, comment: 'bulk' }).where(eq(reviewItems.campaignId, campaign.id));
    const notifier = { send: async () => ({ status: 'recorded' as const }) };
    const tick = () => tickCampaign({ db, notifier }, { campaignId: campaign.id, nowMs: Date.now(), window: 20 });

    const first = await tick();
    expect(first).toMatchObject({ status: 'closing', pending: 0, revokesInFlight: 20 });
    expect(first.toSignal).toHaveLength(20);
    expect((await tick()).toSignal).toEqual([]);
    // Five removals verified on their targets: five more go out.
    const verifiedGrants = (await db.select({ grantId: reviewItems.grantId }).from(reviewItems).where(inArray(reviewItems.id, first.toSignal.slice(0, 5).map((t) => t.itemId)))).map((r) => r.grantId);
    expect(verifiedGrants).toHaveLength(5);
    await db.update(grants).set({ status: 'revoked', revokedAt: new Date(), removalVerifiedAt: new Date() }).where(inArray(grants.id, verifiedGrants));
    const third = await tick();
    expect(third.toSignal).toHaveLength(5);
    expect(third.revokesInFlight).toBe(20);
    expect(new Set([...first.toSignal, ...third.toSignal].map((t) => t.itemId)).size).toBe(25);
    await db.update(grants).set({ status: 'revoked', revokedAt: new Date(), removalVerifiedAt: new Date() }).where(inArray(grants.id, leases.map((l) => l.id)));
    expect(await tick()).toMatchObject({ status: 'closed', revokesInFlight: 0, toSignal: [] });
  }, 60_000);
});
