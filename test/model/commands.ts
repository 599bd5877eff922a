/**
 * The operations of the model-based test, as fast-check commands. Each command acts on the real
 * stack the way a user, an approver, an operator or someone at the Temporal UI would, and
 * records what it saw in the run's trace. Commands do not assert: whether the product stayed
 * safe is decided afterwards by the invariants (invariants.ts), from slapd and Postgres.
 *
 * Requests are referred to by index (modulo the requests made so far), so a generated sequence
 * stays meaningful when the shrinker drops commands from it.
 */
import fc from 'fast-check';
import { decideUpdate } from '../../workflows/messages.js';
import { ENT_KEYS, PEOPLE, PRINCIPALS, type EntKey, type ModelEnv, type Person, type Principal, type RunCatalog } from './env.js';
import { hrCmd, hrWeighted, type ModelHrWorker } from './hr.js';
import { restartCmd, restartWeighted, type WorkerOutage } from './restarts.js';

export interface ModelRequest {
  id: string;
  workflowId: string;
  requester: Person;
  subject: Person;
  ent: EntKey;
}

export interface Model {
  requests: ModelRequest[];
  /** The run's HR workers, by the order they joined (HR commands refer to them by index). */
  hrWorkers: ModelHrWorker[];
}
export const newModel = (): Model => ({ requests: [], hrWorkers: [] });

export interface Real {
  env: ModelEnv;
  run: RunCatalog;
  /** What each command did and what the stack answered, for the failure report. */
  trace: string[];
  /** The worker restarts of this run (the invariants' grace allows for them). */
  outages: WorkerOutage[];
  /** Read from the run's raw histories with the invariants: activity timeouts by activity, workflow task timeouts. */
  timeouts?: { activities: Record<string, number>; workflowTasks: Record<string, number> };
}

type Cmd = fc.AsyncCommand<Model, Real>;

const pick = (m: Readonly<Model>, i: number) => m.requests[i % m.requests.length]!;

/**
 * Who decides: a fixed person, or a role resolved when the command runs (the open stage's
 * assigned approver, the request's subject or requester), so that generated decisions hit the
 * interesting principals often instead of by chance.
 */
export type Decider = Principal | 'assigned' | 'subject' | 'requester';
async function resolve(r: Real, q: ModelRequest, who: Decider): Promise<Principal> {
  if (who === 'subject' || who === 'requester') return q[who];
  if (who !== 'assigned') return who;
  const [row] = await r.env.sql<Array<{ approver_id: string }>>`
    select approver_id from approval where request_id = ${q.id} and status = 'pending' order by stage desc limit 1`;
  return PEOPLE.find((p) => r.env.people[p].id === row?.approver_id) ?? 'operator';
}
const tokenOf = (r: Real, who: Principal) => (who === 'operator' ? r.env.operatorToken : r.env.people[who].token);
const errText = (e: unknown) => {
  const err = e as { name?: string; cause?: { type?: string; message?: string }; message?: string };
  return `${err.name ?? 'Error'}${err.cause?.type ? `(${err.cause.type})` : ''}`;
};

class RequestCmd implements Cmd {
  constructor(
    readonly requester: Person,
    readonly subject: Person,
    readonly ent: EntKey,
    readonly durationSeconds: number,
  ) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const body = {
      entitlementId: r.run.ents[this.ent].id,
      durationSeconds: this.durationSeconds,
      justification: 'model-based run: short lease',
      ...(this.subject !== this.requester ? { subjectId: r.env.people[this.subject].id } : {}),
    };
    const res = await r.env.stack.call('POST', '/v1/access-requests', r.env.people[this.requester].token, body);
    if (res.status !== 202) {
      r.trace.push(`${this} → ${res.status} ${res.body?.error?.code ?? ''}: ${res.body?.error?.message ?? ''}`);
      return;
    }
    const req: ModelRequest = { id: res.body.id, workflowId: res.body.workflowId, requester: this.requester, subject: this.subject, ent: this.ent };
    m.requests.push(req);
    // Policy evaluation is asynchronous: wait (bounded) until a stage is open or the request moved on,
    // so that the decisions that follow act on an open stage.
    const settled = await settle(r, req.id);
    r.trace.push(`${this} → #${m.requests.length - 1} ${settled}`);
  }
  toString() {
    return `request(${this.requester}${this.subject !== this.requester ? `→${this.subject}` : ''}, ${this.ent}, ${this.durationSeconds}s)`;
  }
}

async function settle(r: Real, requestId: string): Promise<string> {
  const until = Date.now() + 10_000;
  for (;;) {
    const [row] = await r.env.sql<Array<{ status: string; stages: number }>>`
      select status, (select count(*)::int from approval a where a.request_id = r.id) as stages from access_request r where id = ${requestId}`;
    if (row && (row.stages > 0 || row.status !== 'pending_approval')) return `${row.status}${row.stages ? ` (stage open)` : ''}`;
    if (Date.now() > until) return `${row?.status ?? 'missing'} (no stage after 10 s)`;
    await new Promise((res) => setTimeout(res, 100));
  }
}

/**
 * After an approval that starts granting, waits (bounded) for the grant to land, so the commands
 * that follow meet an active lease rather than a grant in flight.
 */
async function granted(r: Real, q: ModelRequest, status: unknown): Promise<string> {
  if (status !== 'granting') return '';
  const until = Date.now() + 5_000;
  for (;;) {
    const [row] = await r.env.sql<Array<{ status: string }>>`select status from access_request where id = ${q.id}`;
    if (row && row.status !== 'granting') return ` → ${row.status}`;
    if (Date.now() > until) return ' (still granting after 5 s)';
    await new Promise((res) => setTimeout(res, 100));
  }
}

/** Who extends or revokes: mostly the parties and the operator, sometimes anyone. */
export type Party = Principal | 'subject' | 'requester';

class DecideApiCmd implements Cmd {
  constructor(
    readonly req: number,
    readonly who: Decider,
    readonly decision: 'approve' | 'reject',
  ) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const q = pick(m, this.req);
    const who = await resolve(r, q, this.who);
    const res = await r.env.stack.call('POST', `/v1/access-requests/${q.id}/decision`, tokenOf(r, who), { decision: this.decision });
    r.trace.push(`${this} [${q.requester}→${q.subject} ${q.ent}; ${who}] → ${res.status} ${res.body?.error?.code ?? res.body?.status ?? ''}${await granted(r, q, res.body?.status)}`);
  }
  toString() {
    return `decide.api(#${this.req}, ${this.who}, ${this.decision})`;
  }
}

/** A decision sent straight to the workflow, bypassing the API's checks: the workflow's validator must hold on its own. */
class DecideTemporalCmd implements Cmd {
  constructor(
    readonly req: number,
    readonly who: Exclude<Decider, 'operator'>,
    readonly decision: 'approve' | 'reject',
  ) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const q = pick(m, this.req);
    const who = await resolve(r, q, this.who);
    if (who === 'operator') return void r.trace.push(`${this} → no assigned approver`);
    const handle = r.env.stack.rt.temporal.workflow.getHandle(q.workflowId);
    const outcome = await handle.executeUpdate(decideUpdate, { args: [{ approverId: r.env.people[who].id, decision: this.decision }] }).then(
      (v) => `ok ${v.status}`,
      errText,
    );
    r.trace.push(`${this} [${q.requester}→${q.subject} ${q.ent}; ${who}] → ${outcome}${await granted(r, q, outcome.replace(/^ok /, ''))}`);
  }
  toString() {
    return `decide.temporal(#${this.req}, ${this.who}, ${this.decision})`;
  }
}

class ExtendCmd implements Cmd {
  constructor(
    readonly req: number,
    readonly who: Party,
    readonly durationSeconds: number,
  ) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const q = pick(m, this.req);
    const who = this.who === 'subject' || this.who === 'requester' ? q[this.who] : this.who;
    const res = await r.env.stack.call('POST', `/v1/access-requests/${q.id}/extend`, tokenOf(r, who), { durationSeconds: this.durationSeconds, justification: 'model-based run: a little longer' });
    r.trace.push(`${this} [${who}] → ${res.status} ${res.body?.error?.code ?? res.body?.expiresAt ?? ''}`);
  }
  toString() {
    return `extend(#${this.req}, ${this.who}, ${this.durationSeconds}s)`;
  }
}

class RevokeApiCmd implements Cmd {
  constructor(
    readonly req: number,
    readonly who: Party,
    readonly reason: string,
  ) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const q = pick(m, this.req);
    const who = this.who === 'subject' || this.who === 'requester' ? q[this.who] : this.who;
    const res = await r.env.stack.call('POST', `/v1/access-requests/${q.id}/revoke`, tokenOf(r, who), { reason: this.reason });
    r.trace.push(`${this} [${who}] → ${res.status} ${res.body?.error?.code ?? ''}`);
  }
  toString() {
    return `revoke.api(#${this.req}, ${this.who}, ${JSON.stringify(this.reason)})`;
  }
}

/** Payloads someone at the Temporal UI (or any client with the codec) can send as the `revoke` signal. */
export const SIGNAL_PAYLOADS = {
  manual: (_r: Real) => [{ reason: 'manual' }],
  'manual-claiming-carol': (r: Real) => [{ reason: 'manual', actorId: r.env.people.carol.id }],
  capitalised: () => [{ reason: 'Manual' }],
  'unknown-reason': () => [{ reason: 'bogus' }],
  'sentinel-reason': () => [{ reason: 'sentinel' }],
  'reason-not-a-string': () => [{ reason: 7 }],
  'empty-object': () => [{}],
  'no-input': () => [],
} satisfies Record<string, (r: Real) => unknown[]>;
export type SignalPayload = keyof typeof SIGNAL_PAYLOADS;

class RevokeSignalCmd implements Cmd {
  constructor(
    readonly req: number,
    readonly payload: SignalPayload,
  ) {}
  check = (m: Readonly<Model>) => m.requests.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const q = pick(m, this.req);
    const handle = r.env.stack.rt.temporal.workflow.getHandle(q.workflowId);
    // By name, untyped: the point is to send what the typed definition would not allow.
    const args = SIGNAL_PAYLOADS[this.payload](r) as [];
    const outcome = await handle.signal('revoke', ...args).then(() => 'sent', errText);
    r.trace.push(`${this} → ${outcome}`);
  }
  toString() {
    return `revoke.signal(#${this.req}, ${this.payload})`;
  }
}

/** Time passing: leases of a few seconds expire in the middle of a sequence. */
class WaitCmd implements Cmd {
  constructor(readonly ms: number) {}
  check = () => true;
  async run(_m: Model, r: Real): Promise<void> {
    await new Promise((res) => setTimeout(res, this.ms));
    r.trace.push(`${this}`);
  }
  toString() {
    return `wait(${this.ms}ms)`;
  }
}

const person = fc.constantFrom(...PEOPLE);
const principal = fc.constantFrom(...PRINCIPALS);
/** Mostly for oneself or by the manager (carol) for a report, sometimes for anyone (which the API refuses). */
const requesterSubject: fc.Arbitrary<[Person, Person]> = fc.oneof(
  { weight: 5, arbitrary: person.map((p): [Person, Person] => [p, p]) },
  { weight: 2, arbitrary: fc.constantFrom<Person>('alice', 'bob', 'dave').map((p): [Person, Person] => ['carol', p]) },
  { weight: 1, arbitrary: fc.tuple(person, person) },
);
// Small indices: later commands mostly act on the few requests made so far, often the same one.
const reqIdx = fc.nat({ max: 3 });
const decision = fc.oneof({ weight: 3, arbitrary: fc.constant('approve' as const) }, { weight: 1, arbitrary: fc.constant('reject' as const) });
const roles = fc.constantFrom('assigned' as const, 'subject' as const, 'requester' as const);
const decider: fc.Arbitrary<Decider> = fc.oneof({ weight: 5, arbitrary: fc.constant('assigned' as const) }, { weight: 2, arbitrary: roles }, { weight: 1, arbitrary: principal });
const party: fc.Arbitrary<Party> = fc.oneof(
  { weight: 2, arbitrary: fc.constant('subject' as const) },
  { weight: 1, arbitrary: fc.constant('requester' as const) },
  { weight: 1, arbitrary: fc.constant('operator' as const) },
  { weight: 1, arbitrary: principal },
);
const personDecider: fc.Arbitrary<Exclude<Decider, 'operator'>> = fc.oneof({ weight: 2, arbitrary: fc.constant('assigned' as const) }, { weight: 2, arbitrary: roles }, { weight: 1, arbitrary: person });

const weighted = [
  {
    weight: 3,
    arbitrary: fc
      .record({ who: requesterSubject, ent: fc.constantFrom(...ENT_KEYS), seconds: fc.integer({ min: 3, max: 8 }) })
      .map(({ who: [requester, subject], ent, seconds }) => new RequestCmd(requester, subject, ent, seconds)),
  },
  { weight: 6, arbitrary: fc.tuple(reqIdx, decider, decision).map(([i, w, d]) => new DecideApiCmd(i, w, d)) },
  { weight: 2, arbitrary: fc.tuple(reqIdx, personDecider, decision).map(([i, w, d]) => new DecideTemporalCmd(i, w, d)) },
  { weight: 2, arbitrary: fc.tuple(reqIdx, party, fc.integer({ min: 2, max: 8 })).map(([i, w, s]) => new ExtendCmd(i, w, s)) },
  {
    weight: 1,
    arbitrary: fc.tuple(reqIdx, party, fc.constantFrom('manual', 'review', 'expired', 'leaver', 'Manual')).map(([i, w, why]) => new RevokeApiCmd(i, w, why)),
  },
  { weight: 3, arbitrary: fc.tuple(reqIdx, fc.constantFrom(...(Object.keys(SIGNAL_PAYLOADS) as SignalPayload[]))).map(([i, p]) => new RevokeSignalCmd(i, p)) },
  { weight: 1, arbitrary: fc.integer({ min: 300, max: 2500 }).map((ms) => new WaitCmd(ms)) },
].map(({ weight, arbitrary }) => ({ weight, arbitrary: arbitrary as fc.Arbitrary<Cmd> }));

/**
 * One weighted choice per step: requests and decisions most often, revokes, waits and HR events
 * less, restarts rarely (the request weights doubled so that the restarts' weight of 1 stays
 * rare: two restarts in about forty-five steps).
 */
export const commandArbitrary: fc.Arbitrary<Cmd> = fc.oneof(...weighted.map((w) => ({ ...w, weight: w.weight * 2 })), ...hrWeighted, ...restartWeighted);

/**
 * A sequence of at most `ops` commands that opens with one to three requests, so that the
 * commands acting on a request are not skipped for want of one. Plain arrays rather than
 * fc.commands: the length stays under our control (fc.commands favours short runs), the
 * shrinker drops commands from either part, and asyncModelRun still skips a command whose
 * check() fails.
 */
export function commandSequence(ops: number): fc.Arbitrary<Cmd[]> {
  const opening = fc.array(weighted[0]!.arbitrary, { minLength: 1, maxLength: Math.min(3, ops) });
  const rest = fc.array(commandArbitrary, { minLength: Math.max(0, Math.ceil(ops / 2) - 3), maxLength: Math.max(0, ops - 3) });
  return fc.tuple(opening, rest).map(([a, b]) => [...a, ...b]);
}

/** Builders for hand-written regression sequences (kept in the test file). */
export const cmd = {
  request: (requester: Person, ent: EntKey, seconds: number, subject: Person = requester) => new RequestCmd(requester, subject, ent, seconds),
  decideApi: (req: number, who: Decider, d: 'approve' | 'reject' = 'approve') => new DecideApiCmd(req, who, d),
  decideTemporal: (req: number, who: Exclude<Decider, 'operator'>, d: 'approve' | 'reject' = 'approve') => new DecideTemporalCmd(req, who, d),
  extend: (req: number, who: Party, seconds: number) => new ExtendCmd(req, who, seconds),
  revokeApi: (req: number, who: Party, reason: string) => new RevokeApiCmd(req, who, reason),
  revokeSignal: (req: number, payload: SignalPayload) => new RevokeSignalCmd(req, payload),
  wait: (ms: number) => new WaitCmd(ms),
  ...hrCmd,
  crashWorker: restartCmd.crashWorker,
  restartWorker: restartCmd.restartWorker,
  restartSlapd: restartCmd.slapd,
};
