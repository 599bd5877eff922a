import { ApplicationFailure, log, metricMeter, patched } from '@temporalio/workflow';
import type { z } from 'zod';
import { describeInvalid } from './message-schemas.js';
import { UpdateRejection } from './messages.js';

// Parsing at the message boundary (./message-schemas.ts). A signal cannot be refused: it is in
// history before any code of ours runs, and anyone with Temporal UI access can send one. So an
// invalid signal is dropped and recorded (log line, counter, the caller's current details),
// never thrown: a throw in a handler fails the workflow task, every retry of it too, and a bad
// value passed on would fail an activity (a reason the database enum does not know) forever.

export type SignalInput<T> = { ok: true; value: T } | { ok: false; legacy: true; raw: unknown } | { ok: false; legacy: false };

/**
 * Parses a signal's input. Valid: `{ ok, value }`, the same behaviour as before this check
 * existed. Invalid: recorded and `{ ok: false }`; except in a run recorded before the check
 * (no `validate-signal-input` marker), where `legacy` hands the raw input back so the old code
 * path replays exactly as it ran. The marker is written only when an invalid signal arrives, so
 * valid traffic leaves histories as they were.
 */
export function parseSignal<S extends z.ZodType>(signal: string, schema: S, raw: unknown, recorded: (note: string) => void): SignalInput<z.output<S>> {
  const parsed = schema.safeParse(raw);
  if (parsed.success) return { ok: true, value: parsed.data };
  if (!patched('validate-signal-input')) return { ok: false, legacy: true, raw };
  const issues = describeInvalid(parsed.error);
  // The issues name fields and zod codes, never the values (a payload may carry personal data).
  log.warn('invalid signal ignored', { signal, issues });
  metricMeter.createCounter('accessloop_invalid_signals_total', 'signals', 'Signals dropped because their input did not parse').add(1, { signal });
  recorded(`ignored an invalid ${signal} signal (${issues})`);
  return { ok: false, legacy: false };
}

/**
 * Parses an update's input in its validator: a malformed one is refused as `InvalidInput`
 * before anything reaches history, and the API maps the type onto a 400.
 */
export function parseUpdate<S extends z.ZodType>(update: string, schema: S, raw: unknown): z.output<S> {
  const parsed = schema.safeParse(raw);
  if (!parsed.success) throw ApplicationFailure.nonRetryable(`invalid ${update} input: ${describeInvalid(parsed.error)}`, UpdateRejection.InvalidInput);
  return parsed.data;
}
