import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { checkReadiness, type ReadinessSources } from './readiness.js';

/**
 * The worker-only process's probe endpoints (`npm run worker` with ACCESSLOOP_WORKER_HEALTH_PORT):
 * plain node:http, no express, for a supervisor (systemd, Kubernetes) to probe a process that
 * serves no API.
 *
 *   GET /healthz  200 {"status":"ok"} while the process runs (liveness)
 *   GET /readyz   200 / 503 with the API's /readyz body (temporal/readiness.ts)
 *   anything else 404
 */
export interface HealthListener {
  /** `host:port` as bound (`[::1]:port` for IPv6): the port is the real one when 0 was asked for. */
  readonly address: string;
  readonly port: number;
  /** Stops listening and drops open probe connections; resolves once the listener is closed. Idempotent. */
  close(): Promise<void>;
}

/** The routes, separately from the listener. `sources` is read per request (undefined: the process is still starting). */
export function healthHandler(sources: () => ReadinessSources | undefined): (req: IncomingMessage, res: ServerResponse) => void {
  return (req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', 'cache-control': 'no-store' }).end(JSON.stringify(body));
    };
    const route = req.method === 'GET' || req.method === 'HEAD' ? new URL(req.url ?? '/', 'http://probe').pathname : undefined;
    if (route === '/healthz') return send(200, { status: 'ok' });
    if (route === '/readyz') {
      const s = sources();
      if (!s) return send(503, { status: 'not_ready', database: 'down', temporal: 'down', worker: 'down' });
      checkReadiness(s).then(
        (r) => send(r.status === 'ready' ? 200 : 503, r),
        () => send(503, { status: 'not_ready', database: 'down', temporal: 'down', worker: 'down' }),
      );
      return;
    }
    send(404, { error: 'not_found' });
  };
}

export async function startHealthListener(opts: { host: string; port: number; sources: () => ReadinessSources | undefined }): Promise<HealthListener> {
  const server = createServer(healthHandler(opts.sources));
  // Probes are short; a supervisor's idle keep-alive socket must not hold the shutdown up.
  server.keepAliveTimeout = 5_000;
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(opts.port, opts.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const a = server.address() as AddressInfo;
  let closed: Promise<void> | undefined;
  return {
    address: `${a.family === 'IPv6' ? `[${a.address}]` : a.address}:${a.port}`,
    port: a.port,
    close() {
      closed ??= new Promise<void>((resolve) => {
        server.close(() => resolve());
        server.closeAllConnections();
      });
      return closed;
    },
  };
}
