/**
 * A trivial HTTP round-robin in front of several API replicas (node:http only), standing in for
 * the load balancer of a scaled-out deployment: each request goes to the next upstream that has
 * not just refused a connection.
 *
 * Failover is deliberately conservative, like a plain L7 balancer without retry budgets:
 * - GET/HEAD are replayed once on the next upstream when the first one fails before it answers
 *   (connection refused or reset): they change nothing, so a second try is always safe.
 * - Any other method gets a 502 and the client decides. A POST may have reached the replica and
 *   committed before the connection broke; only the client knows whether its request can be
 *   repeated. accessloop's own POSTs mostly can: an HR event carries its webhook-id (a repeat is
 *   a duplicate), a decision repeated is refused with 409 not_pending, an extend or revoke repeated
 *   appends a second audited request. A new access request repeated is a second request.
 * An upstream that refused or reset is skipped for `downForMs`, then tried again (a replica
 * restarted on the same port comes back on its own).
 */
import http from 'node:http';

export interface RoundRobinStats {
  /** Requests answered by an upstream. */
  forwarded: number;
  /** GET/HEAD replayed on another upstream after the first one failed. */
  retried: number;
  /** Requests answered with 502 (a non-idempotent request that failed, or a replay that failed too). */
  badGateway: number;
}

export interface RoundRobin {
  url: string;
  stats: RoundRobinStats;
  stop(): Promise<void>;
}

const IDEMPOTENT = new Set(['GET', 'HEAD']);
/** Per-connection headers (RFC 9110 §7.6.1): never forwarded. */
const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'te', 'trailer', 'upgrade']);

function endToEnd(headers: http.IncomingHttpHeaders): http.OutgoingHttpHeaders {
  return Object.fromEntries(Object.entries(headers).filter(([k]) => !HOP_BY_HOP.has(k.toLowerCase())));
}

export async function startRoundRobin(upstreams: string[], opts: { downForMs?: number } = {}): Promise<RoundRobin> {
  if (upstreams.length === 0) throw new Error('round-robin needs at least one upstream');
  const downForMs = opts.downForMs ?? 1_000;
  const targets = upstreams.map((u) => ({ url: new URL(u), downUntil: 0 }));
  const stats: RoundRobinStats = { forwarded: 0, retried: 0, badGateway: 0 };
  // A fresh connection per request: a pooled socket the replica closes as idle just when it is
  // reused fails like a dead replica would, and would turn a healthy POST into a 502.
  const agent = new http.Agent({ keepAlive: false });
  let next = 0;

  /** The next upstream in turn that is not marked down; when all are, the next one anyway. */
  function pick(exclude?: (typeof targets)[number]) {
    const now = Date.now();
    for (let i = 0; i < targets.length; i++) {
      const t = targets[(next + i) % targets.length]!;
      if (t.downUntil <= now && t !== exclude) {
        next = (next + i + 1) % targets.length;
        return t;
      }
    }
    const t = targets[next % targets.length]!;
    next = (next + 1) % targets.length;
    return t;
  }

  function badGateway(res: http.ServerResponse, message: string) {
    stats.badGateway++;
    if (res.headersSent) return void res.destroy();
    res.writeHead(502, { 'content-type': 'application/json' }).end(JSON.stringify({ error: { code: 'bad_gateway', message } }));
  }

  function forward(req: http.IncomingMessage, res: http.ServerResponse, target: (typeof targets)[number], replayed: boolean) {
    const idempotent = IDEMPOTENT.has(req.method ?? 'GET');
    let answered = false;
    const up = http.request({ hostname: target.url.hostname, port: target.url.port, method: req.method, path: req.url, headers: endToEnd(req.headers), agent }, (ur) => {
      answered = true;
      stats.forwarded++;
      res.writeHead(ur.statusCode ?? 502, endToEnd(ur.headers));
      ur.pipe(res);
      // The replica died mid-body: the client must see a broken response, not a short one.
      ur.on('aborted', () => res.destroy());
      ur.on('error', () => res.destroy());
    });
    up.on('error', (err: NodeJS.ErrnoException) => {
      if (answered) return void res.destroy();
      target.downUntil = Date.now() + downForMs;
      if (idempotent && !replayed && targets.length > 1) {
        stats.retried++;
        return forward(req, res, pick(target), true);
      }
      badGateway(res, `upstream ${target.url.host}: ${err.code ?? err.message}`);
    });
    // The client gave up: stop waiting on the upstream too.
    res.on('close', () => {
      if (!res.writableFinished) up.destroy();
    });
    if (idempotent) up.end();
    else req.pipe(up);
  }

  const server = http.createServer((req, res) => forward(req, res, pick(), false));
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const addr = server.address();
  const port = typeof addr === 'object' && addr ? addr.port : 0;
  return {
    url: `http://127.0.0.1:${port}`,
    stats,
    async stop() {
      const closed = new Promise<void>((resolve) => server.close(() => resolve()));
      server.closeAllConnections();
      agent.destroy();
      await closed;
    },
  };
}
