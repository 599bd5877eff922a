import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ZodError } from 'zod';
import type { Logger } from '../../temporal/logger.js';
import { HttpError } from '../errors.js';
import { setPageHeaders } from './security.js';
import { messagePage } from './views.js';

/** Marks the response as a page, so errors are rendered as HTML rather than the API's JSON. */
export const asPage: RequestHandler = (_req, res, next) => {
  res.locals.page = true;
  setPageHeaders(res);
  next();
};

const TITLES: Record<number, string> = { 400: 'Not accepted', 401: 'Not signed in', 403: 'Not allowed', 404: 'Not found', 409: 'Not possible now', 410: 'Expired', 413: 'Too large', 429: 'Not yet' };
const CODE_TITLES: Record<string, string> = { invalid_link: 'Link not valid', link_expired: 'Link expired', link_used: 'Link already used', not_pending: 'Already decided', csrf_token_invalid: 'Form expired', cross_site_request: 'Not allowed' };

/**
 * The pages' error handler: the API's error mapping, rendered as a page that says what happened
 * and what to do, never a stack trace. Errors of non-page routes pass on to the JSON handler.
 */
export function pageErrorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, next) => {
    if (!res.locals.page || res.headersSent) return next(err);
    let e: HttpError;
    if (err instanceof HttpError) e = err;
    else if (err instanceof ZodError) e = new HttpError(400, 'invalid_request', 'the form was not filled in as expected');
    else if (err?.type === 'entity.too.large') e = new HttpError(413, 'payload_too_large', 'the form is too large');
    else if (typeof err?.status === 'number' && err.status >= 400 && err.status < 500) e = new HttpError(err.status, 'invalid_request', 'the form could not be read');
    else {
      log.error({ err, requestId: res.locals.requestId, method: req.method, path: req.route?.path ?? 'unmatched' }, 'unhandled page error');
      e = new HttpError(500, 'internal', 'something went wrong on our side; try again in a moment');
    }
    const viewer = res.locals.webSession ? { principal: res.locals.webSession.principal, csrf: res.locals.webSession.csrf } : undefined;
    const links: Array<[string, string]> = e.code === 'unauthorized' ? [['/login', 'Sign in']] : viewer ? [['/approvals', 'Your approvals']] : [];
    setPageHeaders(res)
      .status(e.status)
      .type('html')
      .set('X-Error-Code', e.code)
      .send(messagePage(CODE_TITLES[e.code] ?? TITLES[e.status] ?? 'Error', `${e.message.charAt(0).toUpperCase()}${e.message.slice(1)}.`, { viewer, links }));
  };
}
