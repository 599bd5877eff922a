import { createRequire } from 'node:module';
import path from 'node:path';
import express, { Router } from 'express';

/** Only the files the page needs are served from swagger-ui-dist (no directory listing, no source maps). */
const ASSETS = new Set(['swagger-ui.css', 'swagger-ui-bundle.js', 'favicon-32x32.png']);

const PAGE = `<!doctype html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>accessloop API</title>
  <meta name="viewport" content="width=device-width, initial-scale=1">
  <link rel="icon" href="/docs/assets/favicon-32x32.png">
  <link rel="stylesheet" href="/docs/assets/swagger-ui.css">
</head>
<body>
  <div id="docs"></div>
  <script src="/docs/assets/swagger-ui-bundle.js"></script>
  <script src="/docs/init.js"></script>
</body>
</html>
`;

// A separate file rather than an inline script, so the page works under a strict CSP.
const INIT = `window.ui = SwaggerUIBundle({
  url: '/openapi.json',
  dom_id: '#docs',
  deepLinking: true,
  tryItOutEnabled: false,
  persistAuthorization: false,
  displayRequestDuration: true,
  docExpansion: 'list',
});
`;

/**
 * GET /docs: the interactive API reference (Swagger UI over /openapi.json), served from the
 * installed swagger-ui-dist package so it works offline. "Authorize" takes a bearer token;
 * "Try it out" calls this API from the browser with it, under the same authorisation as curl.
 */
export function docsRoutes(): Router {
  const r = Router();
  const dist = path.dirname(createRequire(import.meta.url).resolve('swagger-ui-dist/package.json'));
  const security = (res: express.Response) =>
    res.set({
      'Content-Security-Policy': "default-src 'none'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; connect-src 'self'; font-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
      'X-Content-Type-Options': 'nosniff',
      'Referrer-Policy': 'no-referrer',
    });
  r.get('/', (_req, res) => {
    security(res).type('html').send(PAGE);
  });
  r.get('/init.js', (_req, res) => {
    security(res).type('application/javascript').send(INIT);
  });
  r.get('/assets/:file', (req, res, next) => {
    const file = req.params.file;
    if (!ASSETS.has(file)) return next();
    security(res).set('Cache-Control', 'public, max-age=3600').sendFile(path.join(dist, file));
  });
  return r;
}
