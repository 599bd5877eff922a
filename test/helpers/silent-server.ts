import net from 'node:net';

/**
 * A TCP server on 127.0.0.1 that accepts connections and never answers: the shape of a hung
 * target, for checking that connectors time out (retryably) instead of waiting forever.
 */
export async function withSilentServer<T>(fn: (port: number) => Promise<T>): Promise<T> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer((s) => {
    sockets.add(s);
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  try {
    const addr = server.address();
    return await fn(typeof addr === 'object' && addr ? addr.port : 0);
  } finally {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  }
}
