import { z } from 'zod';
import { createDelegationBody, createGroupBody, setMembersBody } from './routes/policies.js';
import { createAccessRequestBody, createEntitlementBody, createIdentityBody, createSystemBody, createTokenBody, decisionBody, evidenceBundleSchema, extendBody, revokeBody, sshPublicKeyBody } from './schemas.js';

const body = (s: z.ZodType) => ({ required: true, content: { 'application/json': { schema: z.toJSONSchema(s, { io: 'input', unrepresentable: 'any' }) } } });
const idPath = [{ name: 'id', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } }];
const errorResponses = {
  '400': { description: 'invalid input', content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } } },
  '401': { description: 'missing or invalid token' },
  '403': { description: 'not allowed for this caller' },
  '404': { description: 'not found (or not visible to this caller)' },
  '409': { description: 'wrong state' },
  '413': { description: 'body too large' },
};
const op = (summary: string, roles: string, extra: Record<string, unknown> = {}) => ({
  summary,
  description: `Roles: ${roles}. The acting identity is the token's.`,
  security: [{ bearer: [] }],
  responses: { '200': { description: 'ok' }, ...errorResponses },
  ...extra,
});

let cached: unknown;

/** OpenAPI 3.1 generated from the same zod schemas that validate requests. */
export function openApiDocument(): unknown {
  cached ??= {
    openapi: '3.1.0',
    info: { title: 'accessloop', version: '0.1.0', description: 'Closed-loop access lifecycle: request, approve, grant, expire, revoke, verify.' },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer' } },
      schemas: {
        Error: {
          type: 'object',
          required: ['error'],
          properties: { error: { type: 'object', required: ['code', 'message'], properties: { code: { type: 'string' }, message: { type: 'string' }, details: {} } } },
        },
      },
    },
    paths: {
      '/v1/access-requests': {
        post: op('Request access (202, a workflow starts)', 'requester', { requestBody: body(createAccessRequestBody) }),
        get: op('List requests (newest first; ?status, subjectId, entitlementId, limit, before=nextCursor)', 'operator/auditor: all; others: their own and those assigned to them'),
      },
      '/v1/access-requests/{id}': { get: op('Request status, stages, grant and timeline', 'requester (own), assigned approver, operator, auditor', { parameters: idPath }) },
      '/v1/access-requests/{id}/decision': { post: op('Approve or reject', 'approver (assigned, never the requester)', { parameters: idPath, requestBody: body(decisionBody) }) },
      '/v1/access-requests/{id}/extend': { post: op('Extend an active lease within policy', 'requester (own), operator', { parameters: idPath, requestBody: body(extendBody) }) },
      '/v1/access-requests/{id}/revoke': { post: op('Revoke now (202); removal is verified on the target', 'operator, or the subject for their own access', { parameters: idPath, requestBody: body(revokeBody) }) },
      '/v1/approvals/pending': { get: op("The caller's open approval tasks", 'approver') },
      '/v1/identities': { post: op('Create an identity', 'operator', { requestBody: body(createIdentityBody) }) },
      '/v1/identities/{id}': { get: op('Read an identity', 'operator', { parameters: idPath }) },
      '/v1/identities/{id}/access': { get: op('Active grants with provenance', 'operator, auditor, the identity itself', { parameters: idPath }) },
      '/v1/systems': { post: op('Register a target system (non-secret config + secret env refs)', 'operator', { requestBody: body(createSystemBody) }) },
      '/v1/entitlements': { post: op('Add a catalog item', 'operator', { requestBody: body(createEntitlementBody) }), get: op('List the catalog', 'any role') },
      '/v1/tokens': { post: op('Issue an API token (shown once, stored hashed)', 'operator', { requestBody: body(createTokenBody) }) },
      '/v1/policies': { put: op('Publish an approval policy (YAML or JSON body; 400 lists line:column problems)', 'operator') },
      '/v1/policies/active': { get: op('The active policy document and version', 'operator, auditor') },
      '/v1/policies/{entitlementId}/explain': {
        get: op('Dry run: the stages, approvers and rules a request would get', 'requester (self, reports), approver, operator, auditor', {
          parameters: [
            { name: 'entitlementId', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } },
            { name: 'subjectId', in: 'query', required: false, schema: { type: 'string', format: 'uuid' } },
          ],
        }),
      },
      '/v1/groups': { post: op('Create an approver group', 'operator', { requestBody: body(createGroupBody) }) },
      '/v1/groups/{id}/members': { put: op('Replace a group’s members', 'operator', { parameters: idPath, requestBody: body(setMembersBody) }) },
      '/v1/delegations': { post: op('Delegate approval tasks for a period', 'approver (own), operator', { requestBody: body(createDelegationBody) }) },
      '/v1/approvals/actions/{token}': {
        post: {
          summary: 'Approve or reject through a signed, single-use action link (chat/e-mail buttons)',
          description: 'The link is the credential. 401 tampered, 410 expired, 409 used or wrong stage, 403 another approver.',
          parameters: [{ name: 'token', in: 'path', required: true, schema: { type: 'string' } }],
          requestBody: body(decisionBody),
          responses: { '200': { description: 'decided' }, ...errorResponses, '410': { description: 'link expired' } },
        },
      },
      '/v1/access-requests/{id}/credential': {
        get: op('The lease\'s password or SSH certificate, once (the read wipes it; then 410)', 'the credential\'s owner only (404 for anyone else)', { parameters: idPath }),
      },
      '/v1/access-requests/{id}/credential/rotate': { post: op('New secret for the lease\'s credential; the old one stops working', 'the owner, operator', { parameters: idPath }) },
      '/v1/identities/{id}/ssh-public-key': { put: op('Register the public key SSH certificates are issued for', 'the identity, its owner, operator', { parameters: idPath, requestBody: body(sshPublicKeyBody) }) },
      '/v1/hr/events': { post: op('Joiner / mover / leaver / rehire / update from an HR system (Standard Webhooks signature)', 'hr_system') },
      '/v1/metrics/kpis': {
        get: op('Governance measures over a window', 'operator, auditor', {
          parameters: [
            { name: 'window', in: 'query', required: false, schema: { type: 'string', pattern: '^[1-9][0-9]{0,5}[mhd]$', examples: ['24h', '30d'] } },
            { name: 'windowDays', in: 'query', required: false, schema: { type: 'integer', minimum: 1, maximum: 366 } },
          ],
        }),
      },
      '/v1/reconciliation/run': { post: op('Reconcile a system now (202, a workflow starts)', 'operator') },
      '/v1/reconciliation/findings': { get: op('Reconciliation findings (?systemId, status, kind)', 'operator, auditor') },
      '/v1/evidence/{requestId}': {
        get: op('Evidence bundle: request, policy, approvals, lease, removal, credential facts and audit events, re-verified against the chain and signed (Ed25519)', 'auditor, operator (404 for anyone else)', {
          parameters: [{ name: 'requestId', in: 'path', required: true, schema: { type: 'string', format: 'uuid' } }],
          responses: { '200': { description: 'the signed bundle; verification.valid is false (problems name the seq) when a stored event no longer matches its hash', content: { 'application/json': { schema: z.toJSONSchema(evidenceBundleSchema, { io: 'output', unrepresentable: 'any' }) } } }, ...errorResponses },
        }),
      },
      '/v1/evidence/public-key': { get: { summary: 'The Ed25519 key that signs evidence bundles, with its fingerprint (no token needed)', responses: { '200': { description: '{algorithm, publicKey (PEM), fingerprint}' } } } },
      '/healthz': { get: { summary: 'Liveness', responses: { '200': { description: 'ok' } } } },
      '/readyz': { get: { summary: 'Readiness (database and Temporal)', responses: { '200': { description: 'ready' }, '503': { description: 'not ready' } } } },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text exposition format' } } } },
    },
  };
  tagByArea(cached as { paths: Record<string, Record<string, { tags?: string[] }>> });
  return cached;
}

/** Groups operations in the docs by the API area their path starts with (access-requests, identities, …). */
function tagByArea(doc: { paths: Record<string, Record<string, { tags?: string[] }>> }): void {
  for (const [p, ops] of Object.entries(doc.paths)) {
    const area = p.startsWith('/v1/') ? p.split('/')[2]! : 'service';
    for (const o of Object.values(ops)) o.tags ??= [area];
  }
}
