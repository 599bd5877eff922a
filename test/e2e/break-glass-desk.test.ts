/**
 * Break-glass and the service desk (docs/break-glass.md): when the incident reference names a
 * ticket on a registered desk (`<desk>#<ticket>`), the ticket gets an internal comment as the
 * access is verified, read back from a private Request Tracker 5 over REST as its root user.
 */
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { lowRiskSelfServicePolicy, startDeskStack, ticketPosts, type DeskStack } from '../helpers/desk.js';
import { waitFor, type Stack } from '../helpers/stack.js';

let desk: DeskStack;
let s: Stack;
let tok: Record<string, string>;

beforeAll(async () => {
  desk = await startDeskStack({ temporalAddress: inject('temporalAddress'), name: 'rt-bg', rtUsers: { alice: ['requesters'] }, policy: lowRiskSelfServicePolicy() });
  ({ stack: s, tokens: tok } = desk);
}, 240_000);

afterAll(async () => {
  await desk?.stop();
});

describe('break-glass with an incident ticket on the service desk', () => {
  it('comments on the incident ticket once access is verified, without linking or resolving it', async () => {
    const ids = s.catalog.identities;
    const g = await s.call('POST', '/v1/groups', tok.operator, { name: 'desk-on-call', memberIds: [ids.alice] });
    expect(g.status).toBe(201);
    const set = await s.call('PUT', `/v1/entitlements/${s.catalog.entitlements['prod-admins']}/break-glass`, tok.operator, { allowed: true, invokers: g.body.ref, maxDurationSeconds: 600, cooldownSeconds: 0 });
    expect(set.status, JSON.stringify(set.body)).toBe(200);
    // The incident: a ticket that is not an access request (the desk refuses it as one).
    const ticket = await desk.openTicket('alice', {}, 'Production database outage');
    const before = await desk.linkOf(ticket);
    expect(before.state).toBe('refused');

    const inv = await s.call('POST', '/v1/break-glass', tok.alice, { entitlementId: s.catalog.entitlements['prod-admins'], durationSeconds: 4, incidentRef: `rt-bg#${ticket}`, justification: 'restore the production database' });
    expect(inv.status, JSON.stringify(inv.body)).toBe(201);
    const ok = await s.call('POST', `/v1/break-glass/${inv.body.id}/confirm`, tok.alice, { confirmation: inv.body.confirmation });
    expect(ok.status, JSON.stringify(ok.body)).toBe(202);
    await s.waitForStatus(ok.body.id, ['active'], 20_000);
    expect(await s.ldapMembers('prod-admins')).toContain(s.userDn('alice'));

    const comment = await waitFor(async () => (await ticketPosts(desk.rt, ticket)).find((p) => p.text.includes('Break-glass used')), 'the comment on the incident ticket', 30_000);
    expect(comment.text).toContain(ok.body.id);
    expect(comment.text).toContain('approvals skipped');

    // The lease runs as usual; the incident is neither linked to the request nor resolved by its end.
    await s.waitForStatus(ok.body.id, ['revoked'], 30_000);
    expect(await s.ldapMembers('prod-admins')).not.toContain(s.userDn('alice'));
    const after = await desk.linkOf(ticket);
    expect(after.requestId).toBeNull();
    expect((await ticketPosts(desk.rt, ticket)).filter((p) => p.text.includes('Break-glass used'))).toHaveLength(1);
  });
});
