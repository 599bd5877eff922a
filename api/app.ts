import { createHash, timingSafeEqual } from 'node:crypto';
import type { Client } from '@temporalio/client';
import express, { type Express } from 'express';
import type { CredentialVault } from '../activities/domain/vault.js';
import type { Metrics } from '../activities/domain/metrics.js';
import type { PolicyService } from '../activities/domain/policy/service.js';
import type { Db } from '../db/client.js';
import type { Config } from '../temporal/config.js';
import { ensureReconcileSchedule } from '../temporal/schedules.js';
import { checkReadiness, servicePings } from '../temporal/readiness.js';
import { UNIT_MS } from './schemas.js';
import type { Logger } from '../temporal/logger.js';
import { authenticate } from './auth.js';
import { requestContext } from './request-context.js';
import { errorHandler, notFoundHandler, unauthorized } from './errors.js';
import { openApiDocument } from './openapi.js';
import { docsRoutes } from './routes/docs.js';
import { accessRequestRoutes } from './routes/access-requests.js';
import { actionLinkRoutes } from './routes/action-links.js';
import { evidenceRoutes } from './routes/evidence.js';
import { codecRoutes } from './routes/codec.js';
import { approvalRoutes, catalogRoutes, identityRoutes, tokenRoutes } from './routes/operator.js';
import { hrRoutes } from './routes/hr.js';
import { computeKpis, kpiRoutes, registerKpiGauges, type Kpis } from './routes/kpis.js';
import { reconciliationRoutes } from './routes/reconciliation.js';
import { delegationRoutes, groupRoutes, policyRoutes } from './routes/policies.js';
import { serviceDeskRoutes } from './routes/service-desks.js';
import { pageRoutes } from './routes/pages.js';
import { breakGlassRoutes, breakGlassSettingsRoutes } from './routes/break-glass.js';
import { createBreakGlassService } from './services/break-glass.js';
import { createAccessRequestService } from './services/access-requests.js';
import type { RequestWatch } from './services/request-watch.js';
import { createAdminService } from './services/admin.js';
import { createHrIntakeService } from './services/hr-intake.js';
import { createReconciliationService } from './services/reconciliation.js';
import { createServiceDeskService } from './services/service-desks.js';
import { createReviewService } from './services/reviews.js';
import { pendingReviewRoutes, reviewCampaignRoutes, reviewItemRoutes } from './routes/reviews.js';

export interface AppDeps {
  db: Db;
  temporal: Client;
  config: Config;
  log: Logger;
  metrics: Metrics;
  policies: PolicyService;
  /** Verifies approval action links (minted by the notifier). */
  actionLinkSecret: Buffer;
  /** Opens issued credentials for their one-time delivery. */
  vault: CredentialVault;
  /** The KPI snapshot behind the /metrics gauges (default: the aggregates over the last day). */
  kpiSnapshot?: () => Promise<Kpis>;
  /** Whether this process's worker is polling its task queue; absent when the process runs no worker. */
  workerReady?: () => boolean;
  /** Wakes long polls when a request changes (one LISTEN connection); without it they answer at once. */
  requestWatch?: RequestWatch;
}

/**
 * The /metrics guard when ACCESSLOOP_METRICS_TOKEN is set. Both sides are hashed first, so the
 * comparison is constant-time and equal-length whatever the caller sends.
 */
function metricsGuard(token: string | undefined): express.RequestHandler {
  if (!token) return (_req, _res, next) => next();
  const want = createHash('sha256').update(token).digest();
  return (req, _res, next) => {
    const m = /^Bearer (.+)$/.exec(req.get('authorization') ?? '');
    const got = createHash('sha256').update(m?.[1] ?? '').digest();
    next(m && timingSafeEqual(got, want) ? undefined : unauthorized());
  };
}

/**
 * Builds the HTTP app without listening (server.ts listens; tests use an ephemeral port). The
 * one place the services are made from the deps and handed to the routers that call them.
 */
export function createApp(deps: AppDeps): Express {
  const { db, temporal, config, log, metrics, policies, actionLinkSecret, vault } = deps;
  const requests = createAccessRequestService({ db, temporal, config, policies, watch: deps.requestWatch });
  const hrIntake = createHrIntakeService({ db, temporal, config });
  const reconciliation = createReconciliationService({ db, temporal, config });
  // Every registered system gets its reconciliation schedule.
  const admin = createAdminService({ db, policies, onSystemCreated: (id) => ensureReconcileSchedule(temporal, config, id), onPolicyImpact: (...impact) => reviews.openPolicyChangeReviews(...impact) });
  const serviceDesks = createServiceDeskService({ db, temporal, config });
  const reviews = createReviewService({ db, temporal, config, log });
  const breakGlass = createBreakGlassService({ db, submit: requests.submit });
  const app = express();
  app.disable('x-powered-by');
  app.set('trust proxy', false);

  app.use(requestContext(log));
  app.use((req, res, next) => {
    const end = metrics.httpDuration.startTimer({ method: req.method });
    res.on('finish', () => {
      // the route pattern, never the concrete path: ids must not become label values
      const route = req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched';
      metrics.httpRequests.inc({ route, status: String(res.statusCode) });
      end({ route, status: String(res.statusCode) });
    });
    next();
  });

  app.get('/healthz', (_req, res) => {
    res.json({ status: 'ok' });
  });
  // The same check as the worker-only process's health listener (temporal/readiness.ts).
  const readinessSources = { ...servicePings(db, temporal), ...(deps.workerReady ? { workerReady: deps.workerReady } : {}) };
  app.get('/readyz', async (_req, res) => {
    const r = await checkReadiness(readinessSources);
    res.status(r.status === 'ready' ? 200 : 503).json(r);
  });
  registerKpiGauges(metrics.registry, {
    compute: deps.kpiSnapshot ?? (() => computeKpis(db, UNIT_MS.d)),
    maxAgeMs: config.ACCESSLOOP_METRICS_REFRESH_SECONDS * 1000,
    log,
  });
  app.get('/metrics', metricsGuard(config.ACCESSLOOP_METRICS_TOKEN), async (_req, res) => {
    res.type(metrics.registry.contentType).send(await metrics.registry.metrics());
  });
  app.get('/openapi.json', (_req, res) => {
    res.json(openApiDocument());
  });
  app.use('/docs', docsRoutes());

  // The Temporal UI/CLI codec endpoint: its own CORS, auth rule and body limit (api/routes/codec.ts),
  // and the very codec the client seals with.
  app.use('/codec', codecRoutes({ db, config, codecs: temporal.options.loadedDataConverter.payloadCodecs }));

  const v1 = express.Router();
  // Action links carry their own credential (a signed, single-use token), so they precede bearer auth.
  v1.use('/approvals/actions', express.json({ limit: '4kb', strict: true }), actionLinkRoutes({ db, secret: actionLinkSecret, requests, log, publicUrl: config.ACCESSLOOP_PUBLIC_URL }));
  // The evidence signing key is public: anyone may fetch it to compare fingerprints.
  const evidence = evidenceRoutes({ db, config });
  v1.get('/evidence/public-key', evidence.publicKey);
  // Authenticate before parsing: anonymous callers never get their bodies parsed.
  v1.use(authenticate(db));
  // Policies arrive as YAML/JSON text (line-precise errors need the original), so before JSON parsing.
  v1.use('/policies', policyRoutes(db, policies, admin, config.ACCESSLOOP_BODY_LIMIT));
  // HR events are verified over the raw bytes (Standard Webhooks), so also before JSON parsing.
  v1.use('/hr', hrRoutes({ config, intake: hrIntake }));
  // An import carries up to a thousand items: its own, larger limit (operators only, after authentication).
  v1.use('/access-requests/import', express.json({ limit: '1mb', strict: true }));
  v1.use(express.json({ limit: config.ACCESSLOOP_BODY_LIMIT, strict: true }));
  v1.use('/access-requests', accessRequestRoutes({ db, requests, vault, watch: deps.requestWatch }));
  v1.use('/groups', groupRoutes(admin));
  v1.use('/delegations', delegationRoutes(admin));
  v1.use('/metrics', kpiRoutes(db));
  v1.use('/reconciliation', reconciliationRoutes({ db, reconciliation }));
  v1.use('/evidence', evidence.router);
  v1.use('/approvals', approvalRoutes(db));
  v1.use('/identities', identityRoutes(db, admin));
  const catalog = catalogRoutes(db, admin);
  v1.use('/systems', catalog.systems);
  v1.use('/entitlements', catalog.entitlements);
  v1.use('/entitlements', breakGlassSettingsRoutes(breakGlass));
  v1.use('/break-glass', breakGlassRoutes(breakGlass));
  v1.use('/tokens', tokenRoutes(admin));
  v1.use('/service-desks', serviceDeskRoutes(serviceDesks));
  v1.use('/review-campaigns', reviewCampaignRoutes(reviews));
  v1.use('/review-items', reviewItemRoutes(reviews));
  v1.use('/reviews', pendingReviewRoutes(reviews));
  app.use('/v1', v1);
  // Server-rendered pages (api/routes/pages.ts): their own session cookie, CSP and HTML errors.
  app.use(pageRoutes({ db, config, log, requests, kpis: (ms) => computeKpis(db, ms), breakGlass, reviews }));

  app.use(notFoundHandler);
  app.use(errorHandler(log));
  return app;
}
