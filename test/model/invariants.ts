/**
 * The safety invariants of issue 11, checked after a run has gone quiet, against slapd
 * (ldapsearch) and Postgres (SQL on the test database) directly, never through our API, and
 * against the raw Temporal history as the CLI prints it without our codec.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { verifyChain } from '../../activities/domain/audit.js';
import { normalizeDn } from '../../activities/connectors/ldap/dn.js';
import { payloadsIn } from '../helpers/history.js';
import type { Real } from './commands.js';
import { ENT_KEYS, groupMembers, PEOPLE, type ModelEnv, type RunCatalog } from './env.js';
import { checkHrInvariants, HR_INVARIANTS, hrHistoryMarkers, hrSettled } from './hr-invariants.js';

const execFileAsync = promisify(execFile);

export const INVARIANTS = {
  'requests-closed': 'every request is closed at quiescence (pending ones after an operator withdrew them)',
  'members-justified': 'every member of a managed group is the placeholder or justified by a live grant',
  'no-lease-past-expiry': 'no grant stays unremoved past expires_at + grace (the grace counted again after a worker restart that overlaps it)',
  'no-self-approval': "no approval row 'approved' was made by the request's subject or requester",
  'revocations-verified': 'every revoked grant has removal_verified_at and the directory agrees',
  'audit-chain': 'the audit hash chain verifies',
  'history-clean': 'raw workflow history holds no personal data of the demo people or the run\'s HR workers, and no secrets',
  ...HR_INVARIANTS,
} as const;
export type InvariantName = keyof typeof INVARIANTS;
export interface Violation {
  invariant: InvariantName;
  detail: string;
}

/** Verification deadline (3 s in the test stack) plus read-back backoff plus a loaded two-core machine. */
export const GRACE_MS = 15_000;

/**
 * The latest a removal due at `dueAt` may be verified: the grace, restarted after every worker
 * outage that overlaps it, from the moment a worker could pick the work up again (the new process
 * is up and, after a crash, the abandoned activities have timed out on the server).
 */
export function removalDeadline(real: Real, dueAt: number): number {
  let deadline = dueAt + GRACE_MS;
  for (const o of real.outages) if (o.down <= deadline && o.up + o.abandonedMs >= dueAt) deadline = Math.max(deadline, o.up + o.abandonedMs + GRACE_MS);
  return deadline;
}
const TERMINAL = ['rejected', 'expired_unapproved', 'cancelled', 'revoked', 'failed'];
const LIVE_GRANT = ['granting', 'active', 'revoking', 'revocation_unverified'];

interface RunRow {
  id: string;
  status: string;
  workflow_id: string;
  grant_id: string | null;
  grant_status: string | null;
  expires_at: Date | null;
  removal_verified_at: Date | null;
  identity_id: string;
  entitlement_id: string;
}

const runRows = (env: ModelEnv, run: RunCatalog) => env.sql<RunRow[]>`
  select r.id, r.status, r.workflow_id, g.id as grant_id, g.status as grant_status, g.expires_at, g.removal_verified_at,
         r.subject_id as identity_id, r.entitlement_id
  from access_request r left join "grant" g on g.request_id = r.id
  where r.entitlement_id in ${env.sql(ENT_KEYS.map((k) => run.ents[k].id))}`;

/**
 * Brings the run to rest: withdraws what still waits for a decision or a start time (as an
 * operator, through the API), then waits, bounded, until every request is closed. The bound is
 * the latest expiry plus the grace; what is still open then is left for the invariants to name.
 */
export async function quiesce(real: Real): Promise<void> {
  const { env, run, trace } = real;
  for (const row of await runRows(env, run)) {
    if (row.status !== 'pending_approval' && row.status !== 'scheduled') continue;
    const res = await env.stack.call('POST', `/v1/access-requests/${row.id}/revoke`, env.operatorToken, { reason: 'manual' });
    trace.push(`quiesce: withdraw ${row.status} request → ${res.status} ${res.body?.error?.code ?? ''}`);
  }
  const started = Date.now();
  for (;;) {
    const rows = await runRows(env, run);
    const open = rows.filter((r) => !TERMINAL.includes(r.status));
    const hrDone = await hrSettled(real);
    if (open.length === 0 && hrDone) return void trace.push(`quiesce: all ${rows.length} requests closed, HR settled, after ${Date.now() - started} ms`);
    // Leases end at their expiry; withdrawn or deciding requests close within the grace (after a
    // recent worker crash, within the grace of the abandoned activities' retry).
    const latest = Math.max(started, ...open.map((r) => r.expires_at?.getTime() ?? 0));
    if (Date.now() > Math.min(removalDeadline(real, latest), started + 60_000)) {
      return void trace.push(`quiesce: gave up with ${open.length} open (${open.map((r) => `${r.id.slice(0, 8)}:${r.status}`).join(', ')})${hrDone ? '' : ', HR not settled'}`);
    }
    await new Promise((res) => setTimeout(res, 250));
  }
}

export async function checkInvariants(real: Real): Promise<Violation[]> {
  const { env, run } = real;
  const out: Violation[] = [];
  const rows = await runRows(env, run);
  const now = Date.now();
  const short = (id: string | null) => id?.slice(0, 8) ?? '-';

  for (const r of rows) {
    if (TERMINAL.includes(r.status)) continue;
    // A lease still inside its (extended) term is not a failure to close; anything else is.
    if (r.grant_status === 'active' && r.expires_at && removalDeadline(real, r.expires_at.getTime()) > now) continue;
    out.push({ invariant: 'requests-closed', detail: `request ${short(r.id)} is ${r.status} (grant ${r.grant_status ?? 'none'}, expires ${r.expires_at?.toISOString() ?? '-'}); ${await diagnose(env, r)}` });
  }

  for (const r of rows) {
    if (!r.grant_id || !r.expires_at || r.grant_status === 'failed') continue;
    const endedAt = r.removal_verified_at?.getTime() ?? now;
    const deadline = removalDeadline(real, r.expires_at.getTime());
    if (endedAt > deadline) {
      const allowed = deadline - r.expires_at.getTime() > GRACE_MS ? ` (allowed until ${new Date(deadline).toISOString()} for a worker restart)` : '';
      out.push({ invariant: 'no-lease-past-expiry', detail: `grant ${short(r.grant_id)} (${r.grant_status}) expired ${r.expires_at.toISOString()}, removal verified ${r.removal_verified_at?.toISOString() ?? 'never'}${allowed}` });
    }
  }

  out.push(...(await checkDirectory(env, run, rows)));

  const selfApproved = await env.sql<Array<{ request_id: string; who: string; stage: number }>>`
    select a.request_id, case when a.approver_id = r.subject_id then 'subject' else 'requester' end as who, a.stage
    from approval a join access_request r on r.id = a.request_id
    where a.status = 'approved' and a.approver_id in (r.subject_id, r.requester_id)
      and r.entitlement_id in ${env.sql(ENT_KEYS.map((k) => run.ents[k].id))}`;
  for (const a of selfApproved) out.push({ invariant: 'no-self-approval', detail: `request ${short(a.request_id)} stage ${a.stage} approved by its ${a.who}` });

  out.push(...(await checkHrInvariants(real)));
  out.push(...(await checkAuditChain(env)));
  const hr = await hrHistoryMarkers(real);
  const histories = await readHistories(env, [...rows.map((r) => r.workflow_id), ...hr.workflowIds]);
  out.push(...checkHistories(env, histories, hr.markers));
  real.timeouts = countTimeouts(histories);
  return out;
}

/** For a stuck request: what its workflow and its audit trail say (to tell a wedged workflow from a lying row). */
async function diagnose(env: ModelEnv, r: RunRow): Promise<string> {
  const wf = await env.stack.rt.temporal.workflow
    .getHandle(r.workflow_id)
    .describe()
    .then((d) => d.status.name, (e: Error) => e.name);
  const actions = await env.sql<Array<{ action: string }>>`select action from audit_event where request_id = ${r.id} order by seq`;
  return `workflow ${wf}; audit: ${actions.map((a) => a.action).join(' → ') || 'none'}`;
}

/** Group members against grants: every member justified, every revoked grant verified and absent. */
async function checkDirectory(env: ModelEnv, run: RunCatalog, rows: RunRow[]): Promise<Violation[]> {
  const out: Violation[] = [];
  const usernameOf = new Map(PEOPLE.map((p) => [env.people[p].id, p]));
  const placeholder = normalizeDn(env.placeholderDn);
  for (const key of ENT_KEYS) {
    const { id: entId, groupDn } = run.ents[key];
    const members = new Set((await groupMembers(env, groupDn)).map(normalizeDn));
    const grantsHere = rows.filter((r) => r.entitlement_id === entId && r.grant_id);
    const liveFor = (identityId: string) => grantsHere.some((g) => g.identity_id === identityId && LIVE_GRANT.includes(g.grant_status!));
    for (const m of members) {
      if (m === placeholder) continue;
      const uid = /^uid=([^,]+),/.exec(m)?.[1];
      const identityId = PEOPLE.map((p) => env.people[p]).find((p) => p.username === uid)?.id;
      if (!identityId || !liveFor(identityId)) out.push({ invariant: 'members-justified', detail: `${key}: member ${uid ?? m} has no live grant` });
    }
    for (const g of grantsHere) {
      if (g.grant_status === 'revocation_unverified') out.push({ invariant: 'revocations-verified', detail: `grant ${g.grant_id!.slice(0, 8)} still revocation_unverified at quiescence` });
      if (g.grant_status !== 'revoked') continue;
      if (!g.removal_verified_at) out.push({ invariant: 'revocations-verified', detail: `grant ${g.grant_id!.slice(0, 8)} revoked without removal_verified_at` });
      const dn = normalizeDn(env.stack.userDn(usernameOf.get(g.identity_id) ?? '?'));
      if (members.has(dn) && !liveFor(g.identity_id)) out.push({ invariant: 'revocations-verified', detail: `grant ${g.grant_id!.slice(0, 8)} revoked but ${usernameOf.get(g.identity_id)} is still in ${key}` });
    }
  }
  return out;
}

/** Linkage checked in SQL per stream (stream_seq contiguous from 1, prev_hash = the stream's previous hash), hashes recomputed by the chain verifier. */
async function checkAuditChain(env: ModelEnv): Promise<Violation[]> {
  const out: Violation[] = [];
  const broken = await env.sql<Array<{ seq: number; stream: string }>>`
    select seq, stream from (select seq, stream, stream_seq, prev_hash,
        lag(hash) over (partition by stream order by stream_seq) as prior, lag(stream_seq) over (partition by stream order by stream_seq) as prior_seq from audit_event) c
    where (prior is not null and prev_hash <> prior) or (coalesce(prior_seq, 0) <> stream_seq - 1) limit 5`;
  for (const b of broken) out.push({ invariant: 'audit-chain', detail: `linkage broken at seq ${b.seq} (stream ${b.stream})` });
  const verified = await verifyChain(env.stack.tdb.db);
  if (!verified.ok) out.push({ invariant: 'audit-chain', detail: `verifyChain: broken at seq ${verified.brokenAt} (stream ${verified.stream})` });
  return out;
}

interface RawHistory {
  id: string;
  history: { events?: Array<Record<string, any>> };
}

/** Each workflow's history as the CLI prints it, without our codec (read once for every check below). */
async function readHistories(env: ModelEnv, workflowIds: string[]): Promise<RawHistory[]> {
  const out: RawHistory[] = [];
  for (const id of workflowIds) {
    const { stdout } = await execFileAsync(env.temporalCli, ['workflow', 'show', '--workflow-id', id, '--output', 'json', '--address', env.temporalAddress, '--namespace', 'default'], { maxBuffer: 64 << 20 });
    out.push({ id, history: JSON.parse(stdout) as RawHistory['history'] });
  }
  return out;
}

/**
 * Tasks the server timed out: after a SIGKILL, what the dead worker held (its activities wait for
 * their startToCloseTimeout, its workflow tasks for the task timeout) before running elsewhere.
 * A timed-out attempt that is retried leaves no event of its own: the final attempt's started
 * event carries it as `lastFailure`.
 */
function countTimeouts(histories: RawHistory[]): NonNullable<Real['timeouts']> {
  const activities: Record<string, number> = {};
  const workflowTasks: Record<string, number> = {};
  const add = (to: Record<string, number>, k: string) => (to[k] = (to[k] ?? 0) + 1);
  for (const { history } of histories) {
    const events = history.events ?? [];
    const typeOf = new Map(events.map((e) => [String(e.eventId), String(e.activityTaskScheduledEventAttributes?.activityType?.name ?? 'unknown')]));
    for (const e of events) {
      const started = e.activityTaskStartedEventAttributes;
      if (started?.lastFailure?.timeoutFailureInfo) add(activities, `${typeOf.get(String(started.scheduledEventId))} (${started.lastFailure.timeoutFailureInfo.timeoutType})`);
      const timedOut = e.activityTaskTimedOutEventAttributes;
      if (timedOut) add(activities, `${typeOf.get(String(timedOut.scheduledEventId))} (final, ${timedOut.failure?.timeoutFailureInfo?.timeoutType})`);
      if (e.eventType === 'EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT') add(workflowTasks, String(e.workflowTaskTimedOutEventAttributes?.timeoutType));
    }
  }
  return { activities, workflowTasks };
}

/**
 * `temporal workflow show --output json`, with no codec: what anyone with namespace read access
 * sees. Encrypted payload bytes are dropped before looking for short strings (usernames), since
 * random ciphertext or base64 can spell "bob"; long markers (tokens, e-mails, display names,
 * directory DNs) are looked for everywhere, base64-decoded payloads included.
 */
function checkHistories(env: ModelEnv, histories: RawHistory[], extraMarkers: Array<{ what: string; s: string }>): Violation[] {
  const out: Violation[] = [];
  const people = PEOPLE.map((p) => env.people[p]);
  const long = [
    ...Object.values(env.stack.catalog.tokens).map((t) => ({ what: 'an API token', s: t.token })),
    ...PEOPLE.map((p) => ({ what: `${p}'s API token`, s: env.people[p].token })),
    { what: 'the directory bind password', s: env.ldap.rootPassword },
    ...people.flatMap((p) => [
      { what: `${p.username}'s display name`, s: p.displayName },
      ...(p.email ? [{ what: `${p.username}'s e-mail`, s: p.email }] : []),
      ...(p.externalId ? [{ what: `${p.username}'s HR id`, s: p.externalId }] : []),
      { what: `${p.username}'s directory DN`, s: `uid=${p.username},` },
    ]),
    ...extraMarkers,
  ];
  const usernames = new RegExp(`\\b(${people.map((p) => p.username).join('|')})\\b`);
  for (const { id, history } of histories) {
    const { full, withoutCiphertext } = readableTexts(history);
    for (const { what, s } of long) if (full.includes(s)) out.push({ invariant: 'history-clean', detail: `${id}: ${what} in raw history` });
    const u = usernames.exec(withoutCiphertext);
    if (u) out.push({ invariant: 'history-clean', detail: `${id}: username "${u[1]}" in raw history (…${withoutCiphertext.slice(Math.max(0, u.index - 60), u.index + 40)}…)` });
  }
  return out;
}

function readableTexts(history: unknown): { full: string; withoutCiphertext: string } {
  const decode = (v: unknown) => (typeof v === 'string' ? Buffer.from(v, 'base64').toString('utf8') : '');
  const copy = structuredClone(history);
  const decodedData: string[] = [];
  for (const { payload } of payloadsIn(copy)) {
    const meta = payload.metadata as Record<string, unknown>;
    const encrypted = decode(meta.encoding) === 'binary/encrypted';
    decodedData.push(decode(payload.data));
    for (const k of Object.keys(meta)) meta[k] = decode(meta[k]);
    payload.data = encrypted ? '<ciphertext>' : decode(payload.data);
  }
  const withoutCiphertext = JSON.stringify(copy);
  return { full: [JSON.stringify(history), withoutCiphertext, ...decodedData].join('\n'), withoutCiphertext };
}

export function formatViolations(vs: Violation[]): string {
  const by = new Map<InvariantName, string[]>();
  for (const v of vs) by.set(v.invariant, [...(by.get(v.invariant) ?? []), v.detail]);
  return [...by].map(([inv, ds]) => `  ✗ ${inv}: ${INVARIANTS[inv]}\n${ds.map((d) => `      - ${d}`).join('\n')}`).join('\n');
}
