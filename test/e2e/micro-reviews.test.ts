import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import { and, eq, inArray } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { auditEvents, grants, hrEvents, reviewCampaigns, reviewItems } from '../../db/schema.js';
import { sentinelScheduleId } from '../../workflows/ids.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';

// Micro-certifications opened by events (docs/micro-reviews.md) against the real stack: signed
// HR events through the API, the identity and campaign workflows on the Temporal dev server, the
// sentinel on its own Schedule, removals read back from slapd with ldapsearch.
const key = randomBytes(24);
const GRACE_S = 8;
const SENTINEL_INTERVAL_S = 3;
const DAY_MS = 86_400_000;

let s: Stack;
let tok: Record<string, string>;
let ids: Stack['catalog']['identities'];
let ent: Record<string, string>;
let hrToken: string;

/** Signs per the Standard Webhooks spec with node:crypto (independently of the product's verifier). */
function signed(body: string) {
  const id = `msg_${randomUUID()}`;
  const ts = Math.floor(Date.now() / 1000);
  const sig = createHmac('sha256', key).update(`${id}.${ts}.${body}`).digest('base64');
  return { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${sig}`, 'content-type': 'application/json' };
}

async function lease(subject: 'alice' | 'carol', entitlementId: string): Promise<{ requestId: string; grantId: string }> {
  const r = await s.call('POST', '/v1/access-requests', tok[subject], { entitlementId, durationSeconds: 3600, justification: 'micro-review fixture' });
  expect(r.status, JSON.stringify(r.body)).toBe(202);
  await waitFor(async () => (await s.call('POST', `/v1/access-requests/${r.body.id}/decision`, tok.bob, { decision: 'approve' })).status === 200, 'approval by the owner');
  await s.waitForStatus(r.body.id, ['active']);
  const [g] = await s.tdb.db.select({ id: grants.id }).from(grants).where(eq(grants.requestId, r.body.id));
  return { requestId: r.body.id, grantId: g!.id };
}

type Pending = { itemId: string; campaignId: string; grantId: string; kind: string; dueAt: string };
const pendingFor = async (who: 'bob' | 'carol') => (await s.call('GET', '/v1/reviews/pending', tok[who])).body.items as Pending[];
const decide = (who: 'bob' | 'carol', itemId: string, body: Record<string, unknown>) => s.call('POST', `/v1/review-items/${itemId}/decision`, tok[who], body);
const microOf = (grantId: string) =>
  s.tdb.db
    .select({ campaignId: reviewCampaigns.id, trigger: reviewCampaigns.trigger, kind: reviewCampaigns.kind, dueAt: reviewCampaigns.dueAt, itemStatus: reviewItems.status, reviewerId: reviewItems.reviewerId })
    .from(reviewItems)
    .innerJoin(reviewCampaigns, eq(reviewCampaigns.id, reviewItems.campaignId))
    .where(eq(reviewItems.grantId, grantId));
const alice = () => s.userDn('alice');

/** Waits until the sentinel's schedule has started `n` more runs and the last of them finished. */
async function sentinelRuns(n: number) {
  const handle = s.rt.temporal.schedule.getHandle(sentinelScheduleId(s.config.TEMPORAL_TASK_QUEUE));
  const before = (await handle.describe()).info.numActionsTaken;
  await waitFor(async () => (await handle.describe()).info.numActionsTaken >= before + n, `${n} sentinel runs`, (n + 3) * SENTINEL_INTERVAL_S * 1000);
  const last = (await handle.describe()).info.recentActions.at(-1)!;
  return s.rt.temporal.workflow.getHandle(last.action.workflow.workflowId, last.action.workflow.firstExecutionRunId).result();
}

beforeAll(async () => {
  s = await startStack({ env: { ACCESSLOOP_HR_WEBHOOK_SECRETS: `whsec_${key.toString('base64')}`, ACCESSLOOP_SENTINEL_INTERVAL_SECONDS: String(SENTINEL_INTERVAL_S) } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = s.catalog.identities;
  ent = { ...s.catalog.entitlements };
  hrToken = (await s.call('POST', '/v1/tokens', tok.operator, { principalId: 'client:workday', roles: ['hr_system'] })).body.token;
  const r = await s.call(
    'PUT',
    '/v1/policies',
    tok.operator,
    JSON.stringify({
      apiVersion: 'accessloop/v1',
      moverGraceSeconds: GRACE_S,
      reviews: { intervalDays: { privileged: 90 } },
      policies: [{ name: 'default', stages: [{ name: 'owner', approvers: ['entitlement_owner'] }] }],
    }),
    { 'content-type': 'application/json' },
  );
  expect(r.status, JSON.stringify(r.body)).toBe(201);
});
afterAll(async () => {
  await s?.stop();
});

describe('micro-reviews', () => {
  it('sends a mover’s requested access to the new manager as micro-reviews: kept stays, undecided is revoked at the deadline', async () => {
    const kept = await lease('alice', ent.engineering!);
    const undecided = await lease('alice', ent['prod-admins']!);
    expect(await s.ldapMembers('prod-admins')).toContain(alice());

    // Alice moves from carol's team to bob's.
    const body = JSON.stringify({ type: 'mover', sequence: 1, worker: { id: 'HR-ALICE', department: 'finance', managerId: 'HR-BOB' } });
    const sentAt = Date.now();
    const m = await s.call('POST', '/v1/hr/events', hrToken, body, signed(body));
    expect(m.status, JSON.stringify(m.body)).toBe(202);

    const items = await waitFor(async () => {
      const mine = (await pendingFor('bob')).filter((i) => [kept.grantId, undecided.grantId].includes(i.grantId));
      return mine.length === 2 ? mine : undefined;
    }, 'two micro-reviews for the new manager');
    const itemOf = (grantId: string) => items.find((i) => i.grantId === grantId)!;
    expect(items.every((i) => i.kind === 'micro')).toBe(true);
    const [ev] = await s.tdb.db.select({ processedAt: hrEvents.processedAt }).from(hrEvents).where(eq(hrEvents.id, m.body.eventId));
    expect(ev?.processedAt).toBeTruthy();
    for (const i of items) {
      // Due when the grace ends, counted from when the identity workflow handled the move.
      const due = Date.parse(i.dueAt);
      expect(due).toBeGreaterThanOrEqual(sentAt + GRACE_S * 1000 - 1000);
      expect(due).toBeLessThanOrEqual(Date.now() + GRACE_S * 1000 + 1000);
    }
    const rows = await s.tdb.db.select().from(reviewCampaigns).where(inArray(reviewCampaigns.id, items.map((i) => i.campaignId)));
    expect(rows.map((c) => ({ kind: c.kind, trigger: c.trigger, createdBy: c.createdBy, deadline: (c.definition as { deadline: { rule: string } }).deadline.rule }))).toEqual([
      { kind: 'micro', trigger: 'mover', createdBy: 'identityWorkflow', deadline: 'revoke' },
      { kind: 'micro', trigger: 'mover', createdBy: 'identityWorkflow', deadline: 'revoke' },
    ]);

    // The old manager neither sees nor decides them.
    expect((await pendingFor('carol')).filter((i) => items.some((x) => x.itemId === i.itemId))).toEqual([]);
    const refused = await decide('carol', itemOf(undecided.grantId).itemId, { decision: 'keep', comment: 'I used to manage her' });
    expect(refused.status).toBe(403);
    expect(refused.body.error.code).toBe('not_reviewer');

    const keep = await decide('bob', itemOf(kept.grantId).itemId, { decision: 'keep' });
    expect(keep.status, JSON.stringify(keep.body)).toBe(200);

    // The other is left undecided: at the deadline its campaign revokes it through the lease.
    const revoked = await s.waitForStatus(undecided.requestId, ['revoked'], (GRACE_S + 30) * 1000);
    // A mover's micro-review revokes with reason `mover`: the old role justified the access.
    expect(revoked.grant.revokeReason).toBe('mover');
    const [g] = await s.tdb.db.select({ revokeRequestedAt: grants.revokeRequestedAt }).from(grants).where(eq(grants.id, undecided.grantId));
    expect(g!.revokeRequestedAt!.getTime()).toBeGreaterThanOrEqual(Date.parse(itemOf(undecided.grantId).dueAt));
    expect(await s.ldapMembers('prod-admins')).not.toContain(alice());
    expect(await microOf(undecided.grantId)).toEqual([expect.objectContaining({ trigger: 'mover', itemStatus: 'revoked', reviewerId: ids.bob })]);
    const [decided] = await s.tdb.db
      .select({ actorId: auditEvents.actorId })
      .from(auditEvents)
      .where(and(eq(auditEvents.action, 'review.item_decided'), eq(auditEvents.grantId, undecided.grantId)));
    expect(decided?.actorId).toBe('rule:deadline');

    // What the new manager kept stays, on the target too, and no lease review stage was opened.
    const k = (await s.call('GET', `/v1/access-requests/${kept.requestId}`, tok.operator)).body;
    expect(k.status).toBe('active');
    expect(k.timeline.map((t: { action: string }) => t.action)).not.toContain('review.stage_opened');
    expect(await s.ldapMembers('engineering')).toContain(alice());
    expect(await microOf(kept.grantId)).toEqual([expect.objectContaining({ trigger: 'mover', itemStatus: 'kept', reviewerId: ids.bob })]);
    await waitFor(async () => {
      const c = await s.tdb.db.select({ status: reviewCampaigns.status }).from(reviewCampaigns).where(inArray(reviewCampaigns.id, items.map((i) => i.campaignId)));
      return c.every((x) => x.status === 'closed');
    }, 'both mover campaigns closed');
  });

  it('opens a review-interval micro-review for an old privileged grant, not for a fresh one, once', async () => {
    const old = await lease('carol', ent['prod-admins']!);
    const fresh = await lease('alice', ent['prod-admins']!);
    const oldMedium = await lease('carol', ent.engineering!);
    // Granted 100 days ago, as far as the database is concerned (the interval is 90 days for privileged).
    const longAgo = new Date(Date.now() - 100 * DAY_MS);
    await s.tdb.db.update(grants).set({ grantedAt: longAgo }).where(inArray(grants.id, [old.grantId, oldMedium.grantId]));

    const item = await waitFor(async () => (await pendingFor('bob')).find((i) => i.grantId === old.grantId), 'the interval review of the old grant', (SENTINEL_INTERVAL_S * 4 + 10) * 1000);
    expect(item.kind).toBe('micro');
    // Carol has no manager: the entitlement's owner reviews (the fallback).
    expect(await microOf(old.grantId)).toEqual([expect.objectContaining({ trigger: 'review_interval', itemStatus: 'pending', reviewerId: ids.bob })]);
    const [c] = await s.tdb.db.select().from(reviewCampaigns).where(eq(reviewCampaigns.id, item.campaignId));
    expect(c).toMatchObject({ createdBy: 'sentinel', trigger: 'review_interval' });
    expect(c!.dueAt.getTime()).toBeGreaterThan(Date.now() + 13 * DAY_MS);

    // Two more sentinel passes: still one review of the old grant, none of the fresh or the medium one.
    await sentinelRuns(2);
    expect(await microOf(old.grantId)).toHaveLength(1);
    expect(await microOf(fresh.grantId)).toEqual([]);
    expect(await microOf(oldMedium.grantId)).toEqual([]);

    // Kept now: the interval counts from this decision, so the next passes open nothing new.
    const kept = await decide('bob', item.itemId, { decision: 'keep', comment: 'still on call for production' });
    expect(kept.status, JSON.stringify(kept.body)).toBe(200);
    await sentinelRuns(2);
    expect((await microOf(old.grantId)).map((r) => r.itemStatus)).toEqual(['kept']);
    // A keep that is itself older than the interval no longer counts: the grant is due again.
    await s.tdb.db.update(reviewItems).set({ decidedAt: longAgo }).where(eq(reviewItems.grantId, old.grantId));
    await waitFor(async () => (await microOf(old.grantId)).some((r) => r.itemStatus === 'pending'), 'a second interval review', (SENTINEL_INTERVAL_S * 4 + 10) * 1000);
    expect((await microOf(old.grantId)).map((r) => r.itemStatus).sort()).toEqual(['kept', 'pending']);
    expect(await s.ldapMembers('prod-admins')).toEqual(expect.arrayContaining([s.userDn('carol'), alice()]));
  });
});
