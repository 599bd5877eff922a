import type { ErrorRequestHandler, RequestHandler } from 'express';
import { ZodError } from 'zod';
import type { Logger } from '../temporal/logger.js';

/** The one error shape: {error: {code, message, details?}}; never a stack trace. */
export class HttpError extends Error {
  constructor(
    readonly status: number,
    readonly code: string,
    message: string,
    readonly details?: unknown,
  ) {
    super(message);
  }
}

export const badRequest = (code: string, message: string, details?: unknown) => new HttpError(400, code, message, details);
export const unauthorized = (message = 'missing or invalid bearer token') => new HttpError(401, 'unauthorized', message);
export const forbidden = (message: string, code = 'forbidden') => new HttpError(403, code, message);
export const notFound = (what: string) => new HttpError(404, 'not_found', `${what} not found`);
export const conflict = (code: string, message: string) => new HttpError(409, code, message);

export function zodDetails(e: ZodError) {
  return e.issues.map((i) => ({ path: i.path.join('.'), message: i.message }));
}

export const notFoundHandler: RequestHandler = (req, _res, next) => next(new HttpError(404, 'not_found', `no route for ${req.method} ${req.path}`));

export function errorHandler(log: Logger): ErrorRequestHandler {
  return (err, req, res, _next) => {
    let e: HttpError;
    if (err instanceof HttpError) e = err;
    else if (err instanceof ZodError) e = badRequest('invalid_request', 'request validation failed', zodDetails(err));
    else if (err?.type === 'entity.too.large') e = new HttpError(413, 'payload_too_large', 'request body exceeds the size limit');
    else if (err?.type === 'entity.parse.failed') e = badRequest('malformed_json', 'request body is not valid JSON');
    else if (err?.type === 'encoding.unsupported' || err?.type === 'charset.unsupported') e = new HttpError(415, 'unsupported_media_type', 'unsupported body encoding');
    else {
      log.error({ err, requestId: res.locals.requestId, method: req.method, path: req.route?.path ?? 'unmatched' }, 'unhandled API error');
      e = new HttpError(500, 'internal', 'internal error');
    }
    // The request id lets a caller quote a failure and an operator find its log line.
    res.status(e.status).json({ error: { code: e.code, message: e.message, ...(e.details === undefined ? {} : { details: e.details }), requestId: res.locals.requestId } });
  };
}
