import type { RequestHandler } from 'express';
import { z, type ZodType } from 'zod';
import { badRequest, zodDetails } from './errors.js';

interface Shapes<P extends ZodType, Q extends ZodType, B extends ZodType> {
  params?: P;
  query?: Q;
  body?: B;
}

export interface Validated<P, Q, B> {
  params: P;
  query: Q;
  body: B;
}

/**
 * One validation step for params, query and body. Handlers read `res.locals.valid`, which
 * holds only parsed values, so unknown keys never reach the database.
 */
export function validate<P extends ZodType = ZodType<unknown>, Q extends ZodType = ZodType<unknown>, B extends ZodType = ZodType<unknown>>(
  shapes: Shapes<P, Q, B>,
): RequestHandler {
  return (req, res, next) => {
    const out: Record<string, unknown> = {};
    for (const part of ['params', 'query', 'body'] as const) {
      const schema = shapes[part];
      if (!schema) continue;
      const r = schema.safeParse(part === 'body' ? (req.body ?? {}) : req[part]);
      if (!r.success) return next(badRequest('invalid_request', `invalid ${part}`, zodDetails(r.error)));
      out[part] = r.data;
    }
    res.locals.valid = out;
    next();
  };
}

export function valid<P extends ZodType = ZodType<unknown>, Q extends ZodType = ZodType<unknown>, B extends ZodType = ZodType<unknown>>(
  res: { locals: Record<string, unknown> },
  _shapes?: Shapes<P, Q, B>,
): Validated<z.output<P>, z.output<Q>, z.output<B>> {
  return res.locals.valid as Validated<z.output<P>, z.output<Q>, z.output<B>>;
}
