import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';

/**
 * Signed approval action links for chat buttons and e-mail: `v1.<payload>.<mac>`, where the
 * payload binds request, stage and approver, and carries an expiry and a single-use id (jti).
 * They are minted inside the notifier activity, so a link (a bearer credential) never
 * appears in workflow history; the API records each jti on first use.
 */
export interface ActionLinkClaims {
  /** request id */
  rid: string;
  /** stage number */
  st: number;
  /** approver identity id */
  ap: string;
  /** expiry, epoch seconds */
  exp: number;
  /** single-use id */
  jti: string;
}

export type ActionLinkError = 'malformed' | 'bad_signature' | 'expired';

const b64 = (b: Buffer | string) => Buffer.from(b).toString('base64url');

export function mintActionLink(secret: Buffer, claims: Omit<ActionLinkClaims, 'jti' | 'exp'>, ttlSeconds: number, now = Date.now()): { token: string; claims: ActionLinkClaims } {
  const full: ActionLinkClaims = { ...claims, exp: Math.floor(now / 1000) + ttlSeconds, jti: randomBytes(16).toString('base64url') };
  const payload = b64(JSON.stringify(full));
  const mac = createHmac('sha256', secret).update(`v1.${payload}`).digest();
  return { token: `v1.${payload}.${b64(mac)}`, claims: full };
}

export function verifyActionLink(secret: Buffer, token: string, now = Date.now()): { ok: true; claims: ActionLinkClaims } | { ok: false; error: ActionLinkError } {
  const parts = token.split('.');
  if (parts.length !== 3 || parts[0] !== 'v1' || !parts[1] || !parts[2] || token.length > 1024) return { ok: false, error: 'malformed' };
  const expected = createHmac('sha256', secret).update(`v1.${parts[1]}`).digest();
  const given = Buffer.from(parts[2], 'base64url');
  if (given.length !== expected.length || !timingSafeEqual(given, expected)) return { ok: false, error: 'bad_signature' };
  let claims: ActionLinkClaims;
  try {
    claims = JSON.parse(Buffer.from(parts[1], 'base64url').toString('utf8')) as ActionLinkClaims;
  } catch {
    return { ok: false, error: 'malformed' };
  }
  if (typeof claims.rid !== 'string' || typeof claims.ap !== 'string' || typeof claims.st !== 'number' || typeof claims.exp !== 'number' || typeof claims.jti !== 'string') {
    return { ok: false, error: 'malformed' };
  }
  if (claims.exp * 1000 <= now) return { ok: false, error: 'expired' };
  return { ok: true, claims };
}
