import express, { Router, type Request, type RequestHandler, type Response } from 'express';
import { rateLimit } from 'express-rate-limit';
import { z } from 'zod';
import type { Db } from '../../db/client.js';
import type { Config } from '../../temporal/config.js';
import type { Logger } from '../../temporal/logger.js';
import { hasRole, identityOf } from '../auth.js';
import { HttpError, forbidden } from '../errors.js';
import { requestIdOf } from '../request-context.js';
import { decisionBody, idParam } from '../schemas.js';
import type { AccessRequestService } from '../services/access-requests.js';
import type { createBreakGlassService } from '../services/break-glass.js';
import type { ReviewService } from '../services/reviews.js';
import { assetRoutes } from '../pages/assets.js';
import { asPage, pageErrorHandler } from '../pages/errors.js';
import { approvalView, breakGlassEntitlements, breakGlassUses, decidedReviewItems, pendingApprovals } from '../pages/queries.js';
import { sameOriginOnly } from '../pages/security.js';
import { createWebSessions, requireCsrf, type WebSession } from '../pages/sessions.js';
import {
  approvalPage,
  approvalsPage,
  breakGlassConfirmPage,
  breakGlassLeasePage,
  breakGlassPage,
  decisionDonePage,
  kpisPage,
  loginPage,
  reviewItemPage,
  reviewsPage,
  type Viewer,
} from '../pages/views.js';
import type { Kpis } from './kpis.js';

export interface PageDeps {
  db: Db;
  config: Config;
  log: Logger;
  requests: Pick<AccessRequestService, 'decide'>;
  /** The KPI aggregates over a window (api/routes/kpis.ts computeKpis). */
  kpis: (windowMs: number) => Promise<Kpis>;
  breakGlass: Pick<ReturnType<typeof createBreakGlassService>, 'invoke' | 'confirm'>;
  reviews: Pick<ReviewService, 'pending' | 'decide' | 'decideMany' | 'progress'>;
}

/** Where the pages live; only these prefixes get page headers and HTML errors. */
export const PAGE_PATHS = ['/login', '/logout', '/approvals', '/kpis', '/reviews', '/break-glass'];

// Repeated keys (the bulk form's itemIds checkboxes) arrive as arrays with the simple parser too.
const form = express.urlencoded({ extended: false, limit: '64kb', parameterLimit: 600 });
const loginForm = z.object({ token: z.string().trim().min(1).max(300) });

/** Failed sign-ins per client address and window; a success does not count. */
export const LOGIN_FAILURES_ALLOWED = 10;
const LOGIN_WINDOW_MS = 15 * 60_000;
const DAY_MS = 86_400_000;
const reviewFilters = z.object({
  campaign: z.union([z.literal(''), z.uuid()]).optional().transform((v) => v || undefined),
  risk: z.union([z.literal(''), z.enum(['low', 'medium', 'high', 'privileged'])]).optional().transform((v) => v || undefined),
  status: z.enum(['pending', 'decided']).default('pending'),
});
const bulkKeepForm = z.object({
  itemIds: z.union([z.uuid(), z.array(z.uuid()).min(1).max(500)], { message: 'select at least one item' }).transform((v) => (Array.isArray(v) ? v : [v])),
  comment: z.string().trim().max(2000).optional().transform((v) => v || undefined),
});
const reviewDecisionForm = z.object({
  decision: z.enum(['keep', 'revoke']),
  comment: z.string().trim().max(2000).optional().transform((v) => v || undefined),
});
const invokeForm = z.object({
  entitlementId: z.uuid(),
  durationMinutes: z.coerce.number().int().positive().max(7 * 24 * 60),
  incidentRef: z.string().trim(),
  justification: z.string().trim(),
});
const confirmForm = z.object({ confirmation: z.string().min(16).max(128) });

const viewerOf = (res: Response): Viewer | undefined => {
  const s = res.locals.webSession;
  return s ? { principal: s.principal, csrf: s.csrf } : undefined;
};
function sessionOf(res: Response): WebSession {
  const s = res.locals.webSession;
  if (!s) throw new HttpError(401, 'unauthorized', 'please sign in first');
  return s;
}
/** Pages need a session; a GET without one goes to the sign-in page. */
const signedIn: RequestHandler = (req, res, next) => {
  if (res.locals.webSession) return next();
  if (req.method === 'GET') return res.redirect(303, '/login');
  next(new HttpError(401, 'unauthorized', 'please sign in first'));
};
const role =
  (...roles: Parameters<typeof hasRole>[1][]): RequestHandler =>
  (_req, res, next) =>
    next(hasRole(sessionOf(res).principal, ...roles) ? undefined : forbidden(`this page is for the roles: ${roles.join(', ')}`));

const home = (s: WebSession) => (hasRole(s.principal, 'approver') ? '/approvals' : hasRole(s.principal, 'operator', 'auditor') ? '/kpis' : '/approvals');

/**
 * The server-rendered pages for the people who decide: sign-in with an API token exchanged for
 * a session cookie, the approver's open approvals and the decision form, the KPI chart. Routes
 * only translate HTTP: decisions go through the same service call as the REST route.
 */
export function pageRoutes(deps: PageDeps): Router {
  const { db, config, log } = deps;
  const publicHttps = config.ACCESSLOOP_PUBLIC_URL?.startsWith('https:') ?? false;
  const sessions = createWebSessions({ db, secureCookies: (req: Request) => publicHttps || req.secure });
  const sameOrigin = sameOriginOnly(config.ACCESSLOOP_PUBLIC_URL);
  const r = Router();

  r.use(assetRoutes());
  r.use(PAGE_PATHS, asPage, sessions.load);
  r.get('/', asPage, sessions.load, (_req, res) => {
    const s = res.locals.webSession;
    res.redirect(303, s ? home(s) : '/login');
  });

  r.get('/login', (_req, res) => {
    const s = res.locals.webSession;
    if (s) return res.redirect(303, home(s));
    res.type('html').send(loginPage());
  });
  // Tokens are 256-bit random, so guessing is hopeless anyway; the limit keeps a script from
  // hammering the token table, and says so. In memory, per replica (each replica counts its own).
  const loginLimit = rateLimit({
    windowMs: LOGIN_WINDOW_MS,
    limit: LOGIN_FAILURES_ALLOWED,
    skipSuccessfulRequests: true,
    standardHeaders: 'draft-8',
    legacyHeaders: false,
    handler: (_req, _res, next) => next(new HttpError(429, 'too_many_attempts', 'too many failed sign-ins from here; wait a few minutes and try again')),
  });
  r.post('/login', loginLimit, sameOrigin, form, async (req, res) => {
    const parsed = loginForm.safeParse(req.body ?? {});
    const result = parsed.success ? await sessions.signIn(parsed.data.token, requestIdOf(res)) : null;
    if (!result) return res.status(401).type('html').send(loginPage('That token is not valid, has expired or was revoked.'));
    sessions.setCookie(req, res, result.secret, result.expiresAt);
    res.redirect(303, home(result.session));
  });
  r.post('/logout', sameOrigin, form, signedIn, requireCsrf, async (req, res) => {
    await sessions.signOut(sessionOf(res), requestIdOf(res));
    sessions.clearCookie(req, res);
    res.redirect(303, '/login');
  });

  r.get('/approvals', signedIn, role('approver'), async (_req, res) => {
    const me = identityOf(sessionOf(res).principal);
    res.type('html').send(approvalsPage(viewerOf(res)!, await pendingApprovals(db, me)));
  });
  r.get('/approvals/:id', signedIn, role('approver'), async (req, res) => {
    const { id } = idParam.parse(req.params);
    const view = await approvalView(db, id, identityOf(sessionOf(res).principal));
    if (!view) throw new HttpError(404, 'not_found', 'no approval of yours was found for this request');
    const s = sessionOf(res);
    res.type('html').send(approvalPage(view, { action: `/approvals/${id}/decision`, csrf: s.csrf }, viewerOf(res)));
  });
  r.post('/approvals/:id/decision', sameOrigin, form, signedIn, requireCsrf, role('approver'), async (req, res) => {
    const { id } = idParam.parse(req.params);
    const body = decisionBody.parse({ decision: req.body?.decision, ...(req.body?.comment ? { comment: req.body.comment } : {}) });
    const result = await deps.requests.decide({ requestId: id, approverId: identityOf(sessionOf(res).principal), ...body, httpRequestId: requestIdOf(res) });
    res.type('html').send(decisionDonePage(body.decision, result.status, viewerOf(res)));
  });

  r.get('/kpis', signedIn, role('operator', 'auditor'), async (_req, res) => {
    const k = await deps.kpis(DAY_MS);
    const secs = (ms: number | null) => (ms === null ? '—' : `${(ms / 1000).toFixed(1)} s`);
    const pct = (x: number | null) => (x === null ? '—' : `${Math.round(x * 100)} %`);
    res.type('html').send(
      kpisPage(viewerOf(res)!, {
        label: 'last 24 hours',
        rows: [
          ['Approval wait (p50)', secs(k.approvalLatency.humanWait.p50Ms)],
          ['Callback to access verified (p50)', secs(k.approvalLatency.systemPart.p50Ms)],
          ['Time to revoke per grant (p50)', secs(k.timeToRevoke.perGrant.p50Ms)],
          ['Removals automated', pct(k.removals.automatedShare)],
          ['Removals verified', pct(k.removals.verifiedShare)],
          ['Revocations unverified (open)', String(k.exceptions.revocationsUnverifiedOpen)],
          ['Escalations', String(k.exceptions.escalations)],
          ['Open requests', String(k.openRequests.total)],
        ],
      }),
    );
  });
  // The chart's data: same session, same roles, JSON (fetched by /assets/kpis.js, never inlined).
  r.get('/kpis/data.json', signedIn, role('operator', 'auditor'), async (_req, res) => {
    const k = await deps.kpis(DAY_MS);
    res.json({
      window: k.window,
      series: [
        { label: 'Approval wait', ...k.approvalLatency.humanWait },
        { label: 'Callback → verified', ...k.approvalLatency.systemPart },
        { label: 'Time to revoke', ...k.timeToRevoke.perGrant },
        { label: 'Leaver → all removed', ...k.timeToRevoke.perLeaver },
      ],
    });
  });

  // ---- access reviews: the service's rules (eligibility, self-review, comments), the page's filters.
  async function reviewList(res: Response, filters: z.output<typeof reviewFilters>, outcome?: { decided: number; errors: Array<{ itemId: string; message: string }> }) {
    const p = sessionOf(res).principal;
    const me = identityOf(p);
    const [all, decidedAll] = await Promise.all([deps.reviews.pending(p, { limit: 1000 }), decidedReviewItems(db, me, {})]);
    const ids = new Map<string, string>();
    for (const i of all.items) ids.set(i.campaignId, i.campaignName);
    for (const i of decidedAll) ids.set(i.campaignId, i.campaignName);
    const campaigns = await Promise.all(
      [...ids].map(async ([id, name]) => ({
        id,
        name,
        progress: await deps.reviews.progress(id),
        mine: { total: all.items.filter((i) => i.campaignId === id).length + decidedAll.filter((i) => i.campaignId === id).length, decided: decidedAll.filter((i) => i.campaignId === id).length },
      })),
    );
    const match = (i: { campaignId: string; riskTier: string }) => (!filters.campaign || i.campaignId === filters.campaign) && (!filters.risk || i.riskTier === filters.risk);
    res.type('html').send(
      reviewsPage(viewerOf(res)!, {
        filters: { campaignId: filters.campaign, riskTier: filters.risk, status: filters.status },
        campaigns,
        pending: all.items.filter(match),
        decided: decidedAll.filter(match),
        outcome,
      }),
    );
  }
  r.get('/reviews', signedIn, async (req, res) => {
    await reviewList(res, reviewFilters.parse(req.query));
  });
  r.post('/reviews/keep', sameOrigin, form, signedIn, requireCsrf, async (req, res) => {
    const parsed = bulkKeepForm.safeParse(req.body ?? {});
    if (!parsed.success) throw new HttpError(400, 'invalid_request', 'select at least one item to keep');
    const out = await deps.reviews.decideMany({ principal: sessionOf(res).principal, httpRequestId: requestIdOf(res) }, { itemIds: parsed.data.itemIds, decision: 'keep', comment: parsed.data.comment });
    await reviewList(res, reviewFilters.parse({}), {
      decided: out.decided,
      errors: out.results.flatMap((x) => (x.error ? [{ itemId: x.itemId, message: x.error.message }] : [])),
    });
  });
  r.get('/reviews/items/:id', signedIn, async (req, res) => {
    const { id } = idParam.parse(req.params);
    const item = (await deps.reviews.pending(sessionOf(res).principal, { limit: 1000 })).items.find((i) => i.itemId === id);
    if (!item) throw new HttpError(404, 'not_found', 'no open review item of yours was found');
    res.type('html').send(reviewItemPage(viewerOf(res)!, item));
  });
  r.post('/reviews/items/:id/decision', sameOrigin, form, signedIn, requireCsrf, async (req, res) => {
    const { id } = idParam.parse(req.params);
    const body = reviewDecisionForm.parse(req.body ?? {});
    await deps.reviews.decide({ principal: sessionOf(res).principal, httpRequestId: requestIdOf(res) }, id, body);
    res.redirect(303, `/reviews?status=decided`);
  });

  // ---- break-glass: invoke → confirm (the service's two steps), then the lease with its countdown.
  async function breakGlassHome(res: Response, error?: string) {
    const me = identityOf(sessionOf(res).principal);
    const [entitlements, uses] = await Promise.all([breakGlassEntitlements(db), breakGlassUses(db, me)]);
    res.type('html').send(breakGlassPage(viewerOf(res)!, { entitlements, uses, error }));
  }
  r.get('/break-glass', signedIn, role('requester'), async (_req, res) => {
    await breakGlassHome(res);
  });
  r.post('/break-glass', sameOrigin, form, signedIn, requireCsrf, role('requester'), async (req, res) => {
    const f = invokeForm.parse(req.body ?? {});
    try {
      const out = await deps.breakGlass.invoke({ principal: sessionOf(res).principal, httpRequestId: requestIdOf(res) }, { entitlementId: f.entitlementId, durationSeconds: f.durationMinutes * 60, incidentRef: f.incidentRef, justification: f.justification });
      res.type('html').send(breakGlassConfirmPage(viewerOf(res)!, out));
    } catch (e) {
      // A refusal (not an invoker, over the cap, cooldown, overdue review) is shown on the form.
      if (!(e instanceof HttpError) || e.status >= 500) throw e;
      res.status(e.status);
      await breakGlassHome(res, `${e.message.charAt(0).toUpperCase()}${e.message.slice(1)}.`);
    }
  });
  r.post('/break-glass/:id/confirm', sameOrigin, form, signedIn, requireCsrf, role('requester'), async (req, res) => {
    const { id } = idParam.parse(req.params);
    const { confirmation } = confirmForm.parse(req.body ?? {});
    const out = await deps.breakGlass.confirm({ principal: sessionOf(res).principal, httpRequestId: requestIdOf(res) }, id, { confirmation });
    res.redirect(303, `/break-glass/requests/${out.id}`);
  });
  r.get('/break-glass/requests/:id', signedIn, role('requester'), async (req, res) => {
    const { id } = idParam.parse(req.params);
    const [use] = await breakGlassUses(db, identityOf(sessionOf(res).principal), id);
    if (!use) throw new HttpError(404, 'not_found', 'no break-glass use of yours was found');
    res.type('html').send(breakGlassLeasePage(viewerOf(res)!, use));
  });

  r.use(PAGE_PATHS, (req, _res, next) => next(new HttpError(404, 'not_found', `there is no page at ${req.baseUrl}${req.path}`)));
  r.use(pageErrorHandler(log));
  return r;
}
