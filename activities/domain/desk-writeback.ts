import type { AuditEvent } from '../../db/schema.js';

/** One undelivered `desk_outbox` row: an audit event to render, or a reply's ready text. */
export interface WriteBackItem {
  outboxId: number;
  text: string | null;
  event: AuditEvent | null;
}

export interface WriteBackContext {
  requestId: string;
  evidenceUrl: string;
  /** names for ids, where known: entitlement name, approver usernames */
  names?: Record<string, string>;
}

/** One post to the ticket: the batch's lines, who sees them, and the ticket state they lead to. */
export interface WriteBack {
  text: string;
  visibility: 'internal' | 'requester';
  state?: 'open' | 'resolved' | 'rejected';
}

type Names = Record<string, string> | undefined;
type Described = Pick<AuditEvent, 'at' | 'actorType' | 'actorId' | 'action' | 'reason' | 'policyVersion' | 'data'>;

/** Under 300 characters a line, under 3500 a post: what a ticket history shows without folding. */
const MAX_LINE = 299;
const MAX_TEXT = 3499;
/** Approver lists longer than this are summarised: a stage can resolve a whole team. */
const MAX_LISTED = 5;

// The ticket is read by the requester and desk staff, so nothing leaves that the ticket did not
// already know. Lines are built from chosen fields only (never `data` wholesale), and free text
// that can carry anything (approver comments, connector error messages) is left out. These
// patterns are a second line of defence on what remains (policy reasons, names): an e-mail
// address or one of our bearer tokens never reaches the desk, even through a name.
const EMAIL = /[^\s@<>()[\]"',;:]+@[^\s@<>()[\]"',;:]+\.[A-Za-z]{2,}/g;
const API_TOKEN = /\bal_[A-Za-z0-9_-]{16,}/g;

function clean(text: string): string {
  return text.replace(EMAIL, '[e-mail withheld]').replace(API_TOKEN, '[token withheld]').replace(/\s+/g, ' ').trim();
}

function clip(line: string, max = MAX_LINE): string {
  return line.length <= max ? line : `${line.slice(0, max - 1).trimEnd()}…`;
}

/** ISO 8601 in UTC to the second; null for what is not a time (data comes from old rows too). */
function utc(value: unknown): string | null {
  if (!(value instanceof Date) && typeof value !== 'string') return null;
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? null : d.toISOString().replace(/\.\d{3}Z$/, 'Z');
}

const str = (data: Record<string, unknown>, key: string): string | undefined => {
  const v = data[key];
  return typeof v === 'string' && v !== '' ? v : undefined;
};
const num = (data: Record<string, unknown>, key: string): number | undefined => {
  const v = data[key];
  return typeof v === 'number' && Number.isFinite(v) ? v : undefined;
};
const strs = (data: Record<string, unknown>, key: string): string[] => {
  const v = data[key];
  return Array.isArray(v) ? v.filter((x): x is string => typeof x === 'string') : [];
};

const nameOf = (id: string, names: Names): string => clean(names?.[id] ?? id);

function listOf(ids: string[], names: Names): string {
  const shown = ids.slice(0, MAX_LISTED).map((id) => nameOf(id, names));
  return ids.length > MAX_LISTED ? `${shown.join(', ')} and ${ids.length - MAX_LISTED} more` : shown.join(', ');
}

/** Actors the workflows name themselves (a mover's review, HR-driven revocations). */
const CLIENTS: Record<string, string> = { hr: 'the HR system', review: 'the access review' };

function actorOf(e: Pick<AuditEvent, 'actorType' | 'actorId'>, names: Names): string {
  switch (e.actorType) {
    case 'workflow':
      return 'accessloop';
    case 'system':
      return e.actorId === 'sentinel' ? 'the accessloop sentinel' : 'accessloop';
    case 'temporal':
      // A signal from the Temporal UI or CLI carries no authenticated sender.
      return 'an unauthenticated Temporal signal';
    case 'client':
      if (names?.[e.actorId]) return nameOf(e.actorId, names);
      return CLIENTS[e.actorId] ?? `client ${clean(e.actorId.replace(/^client:/, ''))}`;
    default:
      return nameOf(e.actorId, names);
  }
}

/** 45 s, 20 min, 8 h, 30 d. */
function duration(seconds: number): string {
  if (seconds < 120) return `${seconds} s`;
  if (seconds < 2 * 3600) return `${Math.round(seconds / 60)} min`;
  if (seconds < 2 * 86400) return `${Math.round(seconds / 3600)} h`;
  return `${Math.round(seconds / 86400)} d`;
}

const REVOKE_REASONS: Record<string, string> = {
  expired: 'the lease expired',
  leaver: 'the subject left the organisation',
  mover: 'the subject moved and the access was not re-approved',
  review: 'an access review did not keep it',
  manual: 'revoked by hand',
  reconciliation: 'reconciliation found it unjustified',
  sentinel: 'the sentinel found it unjustified',
  ticket: 'the ticket was rejected or deleted',
};
const revokeReasonOf = (r: string | undefined): string => (r ? (REVOKE_REASONS[r] ?? `reason ${clean(r)}`) : 'no reason given');

/**
 * The stable failure type at the front of a failure text (`GrantNotVerified: …`, as
 * workflows/removal.ts describeFailure writes it). The message after it is left out: connector
 * messages can name accounts, hosts and SQL.
 */
function failureType(text: string | null): string | undefined {
  return text?.match(/^([A-Z][A-Za-z0-9]{2,60}):/)?.[1];
}

const policyOf = (version: string | null): string => (version && version !== 'n/a' ? `policy ${clean(version)}` : 'policy');
const rulesOf = (data: Record<string, unknown>): string => {
  const rules = strs(data, 'rules');
  return rules.length ? `; rules fired: ${rules.map(clean).join(', ')}` : '';
};
const policyReasonOf = (reason: string | null): string => (reason ? `: ${clean(reason)}` : '');
const stageOf = (data: Record<string, unknown>): string => {
  const n = num(data, 'stage');
  return n === undefined ? 'the stage' : `stage ${n}`;
};
const PURPOSES: Record<string, string> = { extension: 'Extension', review: 'Access review' };

/** What happened, in one plain-English sentence, without its time. */
function sentence(e: Described, names: Names): string {
  const data = e.data ?? {};
  const who = actorOf(e, names);
  const [prefix, verb] = e.action.split('.', 2) as [string, string | undefined];
  switch (e.action) {
    case 'request.submitted': {
      const ent = str(data, 'entitlementId');
      const secs = num(data, 'durationSeconds');
      return `Request submitted by ${who}${ent ? ` for ${nameOf(ent, names)}` : ''}${secs ? ` for ${duration(secs)}` : ''}.`;
    }
    case 'request.auto_approved':
      return `Approved automatically by ${policyOf(e.policyVersion)}${policyReasonOf(e.reason)}${rulesOf(data)}.`;
    case 'request.approved':
      return `${who} approved ${stageOf(data)}: the request is approved (${policyOf(e.policyVersion)}).`;
    case 'approval.recorded':
      return data.stageComplete === false
        ? `${who} approved ${stageOf(data)}; the stage needs more approvals.`
        : `${who} approved ${stageOf(data)}; the next stage follows.`;
    case 'request.rejected':
      // A person's rejection names its stage; the workflow's (a policy deny, no eligible approver) does not.
      return num(data, 'stage') !== undefined || e.actorType === 'identity'
        ? `${who} rejected ${stageOf(data)}: the request is rejected.`
        : `Rejected by ${policyOf(e.policyVersion)}${policyReasonOf(e.reason)}${rulesOf(data)}.`;
    case 'approval.escalated': {
      const added = strs(data, 'added');
      return `Approval ${stageOf(data)} escalated${added.length ? `: ${listOf(added, names)} can now decide` : ''}.`;
    }
    case 'request.expired_unapproved':
      return `Closed: the approval expired before a decision${e.reason ? ` (${clean(e.reason)})` : ''}.`;
    case 'request.cancelled':
      // The withdrawal's comment is free text and stays in accessloop.
      return `Withdrawn by ${who} before access was granted.`;
    case 'grant.scheduled': {
      const at = utc(data.startAt);
      return `Approved; access is scheduled to start${at ? ` at ${at}` : ''}.`;
    }
    case 'grant.applied':
      return data.changed === false ? 'Access granted on the target (the membership was already there).' : 'Access granted on the target.';
    case 'grant.verified': {
      const until = utc(data.expiresAt);
      return `Access read back from the target and verified${until ? `; it expires at ${until}` : ''}.`;
    }
    case 'grant.extended': {
      const from = utc(data.from);
      const to = utc(data.to);
      return `Lease extended by ${who}${from ? ` from ${from}` : ''}${to ? ` to ${to}` : ''}.`;
    }
    case 'grant.shortened': {
      const from = utc(data.from);
      const to = utc(data.to);
      return `Lease shortened by ${who}${from ? ` from ${from}` : ''}${to ? ` to ${to}` : ''}: access now ends earlier.`;
    }
    case 'extension.refused':
      return `Extension refused${e.reason ? ` (${clean(e.reason)})` : ''}; access runs on to its current expiry.`;
    case 'request.revoke_submitted':
      return `${who} asked to revoke the access (${revokeReasonOf(str(data, 'reason'))}).`;
    case 'grant.revoke_requested':
      // data.reason is the revoke reason; the reason column may hold the revoker's own comment.
      return `Access is being revoked: ${revokeReasonOf(str(data, 'reason'))} (by ${who}).`;
    case 'grant.revocation_unverified': {
      const type = failureType(e.reason);
      return `Removal NOT verified yet${type ? ` (${type})` : ''}: the target still shows the access or could not be read. accessloop keeps retrying; the ticket stays open.`;
    }
    case 'grant.removal_verified':
      return `Access removed${e.actorType === 'system' && e.actorId === 'sentinel' ? ' by the sentinel' : ''}; removal verified on the target at ${utc(e.at)}.`;
    case 'grant.ended_membership_retained': {
      const other = str(data, 'retainedBy');
      return `Access of this request ended, verified at ${utc(e.at)}; the membership stays because another active grant${other ? ` (${clean(other)})` : ''} still justifies it.`;
    }
    case 'request.failed': {
      const type = failureType(e.reason);
      if (str(data, 'cause') === 'workflow_start_failed') return 'Failed: the request could not be started; no access was granted.';
      return `Failed: access could not be granted${type ? ` (${type})` : ''}; nothing is left on the target.`;
    }
    case 'credential.rotated':
    case 'credential.renewed': {
      const until = utc(data.credentialNotAfter);
      return `Credential ${verb} by ${who}${until ? `; valid until ${until}` : ''}.`;
    }
    case 'credential.delivered':
      return `Credential collected by ${who}.`;
  }
  const purpose = PURPOSES[prefix];
  if (purpose) {
    if (verb === 'stage_opened') return `${purpose}: ${stageOpened(data, e.policyVersion, names)}`;
    if (verb === 'approval_recorded') return `${purpose}: ${who} approved ${stageOf(data)}.`;
    if (verb === 'rejected') return `${purpose}: ${who} rejected ${stageOf(data)}.`;
  }
  if (e.action === 'approval.stage_opened') return `Approval ${stageOpened(data, e.policyVersion, names)}`;
  // A new action is still written back, by name, rather than dropped from the ticket's story.
  return `${clean(e.action)} (by ${who}).`;
}

function stageOpened(data: Record<string, unknown>, policyVersion: string | null, names: Names): string {
  const name = str(data, 'stageName');
  const approvers = strs(data, 'approverIds');
  const due = utc(data.dueAt);
  return (
    `${stageOf(data)}${name ? ` (${clean(name)})` : ''} opened by ${policyOf(policyVersion)}${rulesOf(data)}` +
    `${approvers.length ? `; waiting for ${listOf(approvers, names)}` : ''}${due ? ` until ${due}` : ''}.`
  );
}

/** The one-line text of an audit event: its UTC time, then what happened. */
export function describeAuditEvent(event: Described, names?: Record<string, string>): string {
  return clip(`${utc(event.at) ?? 'unknown time'} ${sentence(event, names)}`);
}

/** The ticket state an event closes the ticket with, if it ends the request's story. */
export function finalStateOf(event: Pick<AuditEvent, 'action' | 'data'>): 'resolved' | 'rejected' | undefined {
  switch (event.action) {
    // Access of this request ended and was read back: removed, or kept only by another grant.
    case 'grant.removal_verified':
    case 'grant.ended_membership_retained':
      return 'resolved';
    case 'request.rejected':
    case 'request.expired_unapproved':
    case 'request.cancelled':
    case 'request.failed':
      return 'rejected';
    default:
      return undefined;
  }
}

function stateOf(event: Pick<AuditEvent, 'action' | 'data'>): WriteBack['state'] {
  // Said on the ticket and kept open: it is resolved only by the post that carries the verified removal.
  return event.action === 'grant.revocation_unverified' ? 'open' : finalStateOf(event);
}

/**
 * One post for a batch of outbox rows, in their order. The last event that decides a state wins,
 * so a removal verified after an unverified alert resolves the ticket. Over the length limit,
 * the first line, the line that decided the state, the last line and the evidence link stay;
 * the lines between are counted instead. An empty batch renders as empty text.
 */
/**
 * What the requester hears about as it happens (a reply), beside the final state: the request
 * was taken in, access works now, its end moved, its removal is not verified yet. Approval
 * steps stay internal notes for the desk's staff.
 */
const REQUESTER_NEWS = new Set(['request.submitted', 'grant.verified', 'grant.extended', 'grant.shortened', 'grant.revocation_unverified', 'extension.refused']);

export function renderWriteBack(items: WriteBackItem[], ctx: WriteBackContext): WriteBack {
  const lines: string[] = [];
  let state: WriteBack['state'];
  let stateLine = -1;
  let replied = false;
  for (const item of items) {
    if (item.event) {
      lines.push(describeAuditEvent(item.event, ctx.names));
      const s = stateOf(item.event);
      if (s) {
        state = s;
        stateLine = lines.length - 1;
      }
    } else {
      // A reply the product wrote for the requester (a refusal): its own words, kept to one line.
      replied = true;
      lines.push(clip((item.text ?? '').replace(/\s+/g, ' ').trim()));
    }
  }
  const closing = state === 'resolved' || state === 'rejected';
  const evidence = closing ? [clip(`Evidence: ${ctx.evidenceUrl}`)] : [];
  const keep = new Set([0, stateLine, lines.length - 1].filter((i) => i >= 0));
  return {
    text: [...fit(lines, keep, evidence, ctx.requestId), ...evidence].join('\n'),
    visibility: state || replied || items.some((i) => i.event && REQUESTER_NEWS.has(i.event.action)) ? 'requester' : 'internal',
    ...(state ? { state } : {}),
  };
}

/** The lines within MAX_TEXT: `keep` always, then as many of the latest others as fit. */
function fit(lines: string[], keep: Set<number>, tail: string[], requestId: string): string[] {
  const size = (ls: string[]) => ls.reduce((n, l) => n + l.length + 1, 0);
  if (size([...lines, ...tail]) - 1 <= MAX_TEXT) return lines;
  const gap = (n: number) => `… ${n} line${n === 1 ? '' : 's'} left out here; request ${requestId} in accessloop has the full history …`;
  // The kept lines are the ends, the state line and a run at the end, so there are at most two gaps.
  const kept = new Set(keep);
  let budget = MAX_TEXT - size(tail) - [...kept].reduce((n, i) => n + lines[i]!.length + 1, 0) - 2 * (gap(lines.length).length + 1);
  for (let i = lines.length - 1; i >= 0; i--) {
    if (kept.has(i)) continue;
    const cost = lines[i]!.length + 1;
    if (cost > budget) break;
    kept.add(i);
    budget -= cost;
  }
  const out: string[] = [];
  let skipped = 0;
  lines.forEach((line, i) => {
    if (!kept.has(i)) return void skipped++;
    if (skipped) out.push(gap(skipped));
    skipped = 0;
    out.push(line);
  });
  return out;
}
