import type { Request, RequestHandler, Response } from 'express';
import { HttpError } from '../errors.js';

/**
 * The pages' Content-Security-Policy: scripts, styles and fonts only from this origin, no inline
 * script or style at all (so no nonce is needed), forms only back to this origin, never framed.
 * Pico's icons are data: SVGs in its stylesheet, hence `img-src data:`.
 */
export const PAGE_CSP = [
  "default-src 'none'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self' data:",
  "font-src 'self'",
  "connect-src 'self'",
  "form-action 'self'",
  "frame-ancestors 'none'",
  "base-uri 'none'",
].join('; ');

/**
 * Headers every page and asset carries. `Referrer-Policy: no-referrer` matters more than usual:
 * an action link's token is in the URL, and a Referer would hand it to whatever the page links to.
 * Pages are `no-store` (they show personal data and CSRF tokens); assets set their own caching.
 */
export function setPageHeaders(res: Response, { cache = false } = {}): Response {
  return res.set({
    'Content-Security-Policy': PAGE_CSP,
    'X-Content-Type-Options': 'nosniff',
    'Referrer-Policy': 'no-referrer',
    'X-Frame-Options': 'DENY',
    'Cross-Origin-Opener-Policy': 'same-origin',
    'Cross-Origin-Resource-Policy': 'same-origin',
    'Permissions-Policy': 'camera=(), microphone=(), geolocation=(), payment=()',
    ...(cache ? { 'Cache-Control': 'public, max-age=3600' } : { 'Cache-Control': 'no-store' }),
  });
}

export const pageHeaders: RequestHandler = (_req, res, next) => {
  setPageHeaders(res);
  next();
};

/**
 * The fetch-metadata / Origin half of the CSRF defence, for every state-changing form: a browser
 * says where a request came from (`Sec-Fetch-Site`, else `Origin`), and anything but this origin
 * is refused. A client that sends neither is not a browser, so it cannot be a forged cross-site
 * form; session forms also need the synchronizer token (sessions.ts), which such a client lacks
 * without the cookie.
 */
export function sameOriginOnly(publicUrl: string | undefined): RequestHandler {
  const allowed = publicUrl ? new URL(publicUrl).origin : undefined;
  return (req: Request, _res, next) => {
    const site = req.get('sec-fetch-site');
    if (site !== undefined) return next(site === 'same-origin' ? undefined : crossSite());
    const origin = req.get('origin');
    if (origin === undefined) return next();
    const own = `${req.protocol}://${req.get('host') ?? ''}`;
    next(origin === own || origin === allowed ? undefined : crossSite());
  };
}

const crossSite = () => new HttpError(403, 'cross_site_request', 'this form was submitted from another site');
