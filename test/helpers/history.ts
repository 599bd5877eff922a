import type { Payload, PayloadCodec } from '@temporalio/common';

/**
 * Every Payload-shaped object ({metadata, data}) in a history, wherever it sits: event inputs,
 * results, update arguments, user metadata, search attributes. Works on both the SDK's proto
 * objects (Uint8Array fields) and the CLI's proto3 JSON (base64 strings).
 */
export function payloadsIn(history: unknown): Array<{ path: string; payload: Record<string, unknown> }> {
  const found: Array<{ path: string; payload: Record<string, unknown> }> = [];
  const walk = (v: unknown, at: string): void => {
    if (Array.isArray(v)) return v.forEach((x, i) => walk(x, `${at}[${i}]`));
    if (v === null || typeof v !== 'object' || v instanceof Uint8Array) return;
    const o = v as Record<string, unknown>;
    if ('metadata' in o && 'data' in o && o.metadata && typeof o.metadata === 'object') {
      found.push({ path: at, payload: o });
      return;
    }
    for (const [k, x] of Object.entries(o)) walk(x, `${at}.${k}`);
  };
  walk(history, '');
  return found;
}

const bytes = (v: unknown): Buffer => (typeof v === 'string' ? Buffer.from(v, 'base64') : v instanceof Uint8Array ? Buffer.from(v) : Buffer.alloc(0));

/** A payload's metadata value as text (base64 in CLI JSON, bytes in SDK objects). */
export const metadataText = (p: Record<string, unknown>, key: string) => bytes((p.metadata as Record<string, unknown>)[key]).toString('utf8');

/** Everything readable in a history without a key: the JSON itself plus every payload's data, base64-decoded. */
export function rawHistoryText(history: unknown): string {
  return [JSON.stringify(history), ...payloadsIn(history).map(({ payload }) => bytes(payload.data).toString('utf8'))].join('\n');
}

/** The same, after running every payload through the codecs (as our client and worker do). */
export async function decodedHistoryText(history: unknown, codecs: PayloadCodec[]): Promise<string> {
  const texts: string[] = [JSON.stringify(history)];
  for (const { payload } of payloadsIn(history)) {
    let ps: Payload[] = [{ metadata: Object.fromEntries(Object.entries(payload.metadata as Record<string, unknown>).map(([k, v]) => [k, bytes(v)])), data: bytes(payload.data) }];
    for (const c of [...codecs].reverse()) ps = await c.decode(ps);
    texts.push(Buffer.from(ps[0]!.data ?? []).toString('utf8'));
  }
  return texts.join('\n');
}
