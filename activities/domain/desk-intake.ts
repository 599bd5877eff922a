import type { DeskFieldKey, DeskTicket } from '../connectors/service-desk/types.js';

// A ticket in the access-requests queue, read as an access request, and a reply on a ticket,
// read as a decision (docs/service-desk.md, "How the loop works"). Pure: resolving the
// entitlement, subject and requester against the catalog is the caller's, which reports its
// own refusals (unknown_entitlement, …) through the same IntakeRefusal and refusalText.
//
// Messages never quote the ticket's values back: the reply goes to the ticket, but a refusal's
// message may also reach logs, and ticket text is personal data there.

/**
 * Justification bounds of POST /v1/access-requests (api/schemas.ts, `justification`: trimmed,
 * min 10, max 2000). Duplicated because domain code may not import api/;
 * test/unit/desk-intake.test.ts proves the two agree. Lengths here count code points, as zod's do.
 */
export const JUSTIFICATION_MIN = 10;
export const JUSTIFICATION_MAX = 2000;
/** api/schemas.ts `decisionBody.comment` (max 2000), duplicated for the same reason. */
export const DECISION_COMMENT_MAX = 2000;
/** Entitlement and subject references: one line, the length of an entitlement name (api/schemas.ts). */
export const TICKET_REF_MAX = 200;
/**
 * Longest duration a ticket may ask for. The API allows up to ten years (its bound on
 * entitlement durations); a ticket asking for more than this is far more likely a typo (an
 * extra zero) than a real need, and the entitlement's own maximum still applies after this.
 */
export const TICKET_DURATION_MAX_SECONDS = 400 * 24 * 3600;

/** Shown in every refusal of a duration, so the requester can fix it without asking. */
export const DURATION_FORMS =
  'whole numbers with a unit, such as 90s, 45m, 45 min, 8h, 8 hours, 1h30m, 1 h 30 min, 2d, 1w, or plain seconds (3600), or ISO 8601 such as PT8H, P1D, P1DT2H30M; up to 400 days, no months or years';

/** Codes are stable: ticket_link.refusal stores them. The caller adds its own (unknown_entitlement, …). */
export type IntakeRefusalCode = 'missing_field' | 'malformed_field' | 'unknown_entitlement' | 'ambiguous_entitlement' | 'unknown_subject' | 'unknown_requester';
export type IntakeRefusal = {
  // `string & {}` keeps editor completion for the known codes while allowing the caller's own.
  code: IntakeRefusalCode | (string & {});
  /** What was wrong, in plain English, without the ticket's own values. */
  message: string;
  field?: DeskFieldKey;
};

export interface TicketRequestFields {
  /** An entitlement's name or id, as the requester wrote it; the caller resolves it. */
  entitlementRef: string;
  /** Absent: the requester asks for themselves. */
  subjectRef?: string;
  /** Absent: the entitlement's default duration. */
  durationSeconds?: number;
  justification: string;
}

type Parsed<T> = { ok: true; value: T } | { ok: false; refusal: IntakeRefusal };

// C0 and C1 controls, and format characters (bidi overrides, zero-width) that could make a
// reference display as something it is not.
const REF_FORBIDDEN = /[\p{Cc}\p{Cf}]/u;
// A justification may span lines and hold emoji (format characters), but no other controls:
// Postgres text cannot hold NUL, and the rest only garble the approver's view.
const TEXT_FORBIDDEN = /[^\P{Cc}\t\n]/u;

/** RT may deliver CRLF or CR line ends; the stored text uses LF. */
function normalise(value: string | undefined): string | undefined {
  const v = value?.replace(/\r\n?/g, '\n').trim();
  return v ? v : undefined;
}

function refuse(code: IntakeRefusalCode, field: DeskFieldKey, message: string): { ok: false; refusal: IntakeRefusal } {
  return { ok: false, refusal: { code, field, message } };
}

/** Code points, as zod's min/max count them (a lone surrogate counts as one, as in zod). */
function length(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

function parseRef(field: 'entitlement' | 'subject', value: string): IntakeRefusal | undefined {
  if (length(value) > TICKET_REF_MAX || REF_FORBIDDEN.test(value)) {
    return { code: 'malformed_field', field, message: `The "${field}" field must be a single line of at most ${TICKET_REF_MAX} characters.` };
  }
  return undefined;
}

/**
 * The request a ticket asks for, by the same rules as POST /v1/access-requests. The title is
 * not a fallback justification: it is a summary the desk may prefill, and the justification is
 * audit evidence that must be the requester's stated reason.
 */
export function parseTicketRequest(ticket: Pick<DeskTicket, 'fields' | 'title'>): Parsed<TicketRequestFields> {
  const f = ticket.fields;
  const entitlementRef = normalise(f.entitlement);
  if (!entitlementRef) return refuse('missing_field', 'entitlement', 'The "entitlement" field is empty.');
  const badEntitlement = parseRef('entitlement', entitlementRef);
  if (badEntitlement) return { ok: false, refusal: badEntitlement };

  const subjectRef = normalise(f.subject);
  const badSubject = subjectRef === undefined ? undefined : parseRef('subject', subjectRef);
  if (badSubject) return { ok: false, refusal: badSubject };

  const durationText = normalise(f.duration);
  const durationSeconds = durationText === undefined ? undefined : parseDuration(durationText);
  if (durationText !== undefined && durationSeconds === undefined) {
    return refuse('malformed_field', 'duration', `The "duration" field is not a duration accessloop understands. Accepted forms: ${DURATION_FORMS}.`);
  }

  const justification = normalise(f.justification);
  if (!justification) return refuse('missing_field', 'justification', 'The "justification" field is empty.');
  const n = length(justification);
  if (n < JUSTIFICATION_MIN || n > JUSTIFICATION_MAX || TEXT_FORBIDDEN.test(justification)) {
    return refuse('malformed_field', 'justification', `The "justification" field must be plain text of ${JUSTIFICATION_MIN} to ${JUSTIFICATION_MAX} characters.`);
  }

  return {
    ok: true,
    value: {
      entitlementRef,
      ...(subjectRef !== undefined ? { subjectRef } : {}),
      ...(durationSeconds !== undefined ? { durationSeconds } : {}),
      justification,
    },
  };
}

// rank orders the units so each may appear once, largest first ("1h30m", never "30m1h" or
// "1h1h"): anything else is more likely a slip than a meaning.
const UNITS: Record<string, { seconds: number; rank: number }> = {};
for (const [seconds, rank, names] of [
  [604_800, 5, ['w', 'wk', 'wks', 'week', 'weeks']],
  [86_400, 4, ['d', 'day', 'days']],
  [3_600, 3, ['h', 'hr', 'hrs', 'hour', 'hours']],
  [60, 2, ['m', 'min', 'mins', 'minute', 'minutes']],
  [1, 1, ['s', 'sec', 'secs', 'second', 'seconds']],
] as const) {
  for (const name of names) UNITS[name] = { seconds, rank };
}

// Weeks and days only as the ISO date part: months and years have no fixed length.
const ISO_DURATION = /^p(?!$)(?:(\d+)w)?(?:(\d+)d)?(?:t(?=\d)(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?)?$/;
const UNIT_PART = /(\d+)[ \t]*([a-z]+)[ \t]*/y;

/**
 * A duration in seconds: plain seconds ("3600"), units ("90s", "45 min", "8 hours", "1h30m",
 * "2d", "1w") or ISO 8601 without years and months ("PT8H", "P1DT2H30M"); case-insensitive.
 * Whole numbers only: "1.5h" is undefined (a decimal comma or point is locale-dependent, and
 * "1h30m" says it exactly). Undefined unless the result is a positive whole number of seconds
 * up to TICKET_DURATION_MAX_SECONDS.
 */
export function parseDuration(text: string): number | undefined {
  const s = text.trim().toLowerCase();
  let total: number;
  if (/^\d+$/.test(s)) {
    total = Number(s);
  } else if (s.startsWith('p')) {
    const m = ISO_DURATION.exec(s);
    if (!m) return undefined;
    const [w, d, h, min, sec] = m.slice(1).map((x) => Number(x ?? 0)) as [number, number, number, number, number];
    total = w * 604_800 + d * 86_400 + h * 3_600 + min * 60 + sec;
  } else {
    total = 0;
    let rank = Infinity;
    let pos = 0;
    if (s === '') return undefined;
    while (pos < s.length) {
      UNIT_PART.lastIndex = pos;
      const m = UNIT_PART.exec(s);
      const unit = m ? UNITS[m[2] as string] : undefined;
      if (!m || !unit || unit.rank >= rank) return undefined;
      rank = unit.rank;
      total += Number(m[1]) * unit.seconds;
      pos = UNIT_PART.lastIndex;
    }
  }
  return Number.isSafeInteger(total) && total > 0 && total <= TICKET_DURATION_MAX_SECONDS ? total : undefined;
}

export type TicketCommand = { kind: 'decision'; decision: 'approve' | 'reject'; comment?: string } | { kind: 'unknown'; word: string };

/** An unknown command word is echoed in the caller's reply; a pasted path or URL should not fill it. */
const UNKNOWN_WORD_MAX = 64;
const COMMANDS: Record<string, 'approve' | 'reject'> = { '/approve': 'approve', '/reject': 'reject' };

/** Cut to at most `max` code points, so a surrogate pair is never split. */
function cut(s: string, max: number): string {
  return length(s) <= max ? s : Array.from(s).slice(0, max).join('').trimEnd();
}

/**
 * A command in a reply: the first word of the first non-empty line that is not a quote ('>').
 * `/approve` and `/reject` (any case) are decisions, with the rest of that line and the
 * following unquoted lines as the comment, up to a signature separator ("-- "), trimmed and
 * cut to DECISION_COMMENT_MAX: a long comment must not cost the decision. Any other first word
 * starting with '/' is an unknown command; anything else is not a command (undefined).
 */
export function parseTicketCommand(text: string): TicketCommand | undefined {
  const lines = text.split(/\r\n?|\n/).filter((l) => !l.trimStart().startsWith('>'));
  const first = lines.findIndex((l) => l.trim() !== '');
  if (first < 0) return undefined;
  const line = (lines[first] as string).trim();
  const word = (/^\S+/.exec(line) as RegExpExecArray)[0];
  if (!word.startsWith('/')) return undefined;
  const decision = COMMANDS[word.toLowerCase()];
  if (!decision) return { kind: 'unknown', word: cut(word, UNKNOWN_WORD_MAX) };

  const rest = lines.slice(first + 1);
  const signature = rest.findIndex((l) => l.trimEnd() === '--');
  const body = [line.slice(word.length), ...(signature < 0 ? rest : rest.slice(0, signature))];
  const comment = cut(body.join('\n').trim(), DECISION_COMMENT_MAX);
  return comment ? { kind: 'decision', decision, comment } : { kind: 'decision', decision };
}

const FIELD_FIX: Record<DeskFieldKey, string> = {
  entitlement: 'Put the name of the access you need in the "entitlement" field.',
  subject: 'Put the username of the person who needs the access in the "subject" field, or leave it empty to ask for yourself.',
  duration: 'Correct the "duration" field, or leave it empty to get the entitlement\'s default duration.',
  justification: `Say why you need the access in the "justification" field, in ${JUSTIFICATION_MIN} to ${JUSTIFICATION_MAX} characters.`,
};

const CODE_FIX: Record<string, string> = {
  unknown_entitlement: 'Use the name of an entitlement from the accessloop catalog in the "entitlement" field.',
  ambiguous_entitlement: 'More than one entitlement matches; use its exact name or its id in the "entitlement" field.',
  unknown_subject: FIELD_FIX.subject,
  unknown_requester: 'Your desk account is not linked to an accessloop identity; ask the access team to link it.',
};

function sentence(s: string): string {
  const t = s.trim();
  return t === '' || /[.!?]$/.test(t) ? t : `${t}.`;
}

/**
 * The reply posted on a refused ticket: what was wrong, how to fix it, and that nothing
 * happened. The link records the code; correcting a request field on the same ticket takes it in
 * again (activities/service-desk.ts).
 */
export function refusalText(r: IntakeRefusal): string {
  const fix = CODE_FIX[r.code] ?? (r.field ? FIELD_FIX[r.field] : undefined);
  const parts = [sentence(r.message), fix ? `${fix} Correct the field on this ticket and it is taken in again.` : undefined, 'Nothing was changed.'];
  return `accessloop could not accept this request: ${parts.filter((p) => p).join(' ')}`;
}
