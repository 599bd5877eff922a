import { Router } from 'express';
import { z } from 'zod';
import { campaignDefinition, riskTiers } from '../../activities/domain/reviews/definition.js';
import { principalOf, requireRole } from '../auth.js';
import { requestIdOf } from '../request-context.js';
import type { ReviewService } from '../services/reviews.js';
import { valid, validate } from '../validate.js';

// The zod schemas these routes validate with (api/openapi.ts documents them by reference).
export const reviewIdParam = z.strictObject({ id: z.uuid({ message: 'must be a UUID' }) });
export const campaignListQuery = z.strictObject({ status: z.enum(['open', 'closing', 'closed', 'cancelled']).optional(), limit: z.coerce.number().int().min(1).max(500).default(100) });
export const campaignItemsQuery = z.strictObject({ status: z.enum(['pending', 'kept', 'revoked', 'skipped']).optional(), reviewerId: z.uuid().optional(), limit: z.coerce.number().int().min(1).max(5000).default(1000) });
export const pendingReviewsQuery = z.strictObject({ campaignId: z.uuid().optional(), riskTier: z.enum(riskTiers).optional(), limit: z.coerce.number().int().min(1).max(1000).default(200) });
export const reviewDecisionBody = z.strictObject({ decision: z.enum(['keep', 'revoke']), comment: z.string().trim().min(1).max(2000).optional(), newExpiresAt: z.iso.datetime({ offset: true }).optional() });
export const reviewBulkDecisionBody = z.strictObject({ itemIds: z.array(z.uuid()).min(1).max(500), decision: z.literal('keep'), comment: z.string().trim().min(1).max(2000).optional() });
export const cancelCampaignBody = z.strictObject({ reason: z.string().trim().min(1).max(2000) });
export const reviewDelegateBody = z.strictObject({ toIdentityId: z.uuid(), comment: z.string().trim().min(1).max(2000) });
export { campaignDefinition as createCampaignBody };

const actor = (req: Parameters<typeof principalOf>[0], res: Parameters<typeof requestIdOf>[0]) => ({ principal: principalOf(req), httpRequestId: requestIdOf(res) });

/** /v1/review-campaigns: operators open and follow campaigns; auditors read them and their reports. */
export function reviewCampaignRoutes(reviews: ReviewService): Router {
  const r = Router();
  r.post('/', requireRole('operator'), validate({ body: campaignDefinition }), async (req, res) => {
    const { body } = valid(res, { body: campaignDefinition });
    res.status(201).json(await reviews.create(actor(req, res), body));
  });
  r.get('/', requireRole('operator', 'auditor'), validate({ query: campaignListQuery }), async (_req, res) => {
    const { query } = valid(res, { query: campaignListQuery });
    res.json(await reviews.list(query));
  });
  r.get('/:id', requireRole('operator', 'auditor'), validate({ params: reviewIdParam }), async (_req, res) => {
    const { params } = valid(res, { params: reviewIdParam });
    res.json(await reviews.get(params.id));
  });
  r.post('/:id/cancel', requireRole('operator'), validate({ params: reviewIdParam, body: cancelCampaignBody }), async (req, res) => {
    const { params, body } = valid(res, { params: reviewIdParam, body: cancelCampaignBody });
    res.json(await reviews.cancel(actor(req, res), params.id, body));
  });
  r.get('/:id/items', requireRole('operator', 'auditor'), validate({ params: reviewIdParam, query: campaignItemsQuery }), async (_req, res) => {
    const { params, query } = valid(res, { params: reviewIdParam, query: campaignItemsQuery });
    res.json(await reviews.items(params.id, query));
  });
  r.get('/:id/report.csv', requireRole('operator', 'auditor'), validate({ params: reviewIdParam }), async (_req, res) => {
    const { params } = valid(res, { params: reviewIdParam });
    const csv = await reviews.reportCsv(params.id);
    res.set('Cache-Control', 'no-store').type('text/csv').attachment(`review-${params.id}.csv`).send(csv);
  });
  r.get('/:id/report.json', requireRole('operator', 'auditor'), validate({ params: reviewIdParam }), async (req, res) => {
    const { params } = valid(res, { params: reviewIdParam });
    res.set('Cache-Control', 'no-store').json(await reviews.reportJson(principalOf(req), params.id));
  });
  return r;
}

/** /v1/review-items: the assigned reviewer decides or delegates (the token's identity). */
export function reviewItemRoutes(reviews: ReviewService): Router {
  const r = Router();
  r.post('/decisions', validate({ body: reviewBulkDecisionBody }), async (req, res) => {
    const { body } = valid(res, { body: reviewBulkDecisionBody });
    res.json(await reviews.decideMany(actor(req, res), body));
  });
  r.post('/:id/decision', validate({ params: reviewIdParam, body: reviewDecisionBody }), async (req, res) => {
    const { params, body } = valid(res, { params: reviewIdParam, body: reviewDecisionBody });
    res.json(await reviews.decide(actor(req, res), params.id, body));
  });
  r.post('/:id/delegate', validate({ params: reviewIdParam, body: reviewDelegateBody }), async (req, res) => {
    const { params, body } = valid(res, { params: reviewIdParam, body: reviewDelegateBody });
    res.json(await reviews.delegate(actor(req, res), params.id, body));
  });
  return r;
}

/** /v1/reviews/pending: the caller's own open review tasks. */
export function pendingReviewRoutes(reviews: ReviewService): Router {
  const r = Router();
  r.get('/pending', validate({ query: pendingReviewsQuery }), async (req, res) => {
    const { query } = valid(res, { query: pendingReviewsQuery });
    res.json(await reviews.pending(principalOf(req), query));
  });
  return r;
}
