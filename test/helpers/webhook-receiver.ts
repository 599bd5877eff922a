import { createHmac, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import type { AddressInfo } from 'node:net';

/** A delivery as the receiver saw it: raw body (for signature checks), headers and parsed JSON. */
export interface WebhookDelivery<T = unknown> {
  headers: http.IncomingHttpHeaders;
  body: string;
  json: T;
}

export interface WebhookReceiver {
  /** Where to point ACCESSLOOP_NOTIFY_WEBHOOK_URL. */
  url: string;
  close(): Promise<void>;
}

/** A local HTTP endpoint on 127.0.0.1 that records every POST into `deliveries` and answers 204. */
export async function startWebhookReceiver<T>(deliveries: Array<WebhookDelivery<T>>): Promise<WebhookReceiver> {
  const server = http.createServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      deliveries.push({ headers: req.headers, body, json: JSON.parse(body) as T });
      res.writeHead(204).end();
    });
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hooks`,
    close: () => new Promise<void>((r) => server.close(() => r())),
  };
}

/** Standard Webhooks verification done in the tests, independently of the product's signer (node:crypto only). */
export function signatureValid(d: Pick<WebhookDelivery, 'headers' | 'body'>, secret: Buffer): boolean {
  const expected = createHmac('sha256', secret).update(`${String(d.headers['webhook-id'])}.${String(d.headers['webhook-timestamp'])}.${d.body}`).digest();
  return String(d.headers['webhook-signature'] ?? '')
    .split(' ')
    .some((sig) => {
      const [v, b64] = sig.split(',');
      const given = Buffer.from(b64 ?? '', 'base64');
      return v === 'v1' && given.length === expected.length && timingSafeEqual(given, expected);
    });
}
