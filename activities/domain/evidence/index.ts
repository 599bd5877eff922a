/*
 * Evidence bundles: one access request's whole story (request, policy, approvals, the lease,
 * its removal, credential facts and every audit event about it) as one JSON document that an
 * auditor verifies offline.
 *
 * Why the bundle can be trusted, in order:
 *  1. Every event carries all of its hashed fields, so anyone can recompute its hash with the
 *     product's own hashEvent (sha256 of prev_hash, "\n", canonical JSON of the fields).
 *  2. Where two included events are adjacent in seq, the later one's prev_hash must be the
 *     earlier one's hash.
 *  3. The audit chain is global (other requests' events interleave), so a hash alone proves
 *     nothing to someone holding only this file: an editor could recompute it. At export the
 *     API therefore re-verifies, from the database rows, the whole chain segment from the first
 *     included event to the current head (hashes, links, no missing seq), and records the head
 *     and every problem it found. A tampered row is never "laundered": it shows up as
 *     `verification.valid: false` with the seq named, and its stored hash stays in the bundle.
 *  4. The API signs the bundle (Ed25519, key generated once into the data dir or set by
 *     ACCESSLOOP_EVIDENCE_SIGNING_KEY). The public key and its fingerprint are embedded and
 *     served at GET /v1/evidence/public-key. The verifier checks the signature AND every hash.
 *
 * The modules: format.ts (the bundle schema), signing.ts (the key and the signature), checks.ts
 * (pure checks shared by the export and the verifier), facts.ts and export.ts (the export from
 * the database), verify.ts (the offline verifier).
 */

export { EVIDENCE_FORMAT, EVIDENCE_KEY_FILE, evidenceBundleSchema, type EvidenceBundle, type EvidenceEvent } from './format.js';
export { evidenceSignerFromSeed, loadEvidenceSigner, signBundle, type EvidenceSigner } from './signing.js';
export { exportEvidence } from './export.js';
export { formatEvidenceProblems, verifyEvidenceBundle, type EvidenceVerification } from './verify.js';
