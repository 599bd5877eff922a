import { and, eq, gt, isNull, or } from 'drizzle-orm';
import type { NextFunction, Request, RequestHandler, Response } from 'express';
import type { Db } from '../db/client.js';
import { apiTokens, identities, type ApiRole } from '../db/schema.js';
import { forbidden, unauthorized } from './errors.js';
import { hashToken } from '../activities/domain/tokens.js';

export interface Principal {
  tokenId: string;
  /** Set when the token belongs to a person or non-human identity. */
  identityId: string | null;
  /** Set when the token belongs to a system client (HR feed, bootstrap operator). */
  clientName: string | null;
  roles: ApiRole[];
}

/** Opaque reference for audit rows: never a name or e-mail. */
export const actorRef = (p: Principal) => p.identityId ?? `client:${p.clientName}`;

declare module 'express-serve-static-core' {
  interface Request {
    principal?: Principal;
  }
}

/** Bearer authentication: the token's sha256 is looked up (see activities/domain/tokens.ts). */
export function authenticate(db: Db): RequestHandler {
  return async (req: Request, _res: Response, next: NextFunction) => {
    try {
      const header = req.get('authorization') ?? '';
      const m = /^Bearer ([A-Za-z0-9_\-.~+/]{16,256}=*)$/.exec(header);
      if (!m) throw unauthorized();
      const now = new Date();
      const [row] = await db
        .select({ id: apiTokens.id, identityId: apiTokens.identityId, clientName: apiTokens.clientName, roles: apiTokens.roles, identityStatus: identities.status })
        .from(apiTokens)
        .leftJoin(identities, eq(identities.id, apiTokens.identityId))
        .where(and(eq(apiTokens.tokenHash, hashToken(m[1]!)), isNull(apiTokens.revokedAt), or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, now))));
      if (!row) throw unauthorized();
      // A leaver's token dies with their identity.
      if (row.identityId && row.identityStatus !== 'active') throw unauthorized('the token owner is not active');
      req.principal = { tokenId: row.id, identityId: row.identityId, clientName: row.clientName, roles: row.roles };
      next();
    } catch (e) {
      next(e);
    }
  };
}

export function principalOf(req: Request): Principal {
  if (!req.principal) throw unauthorized();
  return req.principal;
}

export const hasRole = (p: Principal, ...roles: ApiRole[]) => roles.some((r) => p.roles.includes(r));

export function requireRole(...roles: ApiRole[]): RequestHandler {
  return (req, _res, next) => {
    const p = principalOf(req);
    next(hasRole(p, ...roles) ? undefined : forbidden(`requires one of the roles: ${roles.join(', ')}`));
  };
}

/** The caller's own identity; routes that act as a person need one (a client token cannot request access). */
export function identityOf(p: Principal): string {
  if (!p.identityId) throw forbidden('this route acts as an identity; the token belongs to a system client', 'identity_required');
  return p.identityId;
}
