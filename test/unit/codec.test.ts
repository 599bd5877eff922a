import { randomBytes } from 'node:crypto';
import { defaultPayloadConverter, type Payload } from '@temporalio/common';
import { decodeFromPayloadsAtIndex, encodeToPayloads, loadDataConverter } from '@temporalio/common/lib/internal-non-workflow/index.js';
import { describe, expect, it } from 'vitest';
import { codecAccess } from '../../api/routes/codec.js';
import { AesGcmPayloadCodec, createDataConverter, keyRing, PayloadCodecError, type PayloadKeyRing } from '../../temporal/codec.js';
import { ConfigError, loadConfig } from '../../temporal/config.js';

const k1 = randomBytes(32);
const k2 = randomBytes(32);
const ringOf = (...keys: Array<[string, Buffer]>): PayloadKeyRing => keyRing(keys.map(([id, key]) => ({ id, key })));
const meta = (p: Payload, k: string) => (p.metadata?.[k] ? Buffer.from(p.metadata[k]).toString() : undefined);
const MARKER = 'approved for the Q3 incident, ticket CHG-77 — käse';
const value = { comment: MARKER, grantId: '3b1e2c4d-grant', n: 7 };
const plain = () => defaultPayloadConverter.toPayload(value);
/** Everything an attacker with the stored payload can read, as one string. */
const visible = (p: Payload) => `${Buffer.from(p.data ?? []).toString('latin1')} ${Object.values(p.metadata ?? {}).map((v) => Buffer.from(v).toString('latin1'))}`;

describe('AesGcmPayloadCodec', () => {
  it('round-trips a payload and stores only ciphertext, with the key id and cipher in metadata', async () => {
    const codec = new AesGcmPayloadCodec(ringOf(['k1', k1]));
    const [sealed] = await codec.encode([plain()]);
    expect(meta(sealed!, 'encoding')).toBe('binary/encrypted');
    expect(meta(sealed!, 'encryption-key-id')).toBe('k1');
    expect(meta(sealed!, 'encryption-cipher')).toBe('AES-256-GCM');
    // The inner payload (metadata included) is sealed: neither the value nor its encoding shows.
    expect(visible(sealed!)).not.toContain('Q3 incident');
    expect(visible(sealed!)).not.toContain('json/plain');
    const [opened] = await codec.decode([sealed!]);
    expect(defaultPayloadConverter.fromPayload(opened!)).toEqual(value);
    expect(meta(opened!, 'encoding')).toBe('json/plain');
  });

  it('uses a fresh IV per payload: the same value never yields the same ciphertext', async () => {
    const codec = new AesGcmPayloadCodec(ringOf(['k1', k1]));
    const [a, b] = await codec.encode([plain(), plain()]);
    expect(Buffer.from(a!.data!).subarray(0, 12).equals(Buffer.from(b!.data!).subarray(0, 12))).toBe(false);
    expect(Buffer.from(a!.data!).equals(Buffer.from(b!.data!))).toBe(false);
  });

  it('after rotation encrypts with the new key and still opens payloads sealed with the old one', async () => {
    const before = new AesGcmPayloadCodec(ringOf(['2025-01', k1]));
    const after = new AesGcmPayloadCodec(ringOf(['2025-07', k2], ['2025-01', k1]));
    const [old] = await before.encode([plain()]);
    const [fresh] = await after.encode([plain()]);
    expect(meta(fresh!, 'encryption-key-id')).toBe('2025-07');
    const opened = await after.decode([old!, fresh!]);
    expect(opened.map((p) => defaultPayloadConverter.fromPayload(p))).toEqual([value, value]);
  });

  it('names an unknown key id in the error and never the key material or the plaintext', async () => {
    const [sealed] = await new AesGcmPayloadCodec(ringOf(['retired-3', k1])).encode([plain()]);
    const other = new AesGcmPayloadCodec(ringOf(['current-4', k2]));
    const err = await other.decode([sealed!]).then(
      () => expect.unreachable('decoding with an unknown key id must fail'),
      (e: unknown) => e as Error,
    );
    expect(err).toBeInstanceOf(PayloadCodecError);
    expect(err.message).toMatch(/unknown key id "retired-3"/);
    for (const secret of [k1, k2]) for (const enc of ['hex', 'base64', 'base64url'] as const) expect(err.message).not.toContain(secret.toString(enc));
    expect(err.message).not.toContain('Q3 incident');
  });

  it('refuses tampered ciphertext, tag, IV or a swapped key id', async () => {
    const codec = new AesGcmPayloadCodec(ringOf(['k1', k1], ['k2', k2]));
    const [sealed] = await codec.encode([plain()]);
    const data = Buffer.from(sealed!.data!);
    const flip = (i: number) => {
      const d = Buffer.from(data);
      d[i] = d[i]! ^ 0x01;
      return { ...sealed!, data: d };
    };
    for (const tampered of [flip(0), flip(20), flip(data.length - 1), { ...sealed!, metadata: { ...sealed!.metadata, 'encryption-key-id': Buffer.from('k2') } }]) {
      await expect(codec.decode([tampered])).rejects.toThrowError(/failed authentication: it was altered or sealed with a different key/);
    }
    await expect(codec.decode([{ ...sealed!, data: data.subarray(0, 20) }])).rejects.toThrowError(/truncated/);
    await expect(codec.decode([{ ...sealed!, metadata: { ...sealed!.metadata, 'encryption-cipher': Buffer.from('XOR') } }])).rejects.toThrowError(/cipher "XOR"/);
  });

  it('passes payloads that were never encrypted through decode unchanged (histories from before encryption)', async () => {
    const codec = new AesGcmPayloadCodec(ringOf(['k1', k1]));
    const payloads = [plain(), defaultPayloadConverter.toPayload(undefined), defaultPayloadConverter.toPayload(new Uint8Array([1, 2, 3]))];
    const decoded = await codec.decode(payloads);
    decoded.forEach((p, i) => expect(p).toBe(payloads[i]));
  });

  it('with encryption off sends plaintext but still opens encrypted payloads', async () => {
    const ring = ringOf(['k1', k1]);
    const [sealed] = await new AesGcmPayloadCodec(ring).encode([plain()]);
    const off = new AesGcmPayloadCodec(ring, false);
    const p = plain();
    expect(await off.encode([p])).toEqual([p]);
    expect(defaultPayloadConverter.fromPayload((await off.decode([sealed!]))[0]!)).toEqual(value);
  });

  it('works as the SDK data converter: values go through payload converter and codec both ways', async () => {
    const converter = loadDataConverter(createDataConverter({ ACCESSLOOP_PAYLOAD_ENCRYPTION: true }, ringOf(['k1', k1])));
    const payloads = await encodeToPayloads(converter, value, 'second');
    expect(payloads?.map((p) => meta(p, 'encoding'))).toEqual(['binary/encrypted', 'binary/encrypted']);
    expect(await decodeFromPayloadsAtIndex(converter, 0, payloads)).toEqual(value);
    expect(await decodeFromPayloadsAtIndex(converter, 1, payloads)).toBe('second');
  });

  it('rejects a ring whose keys are not 32 bytes, with duplicate ids, or without its current key', () => {
    expect(() => keyRing([{ id: 'short', key: randomBytes(16) }])).toThrowError(/"short" must be 32 bytes/);
    expect(() => keyRing([{ id: 'a', key: k1 }, { id: 'a', key: k2 }])).toThrowError(/"a" appears twice/);
    expect(() => new AesGcmPayloadCodec({ currentKeyId: 'gone', keys: new Map([['k1', k1]]) })).toThrowError(/"gone" is not in the key ring/);
  });
});

describe('payload encryption configuration', () => {
  it('parses ACCESSLOOP_PAYLOAD_KEYS in order: the first key is current, the rest decrypt', () => {
    const c = loadConfig({ ACCESSLOOP_PAYLOAD_KEYS: `2025-07:${k2.toString('hex')}, 2025-01:${k1.toString('hex').toUpperCase()}` });
    expect(c.ACCESSLOOP_PAYLOAD_KEYS?.map((k) => k.id)).toEqual(['2025-07', '2025-01']);
    expect(c.ACCESSLOOP_PAYLOAD_KEYS?.[1]?.key.equals(k1)).toBe(true);
    expect(keyRing(c.ACCESSLOOP_PAYLOAD_KEYS!).currentKeyId).toBe('2025-07');
    expect(loadConfig({}).ACCESSLOOP_PAYLOAD_KEYS).toBeUndefined();
    expect(loadConfig({}).ACCESSLOOP_PAYLOAD_ENCRYPTION).toBe(true);
    expect(loadConfig({ ACCESSLOOP_PAYLOAD_ENCRYPTION: 'false' }).ACCESSLOOP_PAYLOAD_ENCRYPTION).toBe(false);
  });

  it('reports malformed or duplicate keys without echoing key material', () => {
    const shortKey = k1.toString('hex').slice(0, 40);
    const attempt = (v: string) => {
      try {
        loadConfig({ ACCESSLOOP_PAYLOAD_KEYS: v });
      } catch (e) {
        return e as Error;
      }
      throw new Error('expected a ConfigError');
    };
    const bad = attempt(`ok:${k1.toString('hex')},broken:${shortKey}`);
    expect(bad).toBeInstanceOf(ConfigError);
    expect(bad.message).toMatch(/ACCESSLOOP_PAYLOAD_KEYS: entry 2 must be <id>:<64 hex characters>/);
    expect(bad.message).not.toContain(shortKey);
    expect(bad.message).not.toContain(k1.toString('hex'));
    const dup = attempt(`a:${k1.toString('hex')},a:${k2.toString('hex')}`);
    expect(dup.message).toMatch(/key id "a" appears twice/);
    expect(dup.message).not.toContain(k2.toString('hex'));
  });

  it('accepts only bare origins for ACCESSLOOP_UI_ORIGIN', () => {
    expect(loadConfig({ ACCESSLOOP_UI_ORIGIN: 'https://temporal.example.com, http://localhost:8080' }).ACCESSLOOP_UI_ORIGIN).toEqual(['https://temporal.example.com', 'http://localhost:8080']);
    expect(() => loadConfig({ ACCESSLOOP_UI_ORIGIN: 'https://temporal.example.com/' })).toThrowError(/ACCESSLOOP_UI_ORIGIN: .*not an origin/);
    expect(() => loadConfig({ ACCESSLOOP_UI_ORIGIN: 'temporal.example.com' })).toThrowError(/not an origin/);
  });

  it('needs no codec token only with our own dev server on a loopback API; CORS defaults to its UI', () => {
    expect(codecAccess(loadConfig({}))).toEqual({ auth: 'none', origins: ['http://localhost:8233', 'http://127.0.0.1:8233'] });
    expect(codecAccess(loadConfig({ HOST: '0.0.0.0' })).auth).toBe('token');
    expect(codecAccess(loadConfig({ TEMPORAL_ADDRESS: 'temporal:7233' }))).toEqual({ auth: 'token', origins: [] });
    expect(codecAccess(loadConfig({ TEMPORAL_ADDRESS: 'temporal:7233', ACCESSLOOP_CODEC_AUTH: 'none', ACCESSLOOP_UI_ORIGIN: 'https://ui.example' }))).toEqual({ auth: 'none', origins: ['https://ui.example'] });
    expect(codecAccess(loadConfig({ ACCESSLOOP_CODEC_AUTH: 'token' })).auth).toBe('token');
  });
});
