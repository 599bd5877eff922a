/**
 * JSON over HTTP for desk adapters, with the error classification every desk shares: each call
 * has a deadline, and whatever goes wrong becomes a ConnectorError whose message names the call
 * (a fixed phrase with ticket ids at most) and the HTTP status. Response bodies never reach a
 * message: a desk's error text can echo ticket content.
 */
import { NETWORK_ERROR_CODES } from '../network.js';
import { redact } from '../redact.js';
import { ConnectorError, type ConnectorErrorType } from '../types.js';

export interface DeskHttpOptions {
  /** Prefix of every route, e.g. http://rt.example/rt/REST/2.0 (no trailing slash). */
  baseUrl: string;
  /** Desk name for messages ("RT"). */
  desk: string;
  headers: Record<string, string>;
  timeoutMs: number;
  /** Values that must never appear in a message (the token), masked should one slip through. */
  secrets: readonly string[];
}

export interface DeskResponse {
  status: number;
  /** Parsed JSON; undefined for an empty body. */
  body: unknown;
  location: string | null;
}

export interface DeskRequest {
  /** Fixed phrase naming the call for messages: "comment on ticket 12", never ticket text. */
  what: string;
  body?: unknown;
  /** Non-2xx statuses the caller handles itself (404 of a missing ticket, 400 with a reason). */
  accept?: readonly number[];
}

export interface DeskHttp {
  call(method: string, route: string, req: DeskRequest): Promise<DeskResponse>;
}

function statusType(status: number): ConnectorErrorType {
  if (status === 401 || status === 403) return 'PermissionDenied';
  if (status === 404) return 'NoSuchResource';
  if (status === 429) return 'Throttled';
  if (status >= 500) return 'TargetUnavailable';
  // A redirect (RT sends the browser to its login page) or a refused method or media type means
  // the base URL is not the desk's REST API.
  if (status < 400 || status === 405 || status === 406 || status === 415) return 'InvalidConfig';
  return 'InvalidInput';
}

function networkCode(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

export function createDeskHttp(opts: DeskHttpOptions): DeskHttp {
  const fail = (type: ConnectorErrorType, message: string, cause?: unknown) =>
    new ConnectorError(type, redact(`${opts.desk} ${message}`, opts.secrets), cause === undefined ? undefined : { cause });

  const transportError = (err: unknown, what: string): ConnectorError => {
    const name = (err as { name?: unknown }).name;
    if (name === 'TimeoutError' || name === 'AbortError') return fail('Timeout', `${what}: no answer within ${opts.timeoutMs} ms`);
    const code = networkCode(err);
    // undici's "fetch failed" carries the socket error as its cause; the cause holds the address,
    // never a header, so it may travel along.
    if (code && NETWORK_ERROR_CODES.has(code)) return fail('TargetUnavailable', `${what}: unreachable (${code})`, err);
    return fail('TargetUnavailable', `${what}: request failed${code ? ` (${code})` : ''}`, err);
  };

  return {
    async call(method, route, req) {
      let res: Response;
      let text: string;
      try {
        res = await fetch(`${opts.baseUrl}${route}`, {
          method,
          headers: { Accept: 'application/json', ...opts.headers, ...(req.body === undefined ? {} : { 'Content-Type': 'application/json' }) },
          ...(req.body === undefined ? {} : { body: JSON.stringify(req.body) }),
          redirect: 'manual',
          signal: AbortSignal.timeout(opts.timeoutMs),
        });
        text = await res.text();
      } catch (err) {
        throw transportError(err, req.what);
      }
      const accepted = (res.status >= 200 && res.status < 300) || (req.accept ?? []).includes(res.status);
      if (!accepted) throw fail(statusType(res.status), `${req.what}: HTTP ${res.status}`);
      let body: unknown;
      try {
        body = text === '' ? undefined : JSON.parse(text);
      } catch {
        throw fail(res.status >= 500 ? 'TargetUnavailable' : 'InvalidConfig', `${req.what}: HTTP ${res.status} with a body that is not JSON (is the URL the REST API?)`);
      }
      return { status: res.status, body, location: res.headers.get('location') };
    },
  };
}
