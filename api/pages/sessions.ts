import { createHash, createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { and, eq, gt, isNull, lt, or } from 'drizzle-orm';
import type { Request, RequestHandler, Response } from 'express';
import { appendAudit } from '../../activities/domain/audit.js';
import { hashToken } from '../../activities/domain/tokens.js';
import type { Db } from '../../db/client.js';
import { apiTokens, identities, webSessions } from '../../db/schema.js';
import { actorRef, type Principal } from '../auth.js';
import { HttpError } from '../errors.js';

/** A session lives at most this long, and never past its API token's own expiry. */
export const SESSION_TTL_MS = 8 * 3600 * 1000;
const TOUCH_EVERY_MS = 60_000;
const TOKEN_SHAPE = /^[A-Za-z0-9_\-.~+/]{16,256}=*$/;

export interface WebSession {
  id: string;
  principal: Principal;
  /** The synchronizer token every form of this session must carry. */
  csrf: string;
}

declare module 'express-serve-static-core' {
  interface Locals {
    webSession?: WebSession;
  }
}

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');
/**
 * The CSRF token is derived from the cookie's secret, which only the browser holding the cookie
 * and this request know (the database keeps only the secret's hash): bound to the session, with
 * nothing more to store, and useless to anyone who cannot read the cookie.
 */
const csrfOf = (secret: string) => createHmac('sha256', secret).update('accessloop/csrf/v1').digest('base64url');

/** `__Host-` (Secure, no Domain, Path=/) where the pages are served over https. */
export const cookieName = (secure: boolean) => (secure ? '__Host-accessloop_session' : 'accessloop_session');

function readCookie(req: Request, name: string): string | undefined {
  for (const part of (req.get('cookie') ?? '').split(';')) {
    const i = part.indexOf('=');
    if (i > 0 && part.slice(0, i).trim() === name) return decodeURIComponent(part.slice(i + 1).trim());
  }
  return undefined;
}

/**
 * Web sessions: an API token exchanged once for an HttpOnly cookie. The `web_session` row holds
 * only a hash of the cookie's secret and is bound to the token, so revoking the token, or the
 * identity leaving, ends every session it opened at the next request.
 */
export function createWebSessions(deps: { db: Pick<Db, 'select' | 'insert' | 'update' | 'transaction'>; secureCookies: (req: Request) => boolean }) {
  const { db } = deps;

  async function signIn(token: string, httpRequestId: string): Promise<{ secret: string; expiresAt: Date; session: WebSession } | null> {
    if (!TOKEN_SHAPE.test(token)) return null;
    const now = new Date();
    const [row] = await db
      .select({ id: apiTokens.id, identityId: apiTokens.identityId, clientName: apiTokens.clientName, roles: apiTokens.roles, expiresAt: apiTokens.expiresAt, identityStatus: identities.status })
      .from(apiTokens)
      .leftJoin(identities, eq(identities.id, apiTokens.identityId))
      .where(and(eq(apiTokens.tokenHash, hashToken(token)), isNull(apiTokens.revokedAt), or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, now))));
    if (!row || (row.identityId && row.identityStatus !== 'active')) return null;
    const principal: Principal = { tokenId: row.id, identityId: row.identityId, clientName: row.clientName, roles: row.roles };
    const secret = randomBytes(32).toString('base64url');
    const cap = now.getTime() + SESSION_TTL_MS;
    const expiresAt = new Date(row.expiresAt ? Math.min(cap, row.expiresAt.getTime()) : cap);
    const id = await db.transaction(async (tx) => {
      const [s] = await tx.insert(webSessions).values({ secretHash: sha256(secret), tokenId: row.id, expiresAt }).returning({ id: webSessions.id });
      await appendAudit(tx, {
        idempotencyKey: `web_session/${s!.id}/started`,
        actorType: principal.identityId ? 'identity' : 'client',
        actorId: actorRef(principal),
        action: 'web_session.started',
        data: { sessionId: s!.id, tokenId: row.id, expiresAt: expiresAt.toISOString(), httpRequestId },
      });
      return s!.id;
    });
    return { secret, expiresAt, session: { id, principal, csrf: csrfOf(secret) } };
  }

  async function resolve(secret: string): Promise<WebSession | null> {
    const now = new Date();
    const [row] = await db
      .select({
        id: webSessions.id,
        lastSeenAt: webSessions.lastSeenAt,
        tokenId: apiTokens.id,
        identityId: apiTokens.identityId,
        clientName: apiTokens.clientName,
        roles: apiTokens.roles,
        identityStatus: identities.status,
      })
      .from(webSessions)
      .innerJoin(apiTokens, eq(apiTokens.id, webSessions.tokenId))
      .leftJoin(identities, eq(identities.id, apiTokens.identityId))
      .where(
        and(
          eq(webSessions.secretHash, sha256(secret)),
          isNull(webSessions.endedAt),
          gt(webSessions.expiresAt, now),
          isNull(apiTokens.revokedAt),
          or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, now)),
        ),
      );
    if (!row || (row.identityId && row.identityStatus !== 'active')) return null;
    if (!row.lastSeenAt || now.getTime() - row.lastSeenAt.getTime() > TOUCH_EVERY_MS) {
      await db
        .update(webSessions)
        .set({ lastSeenAt: now })
        .where(and(eq(webSessions.id, row.id), or(isNull(webSessions.lastSeenAt), lt(webSessions.lastSeenAt, new Date(now.getTime() - TOUCH_EVERY_MS)))));
    }
    return { id: row.id, principal: { tokenId: row.tokenId, identityId: row.identityId, clientName: row.clientName, roles: row.roles }, csrf: csrfOf(secret) };
  }

  async function signOut(session: WebSession, httpRequestId: string): Promise<void> {
    await db.transaction(async (tx) => {
      const ended = await tx
        .update(webSessions)
        .set({ endedAt: new Date() })
        .where(and(eq(webSessions.id, session.id), isNull(webSessions.endedAt)))
        .returning({ id: webSessions.id });
      if (ended.length === 0) return;
      await appendAudit(tx, {
        idempotencyKey: `web_session/${session.id}/ended`,
        actorType: session.principal.identityId ? 'identity' : 'client',
        actorId: actorRef(session.principal),
        action: 'web_session.ended',
        data: { sessionId: session.id, httpRequestId },
      });
    });
  }

  /** Sets `req.principal` and `res.locals.webSession` when the request carries a live session cookie. */
  const load: RequestHandler = async (req, res, next) => {
    try {
      const secret = readCookie(req, cookieName(deps.secureCookies(req)));
      const session = secret && /^[A-Za-z0-9_-]{43}$/.test(secret) ? await resolve(secret) : null;
      if (session) {
        req.principal = session.principal;
        res.locals.webSession = session;
      }
      next();
    } catch (e) {
      next(e);
    }
  };

  function setCookie(req: Request, res: Response, secret: string, expiresAt: Date): void {
    const secure = deps.secureCookies(req);
    res.cookie(cookieName(secure), secret, { httpOnly: true, secure, sameSite: 'strict', path: '/', expires: expiresAt });
  }

  function clearCookie(req: Request, res: Response): void {
    const secure = deps.secureCookies(req);
    res.clearCookie(cookieName(secure), { httpOnly: true, secure, sameSite: 'strict', path: '/' });
  }

  return { signIn, resolve, signOut, load, setCookie, clearCookie };
}

export type WebSessions = ReturnType<typeof createWebSessions>;

/** The synchronizer-token half of the CSRF defence: the form's `_csrf` must be this session's. */
export const requireCsrf: RequestHandler = (req, res, next) => {
  const want = res.locals.webSession?.csrf;
  const got = typeof req.body?._csrf === 'string' ? (req.body._csrf as string) : '';
  const ok = !!want && got.length === want.length && timingSafeEqual(Buffer.from(got), Buffer.from(want));
  next(ok ? undefined : new HttpError(403, 'csrf_token_invalid', 'this form has expired or did not come from this site; reload the page and try again'));
};
