import type { z } from 'zod';
import { actorRef, type Principal } from '../auth.js';
import { HttpError } from '../errors.js';
import type { importLeasesBody } from '../schemas.js';
import type { Submission, Submitted } from './submission.js';

/** Items submitted at once: each is a transaction and a workflow start, so a few overlap, not hundreds. */
const IMPORT_CONCURRENCY = 8;
/** An expiry closer than this would end before its grant is read back: refused, not imported. */
const MIN_IMPORT_SECONDS = 5;

export type ImportResult = { index: number; status: 'imported'; id: string; workflowId: string } | { index: number; status: 'error'; error: { code: string; message: string } };

/**
 * Bringing access that exists already under accessloop (docs/import.md), for a migration from
 * another tool or a first roll-out: each item becomes a lease of its holder with the expiry the
 * operator gives, approvals skipped (the access was decided elsewhere; the import is what is
 * audited), granted idempotently on the target and read back like any lease. Items are answered
 * one by one: a refusal (unknown identity, over the entitlement's maximum, an open request for
 * the same access) leaves the others standing and writes nothing for itself.
 */
export function createLeaseImport(deps: { submit: (s: Submission) => Promise<Submitted> }) {
  return async function importLeases(a: { principal: Principal; httpRequestId: string }, body: z.output<typeof importLeasesBody>): Promise<{ imported: number; results: ImportResult[] }> {
    const now = Date.now();
    const actor = { actorType: a.principal.identityId ? ('identity' as const) : ('client' as const), actorId: actorRef(a.principal) };
    const results: ImportResult[] = new Array(body.items.length);
    let next = 0;
    async function lane(): Promise<void> {
      for (let index = next++; index < body.items.length; index = next++) {
        const item = body.items[index]!;
        const durationSeconds = Math.ceil((Date.parse(item.expiresAt) - now) / 1000);
        if (durationSeconds < MIN_IMPORT_SECONDS) {
          results[index] = { index, status: 'error', error: { code: 'invalid_expiry', message: `expiresAt must be at least ${MIN_IMPORT_SECONDS} seconds from now` } };
          continue;
        }
        try {
          const done = await deps.submit({
            // The holder is, formally, the requester; the audit trail names the importing operator.
            principal: { tokenId: 'import', identityId: item.subjectId, clientName: null, roles: ['requester'] },
            body: { subjectId: item.subjectId, entitlementId: item.entitlementId, durationSeconds, justification: item.justification, ...(item.ticketRef ? { ticketRef: item.ticketRef } : {}) },
            httpRequestId: `${a.httpRequestId}/${index}`,
            channel: 'import',
            adopted: { from: 'import' },
            actor,
          });
          results[index] = { index, status: 'imported', id: done.id, workflowId: done.workflowId };
        } catch (e) {
          if (!(e instanceof HttpError) || e.status >= 500) throw e;
          results[index] = { index, status: 'error', error: { code: e.code, message: e.message } };
        }
      }
    }
    await Promise.all(Array.from({ length: Math.min(IMPORT_CONCURRENCY, body.items.length) }, lane));
    return { imported: results.filter((r) => r.status === 'imported').length, results };
  };
}
