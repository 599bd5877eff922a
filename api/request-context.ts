import { randomUUID } from 'node:crypto';
import type { RequestHandler, Response } from 'express';
import type { Logger } from '../temporal/logger.js';

/** A caller's own id is kept when it is a plain token (it goes into logs and audit data). */
const CALLER_ID = /^[A-Za-z0-9._-]{8,64}$/;

/** The request id of this HTTP request (set by requestContext). */
export function requestIdOf(res: Response): string {
  return String(res.locals.requestId ?? '');
}

/**
 * Gives every request an id (the caller's `X-Request-Id` when well-formed, else a new UUID),
 * echoes it in the response, and writes one structured access-log line when the response is
 * finished: route pattern (never the concrete path, which holds ids), status, duration and the
 * acting principal's opaque id. Audit events written for the request carry the same id in
 * `data.httpRequestId`, so a log line and an audit event can be joined.
 */
export function requestContext(log: Logger): RequestHandler {
  return (req, res, next) => {
    const incoming = req.get('x-request-id');
    const requestId = incoming && CALLER_ID.test(incoming) ? incoming : randomUUID();
    res.locals.requestId = requestId;
    res.set('X-Request-Id', requestId);
    const started = process.hrtime.bigint();
    res.on('finish', () => {
      const principal = req.principal;
      log.info(
        {
          requestId,
          method: req.method,
          route: req.route?.path ? `${req.baseUrl}${req.route.path}` : 'unmatched',
          status: res.statusCode,
          ms: Number((process.hrtime.bigint() - started) / 1000n) / 1000,
          principal: principal?.identityId ?? (principal?.clientName ? `client:${principal.clientName}` : undefined),
        },
        'http request',
      );
    });
    next();
  };
}
