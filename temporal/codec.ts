import { createCipheriv, createDecipheriv, randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import type { DataConverter, Payload, PayloadCodec } from '@temporalio/common';
// A CommonJS module whose exports Node's ESM loader cannot list: take the default export.
import proto from '@temporalio/proto';
import type { Config } from './config.js';

/**
 * Payload encryption: the one data converter and payload codec (docs/architecture.md#9-security-properties).
 *
 * Workflow inputs, update arguments (approver comments), activity inputs and results, and the
 * static summary/details all reach Temporal as payloads. This codec seals each one with
 * AES-256-GCM before it leaves the process, so the cluster's history store holds ciphertext;
 * the worker, our API client and the codec endpoint (for the Temporal UI and CLI) open them.
 *
 * What is sealed is the whole serialized inner payload (its metadata and data), so even the
 * encoding of a value (json/plain, binary/null, …) is hidden. Search attributes are not
 * payloads that pass through codecs: the server must index them. Ours hold only opaque ids
 * and states by design (docs/architecture.md#5-workflows-and-their-messages), so they stay plaintext.
 *
 * Wire format: data = IV (12 bytes, fresh per payload) ‖ ciphertext ‖ GCM tag (16 bytes);
 * metadata: encoding `binary/encrypted`, `encryption-cipher: AES-256-GCM`,
 * `encryption-key-id: <id>`. The key id selects the key on decode, which is what makes
 * rotation work: new payloads use the current key, older ones keep opening with the key
 * they name for as long as that key stays in the ring.
 */
export const ENCRYPTED_ENCODING = 'binary/encrypted';
export const CIPHER_METADATA_KEY = 'encryption-cipher';
export const KEY_ID_METADATA_KEY = 'encryption-key-id';
export const CIPHER = 'AES-256-GCM';
/** The key id of the key generated into the data dir when ACCESSLOOP_PAYLOAD_KEYS is unset. */
export const LOCAL_PAYLOAD_KEY_ID = 'local-1';

const ProtoPayload = proto.temporal.api.common.v1.Payload;
const IV_BYTES = 12;
const TAG_BYTES = 16;
const KEY_BYTES = 32;

export interface PayloadKeyRing {
  /** Encrypts every new payload. */
  currentKeyId: string;
  /** Every key that may still decrypt (the current one and those rotated out). */
  keys: ReadonlyMap<string, Buffer>;
}

/** A payload that cannot be opened. Messages name the key id, never key material or plaintext. */
export class PayloadCodecError extends Error {
  override name = 'PayloadCodecError';
}

/** Builds a ring from an ordered key list: the first key is current, the rest decrypt only. */
export function keyRing(keys: ReadonlyArray<{ id: string; key: Buffer }>): PayloadKeyRing {
  if (keys.length === 0) throw new PayloadCodecError('a payload key ring needs at least one key');
  const map = new Map<string, Buffer>();
  for (const { id, key } of keys) {
    if (key.length !== KEY_BYTES) throw new PayloadCodecError(`payload key "${id}" must be ${KEY_BYTES} bytes`);
    if (map.has(id)) throw new PayloadCodecError(`payload key id "${id}" appears twice`);
    map.set(id, key);
  }
  return { currentKeyId: keys[0]!.id, keys: map };
}

const utf8 = (s: string) => Buffer.from(s, 'utf8');
const text = (b: Uint8Array | null | undefined) => (b ? Buffer.from(b).toString('utf8') : undefined);

export class AesGcmPayloadCodec implements PayloadCodec {
  private readonly current: { id: string; key: Buffer };
  private readonly keyIdBytes: Uint8Array;

  /**
   * @param encrypt false keeps the codec decode-only: new payloads go out in plaintext while
   * histories written with encryption on still open, so turning it off strands no workflow.
   */
  constructor(
    private readonly ring: PayloadKeyRing,
    private readonly encrypt = true,
  ) {
    const key = ring.keys.get(ring.currentKeyId);
    if (!key) throw new PayloadCodecError(`the current payload key id "${ring.currentKeyId}" is not in the key ring`);
    this.current = { id: ring.currentKeyId, key };
    this.keyIdBytes = utf8(ring.currentKeyId);
  }

  async encode(payloads: Payload[]): Promise<Payload[]> {
    if (!this.encrypt) return payloads;
    return payloads.map((p) => this.seal(p));
  }

  async decode(payloads: Payload[]): Promise<Payload[]> {
    return payloads.map((p) => this.open(p));
  }

  private seal(payload: Payload): Payload {
    const iv = randomBytes(IV_BYTES);
    const cipher = createCipheriv('aes-256-gcm', this.current.key, iv);
    const inner = ProtoPayload.encode(payload).finish();
    const sealed = Buffer.concat([iv, cipher.update(inner), cipher.final(), cipher.getAuthTag()]);
    return {
      metadata: {
        encoding: utf8(ENCRYPTED_ENCODING),
        [CIPHER_METADATA_KEY]: utf8(CIPHER),
        [KEY_ID_METADATA_KEY]: this.keyIdBytes,
      },
      data: sealed,
    };
  }

  private open(payload: Payload): Payload {
    // Histories written before encryption was turned on hold plaintext payloads: they pass
    // through, so running workflows survive enabling it.
    if (text(payload.metadata?.encoding) !== ENCRYPTED_ENCODING) return payload;
    const cipherName = text(payload.metadata?.[CIPHER_METADATA_KEY]);
    if (cipherName !== CIPHER) throw new PayloadCodecError(`encrypted payload uses cipher "${cipherName ?? '(none)'}"; this codec opens ${CIPHER} only`);
    const keyId = text(payload.metadata?.[KEY_ID_METADATA_KEY]);
    if (!keyId) throw new PayloadCodecError('encrypted payload names no encryption key id');
    const key = this.ring.keys.get(keyId);
    if (!key) throw new PayloadCodecError(`encrypted payload uses unknown key id "${keyId}"; add that key to ACCESSLOOP_PAYLOAD_KEYS (as an older key) to decrypt it`);
    const data = payload.data ?? new Uint8Array();
    if (data.length < IV_BYTES + TAG_BYTES) throw new PayloadCodecError(`encrypted payload (key id "${keyId}") is truncated`);
    const iv = data.subarray(0, IV_BYTES);
    const tag = data.subarray(data.length - TAG_BYTES);
    const decipher = createDecipheriv('aes-256-gcm', key, iv);
    decipher.setAuthTag(tag);
    let inner: Buffer;
    try {
      inner = Buffer.concat([decipher.update(data.subarray(IV_BYTES, data.length - TAG_BYTES)), decipher.final()]);
    } catch {
      // GCM authenticates: any flipped bit in IV, ciphertext or tag, or the wrong key, lands here.
      throw new PayloadCodecError(`encrypted payload (key id "${keyId}") failed authentication: it was altered or sealed with a different key`);
    }
    return ProtoPayload.decode(inner);
  }
}

/**
 * The failure converter module (temporal/failure-converter.cjs): failure messages and stack
 * traces become a payload, so the codec below seals them too. Next to this file in the source
 * tree and in dist/temporal/ (temporal/build.ts copies it). The worker also bundles it into the
 * workflow code (temporal/worker.ts workflowBundle()), where workflow-side failures are made.
 */
export const failureConverterPath = fileURLToPath(new URL('./failure-converter.cjs', import.meta.url));

/**
 * The one data converter definition: the API's client, the worker and the codec endpoint all
 * get their codec from here (the endpoint reuses the client's), so what one seals the others
 * open. Failures are encoded (`encodeCommonAttributes`) whether or not encryption is on: the
 * workflow bundle holds one failure converter, and decoding accepts both forms, so histories
 * written before this keep replaying and old failures keep reading.
 */
export function createDataConverter(config: Pick<Config, 'ACCESSLOOP_PAYLOAD_ENCRYPTION'>, ring: PayloadKeyRing): DataConverter {
  return { payloadCodecs: [new AesGcmPayloadCodec(ring, config.ACCESSLOOP_PAYLOAD_ENCRYPTION)], failureConverterPath };
}
