/**
 * The served OpenAPI document against the real app: every route createApp() wires is documented
 * and nothing else is, and each operation is documented with the very zod schemas its route
 * validates with. The app is built with inert dependencies: createApp only wires routes.
 */
import type { RouteConfig } from '@asteasolutions/zod-to-openapi';
import type { Client } from '@temporalio/client';
import express, { type Express } from 'express';
import { describe, expect, it, vi } from 'vitest';
import { z } from 'zod';
import { policyDocument } from '../../activities/domain/policy/schema.js';
import { createMetrics } from '../../activities/domain/metrics.js';
import { createApp, type AppDeps } from '../../api/app.js';
import { openApiDocument, openApiRegistry } from '../../api/openapi.js';
import { hrEventBody } from '../../api/schemas.js';
import { validate } from '../../api/validate.js';
import { loadConfig } from '../../temporal/config.js';
import { createLogger } from '../../temporal/logger.js';
import { servedRoutes, type ServedRoute } from '../helpers/express-routes.js';

type Shapes = Parameters<typeof validate>[0];

// Each validate() middleware remembers the schemas it was built with, so the test can compare
// them with the registry's by reference.
vi.mock('../../api/validate.js', async (importOriginal) => {
  const real = await importOriginal<typeof import('../../api/validate.js')>();
  return { ...real, validate: ((shapes: Shapes) => Object.assign(real.validate(shapes), { shapes })) as typeof real.validate };
});

/** The documentation's own endpoints (the page, its script and assets, the document itself) are deliberately left out of it. */
const UNDOCUMENTED = new Set(['get /openapi.json', 'get /docs', 'get /docs/init.js', 'get /docs/assets/{file}']);
// The server-rendered pages (api/routes/pages.ts, mounted at the root, hence the helper's `//`) and
// the HTML page and form behind an action link: HTML for browsers, not part of the JSON API.
for (const k of ['get /', 'get //assets/{file}', 'get //login', 'post //login', 'post //logout', 'get //approvals', 'get //approvals/{id}', 'post //approvals/{id}/decision', 'get //kpis', 'get //kpis/data.json', 'get //reviews', 'post //reviews/keep', 'get //reviews/items/{id}', 'post //reviews/items/{id}/decision', 'get //break-glass', 'post //break-glass', 'post //break-glass/{id}/confirm', 'get //break-glass/requests/{id}', 'get /v1/approvals/actions/{token}', 'post /v1/approvals/actions/{token}/form']) UNDOCUMENTED.add(k);

/** Routes that read a raw body and parse it in the handler, with the schema the handler uses. */
const PARSED_IN_HANDLER: Record<string, z.ZodType> = {
  // YAML or JSON text, so problems can name lines; the policy loader parses it with policyDocument.
  'put /v1/policies': policyDocument,
  // The Standard Webhooks signature covers the raw bytes; only then is the body parsed.
  'post /v1/hr/events': hrEventBody,
};

/** A dependency createApp may hold but must not use while wiring routes. */
function inert<T>(name: string): T {
  return new Proxy({}, {
    get(_t, key) {
      if (typeof key === 'symbol') return undefined;
      throw new Error(`createApp used deps.${name}.${key} while wiring routes`);
    },
  }) as T;
}

function inertApp(): Express {
  const deps: AppDeps = {
    db: inert('db'),
    // The codec endpoint takes the client's codecs at wiring time.
    temporal: { options: { loadedDataConverter: { payloadCodecs: [] } } } as unknown as Client,
    config: loadConfig({}),
    log: createLogger('silent'),
    metrics: createMetrics(),
    policies: inert('policies'),
    actionLinkSecret: Buffer.alloc(32),
    vault: inert('vault'),
  };
  return createApp(deps);
}

const key = (method: string, path: string) => `${method} ${path}`;

function documentedOperations(): string[] {
  const doc = openApiDocument() as { paths: Record<string, Record<string, unknown>> };
  return Object.entries(doc.paths).flatMap(([path, ops]) => Object.keys(ops).map((method) => key(method, path)));
}

/** What is served but not documented, and documented but not served. */
function drift(app: Express) {
  const served = servedRoutes(app).map((r) => key(r.method, r.path)).filter((k) => !UNDOCUMENTED.has(k));
  const documented = documentedOperations();
  return { undocumented: served.filter((k) => !documented.includes(k)), notServed: documented.filter((k) => !served.includes(k)) };
}

const registered = new Map(
  openApiRegistry.definitions.flatMap((d) => (d.type === 'route' ? [[key(d.route.method, d.route.path), d.route] as const] : [])),
);

/** The schemas a route's validate() middleware parses with (none when it has no such middleware). */
function validatedShapes(route: ServedRoute): Shapes {
  const mw = route.handlers.find((h): h is { shapes: Shapes } => typeof h === 'function' && 'shapes' in h);
  return mw?.shapes ?? {};
}

/** Each part of a route whose documented schema is not the object its middleware validates with. */
function schemaMismatches(app: Express): string[] {
  const out: string[] = [];
  for (const route of servedRoutes(app)) {
    const k = key(route.method, route.path);
    const doc: RouteConfig | undefined = registered.get(k);
    if (!doc) continue; // reported by drift()
    const shapes = validatedShapes(route);
    const bodies = Object.values(doc.request?.body?.content ?? {}).map((c) => (c && 'schema' in c ? c.schema : undefined));
    const expectedBody = PARSED_IN_HANDLER[k] ?? shapes.body;
    if (doc.request?.params !== shapes.params) out.push(`${k}: params`);
    if (doc.request?.query !== shapes.query) out.push(`${k}: query`);
    if (expectedBody === undefined ? bodies.length > 0 : bodies.length === 0 || bodies.some((b) => b !== expectedBody)) out.push(`${k}: body`);
  }
  return out;
}

describe('OpenAPI document', () => {
  it('documents every route the app serves, and only those', () => {
    const app = inertApp();
    expect(servedRoutes(app).length).toBeGreaterThan(30);
    expect(drift(app)).toEqual({ undocumented: [], notServed: [] });
  });

  it('documents each operation with the schemas its route validates with', () => {
    expect(schemaMismatches(inertApp())).toEqual([]);
  });

  it('declares every path parameter, and requires a token wherever roles are named', () => {
    const doc = openApiDocument() as { paths: Record<string, Record<string, { description?: string; security?: unknown[]; parameters?: Array<{ in: string; name: string }> }>> };
    for (const [path, ops] of Object.entries(doc.paths)) {
      const inPath = [...path.matchAll(/\{(\w+)\}/g)].map((m) => m[1]);
      for (const [method, op] of Object.entries(ops)) {
        expect((op.parameters ?? []).filter((p) => p.in === 'path').map((p) => p.name), `${method} ${path}`).toEqual(inPath);
        if (op.description?.startsWith('Roles:')) expect(op.security, `${method} ${path}`).toEqual([{ bearer: [] }]);
      }
    }
  });

  it('notices an undocumented route and a schema the document does not show (the checks are tested)', () => {
    const app = inertApp();
    const extra = express.Router();
    extra.get('/undocumented/:id', (_req, res) => {
      res.end();
    });
    // The same path as a documented operation, validated with a different schema.
    extra.post('/tokens', validate({ body: z.strictObject({}) }), (_req, res) => {
      res.end();
    });
    app.use('/v1', extra);
    expect(drift(app).undocumented).toEqual(['get /v1/undocumented/{id}']);
    expect(schemaMismatches(app)).toEqual(['post /v1/tokens: body']);
  });
});
