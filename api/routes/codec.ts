import type { Payload, PayloadCodec } from '@temporalio/common';
import express, { Router, type RequestHandler } from 'express';
import type { z } from 'zod';
import type { ApiRole } from '../../db/schema.js';
import type { Db } from '../../db/client.js';
import { PayloadCodecError } from '../../temporal/codec.js';
import type { Config } from '../../temporal/config.js';
import { authenticate, requireRole } from '../auth.js';
import { badRequest } from '../errors.js';
import { codecBody } from '../schemas.js';
import { valid, validate } from '../validate.js';

/**
 * The codec endpoint (Temporal's remote codec protocol): `POST /codec/encode` and
 * `POST /codec/decode` take `{payloads: [{metadata: {key: base64}, data: base64}]}` (the proto3
 * JSON form of Payloads, so every bytes field is base64) and answer in the same shape. The
 * Temporal Web UI calls it from the operator's browser, the CLI with `--codec-endpoint`; both
 * send `X-Namespace`. Decoder errors are 400, as the protocol says.
 */

export interface CodecAccess {
  /** `none` only where nothing but this machine can reach the API and the cluster is our own dev server. */
  auth: 'token' | 'none';
  /** Browser origins (the Temporal UI) that get CORS headers; any other origin gets none. */
  origins: string[];
}

const loopbackHosts = new Set(['127.0.0.1', 'localhost', '::1']);

export function codecAccess(c: Config): CodecAccess {
  // No TEMPORAL_ADDRESS: we started the dev server ourselves (dev mode); its UI cannot send our
  // bearer tokens, and a loopback-only API is reachable from this machine alone.
  const devServer = !c.TEMPORAL_ADDRESS;
  const auth = c.ACCESSLOOP_CODEC_AUTH === 'auto' ? (devServer && loopbackHosts.has(c.HOST) ? 'none' : 'token') : c.ACCESSLOOP_CODEC_AUTH;
  // The dev server's UI is served on 127.0.0.1; the browser may call it by either loopback name.
  const origins = c.ACCESSLOOP_UI_ORIGIN ?? (devServer ? [`http://localhost:${c.TEMPORAL_UI_PORT}`, `http://127.0.0.1:${c.TEMPORAL_UI_PORT}`] : []);
  return { auth, origins };
}

type JsonPayload = z.output<typeof codecBody>['payloads'][number];

const fromJson = (p: JsonPayload): Payload => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v, 'base64')])),
  data: Buffer.from(p.data ?? '', 'base64'),
});
const toJson = (p: Payload) => ({
  metadata: Object.fromEntries(Object.entries(p.metadata ?? {}).map(([k, v]) => [k, Buffer.from(v).toString('base64')])),
  data: Buffer.from(p.data ?? new Uint8Array()).toString('base64'),
});

/** CORS for the UI origins only; preflights are answered here, before auth (browsers send no credentials on them). */
function uiCors(origins: string[]): RequestHandler {
  return (req, res, next) => {
    res.vary('Origin');
    const origin = req.get('origin');
    const allowed = origin !== undefined && origins.includes(origin);
    if (allowed) {
      res.set('Access-Control-Allow-Origin', origin);
      res.set('Access-Control-Allow-Credentials', 'true');
    }
    if (req.method !== 'OPTIONS') return next();
    if (allowed) {
      res.set('Access-Control-Allow-Methods', 'POST');
      res.set('Access-Control-Allow-Headers', 'Content-Type, X-Namespace, Authorization');
      res.set('Access-Control-Max-Age', '600');
    }
    res.status(204).end();
  };
}

export function codecRoutes(deps: { db: Db; config: Config; codecs: PayloadCodec[] }): Router {
  const { db, config, codecs } = deps;
  const access = codecAccess(config);
  const r = Router();
  r.use(uiCors(access.origins));
  // Decrypted payloads are workflow data: never cached by a browser or proxy.
  r.use((_req, res, next) => {
    res.set('Cache-Control', 'no-store');
    next();
  });
  const allow = (...roles: ApiRole[]): RequestHandler[] => (access.auth === 'token' ? [authenticate(db), requireRole(...roles)] : []);
  // Workflow payloads are a few KB; anything near this limit is not ours.
  const json = express.json({ limit: '1mb', strict: true });

  const route = (op: 'encode' | 'decode'): RequestHandler => async (req, res) => {
    const { body } = valid(res, { body: codecBody });
    let payloads = body.payloads.map(fromJson);
    // Our keys belong to our namespace. A UI pointed at this endpoint for every namespace gets
    // other namespaces' payloads back untouched rather than sealed with keys their workers lack.
    const namespace = req.get('x-namespace');
    if (namespace === undefined || namespace === config.TEMPORAL_NAMESPACE) {
      try {
        // The SDK's order: encode through codecs first to last, decode last to first.
        if (op === 'encode') for (const c of codecs) payloads = await c.encode(payloads);
        else for (const c of [...codecs].reverse()) payloads = await c.decode(payloads);
      } catch (e) {
        if (e instanceof PayloadCodecError) throw badRequest('codec_error', e.message);
        throw e;
      }
    }
    res.json({ payloads: payloads.map(toJson) });
  };
  // Decoding is reading workflow data (operators and auditors); encoding writes input the
  // workers will trust, such as a signal sent from the UI, so it is for operators only.
  r.post('/decode', ...allow('operator', 'auditor'), json, validate({ body: codecBody }), route('decode'));
  r.post('/encode', ...allow('operator'), json, validate({ body: codecBody }), route('encode'));
  return r;
}
