import type postgres from 'postgres';
import type { Logger } from '../../temporal/logger.js';

/**
 * The channel the database announces changes of an access request on (migration 0014): a
 * status change, or an approval stage's rows written. The payload is the request's id only.
 */
export const REQUEST_CHANGED_CHANNEL = 'access_request_changed';

/** Without LISTEN (PGlite over its socket may not deliver notifications), waiters look again this often. */
const FALLBACK_RECHECK_MS = 200;

export interface RequestSubscription {
  /**
   * Resolves once the request may have changed since the last call (or since subscribing), or
   * after `ms`, or on `signal`: true, or false once the watch is closing (answer now).
   */
  next(ms: number, signal?: AbortSignal): Promise<boolean>;
  close(): void;
}

/**
 * Long-poll support for the API: a caller subscribes to a request *before* reading it, then
 * waits for the next change, so a change between the read and the wait is never missed. One
 * LISTEN connection per API replica serves every waiter; a notification only wakes waiters,
 * who re-read the row themselves (the database is the truth, the notification a hint).
 */
export interface RequestWatch {
  subscribe(requestId: string): RequestSubscription;
  close(): Promise<void>;
}

interface Waiter {
  dirty: boolean;
  wake?: (() => void) | undefined;
}

/** Gives up on LISTEN after this long (a server that never answers it must not hold up the API's start). */
const LISTEN_TIMEOUT_MS = 5_000;

export async function createRequestWatch(sql: postgres.Sql, log: Logger, opts: { listen?: boolean } = {}): Promise<RequestWatch> {
  const waiters = new Map<string, Set<Waiter>>();
  let listening: { unlisten(): Promise<void> } | undefined;
  let closed = false;
  if (opts.listen !== false) {
    const started = sql.listen(REQUEST_CHANGED_CHANNEL, (id) => {
      for (const w of waiters.get(id) ?? []) {
        w.dirty = true;
        w.wake?.();
      }
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      listening = await Promise.race([started, new Promise<never>((_, reject) => (timer = setTimeout(() => reject(new Error(`no answer to LISTEN within ${LISTEN_TIMEOUT_MS} ms`)), LISTEN_TIMEOUT_MS)))]);
    } catch (err) {
      started.then((l) => l.unlisten(), () => undefined).catch(() => undefined);
      log.warn({ err: err instanceof Error ? err.message : String(err) }, `LISTEN unavailable; long polls re-read every ${FALLBACK_RECHECK_MS} ms`);
    } finally {
      clearTimeout(timer);
    }
  }
  return {
    subscribe(requestId) {
      const w: Waiter = { dirty: false };
      let set = waiters.get(requestId);
      if (!set) waiters.set(requestId, (set = new Set()));
      set.add(w);
      return {
        async next(ms, signal) {
          if (!w.dirty && ms > 0 && !signal?.aborted && !closed) {
            await new Promise<void>((resolve) => {
              const done = () => {
                clearTimeout(timer);
                signal?.removeEventListener('abort', done);
                w.wake = undefined;
                resolve();
              };
              const timer = setTimeout(done, listening ? ms : Math.min(ms, FALLBACK_RECHECK_MS));
              signal?.addEventListener('abort', done, { once: true });
              w.wake = done;
            });
          }
          w.dirty = false;
          return !closed;
        },
        close() {
          w.wake?.();
          set.delete(w);
          if (set.size === 0 && waiters.get(requestId) === set) waiters.delete(requestId);
        },
      };
    },
    async close() {
      closed = true;
      for (const set of waiters.values()) for (const w of set) w.wake?.();
      waiters.clear();
      await listening?.unlisten().catch(() => undefined);
    },
  };
}

/** Waits until `ready(row)` holds, re-reading on every change, for at most `ms`; returns the last row read. */
export async function waitForRequest<T>(watch: RequestWatch | undefined, requestId: string, read: () => Promise<T>, ready: (row: T) => boolean, ms: number, signal?: AbortSignal): Promise<T> {
  if (!watch || ms <= 0) return read();
  const sub = watch.subscribe(requestId);
  try {
    const until = Date.now() + ms;
    let row = await read();
    while (!ready(row) && Date.now() < until && !signal?.aborted) {
      const more = await sub.next(until - Date.now(), signal);
      row = await read();
      if (!more) break;
    }
    return row;
  } finally {
    sub.close();
  }
}
