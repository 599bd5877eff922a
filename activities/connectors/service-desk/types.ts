/**
 * The service-desk contract (issue 12): what accessloop needs from a desk to take requests in,
 * follow them, write the story back and find tickets for reconciliation. One adapter per desk
 * (rt.ts is Request Tracker; docs/service-desk.md maps ServiceNow and Jira Service Management onto
 * the same shape). No workflow, database or API code lives here.
 *
 * Failures are ConnectorErrors (activities/connectors/types.ts), with the same retryable set as the
 * targets: an unreachable, overloaded or slow desk is retried (TargetUnavailable, Throttled,
 * Timeout); a refused token or right, bad config and bad input are not. A desk that answers
 * "ok" while refusing part of the change (RT does: 200/201 with a refusal in the message list) is
 * a failure too, never a silent success. Error messages are fixed phrases, HTTP statuses and
 * ticket ids: never the token, never ticket text (personal data).
 */

/** Where a ticket stands, whatever the desk calls its statuses. */
export type DeskState = 'open' | 'resolved' | 'rejected' | 'deleted';

/** The request's own fields, as accessloop names them (the desk's names are adapter config). */
export type DeskFieldKey = 'entitlement' | 'subject' | 'duration' | 'justification';
export const DESK_FIELD_KEYS: readonly DeskFieldKey[] = ['entitlement', 'subject', 'duration', 'justification'];

/** A ticket as the desk holds it now. */
export interface DeskTicket {
  /** The desk's id. RT follows merges, so this can differ from the ref that was asked for. */
  ref: string;
  /** The desk's own status word (RT: new, open, stalled, resolved, rejected, deleted). */
  status: string;
  state: DeskState;
  /**
   * Desk username of who created the ticket (RT: Creator, the token's owner). Not RT's Requestor,
   * which the creator may set to anyone.
   */
  requester: string;
  title: string;
  /** Empty or absent values are left out. */
  fields: Partial<Record<DeskFieldKey, string>>;
  due: Date | null;
  createdAt: Date;
  updatedAt: Date;
}

export type DeskEventKind = 'created' | 'reply' | 'comment' | 'status' | 'field' | 'due' | 'other';

/** Longest event text, in characters (code points) after trimming; longer text is cut. */
export const DESK_EVENT_TEXT_MAX = 4000;

/** One change on the desk, in the desk's own order. */
export interface DeskEvent {
  /** Opaque, strictly increasing in the order events() returns (RT: the transaction id). */
  cursor: string;
  ticketRef: string;
  kind: DeskEventKind;
  /** Desk username of who made the change (RT: the transaction's Creator; RT_System for scrips). */
  actor: string;
  at: Date;
  /** created, reply, comment: the text, trimmed, at most DESK_EVENT_TEXT_MAX characters. */
  text?: string;
  /**
   * field: the DeskFieldKey of the request field that changed (changes of other desk fields are
   * not events, or are `other`); status: 'status'; due: 'due'; other: the desk's name of the
   * change (RT: `Type` or `Type:Field`, e.g. `Set:Queue`).
   */
  field?: string;
  /** status: raw desk statuses; due: ISO 8601 (absent when unset); field: the values. */
  oldValue?: string;
  newValue?: string;
  /** status: the state newValue stands for. */
  state?: DeskState;
  /** Made by the integration's own desk user: the product ignores its own write-backs. */
  self: boolean;
}

export interface DeskPost {
  ticketRef: string;
  /**
   * Idempotency key of the write-back (letters, digits and . _ : / -, at most 200). The post is
   * skipped when a post of the integration's own user already carries it.
   */
  marker: string;
  text: string;
  /** internal: staff only (RT comment); requester: the requester sees it (RT correspond). */
  visibility: 'internal' | 'requester';
  /**
   * Status to set in the same call. RT reopens an inactive ticket on correspond, so a final reply
   * and its status must travel together or the ticket is left open.
   */
  state?: Exclude<DeskState, 'deleted'>;
}

export interface ServiceDesk {
  readonly kind: string;
  /**
   * Events after `cursor` (null: from the beginning of the queue), at most `limit` (1–1000),
   * oldest first. `next` is the cursor to resume from: the last event's, or `cursor` unchanged
   * when there is none.
   */
  events(cursor: string | null, limit: number): Promise<{ events: DeskEvent[]; next: string | null }>;
  /** The cursor of the newest event now (null: none yet), to start without replaying history. */
  head(): Promise<string | null>;
  /** null when the desk has no such ticket; a deleted ticket the desk still shows has state 'deleted'. */
  ticket(ref: string): Promise<DeskTicket | null>;
  /**
   * Idempotent by marker: posted is true when this call posted, false when the marker was there
   * already. A repeated post with a state completes a status the first call could not set, unless
   * someone else changed the status after it.
   */
  post(p: DeskPost): Promise<{ posted: boolean }>;
  /** Whether a post of the integration's own user on the ticket carries the marker (read-back). */
  hasMarker(ticketRef: string, marker: string): Promise<boolean>;
  close(): Promise<void>;
}
