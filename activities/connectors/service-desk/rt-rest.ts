/**
 * Request Tracker 5 REST 2.0 as observed on the private RT of the tests (docs/rt.md): the answers
 * the adapter reads, parsed strictly enough that another shape fails loudly instead of reading
 * as "no tickets"; RT's own words for a status change; its date and query formats.
 */
import { z } from 'zod';
import type { ConnectorErrorType } from '../types.js';

const rtId = z.union([z.string(), z.number()]).transform(String);
const userRef = z.object({ id: z.string() });
export const txnSchema = z.object({
  id: rtId,
  Type: z.string().default(''),
  ObjectId: rtId.optional(),
  Creator: userRef.optional(),
  Field: z.string().nullish(),
  OldValue: z.string().nullish(),
  NewValue: z.string().nullish(),
  Created: z.string().optional(),
});
export type Txn = z.infer<typeof txnSchema>;
export const txnPageSchema = z.object({ items: z.array(txnSchema) });
export const attachmentsSchema = z.object({ items: z.array(z.object({ Content: z.string().nullish(), ContentType: z.string().nullish() })) });
export const queueSchema = z.object({ id: rtId, TicketCustomFields: z.array(z.object({ id: rtId, name: z.string() })).default([]) });
export const ticketSchema = z.object({
  id: rtId,
  Status: z.string(),
  Subject: z.string().nullish(),
  Creator: userRef,
  Created: z.string(),
  LastUpdated: z.string(),
  Due: z.string().nullish(),
  CustomFields: z.array(z.object({ id: rtId, values: z.array(z.string()).nullish() })).default([]),
});
export const messagesSchema = z.array(z.string());
export const errorSchema = z.object({ message: z.string() });

// RT's English answers to a status change, one message in the list of a comment, a reply or an
// update. "Can't change from X to X" is what a call asking for the current status gets.
export const STATUS_CHANGED = /^(?:Ticket \d+: )?Status changed from '(.*)' to '(.*)'$/;
export const STATUS_UNCHANGED = /^(?:Ticket \d+: )?You can't change status from '(.*)' to '(.*)'\.$/;
export const REFUSALS: [RegExp, ConnectorErrorType, string][] = [
  [/Permission Denied/i, 'PermissionDenied', 'permission denied'],
  [/isn't a valid status/, 'InvalidInput', 'not a status of the queue lifecycle'],
  [/You can't change status/, 'InvalidInput', 'transition not in the queue lifecycle'],
  [/unresolved dependencies/, 'InvalidInput', 'the ticket has unresolved dependencies'],
];

/** A TicketSQL string literal. */
export function sqlString(value: string): string {
  return `'${value.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`;
}

export function restBase(url: string): string {
  const base = url.replace(/\/+$/, '');
  return /\/REST\/2\.0$/i.test(base) ? base : `${base}/REST/2.0`;
}

/** RT's unset dates are the epoch. */
export function rtDate(iso: string | null | undefined): Date | null {
  if (!iso) return null;
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) || d.getTime() === 0 ? null : d;
}

/** Transaction values of dates are database time, 'YYYY-MM-DD HH:MM:SS' in UTC. */
export function isoOfDbDate(value: string | null | undefined): string | undefined {
  const m = /^(\d{4}-\d\d-\d\d) (\d\d:\d\d:\d\d)$/.exec(value ?? '');
  if (!m) return value || undefined;
  return rtDate(`${m[1]}T${m[2]}Z`)?.toISOString();
}

export function htmlToText(html: string): string {
  return html
    .replace(/<br\s*\/?>|<\/(p|div|li|tr|h\d)>/gi, '\n')
    .replace(/<[^>]*>/g, '')
    .replace(/&nbsp;/g, ' ')
    .replace(/&lt;/g, '<')
    .replace(/&gt;/g, '>')
    .replace(/&quot;/g, '"')
    .replace(/&#39;/g, "'")
    .replace(/&amp;/g, '&');
}
