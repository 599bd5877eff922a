import type { Tx } from './audit.js';

/** A rule's answer to the desk: done, or refused with the API's status, stable code and message (said back on the ticket). */
export type Outcome<T> = { ok: true; value: T } | { ok: false; status: number; code: string; message: string };

/**
 * The access-request rules the service desk acts through: the same checks, transactions and
 * workflow messages as the REST API (api/services), handed to the worker by the composition
 * root so activities never import the API layer. `channel` is the desk event that asked
 * (`desk:<deskId>:<cursor>`): the audit trail's request id, and the idempotency key of updates.
 */
export interface RequestOps {
  /** A ticket's request, as its creator (mapped to `requesterId`) would submit it; `onRecord` runs in the request row's transaction, before its audit event. */
  submit(s: { requesterId: string; subjectId?: string | undefined; entitlementId: string; durationSeconds?: number | undefined; justification: string; ticketRef: string; channel: string }, onRecord: (tx: Tx, requestId: string) => Promise<void>): Promise<Outcome<{ id: string }>>;
  decide(d: { requestId: string; approverId: string; decision: 'approve' | 'reject'; comment?: string | undefined; channel: string }): Promise<Outcome<{ status: string }>>;
  /** Moves the lease's end to `expiresAt` (later: an extension within policy; earlier: a shortening), as `actorId` would through the API. */
  setExpiry(a: { requestId: string; actorId: string; expiresAt: Date; justification: string; channel: string }): Promise<Outcome<{ expiresAt: string; pendingApproval?: boolean }>>;
  /** Ends the access because its ticket was rejected or deleted (reason `ticket`); `deskActor` is the desk user who did it. */
  revokeForTicket(a: { requestId: string; deskName: string; deskActor: string; channel: string }): Promise<Outcome<{ id: string }>>;
  /**
   * Reconciliation's adoption of a membership no grant explains (docs/micro-reviews.md): a lease
   * of the holder with approvals skipped (the membership exists already), whose workflow opens a
   * micro-review of it. Refused (`duplicate_request`) while the holder has an open request for it.
   */
  adopt(a: { subjectId: string; entitlementId: string; findingId: string; runId: string }): Promise<Outcome<{ id: string }>>;
}
