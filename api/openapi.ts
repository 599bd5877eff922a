import { OpenAPIRegistry, OpenApiGeneratorV31, type ResponseConfig, type RouteConfig } from '@asteasolutions/zod-to-openapi';
import { z, type ZodObject, type ZodPipe, type ZodType } from 'zod';
import * as s from './schemas.js';
import * as rv from './routes/reviews.js';
import * as breakGlass from '../activities/domain/break-glass.js';

/**
 * The OpenAPI 3.1 document, generated from a registry in which every route is registered with
 * the very zod schemas its `validate()` middleware uses (api/schemas.ts). test/unit/openapi.test.ts
 * compares this registry with the routes of the real app, both ways, schema by schema.
 */
export const openApiRegistry = new OpenAPIRegistry();

openApiRegistry.registerComponent('securitySchemes', 'bearer', { type: 'http', scheme: 'bearer', description: 'An API token (POST /v1/tokens); its roles decide what it may do.' });

type Method = 'get' | 'post' | 'put' | 'patch' | 'delete';
type Params = ZodObject | ZodPipe;

interface Operation {
  summary: string;
  /** Who may call it, as the route enforces it (roles plus ownership rules). Omitted: no token needed. */
  roles?: string;
  /** Replaces the roles sentence for operations with their own credential or rules. */
  description?: string;
  params?: Params;
  query?: Params;
  headers?: ZodObject;
  /** A JSON body; `content` is for the routes that read text. */
  body?: ZodType;
  content?: Record<string, ZodType>;
  /** The success answers, by status. */
  ok: Record<number, ResponseConfig>;
  /** Failures beyond the common ones (400, 401, 403, 404, 409, 413), e.g. 410 or 503. */
  errors?: Record<number, string>;
  /** The bearer token is optional: the link is the credential, or the codec's auth mode decides. */
  optionalAuth?: true;
}

const COMMON_ERRORS: Record<number, string> = {
  400: 'invalid input (details name each field)',
  401: 'missing or invalid token',
  403: 'not allowed for this caller',
  404: 'not found (or not visible to this caller)',
  409: 'wrong state',
  413: 'body too large',
};

const json = (schema: ZodType, description: string): ResponseConfig => ({ description, content: { 'application/json': { schema } } });
const described = (description: string): ResponseConfig => ({ description });
const failures = (errors: Record<number, string>) =>
  Object.fromEntries(Object.entries(errors).map(([status, description]) => [status, json(s.errorBody, description)]));

/** Groups operations in the docs by the API area their path starts with (access-requests, identities, …). */
function areaOf(path: string): string {
  const [first, second] = path.split('/').slice(1);
  if (first === 'v1') return second!;
  return first === 'codec' ? 'codec' : 'service';
}

/**
 * Adds one operation. A JSON body is required exactly when `{}` fails its schema, because
 * `validate()` parses a missing body as `{}`.
 */
function route(method: Method, path: string, op: Operation): void {
  const bearer = op.roles !== undefined || op.optionalAuth;
  const content = op.content ?? (op.body ? { 'application/json': op.body } : undefined);
  const config: RouteConfig = {
    method,
    path,
    tags: [areaOf(path)],
    summary: op.summary,
    ...(op.description || op.roles ? { description: op.description ?? `Roles: ${op.roles}. The acting identity is the token's.` } : {}),
    ...(bearer ? { security: op.optionalAuth ? [{ bearer: [] }, {}] : [{ bearer: [] }] } : {}),
    request: {
      ...(op.params ? { params: op.params } : {}),
      ...(op.query ? { query: op.query } : {}),
      ...(op.headers ? { headers: op.headers } : {}),
      ...(content
        ? {
            body: {
              required: op.content !== undefined || !op.body!.safeParse({}).success,
              content: Object.fromEntries(Object.entries(content).map(([type, schema]) => [type, { schema }])),
            },
          }
        : {}),
    },
    responses: { ...op.ok, ...(bearer ? failures({ ...COMMON_ERRORS, ...op.errors }) : failures(op.errors ?? {})) },
  };
  openApiRegistry.registerPath(config);
}

// Access requests: the lifecycle of one lease.
route('post', '/v1/access-requests', { summary: 'Request access (202, a workflow starts)', roles: 'requester', body: s.createAccessRequestBody, ok: { 202: described('accepted: {id, status, workflowId}; Location names the request') } });
route('post', '/v1/access-requests/import', {
  summary: 'Bring existing access under leases (migrations): approvals skipped, granted idempotently and read back, each item answered on its own (docs/import.md)',
  roles: 'operator',
  body: s.importLeasesBody,
  ok: { 200: described('{imported, results: [{index, status: imported, id, workflowId} | {index, status: error, error: {code, message}}]}') },
});
route('get', '/v1/access-requests', {
  summary: 'List requests (newest first; ?status, subjectId, entitlementId, limit, before=nextCursor)',
  roles: 'operator/auditor: all; others: their own and those assigned to them',
  query: s.listRequestsQuery,
  ok: { 200: described('{items, nextCursor}') },
});
route('get', '/v1/access-requests/{id}', { summary: 'Request status, stages, grant and timeline; with waitFor, a long poll until the status is reached', roles: 'requester (own), assigned approver, operator, auditor', params: s.idParam, query: s.requestReadQuery, ok: { 200: described('the request') } });
route('post', '/v1/access-requests/{id}/decision', { summary: 'Approve or reject', roles: 'approver (assigned, never the requester)', params: s.idParam, body: s.decisionBody, ok: { 200: described('{id, status}') } });
route('post', '/v1/access-requests/{id}/extend', {
  summary: 'Extend an active lease within policy',
  roles: 'requester (own), operator',
  params: s.idParam,
  body: s.extendBody,
  ok: { 200: described('extended: {id, status: active, expiresAt}'), 202: described('policy sends the extension for approval: {id, status: extension_pending_approval}') },
});
route('post', '/v1/access-requests/{id}/revoke', { summary: 'Revoke now (202); removal is verified on the target', roles: 'operator, or the subject for their own access', params: s.idParam, body: s.revokeBody, ok: { 202: described('{id, status: revoke_requested}') } });
route('get', '/v1/access-requests/{id}/credential', {
  summary: "The lease's password or SSH certificate, once (the read wipes it; then 410)",
  roles: "the credential's owner only (404 for anyone else)",
  params: s.idParam,
  ok: { 200: described('the credential (Cache-Control: no-store)') },
  errors: { 410: 'delivered already, or the credential ended' },
});
route('post', '/v1/access-requests/{id}/credential/rotate', { summary: "New secret for the lease's credential; the old one stops working", roles: 'the owner, operator', params: s.idParam, ok: { 200: described('{id, credential}') } });

// Approvals: the approver's inbox, delegation and the action-link buttons.
route('get', '/v1/approvals/pending', { summary: "The caller's open approval tasks", roles: 'approver', ok: { 200: described('{items}') } });
route('post', '/v1/approvals/actions/{token}', {
  summary: 'Approve or reject through a signed, single-use action link (chat/e-mail buttons)',
  description: 'The link is the credential; a bearer token, when sent too, must be the same approver’s. 401 tampered, 410 expired, 409 used or wrong stage, 403 another approver.',
  optionalAuth: true,
  params: s.actionLinkParams,
  body: s.decisionBody,
  ok: { 200: described('decided: {id, status}') },
  errors: { 401: 'the link is not valid (tampered or malformed)', 409: 'the link was used already, or its stage is closed', 410: 'link expired' },
});
route('post', '/v1/delegations', { summary: 'Delegate approval tasks for a period', roles: 'approver (own), operator', body: s.createDelegationBody, ok: { 201: described('the delegation') } });
route('delete', '/v1/delegations/{id}', { summary: 'End a delegation now', roles: 'approver (own), operator', params: s.idParam, ok: { 204: described('ended') } });
route('post', '/v1/groups', { summary: 'Create an approver group', roles: 'operator', body: s.createGroupBody, ok: { 201: described('the group, with its ref (group:<id>)') } });
route('put', '/v1/groups/{id}/members', { summary: 'Replace a group’s members', roles: 'operator', params: s.idParam, body: s.setMembersBody, ok: { 200: described('{id, ref, memberIds}') } });

// Identities, the catalog and tokens: operator set-up.
route('post', '/v1/identities', { summary: 'Create an identity', roles: 'operator', body: s.createIdentityBody, ok: { 201: described('the identity') } });
route('get', '/v1/identities/{id}', { summary: 'Read an identity', roles: 'operator', params: s.idParam, ok: { 200: described('the identity') } });
route('get', '/v1/identities/{id}/access', { summary: 'Active grants with provenance', roles: 'operator, auditor, the identity itself', params: s.idParam, ok: { 200: described('{identityId, grants}') } });
route('put', '/v1/identities/{id}/ssh-public-key', { summary: 'Register the public key SSH certificates are issued for', roles: 'the identity, its owner, operator', params: s.idParam, body: s.sshPublicKeyBody, ok: { 200: described('{identityId, fingerprint}') } });
route('post', '/v1/systems', { summary: 'Register a target system (non-secret config + secret env refs)', roles: 'operator', body: s.createSystemBody, ok: { 201: described('the system') } });
route('post', '/v1/entitlements', { summary: 'Add a catalog item', roles: 'operator', body: s.createEntitlementBody, ok: { 201: described('the entitlement') } });
route('get', '/v1/entitlements', { summary: 'List the catalog', roles: 'any role but hr_system', ok: { 200: described('{items}') } });
route('post', '/v1/tokens', {
  summary: 'Issue an API token (shown once, stored hashed; optional expiresInSeconds or expiresAt)',
  roles: 'operator',
  body: s.createTokenBody,
  ok: { 201: described('{id, token, principalId, roles, expiresAt}') },
});
route('get', '/v1/tokens', { summary: 'List API tokens (never the token or its hash)', roles: 'operator', ok: { 200: described('{items: [{id, principalId, roles, description, createdBy, createdAt, expiresAt, revokedAt}]}') } });
route('delete', '/v1/tokens/{id}', {
  summary: 'Revoke a token now (audited; it answers 401 from the next request)',
  roles: 'operator',
  params: s.idParam,
  ok: { 200: described('the revoked token: {id, principalId, roles, …, revokedAt}; revoking it again changes nothing') },
  errors: { 409: 'the last live operator token (issue another first)' },
});

// Service desks: tickets that start requests and receive the lifecycle's story (issue 12).
const deskView = '{id, name, kind, config, secretRefs (names only), ownerId, cursor, workflowId, health {reachedAt, failingSince, lastErrorType, alertedAt}, backlog {pendingWriteBacks, oldestPendingAt}, links {linked, refused, closed}}';
route('post', '/v1/service-desks', {
  summary: 'Register a service desk (config + ACCESSLOOP_SECRET_* references) and start its loop',
  roles: 'operator',
  body: s.createServiceDeskBody,
  ok: { 201: described(`the desk: ${deskView}; Location names it`) },
  errors: { 409: 'a desk with this name exists', 503: 'registered, but its loop could not be started (details.id; check-tickets starts it)' },
});
route('get', '/v1/service-desks', { summary: 'List service desks with their health, write-back backlog and ticket links', roles: 'operator, auditor', ok: { 200: described(`{items: [${deskView}]}`) } });
route('get', '/v1/service-desks/{id}', { summary: 'A service desk, its health, write-back backlog and ticket links', roles: 'operator, auditor', params: s.idParam, ok: { 200: described(`the desk: ${deskView}`) } });
route('patch', '/v1/service-desks/{id}', {
  summary: 'Replace a desk’s config and/or secret references (validated as at registration; audited)',
  roles: 'operator',
  params: s.idParam,
  body: s.updateServiceDeskBody,
  ok: { 200: described('the desk') },
});
route('post', '/v1/service-desks/{id}/check-tickets', {
  summary: 'Check every live ticket-linked lease against its ticket now (starts the desk loop if it is not running)',
  roles: 'operator',
  params: s.idParam,
  ok: { 202: described('{id, workflowId}') },
  errors: { 503: 'the desk loop could not be reached' },
});

// Break-glass (docs/break-glass.md): two steps, approvals skipped, the lease as usual.
route('put', '/v1/entitlements/{id}/break-glass', {
  summary: 'Allow (with invokers, hard cap, cooldown, post-use review, reviewer, notify group) or forbid break-glass on an entitlement (audited)',
  roles: 'operator',
  params: s.idParam,
  body: breakGlass.putBreakGlassBody,
  ok: { 200: described('{entitlementId, allowed, settings}') },
});
route('post', '/v1/break-glass', {
  summary: 'Break glass, step one: what it will do and a single-use confirmation valid for 5 minutes (shown once)',
  roles: 'requester, member of the entitlement’s invoker group',
  body: breakGlass.invokeBreakGlassBody,
  ok: { 201: described('{id, confirmation, expiresAt, willDo}') },
  errors: { 409: 'post_use_review_overdue: an earlier use’s post-use review is overdue; duplicate_request', 422: 'over_break_glass_cap', 429: 'break_glass_cooldown (details.retryAfterSeconds)' },
});
route('post', '/v1/break-glass/{id}/confirm', {
  summary: 'Break glass, step two: grants at once (a request with source break_glass; approvals skipped, the lease expires and is read back as usual)',
  roles: 'the invoker who received the confirmation',
  params: s.idParam,
  body: breakGlass.confirmBreakGlassBody,
  ok: { 202: described('{id, status, workflowId, breakGlass: true, challengeId}; Location names the request') },
  errors: { 409: 'confirmation_used, post_use_review_overdue', 410: 'confirmation_expired', 422: 'over_break_glass_cap', 429: 'break_glass_cooldown' },
});

// Policies.
route('put', '/v1/policies', {
  summary: 'Publish an approval policy (YAML or JSON body; 400 lists line:column problems)',
  roles: 'operator',
  content: { 'application/yaml': s.policyDocument, 'application/json': s.policyDocument },
  ok: { 201: described('a new version: {version, changed: true, impact: {checked, noLongerAllowed, grants: [{grantId, requestId, identityId, entitlementId, kind: denied|over_maximum, reason, rule?}]}} — the live leases the new version would not grant today'), 200: described('the same as the active version: {version, changed: false}') },
});
route('get', '/v1/policies/active', { summary: 'The active policy document and version', roles: 'operator, auditor', ok: { 200: described('{version, source, createdBy, createdAt, document}') } });
route('get', '/v1/policies/{entitlementId}/explain', {
  summary: 'Dry run: the stages, approvers and rules a request would get',
  roles: 'operator, auditor; the subject; their manager, sponsor or owner (requester); approvers with an open task on the subject\'s requests; others 404',
  params: s.explainParams,
  query: s.explainQuery,
  ok: { 200: described('{policyVersion, policy, effect, reason?, maxDurationSeconds, rules, stages}') },
});

// Joiners, movers and leavers; measures; reconciliation; evidence.
route('post', '/v1/hr/events', {
  summary: 'Joiner / mover / leaver / rehire / update from an HR system (Standard Webhooks signature)',
  roles: 'hr_system',
  headers: z.object({ 'webhook-id': z.string(), 'webhook-timestamp': z.string(), 'webhook-signature': z.string() }),
  body: s.hrEventBody,
  ok: { 202: described('{eventId, identityId, workflowId, duplicate}') },
  errors: { 401: 'missing or invalid token, or a signature that does not verify over the raw body', 503: 'HR webhooks are not configured' },
});
route('get', '/v1/metrics/kpis', { summary: 'Governance measures over a window', roles: 'operator, auditor', query: s.kpiQuery, ok: { 200: described('the measures') } });
route('post', '/v1/reconciliation/run', { summary: 'Reconcile a system now (202, a workflow starts)', roles: 'operator', body: s.reconcileRunBody, ok: { 202: described('{workflowId}') } });
route('get', '/v1/reconciliation/findings', { summary: 'Reconciliation findings (?systemId, status, kind, limit)', roles: 'operator, auditor', query: s.findingsQuery, ok: { 200: described('{items}') } });
route('get', '/v1/evidence/{requestId}', {
  summary: 'Evidence bundle: request, policy, approvals, lease, removal, credential facts and audit events, re-verified against the chain and signed (Ed25519)',
  roles: 'auditor, operator (404 for anyone else)',
  params: s.evidenceParams,
  ok: { 200: json(s.evidenceBundleSchema, 'the signed bundle; verification.valid is false (problems name the seq) when a stored event no longer matches its hash') },
});
route('get', '/v1/evidence/checkpoints', { summary: "The audit log's latest signed checkpoints (Merkle roots over every stream's head; docs/audit.md), newest first", roles: 'auditor, operator', query: s.checkpointsQuery, ok: { 200: described('{items: [{format, id, createdAt, treeSize, rootHash, signature, signer}]}') } });
route('post', '/v1/evidence/checkpoints', { summary: 'Write a signed checkpoint now (the schedule does it every ACCESSLOOP_CHECKPOINT_INTERVAL_SECONDS)', roles: 'operator', ok: { 201: described('the new checkpoint'), 200: described('nothing moved since the latest: that one') } });
route('get', '/v1/evidence/public-key', { summary: 'The Ed25519 key that signs evidence bundles, with its fingerprint (no token needed)', ok: { 200: described('{algorithm, publicKey (PEM), fingerprint}') } });

// Access reviews (docs/reviews.md).
route('post', '/v1/review-campaigns', { summary: 'Open a review campaign: items for every live grant in scope, reviewers resolved, workflow started', roles: 'operator', body: rv.createCampaignBody, ok: { 201: described('the campaign with its progress counts') }, errors: { 422: 'empty_scope (nothing written) or no_eligible_reviewer' } });
route('get', '/v1/review-campaigns', { summary: 'Review campaigns (?status, limit)', roles: 'operator, auditor', query: rv.campaignListQuery, ok: { 200: described('{items}') } });
route('get', '/v1/review-campaigns/{id}', { summary: 'A campaign with its progress counts', roles: 'operator, auditor', params: rv.reviewIdParam, ok: { 200: described('the campaign and progress') } });
route('post', '/v1/review-campaigns/{id}/cancel', { summary: 'End a campaign without deciding what is left: pending items skipped, decided revokes still verified (not a break-glass post-use review)', roles: 'operator', params: rv.reviewIdParam, body: rv.cancelCampaignBody, ok: { 200: described('the campaign, status cancelled, with skippedItems') } });
route('get', '/v1/review-campaigns/{id}/items', { summary: "A campaign's items (?status, reviewerId, limit)", roles: 'operator, auditor', params: rv.reviewIdParam, query: rv.campaignItemsQuery, ok: { 200: described('{items}') } });
route('get', '/v1/review-campaigns/{id}/report.csv', { summary: 'The campaign report as CSV', roles: 'operator, auditor', params: rv.reviewIdParam, ok: { 200: described('text/csv, one row per item') } });
route('get', '/v1/review-campaigns/{id}/report.json', { summary: 'The campaign report as signed JSON (evidence key; `accessloop evidence verify` checks it)', roles: 'operator, auditor', params: rv.reviewIdParam, ok: { 200: described('the signed report') } });
route('post', '/v1/review-items/decisions', { summary: 'Keep many items at once (each answered on its own)', roles: 'the assigned reviewer (token identity)', body: rv.reviewBulkDecisionBody, ok: { 200: described('{decided, results}') } });
route('post', '/v1/review-items/{id}/decision', { summary: 'Keep or revoke one item (revoke, and any privileged item, need a comment)', roles: 'the assigned reviewer (token identity)', params: rv.reviewIdParam, body: rv.reviewDecisionBody, ok: { 200: described('the decided item') } });
route('post', '/v1/review-items/{id}/delegate', { summary: 'Hand one item to another reviewer (never to its holder)', roles: 'the assigned reviewer, or an operator', params: rv.reviewIdParam, body: rv.reviewDelegateBody, ok: { 200: described('the item') } });
route('get', '/v1/reviews/pending', { summary: "The caller's open review items (?campaignId, riskTier, limit)", roles: 'any identity token', query: rv.pendingReviewsQuery, ok: { 200: described('{items}') } });

// The Temporal UI/CLI codec endpoint (Temporal's remote codec protocol).
const codecAuth = 'ACCESSLOOP_CODEC_AUTH decides whether a token is needed (auto: none only with the embedded dev server on loopback).';
route('post', '/codec/decode', { summary: 'Decode workflow payloads for the Temporal UI/CLI', description: `Roles when a token is needed: operator, auditor. ${codecAuth}`, optionalAuth: true, body: s.codecBody, ok: { 200: described('{payloads}') } });
route('post', '/codec/encode', { summary: 'Encode payloads (e.g. a signal sent from the Temporal UI)', description: `Roles when a token is needed: operator. ${codecAuth}`, optionalAuth: true, body: s.codecBody, ok: { 200: described('{payloads}') } });

// Operations.
route('get', '/healthz', { summary: 'Liveness', ok: { 200: described('ok') } });
route('get', '/readyz', { summary: "Readiness (database, Temporal, and this process's worker polling: worker ok|down|absent)", ok: { 200: described('ready'), 503: described('not ready') } });
route('get', '/metrics', {
  summary: 'Prometheus metrics (KPI gauges from a cached snapshot, ACCESSLOOP_METRICS_REFRESH_SECONDS)',
  description: 'No token unless ACCESSLOOP_METRICS_TOKEN is set; then `Authorization: Bearer <that value>` (401 otherwise).',
  optionalAuth: true,
  ok: { 200: described('text exposition format') },
});

let cached: unknown;

/** The served document (GET /openapi.json), generated once. */
export function openApiDocument(): unknown {
  cached ??= new OpenApiGeneratorV31(openApiRegistry.definitions).generateDocument({
    openapi: '3.1.0',
    info: { title: 'accessloop', version: '0.1.0', description: 'Closed-loop access lifecycle: request, approve, grant, expire, revoke, verify.' },
  });
  return cached;
}
