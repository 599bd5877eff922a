import { describe, expect, it } from 'vitest';
import {
  DECISION_COMMENT_MAX,
  DURATION_FORMS,
  JUSTIFICATION_MAX,
  JUSTIFICATION_MIN,
  TICKET_DURATION_MAX_SECONDS,
  TICKET_REF_MAX,
  parseDuration,
  parseTicketCommand,
  parseTicketRequest,
  refusalText,
  type IntakeRefusal,
} from '../../activities/domain/desk-intake.js';
import type { DeskTicket } from '../../activities/connectors/service-desk/types.js';
import { createAccessRequestBody, createEntitlementBody, decisionBody } from '../../api/schemas.js';

const H = 3600;
const D = 86_400;
const uuid = '6f1c1f4e-6f2c-4b7e-9a55-0c8f3c1d2e3f';
const reason = 'on call for the payments incident this week';
const ticket = (fields: DeskTicket['fields'], title = 'Access request'): Pick<DeskTicket, 'fields' | 'title'> => ({ fields, title });
const refusalOf = (fields: DeskTicket['fields']): IntakeRefusal => {
  const r = parseTicketRequest(ticket(fields));
  if (r.ok) throw new Error('expected a refusal');
  return r.refusal;
};

describe('parseDuration', () => {
  it.each([
    ['3600', H],
    ['  3600 ', H],
    ['0003600', H],
    ['90s', 90],
    ['90 sec', 90],
    ['90 seconds', 90],
    ['45m', 45 * 60],
    ['45 min', 45 * 60],
    ['45 minutes', 45 * 60],
    ['45MIN', 45 * 60],
    ['8h', 8 * H],
    ['8H', 8 * H],
    ['8 hours', 8 * H],
    ['8 Hours', 8 * H],
    ['1 hour', H],
    ['2d', 2 * D],
    ['2 days', 2 * D],
    ['1w', 7 * D],
    ['1 week', 7 * D],
    ['1h30m', 5400],
    ['1 h 30 min', 5400],
    ['1 hour 30 minutes', 5400],
    ['1d 2h 30m 15s', D + 2 * H + 30 * 60 + 15],
    ['2h0m', 2 * H],
    ['PT8H', 8 * H],
    ['pt8h', 8 * H],
    [' PT8H\n', 8 * H],
    ['P1D', D],
    ['P1DT2H30M', D + 2 * H + 30 * 60],
    ['PT1M', 60],
    ['PT90S', 90],
    ['P1W', 7 * D],
    ['400d', TICKET_DURATION_MAX_SECONDS],
    ['P400D', TICKET_DURATION_MAX_SECONDS],
    [String(TICKET_DURATION_MAX_SECONDS), TICKET_DURATION_MAX_SECONDS],
  ])('reads %j as %i seconds', (text, seconds) => {
    expect(parseDuration(text)).toBe(seconds);
  });

  it.each([
    ['', 'empty'],
    ['   ', 'blank'],
    ['0', 'zero'],
    ['0s', 'zero with a unit'],
    ['0h0m', 'zero in parts'],
    ['PT0S', 'ISO zero'],
    ['-3600', 'negative'],
    ['-1h', 'negative with a unit'],
    ['+3600', 'signed'],
    ['1.5h', 'fraction (not supported: "1h30m" says it)'],
    ['1,5h', 'decimal comma'],
    ['PT1.5H', 'ISO fraction'],
    ['1e3', 'exponent'],
    ['0x10', 'hex'],
    ['１h', 'non-ASCII digit'],
    ['401d', 'over 400 days'],
    [String(TICKET_DURATION_MAX_SECONDS + 1), 'one second over 400 days'],
    ['99999999999999999999999', 'overflowing seconds'],
    ['9'.repeat(400), 'Infinity'],
    ['9999999999999999999w', 'overflowing weeks'],
    ['P1Y', 'ISO years'],
    ['P1M', 'ISO months'],
    ['P1Y2D', 'ISO years with days'],
    ['P', 'ISO nothing'],
    ['PT', 'ISO empty time'],
    ['P1DT', 'ISO dangling T'],
    ['1 month', 'months'],
    ['1mo', 'months, short'],
    ['1y', 'years'],
    ['30m1h', 'units out of order'],
    ['1h1h', 'unit twice'],
    ['1h 30', 'trailing number without a unit'],
    ['h', 'unit without a number'],
    ['8hours.', 'trailing punctuation'],
    ['1 hour and 30 minutes', 'words between parts'],
    ['eight hours', 'number in words'],
  ])('refuses %j (%s)', (text) => {
    expect(parseDuration(text)).toBeUndefined();
  });
});

describe('parseTicketRequest', () => {
  it('trims every value and keeps what the ticket asks for', () => {
    const r = parseTicketRequest(ticket({ entitlement: '  pg-prod-readonly \n', subject: '\talice\n', duration: ' 8h ', justification: `\n  ${reason}  \n` }));
    expect(r).toEqual({ ok: true, value: { entitlementRef: 'pg-prod-readonly', subjectRef: 'alice', durationSeconds: 8 * H, justification: reason } });
  });

  it('leaves subject and duration out when absent or only whitespace (requester, default duration)', () => {
    for (const extra of [{}, { subject: '   ', duration: ' \n\t ' }, { subject: '', duration: '' }]) {
      const r = parseTicketRequest(ticket({ entitlement: 'pg-prod-readonly', justification: reason, ...extra }));
      expect(r).toEqual({ ok: true, value: { entitlementRef: 'pg-prod-readonly', justification: reason } });
      expect(r.ok && Object.keys(r.value)).toEqual(['entitlementRef', 'justification']);
    }
  });

  it('keeps a multi-line justification, with RT line ends turned into LF', () => {
    const r = parseTicketRequest(ticket({ entitlement: 'e', justification: 'incident INC-7\r\nneed to read the ledger\rand the\ttail of the log\n' }));
    expect(r.ok && r.value.justification).toBe('incident INC-7\nneed to read the ledger\nand the\ttail of the log');
  });

  it.each<[string, DeskTicket['fields'], IntakeRefusal['code'], keyof DeskTicket['fields']]>([
    ['no entitlement', { justification: reason }, 'missing_field', 'entitlement'],
    ['an empty entitlement', { entitlement: '', justification: reason }, 'missing_field', 'entitlement'],
    ['a blank entitlement', { entitlement: ' \n\t ', justification: reason }, 'missing_field', 'entitlement'],
    ['an entitlement over 200 characters', { entitlement: 'e'.repeat(TICKET_REF_MAX + 1), justification: reason }, 'malformed_field', 'entitlement'],
    ['a two-line entitlement', { entitlement: 'pg-prod\nldap-admins', justification: reason }, 'malformed_field', 'entitlement'],
    ['an entitlement with a tab', { entitlement: 'pg\tprod', justification: reason }, 'malformed_field', 'entitlement'],
    ['an entitlement with a bidi override', { entitlement: 'pg-prod\u202eteg', justification: reason }, 'malformed_field', 'entitlement'],
    ['an entitlement with NUL', { entitlement: 'pg\0prod', justification: reason }, 'malformed_field', 'entitlement'],
    ['a subject over 200 characters', { entitlement: 'e', subject: 's'.repeat(TICKET_REF_MAX + 1), justification: reason }, 'malformed_field', 'subject'],
    ['a two-line subject', { entitlement: 'e', subject: 'alice\nbob', justification: reason }, 'malformed_field', 'subject'],
    ['an unreadable duration', { entitlement: 'e', duration: 'a while', justification: reason }, 'malformed_field', 'duration'],
    ['a zero duration', { entitlement: 'e', duration: '0', justification: reason }, 'malformed_field', 'duration'],
    ['a negative duration', { entitlement: 'e', duration: '-8h', justification: reason }, 'malformed_field', 'duration'],
    ['a fractional duration', { entitlement: 'e', duration: '1.5h', justification: reason }, 'malformed_field', 'duration'],
    ['a duration over 400 days', { entitlement: 'e', duration: '401d', justification: reason }, 'malformed_field', 'duration'],
    ['a duration in months', { entitlement: 'e', duration: 'P1M', justification: reason }, 'malformed_field', 'duration'],
    ['no justification', { entitlement: 'e' }, 'missing_field', 'justification'],
    ['a blank justification', { entitlement: 'e', justification: '  \r\n  ' }, 'missing_field', 'justification'],
    ['a short justification', { entitlement: 'e', justification: '  too short  ' }, 'malformed_field', 'justification'],
    ['a justification over 2000 characters', { entitlement: 'e', justification: 'x'.repeat(JUSTIFICATION_MAX + 1) }, 'malformed_field', 'justification'],
    ['a justification with NUL', { entitlement: 'e', justification: `${reason}\0` }, 'malformed_field', 'justification'],
    ['a justification with an escape sequence', { entitlement: 'e', justification: `${reason}\u001b[2J` }, 'malformed_field', 'justification'],
    ['both entitlement and justification missing: the first field is reported', {}, 'missing_field', 'entitlement'],
  ])('refuses %s', (_name, fields, code, field) => {
    expect(refusalOf(fields)).toMatchObject({ code, field });
  });

  it('accepts the bounds themselves', () => {
    const r = parseTicketRequest(ticket({ entitlement: 'e'.repeat(TICKET_REF_MAX), subject: 's'.repeat(TICKET_REF_MAX), duration: '400d', justification: ` ${'x'.repeat(JUSTIFICATION_MIN)} ` }));
    expect(r.ok).toBe(true);
    expect(parseTicketRequest(ticket({ entitlement: 'e', justification: 'x'.repeat(JUSTIFICATION_MAX) })).ok).toBe(true);
    expect(parseTicketRequest(ticket({ entitlement: 'e', justification: `${reason} 👩‍💻` })).ok).toBe(true);
  });

  it('does not take the title as the justification', () => {
    expect(refusalOf({ entitlement: 'e' })).toMatchObject({ code: 'missing_field', field: 'justification' });
    expect(parseTicketRequest(ticket({ entitlement: 'e' }, reason)).ok).toBe(false);
  });

  it('shows the accepted duration forms when it refuses a duration', () => {
    const { message } = refusalOf({ entitlement: 'e', duration: '1.5h', justification: reason });
    expect(message).toContain(DURATION_FORMS);
    for (const form of ['3600', '90s', '45m', '8h', '1h30m', '2d', '1w', 'PT8H', 'P1DT2H30M', '400 days']) expect(message).toContain(form);
  });

  it('never quotes the ticket values back in a refusal', () => {
    const secret = 'alice-private-42';
    for (const fields of [
      { entitlement: `${secret}\n`.repeat(20), justification: reason },
      { entitlement: 'e', subject: `${secret}\nx`, justification: reason },
      { entitlement: 'e', duration: secret, justification: reason },
      { entitlement: 'e', justification: secret.slice(0, 9) },
    ]) {
      const r = refusalOf(fields);
      expect(r.message).not.toContain(secret.slice(0, 9));
      expect(refusalText(r)).not.toContain(secret.slice(0, 9));
    }
  });
});

describe('the limits agree with POST /v1/access-requests (api/schemas.ts)', () => {
  const apiAccepts = (justification: string) => createAccessRequestBody.safeParse({ entitlementId: uuid, justification });

  it.each([
    ['nine characters', 'x'.repeat(JUSTIFICATION_MIN - 1)],
    ['nine characters padded with spaces', `   ${'x'.repeat(JUSTIFICATION_MIN - 1)}   `],
    ['ten characters', 'x'.repeat(JUSTIFICATION_MIN)],
    ['ten characters padded with spaces', `  ${'x'.repeat(JUSTIFICATION_MIN)}\n`],
    ['2000 characters', 'x'.repeat(JUSTIFICATION_MAX)],
    ['2001 characters', 'x'.repeat(JUSTIFICATION_MAX + 1)],
    ['2000 characters padded with spaces', `  ${'x'.repeat(JUSTIFICATION_MAX)}  `],
    ['2000 emoji (code points, 4000 UTF-16 units)', '😀'.repeat(JUSTIFICATION_MAX)],
    ['2001 emoji', '😀'.repeat(JUSTIFICATION_MAX + 1)],
    ['five emoji (ten UTF-16 units)', '😀'.repeat(5)],
    ['ten emoji', '😀'.repeat(JUSTIFICATION_MIN)],
    ['two lines', 'line one of it\nline two'],
  ])('justification of %s', (_name, justification) => {
    const api = apiAccepts(justification);
    const desk = parseTicketRequest(ticket({ entitlement: 'e', justification }));
    expect(desk.ok).toBe(api.success);
    if (desk.ok && api.success) expect(desk.value.justification).toBe(api.data.justification);
  });

  it('every duration a ticket may ask for is one the API accepts', () => {
    expect(createAccessRequestBody.safeParse({ entitlementId: uuid, justification: reason, durationSeconds: TICKET_DURATION_MAX_SECONDS }).success).toBe(true);
    expect(createAccessRequestBody.safeParse({ entitlementId: uuid, justification: reason, durationSeconds: parseDuration('1s') }).success).toBe(true);
  });

  it('an entitlement reference can be as long as an entitlement name', () => {
    const body = (n: string) => ({ systemId: uuid, name: n, resource: 'r', ownerId: uuid, defaultDurationSeconds: H, maxDurationSeconds: H });
    expect(createEntitlementBody.safeParse(body('e'.repeat(TICKET_REF_MAX))).success).toBe(true);
    expect(createEntitlementBody.safeParse(body('e'.repeat(TICKET_REF_MAX + 1))).success).toBe(false);
    expect(createEntitlementBody.safeParse(body('é'.normalize('NFD').repeat(TICKET_REF_MAX / 2))).success).toBe(true);
    expect(parseTicketRequest(ticket({ entitlement: 'é'.normalize('NFD').repeat(TICKET_REF_MAX / 2), justification: reason })).ok).toBe(true);
    expect(parseTicketRequest(ticket({ entitlement: '😀'.repeat(TICKET_REF_MAX), justification: reason })).ok).toBe(true);
    expect(parseTicketRequest(ticket({ entitlement: '😀'.repeat(TICKET_REF_MAX + 1), justification: reason })).ok).toBe(false);
    expect(createEntitlementBody.safeParse(body('😀'.repeat(TICKET_REF_MAX))).success).toBe(true);
    expect(createEntitlementBody.safeParse(body('😀'.repeat(TICKET_REF_MAX + 1))).success).toBe(false);
  });

  it('a decision comment has the length of the API one', () => {
    expect(decisionBody.safeParse({ decision: 'approve', comment: 'x'.repeat(DECISION_COMMENT_MAX) }).success).toBe(true);
    expect(decisionBody.safeParse({ decision: 'approve', comment: 'x'.repeat(DECISION_COMMENT_MAX + 1) }).success).toBe(false);
  });
});

describe('parseTicketCommand', () => {
  it.each<[string, string, ReturnType<typeof parseTicketCommand>]>([
    ['a bare approve', '/approve', { kind: 'decision', decision: 'approve' }],
    ['a bare reject', '/reject', { kind: 'decision', decision: 'reject' }],
    ['any case', '/APPROVE', { kind: 'decision', decision: 'approve' }],
    ['a comment on the same line', '/Reject   not needed for this role  ', { kind: 'decision', decision: 'reject', comment: 'not needed for this role' }],
    ['a tab before the comment', '/reject\tnot needed', { kind: 'decision', decision: 'reject', comment: 'not needed' }],
    ['non-breaking spaces from HTML', '\u00a0/approve\u00a0ok by me', { kind: 'decision', decision: 'approve', comment: 'ok by me' }],
    ['blank lines first', '  \n\n\t\n/approve ok', { kind: 'decision', decision: 'approve', comment: 'ok' }],
    ['quoted lines first, even a quoted command', '> /reject from the quoted mail\n>> older\n/approve mine', { kind: 'decision', decision: 'approve', comment: 'mine' }],
    ['an indented quote first', '   > quoted\n/approve', { kind: 'decision', decision: 'approve' }],
    [
      'further lines, with quotes dropped from the comment',
      '/reject because\nthe ticket names the wrong team\n\n> On Monday someone wrote:\n> please approve\nask again next week\n',
      { kind: 'decision', decision: 'reject', comment: 'because\nthe ticket names the wrong team\n\nask again next week' },
    ],
    ['the comment only on later lines', '/approve\n\nfor the incident only', { kind: 'decision', decision: 'approve', comment: 'for the incident only' }],
    ['CRLF line ends', '/approve a\r\nb\r\n', { kind: 'decision', decision: 'approve', comment: 'a\nb' }],
    ['a signature, which is left out', '/approve fine\n-- \nA. Person\nHead of Payments', { kind: 'decision', decision: 'approve', comment: 'fine' }],
    ['only quoted lines after the command', '/approve\n> the original request', { kind: 'decision', decision: 'approve' }],
    ['an unknown command', '/help', { kind: 'unknown', word: '/help' }],
    ['a near miss, strictly unknown', '/approved', { kind: 'unknown', word: '/approved' }],
    ['punctuation glued to the word', '/approve: looks good', { kind: 'unknown', word: '/approve:' }],
    ['an unknown command keeps its spelling', '/Revoke now', { kind: 'unknown', word: '/Revoke' }],
    ['a lone slash', '/ approve', { kind: 'unknown', word: '/' }],
    ['a very long unknown word, cut', `/${'x'.repeat(200)}`, { kind: 'unknown', word: `/${'x'.repeat(63)}` }],
    ['no command', 'approve', undefined],
    ['a command later on the line', 'Thanks! /approve', undefined],
    ['a command on a later line', 'LGTM\n/approve', undefined],
    ['only quotes', '> /approve\n>\n', undefined],
    ['nothing', '', undefined],
    ['only whitespace', ' \n\t\r\n ', undefined],
  ])('%s', (_name, text, expected) => {
    expect(parseTicketCommand(text)).toEqual(expected);
  });

  it('cuts a long comment to the API limit and keeps the decision', () => {
    const c = parseTicketCommand(`/approve ${'x'.repeat(3000)}`);
    expect(c).toMatchObject({ kind: 'decision', decision: 'approve' });
    expect(c?.kind === 'decision' && c.comment?.length).toBe(DECISION_COMMENT_MAX);
  });

  it('never cuts a comment inside a surrogate pair', () => {
    const c = parseTicketCommand(`/reject a${'😀'.repeat(2500)}`);
    const comment = c?.kind === 'decision' ? (c.comment ?? '') : '';
    expect(comment).toBe(`a${'😀'.repeat(DECISION_COMMENT_MAX - 1)}`);
    expect(decisionBody.safeParse({ decision: 'reject', comment }).success).toBe(true);
    expect(decisionBody.safeParse({ decision: 'reject', comment: `${comment}x` }).success).toBe(false);
  });
});

describe('refusalText', () => {
  const prefix = 'accessloop could not accept this request: ';
  const refusals: [string, IntakeRefusal, string[]][] = [
    ['missing entitlement', refusalOf({ justification: reason }), ['"entitlement"']],
    ['malformed entitlement', refusalOf({ entitlement: 'a\nb', justification: reason }), ['"entitlement"', '200 characters']],
    ['malformed subject', refusalOf({ entitlement: 'e', subject: 'a\nb', justification: reason }), ['"subject"', 'leave it empty']],
    ['malformed duration', refusalOf({ entitlement: 'e', duration: 'soon', justification: reason }), ['"duration"', '1h30m', 'PT8H', 'leave it empty', 'default']],
    ['missing justification', refusalOf({ entitlement: 'e' }), ['"justification"', '10 to 2000 characters']],
    ['short justification', refusalOf({ entitlement: 'e', justification: 'because' }), ['"justification"', '10 to 2000 characters']],
    ['unknown entitlement', { code: 'unknown_entitlement', field: 'entitlement', message: 'No entitlement has that name' }, ['No entitlement has that name.', 'catalog', '"entitlement"']],
    ['ambiguous entitlement', { code: 'ambiguous_entitlement', field: 'entitlement', message: 'Several entitlements have that name.' }, ['its id', '"entitlement"']],
    ['unknown subject', { code: 'unknown_subject', field: 'subject', message: 'No person has that username.' }, ['"subject"', 'username']],
    ['unknown requester', { code: 'unknown_requester', message: 'Your desk account is unknown to accessloop.' }, ['access team']],
  ];

  it.each(refusals)('%s: says what is wrong, how to fix it, and that nothing changed', (_name, r, mentions) => {
    const text = refusalText(r);
    expect(text.startsWith(prefix)).toBe(true);
    expect(text.endsWith('Nothing was changed.')).toBe(true);
    expect(text).toContain(r.message.replace(/\.$/, ''));
    for (const m of mentions) expect(text).toContain(m);
    expect(text).not.toMatch(/\n|\bat .*\(|Error:/);
  });

  it('frames a code it does not know with the caller message alone', () => {
    expect(refusalText({ code: 'policy_denied', message: 'The policy does not allow this entitlement for contractors' })).toBe(
      `${prefix}The policy does not allow this entitlement for contractors. Nothing was changed.`,
    );
  });
});
