import { Router, type RequestHandler } from 'express';
import { createCheckpoint, listCheckpoints } from '../../activities/domain/checkpoints.js';
import { exportEvidence, loadEvidenceSigner, type EvidenceSigner } from '../../activities/domain/evidence/index.js';
import type { Db } from '../../db/client.js';
import type { Config } from '../../temporal/config.js';
import { actorRef, hasRole, principalOf } from '../auth.js';
import { forbidden, notFound } from '../errors.js';
import { checkpointsQuery, evidenceParams } from '../schemas.js';
import { valid, validate } from '../validate.js';

export interface EvidenceRouteDeps {
  db: Db;
  config: Pick<Config, 'ACCESSLOOP_DATA_DIR' | 'ACCESSLOOP_EVIDENCE_SIGNING_KEY'>;
}

/**
 * Evidence bundles for auditors. `publicKey` is mounted before authentication: the key that
 * signs bundles is public, so anyone can fetch it and compare fingerprints.
 */
export function evidenceRoutes({ db, config }: EvidenceRouteDeps): { router: Router; publicKey: RequestHandler } {
  // Loaded on first use (createApp is synchronous); a failed load is retried on the next call.
  let signer: Promise<EvidenceSigner> | undefined;
  const getSigner = () => {
    signer ??= loadEvidenceSigner({ key: config.ACCESSLOOP_EVIDENCE_SIGNING_KEY, dataDir: config.ACCESSLOOP_DATA_DIR }).catch((e) => {
      signer = undefined;
      throw e;
    });
    return signer;
  };

  const publicKey: RequestHandler = async (_req, res) => {
    const s = await getSigner();
    res.json({ algorithm: s.algorithm, publicKey: s.publicKeyPem, fingerprint: s.fingerprint });
  };

  const r = Router();
  // The audit log's signed checkpoints (docs/audit.md): auditors keep copies outside the database.
  r.get('/checkpoints', validate({ query: checkpointsQuery }), async (req, res) => {
    if (!hasRole(principalOf(req), 'auditor', 'operator')) throw forbidden('auditors and operators only');
    const { query } = valid(res, { query: checkpointsQuery });
    res.set('Cache-Control', 'no-store').json({ items: await listCheckpoints(db, query.limit) });
  });
  r.post('/checkpoints', async (req, res) => {
    if (!hasRole(principalOf(req), 'operator')) throw forbidden('operators only');
    const { checkpoint, created } = await createCheckpoint(db, await getSigner());
    res.status(created ? 201 : 200).json(checkpoint);
  });
  r.get('/:requestId', validate({ params: evidenceParams }), async (req, res) => {
    const p = principalOf(req);
    const { params } = valid(res, { params: evidenceParams });
    // Like every request read: callers who may not see it learn nothing, not even that it exists.
    if (!hasRole(p, 'auditor', 'operator')) throw notFound('access request');
    const bundle = await exportEvidence(db, await getSigner(), params.requestId, { exportedBy: actorRef(p) });
    if (!bundle) throw notFound('access request');
    res.set('Cache-Control', 'no-store');
    res.json(bundle);
  });
  return { router: r, publicKey };
}
