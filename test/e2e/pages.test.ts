/**
 * The pages in a real browser (headless Debian chromium through puppeteer-core) against the real
 * stack: an approval clicked through from the action link in a notification, sign-in and out
 * with a session cookie, CSRF refusals, the KPI chart; every page under the strict CSP with no
 * violation reported, and axe-core finding nothing serious. Screenshots go to test-results/.
 */
import { createHash, randomBytes } from 'node:crypto';
import { eq, inArray, isNull } from 'drizzle-orm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { mintActionLink } from '../../activities/domain/action-links.js';
import { LOGIN_FAILURES_ALLOWED } from '../../api/routes/pages.js';
import { auditEvents, webSessions } from '../../db/schema.js';
import { axeViolations, launchBrowser, screenshot, seriousOrWorse, type BrowserHandle, type WatchedPage } from '../helpers/browser.js';
import { startStack, waitFor, type Stack } from '../helpers/stack.js';
import { startWebhookReceiver, type WebhookDelivery, type WebhookReceiver } from '../helpers/webhook-receiver.js';

type Delivery = WebhookDelivery<{ type: string; data: { requestId: string; stage: number; recipients: Array<{ identityId: string; actionUrl?: string }> } }>;

const LINK_SECRET = randomBytes(32).toString('base64url');
const deliveries: Delivery[] = [];
let receiver: WebhookReceiver | undefined;
let s: Stack;
let b: BrowserHandle;
let tok: Record<string, string>;
let ids: Record<string, string>;
let ent: Record<string, string>;

async function linkFor(requestId: string, approverId: string): Promise<string> {
  const d = await waitFor(
    async () => deliveries.find((x) => x.json.type === 'approval.requested' && x.json.data.requestId === requestId && x.json.data.recipients.some((r) => r.identityId === approverId)),
    `approval.requested for ${approverId}`,
  );
  // The link as minted (ACCESSLOOP_PUBLIC_URL's origin), opened on this stack's listener.
  return `${s.rt.apiUrl}${new URL(d.json.data.recipients.find((r) => r.identityId === approverId)!.actionUrl!).pathname}`;
}
const request = (entitlementId: string, justification: string) => s.call('POST', '/v1/access-requests', tok.alice, { entitlementId, durationSeconds: 600, justification });

/** Opens a path, checks the CSP header, runs axe and saves a screenshot. */
async function visit(w: WatchedPage, url: string, shot: string) {
  const res = await w.page.goto(url.startsWith('http') ? url : `${s.rt.apiUrl}${url}`, { waitUntil: 'networkidle0' });
  expect(res, url).toBeTruthy();
  const headers = res!.headers();
  expect(headers['content-security-policy']).toMatch(/default-src 'none'/);
  expect(headers['content-security-policy']).not.toMatch(/unsafe-inline|unsafe-eval/);
  expect(headers['referrer-policy']).toBe('no-referrer');
  await checkPage(w, shot);
  return res!;
}
async function checkPage(w: WatchedPage, shot: string) {
  expect(seriousOrWorse(await axeViolations(w.page)), `axe on ${shot}`).toEqual([]);
  await screenshot(w.page, `pages-${shot}`);
}
async function signIn(w: WatchedPage, token: string) {
  await visit(w, '/login', 'login');
  await w.page.type('#token', token);
  await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('button[type=submit]')]);
}

beforeAll(async () => {
  receiver = await startWebhookReceiver(deliveries);
  s = await startStack({ env: { ACCESSLOOP_NOTIFY_WEBHOOK_URL: receiver.url, ACCESSLOOP_NOTIFY_WEBHOOK_SECRET: `whsec_${randomBytes(24).toString('base64')}`, ACCESSLOOP_ACTION_LINK_SECRET: LINK_SECRET } });
  tok = Object.fromEntries(Object.entries(s.catalog.tokens).map(([k, v]) => [k, v.token]));
  ids = { ...s.catalog.identities };
  ent = { ...s.catalog.entitlements };
  b = await launchBrowser();
}, 120_000);
afterAll(async () => {
  await b?.close();
  await s?.stop();
  await receiver?.close();
});

describe('pages', () => {
  it('approves from the action link: the page shows the request, the form decides once, the grant reaches LDAP', async () => {
    const req = await request(ent.engineering!, 'on-call for the <b>payments</b> migration');
    expect(req.status).toBe(202);
    const url = await linkFor(req.body.id, ids.bob!);
    const w = await b.newPage({ width: 390, height: 844, mobile: true }); // readable on a phone
    await visit(w, url, 'action-link-mobile');
    const text = await w.page.$eval('main', (m) => m.textContent ?? '');
    expect(text).toContain('Engineering group');
    expect(text).toContain('Alice');
    expect(text).toContain('medium');
    expect(text).toContain('10 minutes');
    expect(text).toContain('on-call for the <b>payments</b> migration'); // escaped, shown as typed
    expect(await w.page.$('main b')).toBeNull();
    await w.page.setViewport({ width: 1280, height: 900 });
    await screenshot(w.page, 'pages-action-link');

    // keyboard only: focus the comment, type, tab to Approve and press Enter
    await w.page.focus('#comment');
    await w.page.keyboard.type('fine for the migration');
    await w.page.keyboard.press('Tab');
    expect(await w.page.evaluate('document.activeElement && document.activeElement.value')).toBe('approve');
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.keyboard.press('Enter')]);
    expect(await w.page.$eval('h1', (h) => h.textContent)).toBe('Approved');
    await checkPage(w, 'action-link-approved');

    const active = await s.waitForStatus(req.body.id, ['active']);
    expect(active.stages[0]).toMatchObject({ approverId: ids.bob, status: 'approved', comment: 'fine for the migration' });
    expect(await s.ldapMembers('engineering')).toContain(s.userDn('alice'));

    // The link was used: opening it again says so, and offers no form.
    const again = await w.page.goto(url, { waitUntil: 'networkidle0' });
    expect(again!.status()).toBe(409);
    expect(await w.page.$eval('main', (m) => m.textContent ?? '')).toContain('already been used');
    expect(await w.page.$('form[action*="/form"]')).toBeNull();
    // A tampered link shows a clear page too.
    const bad = await w.page.goto(`${url}x`, { waitUntil: 'networkidle0' });
    expect(bad!.status()).toBe(401);
    expect(await w.page.$eval('h1', (h) => h.textContent)).toBe('Link not valid');
    // An expired link (minted with the stack's key, already past its expiry) says so.
    const { token: stale } = mintActionLink(Buffer.from(LINK_SECRET, 'utf8'), { rid: req.body.id, st: 1, ap: ids.bob! }, -60);
    const expired = await w.page.goto(`${s.rt.apiUrl}/v1/approvals/actions/${stale}`, { waitUntil: 'networkidle0' });
    expect(expired!.status()).toBe(410);
    expect(await w.page.$eval('main', (m) => m.textContent ?? '')).toContain('This approval link has expired');
    await checkPage(w, 'action-link-expired');
    expect(w.cspViolations).toEqual([]);
    expect(w.problems.filter((p) => !/status of 4(01|09|10)/.test(p))).toEqual([]);
    await w.close();
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.body.id, ['revoked']);
  });

  it('signs in with a token, lists and decides an approval, and signs out', async () => {
    const req = await request(ent['finance-readers']!, 'quarter close');
    await linkFor(req.body.id, ids.bob!); // the stage is open
    const w = await b.newPage();
    await signIn(w, tok.bob!);
    expect(new URL(w.page.url()).pathname).toBe('/approvals');
    const cookies = await w.page.browserContext().cookies();
    const cookie = cookies.find((c) => c.name === 'accessloop_session')!;
    expect(cookie).toMatchObject({ httpOnly: true, sameSite: 'Strict', secure: false }); // http here; Secure under https
    expect(cookie.value).not.toContain(tok.bob!);
    // only a hash of the cookie's secret is stored
    const rows = await s.rt.db.select().from(webSessions).where(isNull(webSessions.endedAt));
    expect(rows).toHaveLength(1);
    expect(rows[0]!.secretHash).toBe(createHash('sha256').update(cookie.value).digest('hex'));
    await checkPage(w, 'approvals');

    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click(`a[href="/approvals/${req.body.id}"]`)]);
    await checkPage(w, 'approval-detail');
    await w.page.type('#comment', 'not this quarter');
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('button[value=reject]')]);
    expect(await w.page.$eval('h1', (h) => h.textContent)).toBe('Rejected');
    const done = await s.waitForStatus(req.body.id, ['rejected']);
    expect(done.stages[0]).toMatchObject({ approverId: ids.bob, status: 'rejected', comment: 'not this quarter' });

    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('nav button[type=submit]')]);
    expect(new URL(w.page.url()).pathname).toBe('/login');
    expect((await w.page.browserContext().cookies()).find((c) => c.name === 'accessloop_session')).toBeUndefined();
    const [ended] = await s.rt.db.select().from(webSessions).where(eq(webSessions.id, rows[0]!.id));
    expect(ended?.endedAt).toBeInstanceOf(Date);
    // the old cookie no longer opens anything
    const replay = await fetch(`${s.rt.apiUrl}/approvals`, { headers: { cookie: `accessloop_session=${cookie.value}` }, redirect: 'manual' });
    expect(replay.status).toBe(303);
    expect(replay.headers.get('location')).toBe('/login');
    expect(w.cspViolations).toEqual([]);
    await w.close();
    const audit = await s.rt.db.select({ action: auditEvents.action }).from(auditEvents).where(inArray(auditEvents.action, ['web_session.started', 'web_session.ended']));
    expect(audit.map((a) => a.action).sort()).toEqual(['web_session.ended', 'web_session.started']);
  });

  it('ends the session when its API token is revoked', async () => {
    const issued = await s.call('POST', '/v1/tokens', tok.operator, { principalId: ids.bob, roles: ['approver'] });
    expect(issued.status).toBe(201);
    const login = await fetch(`${s.rt.apiUrl}/login`, { method: 'POST', body: new URLSearchParams({ token: issued.body.token }), redirect: 'manual' });
    const cookie = login.headers.get('set-cookie')!.split(';')[0]!;
    expect((await fetch(`${s.rt.apiUrl}/approvals`, { headers: { cookie }, redirect: 'manual' })).status).toBe(200);
    expect((await s.call('DELETE', `/v1/tokens/${issued.body.id}`, tok.operator)).status).toBe(200);
    const after = await fetch(`${s.rt.apiUrl}/approvals`, { headers: { cookie }, redirect: 'manual' });
    expect(after.status).toBe(303);
    expect(after.headers.get('location')).toBe('/login');
    // a wrong token is refused on the form, with no cookie set
    const wrong = await fetch(`${s.rt.apiUrl}/login`, { method: 'POST', body: new URLSearchParams({ token: issued.body.token }), redirect: 'manual' });
    expect(wrong.status).toBe(401);
    expect(wrong.headers.get('set-cookie')).toBeNull();
  });

  it('refuses a form without the session’s CSRF token, and one from another site', async () => {
    const req = await request(ent['finance-readers']!, 'csrf check');
    await linkFor(req.body.id, ids.bob!);
    const login = await fetch(`${s.rt.apiUrl}/login`, { method: 'POST', body: new URLSearchParams({ token: tok.bob! }), redirect: 'manual' });
    expect(login.status).toBe(303);
    const setCookie = login.headers.get('set-cookie')!;
    expect(setCookie).toMatch(/HttpOnly/i);
    expect(setCookie).toMatch(/SameSite=Strict/i);
    const cookie = setCookie.split(';')[0]!;
    const page = await (await fetch(`${s.rt.apiUrl}/approvals/${req.body.id}`, { headers: { cookie } })).text();
    const csrf = /name="_csrf" value="([^"]+)"/.exec(page)![1]!;
    const post = (body: Record<string, string>, headers: Record<string, string> = {}) =>
      fetch(`${s.rt.apiUrl}/approvals/${req.body.id}/decision`, { method: 'POST', body: new URLSearchParams(body), headers: { cookie, ...headers }, redirect: 'manual' });

    const noToken = await post({ decision: 'approve' });
    expect(noToken.status).toBe(403);
    expect(noToken.headers.get('x-error-code')).toBe('csrf_token_invalid');
    const wrong = await post({ decision: 'approve', _csrf: csrf.replace(/.$/, (c) => (c === 'A' ? 'B' : 'A')) });
    expect(wrong.headers.get('x-error-code')).toBe('csrf_token_invalid');
    const crossSite = await post({ decision: 'approve', _csrf: csrf }, { 'sec-fetch-site': 'cross-site' });
    expect(crossSite.status).toBe(403);
    expect(crossSite.headers.get('x-error-code')).toBe('cross_site_request');
    const foreignOrigin = await post({ decision: 'approve', _csrf: csrf }, { origin: 'https://evil.example' });
    expect(foreignOrigin.headers.get('x-error-code')).toBe('cross_site_request');
    expect((await s.call('GET', `/v1/access-requests/${req.body.id}`, tok.operator)).body.status).toBe('pending_approval');

    const ok = await post({ decision: 'approve', _csrf: csrf }, { 'sec-fetch-site': 'same-origin' });
    expect(ok.status).toBe(200);
    await s.waitForStatus(req.body.id, ['active']);
    await s.call('POST', `/v1/access-requests/${req.body.id}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(req.body.id, ['revoked']);
  });

  it('lets a reviewer filter, keep several items at once and revoke one, which ldapsearch then shows gone', async () => {
    const granted: Record<string, string> = {};
    for (const [who, key] of [['alice', 'engineering'], ['alice', 'finance-readers'], ['carol', 'engineering'], ['carol', 'finance-readers']] as const) {
      const r = await s.call('POST', '/v1/access-requests', tok[who], { entitlementId: ent[key], durationSeconds: 3600, justification: 'standing access for the review' });
      expect(r.status, JSON.stringify(r.body)).toBe(202);
      await linkFor(r.body.id, ids.bob!);
      expect((await s.call('POST', `/v1/access-requests/${r.body.id}/decision`, tok.bob, { decision: 'approve' })).status).toBe(200);
      granted[`${who}/${key}`] = r.body.id;
    }
    for (const id of Object.values(granted)) await s.waitForStatus(id, ['active']);
    const campaign = await s.call('POST', '/v1/review-campaigns', tok.operator, {
      name: 'Directory review',
      scope: { entitlementIds: [ent.engineering, ent['finance-readers']] },
      dueAt: new Date(Date.now() + 86_400_000).toISOString(),
      reviewers: { rule: 'entitlement_owner', fallbackReviewerId: ids.carol },
    });
    expect(campaign.status, JSON.stringify(campaign.body)).toBe(201);

    const w = await b.newPage();
    await signIn(w, tok.bob!);
    await visit(w, '/reviews', 'reviews');
    const rows = () => w.page.$$eval('form[action="/reviews/keep"] tbody tr', (trs) => trs.length);
    expect(await rows()).toBe(4);
    // filter: low risk only (finance-readers)
    await w.page.select('select[name=risk]', 'low');
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('form.filters button')]);
    expect(new URL(w.page.url()).searchParams.get('risk')).toBe('low');
    expect(await rows()).toBe(2);
    await visit(w, '/reviews', 'reviews-all');

    // bulk keep three
    for (const label of ['Keep Engineering group for alice', 'Keep Engineering group for carol', 'Keep Finance reports (read) for carol']) await w.page.click(`input[aria-label="${label}"]`);
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('form[action="/reviews/keep"] button[type=submit]')]);
    expect(await w.page.$eval('[role=status]', (e) => e.textContent)).toContain('3 items kept');
    expect(await rows()).toBe(1);
    await checkPage(w, 'reviews-kept');

    // revoke the last one, with a comment
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('a[aria-label="Keep or revoke Finance reports (read) for alice"]')]);
    await checkPage(w, 'review-item');
    await w.page.type('#comment', 'no longer in finance work');
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('button[value=revoke]')]);
    expect(new URL(w.page.url()).searchParams.get('status')).toBe('decided');
    const decided = await w.page.$eval('main', (m) => m.textContent ?? '');
    expect(decided).toContain('revoked');
    expect(decided).toContain('no longer in finance work');
    await checkPage(w, 'reviews-decided');
    expect(w.cspViolations).toEqual([]);
    await w.close();

    // The revoke goes through the lease's removal: read back with ldapsearch, the kept ones stay.
    await waitFor(async () => !(await s.ldapMembers('finance-readers')).includes(s.userDn('alice')), 'alice removed from finance-readers', 60_000);
    expect(await s.ldapMembers('finance-readers')).toContain(s.userDn('carol'));
    expect(await s.ldapMembers('engineering')).toEqual(expect.arrayContaining([s.userDn('alice'), s.userDn('carol')]));
    await s.waitForStatus(granted['alice/finance-readers']!, ['revoked']);
    for (const k of ['alice/engineering', 'carol/engineering', 'carol/finance-readers']) {
      await s.call('POST', `/v1/access-requests/${granted[k]}/revoke`, tok.operator, { reason: 'manual' });
      await s.waitForStatus(granted[k]!, ['revoked']);
    }
  });

  it('breaks glass through the page: invoke, confirm, and a countdown of the lease', async () => {
    const g = await s.call('POST', '/v1/groups', tok.operator, { name: 'pages-on-call', memberIds: [ids.alice] });
    expect(g.status, JSON.stringify(g.body)).toBe(201);
    const set = await s.call('PUT', `/v1/entitlements/${ent['prod-admins']}/break-glass`, tok.operator, { allowed: true, invokers: g.body.ref, maxDurationSeconds: 900, cooldownSeconds: 0 });
    expect(set.status, JSON.stringify(set.body)).toBe(200);

    const w = await b.newPage({ width: 390, height: 844, mobile: true });
    await signIn(w, tok.alice!);
    await visit(w, '/break-glass', 'break-glass');
    await w.page.select('#entitlementId', ent['prod-admins']!);
    await w.page.$eval('#durationMinutes', (e) => ((e as unknown as { value: string }).value = '5'));
    await w.page.type('#incidentRef', 'INC-2026');
    await w.page.type('#justification', 'payments database is down, on-call needs admin');
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('form[action="/break-glass"] button[type=submit]')]);
    expect(await w.page.$eval('h1', (h) => h.textContent)).toBe('Confirm break-glass');
    expect(await w.page.$eval('main', (m) => m.textContent ?? '')).toContain('Production administrators');
    await checkPage(w, 'break-glass-confirm');
    await Promise.all([w.page.waitForNavigation({ waitUntil: 'networkidle0' }), w.page.click('form[action$="/confirm"] button[type=submit]')]);
    const requestId = new URL(w.page.url()).pathname.split('/').pop()!;
    // the lease page shows a countdown once the grant is verified
    await waitFor(async () => {
      await w.page.reload({ waitUntil: 'networkidle0' });
      return (await w.page.$('#lease-countdown')) !== null;
    }, 'the lease countdown');
    const first = await w.page.$eval('#lease-countdown', (e) => e.textContent ?? '');
    expect(first).toMatch(/^0[0-4]:\d\d$/); // 5 minutes, counting down
    await w.page.waitForFunction((t) => (globalThis as unknown as { document: { getElementById(id: string): { textContent: string } | null } }).document.getElementById('lease-countdown')?.textContent !== t, {}, first);
    await checkPage(w, 'break-glass-lease');
    expect(w.cspViolations).toEqual([]);
    expect(await s.ldapMembers('prod-admins')).toContain(s.userDn('alice'));
    const req = await s.call('GET', `/v1/access-requests/${requestId}`, tok.operator);
    expect(req.body.ticketRef).toBe('INC-2026');
    await w.close();
    await s.call('POST', `/v1/access-requests/${requestId}/revoke`, tok.operator, { reason: 'manual' });
    await s.waitForStatus(requestId, ['revoked']);
  });

  it('draws the KPI chart from its JSON endpoint under the CSP', async () => {
    const w = await b.newPage();
    await signIn(w, tok.carol!); // an auditor
    await w.page.goto(`${s.rt.apiUrl}/kpis`, { waitUntil: 'networkidle0' });
    await w.page.waitForFunction(`document.getElementById('kpi-chart')?.dataset.rendered === 'true'`);
    await checkPage(w, 'kpis');
    expect(w.cspViolations).toEqual([]);
    expect(w.problems).toEqual([]);
    // the data endpoint needs the session, and the right role
    expect((await fetch(`${s.rt.apiUrl}/kpis/data.json`, { redirect: 'manual' })).status).toBe(303);
    await w.close();
    const alice = await b.newPage();
    await signIn(alice, tok.alice!);
    const denied = await alice.page.goto(`${s.rt.apiUrl}/kpis`);
    expect(denied!.status()).toBe(403);
    await alice.close();
  });

  // Last in the file: once the limit is reached, every sign-in from this address waits.
  it('limits failed sign-ins per address: successes do not count, the limit answers 429 with the page', async () => {
    const post = (token: string) => fetch(`${s.rt.apiUrl}/login`, { method: 'POST', body: new URLSearchParams({ token }), redirect: 'manual' });
    const remaining = (r: Response) => Number(/r=(\d+)/.exec(r.headers.get('ratelimit') ?? '')?.[1]);
    const first = await post('not-a-token');
    expect(first.status).toBe(401);
    const left = remaining(first);
    expect(left).toBeGreaterThanOrEqual(0);
    expect(left).toBeLessThan(LOGIN_FAILURES_ALLOWED);
    // A successful sign-in costs nothing.
    const ok = await post(tok.bob!);
    expect(ok.status).toBe(303);
    const again = await post('still-not-a-token');
    expect(remaining(again)).toBe(Math.max(0, left - 1));
    for (let i = 0; i < left - 1; i++) expect((await post(`wrong-${i}`)).status).toBe(401);
    const limited = await post(tok.bob!);
    expect(limited.status).toBe(429);
    expect(limited.headers.get('set-cookie')).toBeNull();
    expect(await limited.text()).toContain('Too many failed sign-ins from here');
  });
});
