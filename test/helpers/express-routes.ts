import type { Express } from 'express';

export interface ServedRoute {
  /** Lower-case HTTP method, as OpenAPI spells it. */
  method: string;
  /** The full path in OpenAPI form: express `:id` becomes `{id}`, no trailing slash. */
  path: string;
  /** The route's own handlers and middleware, in order. */
  handlers: unknown[];
}

interface Layer {
  handle: { stack?: Layer[] };
  /** router 2.x keeps the path a layer was mounted at. */
  rawPath?: unknown;
  route?: { path: unknown; methods: Record<string, boolean>; stack: Layer[] };
}

const join = (prefix: string, p: string) => (prefix + p).replace(/\/+$/, '') || '/';
const openApiPath = (p: string) => p.replace(/:(\w+)/g, '{$1}');

/**
 * Every route of an express 5 app with its full path, read from the router stacks (mounted
 * routers are followed). Path patterns this cannot read (regexps, arrays, `app.all`) throw, so
 * a route is never silently left out.
 */
export function servedRoutes(app: Express): ServedRoute[] {
  const out: ServedRoute[] = [];
  const walk = (stack: Layer[], prefix: string) => {
    for (const layer of stack) {
      if (layer.route) {
        const { path, methods, stack: handlers } = layer.route;
        if (typeof path !== 'string') throw new Error(`a route under ${prefix || '/'} has a non-string path`);
        for (const method of Object.keys(methods)) {
          if (method === '_all') throw new Error(`${join(prefix, path)} is registered for all methods`);
          out.push({ method, path: openApiPath(join(prefix, path)), handlers: handlers.map((h) => h.handle) });
        }
      } else if (layer.handle.stack) {
        if (typeof layer.rawPath !== 'string') throw new Error(`a router under ${prefix || '/'} is mounted at a non-string path`);
        walk(layer.handle.stack, join(prefix, layer.rawPath));
      }
    }
  };
  walk((app as unknown as { router: { stack: Layer[] } }).router.stack, '');
  return out;
}
