import express, { Router } from 'express';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import type { Config } from '../../temporal/config.js';
import { principalOf, requireRole } from '../auth.js';
import { HttpError, badRequest, zodDetails } from '../errors.js';
import { hrEventBody } from '../schemas.js';
import type { HrIntakeService } from '../services/hr-intake.js';

/**
 * `POST /v1/hr/events`: joiner/mover/leaver/rehire/update from an HR system. Order of work:
 * bearer token (hr_system) → Standard Webhooks signature over the raw body (several secrets
 * accepted, for rotation; ±5 minutes) → schema → inbox row committed (deduplicated by
 * webhook-id) → signal-with-start of the identity's workflow → 202. Nothing is stored for a
 * request that fails any check before the inbox. The checks up to the schema are HTTP's (the
 * signature covers the raw bytes); the inbox and the hand-over are the intake service's.
 */
export function hrRoutes(deps: { config: Config; intake: HrIntakeService }): Router {
  const { config, intake } = deps;
  const secrets = (config.ACCESSLOOP_HR_WEBHOOK_SECRETS ?? '').split(',').map((s) => s.trim()).filter(Boolean);
  const verifiers = secrets.map((s) => new Webhook(s));
  const r = Router();

  r.post('/events', requireRole('hr_system'), express.text({ type: () => true, limit: config.ACCESSLOOP_BODY_LIMIT }), async (req, res) => {
    if (verifiers.length === 0) throw new HttpError(503, 'hr_not_configured', 'HR webhooks are not configured (ACCESSLOOP_HR_WEBHOOK_SECRETS)');
    const raw = typeof req.body === 'string' ? req.body : '';
    const headers = { 'webhook-id': req.get('webhook-id') ?? '', 'webhook-timestamp': req.get('webhook-timestamp') ?? '', 'webhook-signature': req.get('webhook-signature') ?? '' };
    // The signature covers the exact bytes received; a re-serialised body does not verify.
    const verified = verifiers.some((v) => {
      try {
        v.verify(raw, headers);
        return true;
      } catch (e) {
        if (e instanceof WebhookVerificationError) return false;
        throw e;
      }
    });
    if (!verified) throw new HttpError(401, 'invalid_signature', 'webhook signature, timestamp or id is missing, wrong or outside the ±5 minute window');
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch {
      throw badRequest('malformed_json', 'request body is not valid JSON');
    }
    const parsed = hrEventBody.safeParse(json);
    if (!parsed.success) throw badRequest('invalid_request', 'invalid HR event', zodDetails(parsed.error));
    const source = `client:${principalOf(req).clientName ?? principalOf(req).identityId}`;
    res.status(202).json(await intake.receive({ webhookId: headers['webhook-id'], source, event: parsed.data }));
  });

  return r;
}
