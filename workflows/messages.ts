import { defineQuery, defineSignal, defineUpdate } from '@temporalio/workflow';

// Sandbox-safe message definitions shared by the workflow and the API client.

export type RequestState =
  | 'pending_approval'
  | 'rejected'
  | 'expired_unapproved'
  | 'cancelled'
  | 'scheduled'
  | 'granting'
  | 'active'
  | 'revoking'
  | 'revocation_unverified'
  | 'revoked'
  | 'failed';

/** Also the database enum; `sentinel`: removed by the independent sentinel, not by the lease's workflow. */
export type RevokeReason = 'expired' | 'leaver' | 'mover' | 'review' | 'manual' | 'reconciliation' | 'sentinel' | 'ticket';

export interface LifecycleTiming {
  /** A removal not verified by then turns the lease `revocation_unverified` (retries continue). */
  revokeVerifyDeadlineSeconds: number;
  /** Backoff ceiling between read-backs once overdue. */
  verifyMaxIntervalSeconds: number;
  /** Used when the entitlement's policy sets no approval timeout. */
  defaultApprovalTimeoutSeconds: number;
  /** A leaver whose removals are not all verified by then raises an alert (the wait goes on); default revokeVerifyDeadlineSeconds × 2. */
  leaverAlertAfterSeconds?: number;
}

/** Versioned single input object; only opaque ids, never names or e-mails (history is visible in the UI). */
export interface AccessRequestInput {
  version: 1;
  requestId: string;
  /** The lease id, allocated by the API so every write is idempotent from the first attempt. */
  grantId: string;
  requesterId: string;
  subjectId: string;
  entitlementId: string;
  systemId: string;
  durationSeconds: number;
  /** ISO time before which access must not be granted (approval may come earlier). */
  startAt?: string;
  /** A confirmed break-glass (docs/break-glass.md): approvals skipped, the lease as usual. Absent in every earlier run. */
  breakGlass?: true;
  /**
   * Access that exists already and is brought under a lease, approvals skipped (absent in every
   * earlier run): a membership reconciliation found with no grant, adopted under a micro-review
   * (docs/micro-reviews.md), or existing access imported by an operator (docs/import.md).
   */
  adopted?: { from: 'reconciliation'; findingId: string } | { from: 'import' };
  timing: LifecycleTiming;
}

export interface DecisionArgs {
  approverId: string;
  decision: 'approve' | 'reject';
  comment?: string;
  /** Set by action links: the decision is only for this stage. */
  stage?: number;
  /** The API request that carried the decision; recorded in its audit event. */
  httpRequestId?: string;
}
export interface DecisionResult {
  status: RequestState;
}

export interface ExtendArgs {
  actorId: string;
  durationSeconds: number;
  justification: string;
  httpRequestId?: string;
}
export interface ExtendResult {
  expiresAt: string;
  /** Policy requires re-approval: the expiry moves once the stages approve. */
  pendingApproval?: boolean;
}

export interface RevokeArgs {
  reason: RevokeReason;
  /** Opaque actor ref; the Temporal UI sender may leave it out. */
  actorId?: string;
  comment?: string;
  httpRequestId?: string;
}

export interface RequestStateView {
  requestId: string;
  status: RequestState;
  policyVersion?: string;
  stage?: { number: number; approverIds: string[]; dueAt: string };
  decision?: { approverId: string; decision: 'approve' | 'reject'; at: string };
  grantedAt?: string;
  startAt?: string;
  expiresAt?: string;
  revokeReason?: RevokeReason;
  revokeRequestedAt?: string;
  removalVerifiedAt?: string;
  removalAttempts: number;
  lastError?: string;
  /** Signals dropped because their input did not parse (./message-schemas.ts). */
  ignoredSignals?: number;
  /** The lease's current credential (password, SSH certificate): a reference, never the material. */
  credential?: CredentialView;
}

export interface CredentialView {
  id: string;
  kind: 'password' | 'ssh_certificate';
  notAfter: string;
}

/** An earlier end for a live lease (a service-desk ticket's end date moved forward): never later than now's expiry, never in the past. */
export interface ShortenArgs {
  actorId: string;
  /** ISO 8601; must lie between now and the lease's current expiry. */
  expiresAt: string;
  justification: string;
  httpRequestId?: string;
}

export interface RotateArgs {
  actorId: string;
  httpRequestId?: string;
}

export const decideUpdate = defineUpdate<DecisionResult, [DecisionArgs]>('decide');
export const extendUpdate = defineUpdate<ExtendResult, [ExtendArgs]>('extend');
export const shortenUpdate = defineUpdate<ExtendResult, [ShortenArgs]>('shorten');
export const revokeSignal = defineSignal<[RevokeArgs]>('revoke');
/** A new secret for the lease's credential; the old one stops working. */
export const rotateCredentialUpdate = defineUpdate<CredentialView, [RotateArgs]>('rotateCredential');

/** A mover's requested access goes back to the subject's (new) manager; unapproved by the deadline, it is revoked. */
export interface ReviewArgs {
  reason: 'mover';
  /** Seconds the reviewer has before the lease is revoked. */
  deadlineSeconds: number;
}
export const reviewSignal = defineSignal<[ReviewArgs]>('review');
export const stateQuery = defineQuery<RequestStateView>('state');

/** Stable failure types raised by update validators; the API maps them to HTTP statuses. */
export const UpdateRejection = {
  NotPending: 'NotPending',
  NotEligible: 'NotEligible',
  SelfApproval: 'SelfApproval',
  NotActive: 'NotActive',
  OutsidePolicy: 'OutsidePolicy',
  NoCredential: 'NoCredential',
  /** The input does not parse (./message-schemas.ts): malformed, not merely refused. */
  InvalidInput: 'InvalidInput',
} as const;

// ---- identity lifecycle (HR joiner-mover-leaver) ------------------------------------------------

export type HrEventType = 'joiner' | 'mover' | 'leaver' | 'rehire' | 'update';

/** What the workflow learns of an HR event: ids and ordering only; the payload stays in the inbox. */
export interface HrEventRef {
  eventId: string;
  type: HrEventType;
  sequence: number;
  effectiveAt: string;
}

export interface IdentityInput {
  version: 1;
  identityId: string;
  timing: LifecycleTiming;
  /** Carried across continue-as-new: events not yet due, ids already handled, timers. */
  pending?: HrEventRef[];
  seen?: string[];
  reconcileAt?: number;
  contractEndAt?: number;
}

export interface IdentityStateView {
  identityId: string;
  status: 'unknown' | 'active' | 'terminated' | 'suspended';
  pendingEvents: HrEventRef[];
  processed: number;
  lastEvent?: { eventId: string; type: HrEventType; outcome: string };
  birthrightReconcileAt?: string;
  contractEndAt?: string;
  leaver?: {
    eventId: string;
    phase: 'revoking' | 'verifying' | 'disabling' | 'done';
    grants: number;
    /** Request workflows the revoke could not be signalled to (their removals are still awaited). */
    unsignalled?: string[];
    /** Set once the stuck-leaver alert was raised. */
    alertedAt?: string;
  };
  /** HR event signals dropped because their input did not parse. */
  ignoredSignals?: number;
  /** Steps that failed and were recorded instead of failing the workflow: opaque refs and error types only. */
  failures?: Array<{ step: 'grant_birthright' | 'enable_accounts' | 'disable_accounts' | 'signal_review' | 'signal_revoke' | 'open_review'; ref: string; errorType: string; at: string }>;
}

export const hrEventSignal = defineSignal<[HrEventRef]>('hrEvent');
export const identityStateQuery = defineQuery<IdentityStateView>('identityState');

// ---- access reviews (issue 13) ------------------------------------------------------------------

/** One workflow per review campaign; its items are database rows, never history. */
export interface ReviewCampaignInput {
  version: 1;
  campaignId: string;
  /** Seconds between checks while revocations it caused await verification (default 3). */
  verifyPollSeconds?: number;
  /** Carried across continue-as-new: the last-use read-out ran already. */
  lastUseRecorded?: boolean;
}

export interface ReviewCampaignStateView {
  campaignId: string;
  status: 'open' | 'closing' | 'closed' | 'cancelled';
  pending: number;
  revokesInFlight: number;
  ticks: number;
  /** Revoke signals that could not be delivered (the lease workflow had closed). */
  undeliveredRevokes: number;
  nextWakeAt?: string;
}

/** Sent after decisions (and delegations): the campaign looks at its rows now, not at its next timer. */
export const reviewItemsChangedSignal = defineSignal<[]>('reviewItemsChanged');
export const reviewCampaignStateQuery = defineQuery<ReviewCampaignStateView>('reviewCampaignState');
