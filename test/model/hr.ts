/**
 * HR joiner / mover / leaver through the signed webhook, for the model-based test. One pair of
 * birthright groups serves the whole file (the policy document is global), and every sequence
 * hires its own fresh workers (ids carry the run's tag), so sequences stay independent and the
 * invariants can find a run's HR identities by that prefix.
 */
import { createHmac, randomBytes, randomUUID } from 'node:crypto';
import fc from 'fast-check';
import { DEFAULT_POLICY } from '../../activities/domain/policy/evaluate.js';
import { demoGroupDn, DEMO_PLACEHOLDER_DN, DEMO_SUFFIX } from '../../activities/connectors/ldap/seed.js';
import { ldapModify, type LdapAdminHandle } from '../helpers/ldap.js';
import type { Stack } from '../helpers/stack.js';
import type { Model, Real } from './commands.js';

/** Departments with a birthright group each; `none` has no birthright (a mover there loses it all). */
export const HR_DEPTS = ['model-a', 'model-b', 'none'] as const;
export type HrDept = (typeof HR_DEPTS)[number];
export type BirthrightDept = Exclude<HrDept, 'none'>;
/** The mover grace: short, so that a sequence sees the old birthright end. */
export const MOVER_GRACE_SECONDS = 2;

export interface HrEnv {
  token: string;
  key: Buffer;
  ents: Record<BirthrightDept, { id: string; groupDn: string }>;
}

/** The webhook secret the stack must be started with (ACCESSLOOP_HR_WEBHOOK_SECRETS). */
export function hrWebhookSecret(): { key: Buffer; secret: string } {
  const key = randomBytes(24);
  return { key, secret: `whsec_${key.toString('base64')}` };
}

/**
 * The HR system's token, two birthright groups and a policy that keeps the built-in approval
 * policy (what the request sequences expect) and adds the department birthrights.
 */
export async function createHrEnv(stack: Stack, ldap: LdapAdminHandle, operatorToken: string, key: Buffer): Promise<HrEnv> {
  const tok = await stack.call('POST', '/v1/tokens', operatorToken, { principalId: 'client:model-hr', roles: ['hr_system'] });
  if (tok.status !== 201) throw new Error(`cannot mint the HR token: ${tok.status} ${JSON.stringify(tok.body)}`);
  const ents = {} as HrEnv['ents'];
  for (const dept of ['model-a', 'model-b'] as const) {
    const cn = `model-hr-${dept}`;
    const groupDn = demoGroupDn(DEMO_SUFFIX, cn);
    await ldapModify(ldap, `dn: ${groupDn}\nchangetype: add\nobjectClass: groupOfNames\ncn: ${cn}\nmember: ${DEMO_PLACEHOLDER_DN}\n`);
    const r = await stack.call('POST', '/v1/entitlements', operatorToken, {
      systemId: stack.catalog.systemId,
      name: `Model birthright ${dept}`,
      resource: groupDn,
      ownerId: stack.catalog.identities.carol,
      riskTier: 'low',
      defaultDurationSeconds: 3600,
      maxDurationSeconds: 7200,
    });
    if (r.status !== 201) throw new Error(`cannot create birthright entitlement ${dept}: ${r.status} ${JSON.stringify(r.body)}`);
    ents[dept] = { id: r.body.id as string, groupDn };
  }
  const policy = {
    ...DEFAULT_POLICY,
    moverGraceSeconds: MOVER_GRACE_SECONDS,
    birthright: (['model-a', 'model-b'] as const).map((d) => ({ name: `${d}-dept`, when: `subject.department == "${d}"`, entitlementIds: [ents[d].id] })),
  };
  const p = await stack.call('PUT', '/v1/policies', operatorToken, JSON.stringify(policy), { 'content-type': 'application/json' });
  if (p.status !== 201) throw new Error(`cannot publish the model policy: ${p.status} ${JSON.stringify(p.body)}`);
  return { token: tok.body.token as string, key, ents };
}

/** HR worker ids of one run start with this (the invariants select the run's identities by it). */
export const hrWorkerPrefix = (tag: string) => `HR-M-${tag}-`;

export interface ModelHrWorker {
  workerId: string;
  username: string;
  sequence: number;
  dept: HrDept;
  left: boolean;
}

/** Signs per the Standard Webhooks spec with node:crypto (independently of the product's verifier), and posts. */
async function send(r: Real, type: string, w: ModelHrWorker, worker: Record<string, unknown>) {
  const body = JSON.stringify({ type, sequence: ++w.sequence, worker: { id: w.workerId, ...worker } });
  const id = `msg_${randomUUID()}`;
  const ts = Math.floor(Date.now() / 1000);
  const sig = createHmac('sha256', r.env.hr.key).update(`${id}.${ts}.${body}`).digest('base64');
  const headers = { 'webhook-id': id, 'webhook-timestamp': String(ts), 'webhook-signature': `v1,${sig}`, 'content-type': 'application/json' };
  const res = await r.env.stack.call('POST', '/v1/hr/events', r.env.hr.token, body, headers);
  if (res.status !== 202) return `${res.status} ${res.body?.error?.code ?? ''}`;
  return `202 ${await processed(r, res.body.eventId as string)}`;
}

/** Waits (bounded) until the inbox row is processed, so the next command meets the applied event. */
async function processed(r: Real, eventId: string): Promise<string> {
  const until = Date.now() + 10_000;
  for (;;) {
    const [row] = await r.env.sql<Array<{ outcome: string | null; processed_at: Date | null }>>`select outcome, processed_at from hr_event where id = ${eventId}`;
    if (row?.processed_at) return row.outcome ?? 'processed';
    if (Date.now() > until) return 'not processed after 10 s';
    await new Promise((res) => setTimeout(res, 100));
  }
}

type Cmd = fc.AsyncCommand<Model, Real>;
const pickWorker = (m: Readonly<Model>, i: number) => m.hrWorkers[i % m.hrWorkers.length]!;

class HrJoinCmd implements Cmd {
  constructor(readonly dept: HrDept) {}
  check = () => true;
  async run(m: Model, r: Real): Promise<void> {
    const n = m.hrWorkers.length;
    const w: ModelHrWorker = { workerId: `${hrWorkerPrefix(r.run.tag)}${n}`, username: `m${r.run.tag}w${n}`, sequence: 0, dept: this.dept, left: false };
    m.hrWorkers.push(w);
    const outcome = await send(r, 'joiner', w, { username: w.username, displayName: `Model Worker ${r.run.tag} ${n}`, email: `${w.username}@model.example`, department: this.dept });
    r.trace.push(`${this} → hr#${n} ${outcome}`);
  }
  toString() {
    return `hr.joiner(${this.dept})`;
  }
}

class HrMoveCmd implements Cmd {
  constructor(
    readonly worker: number,
    readonly dept: HrDept,
  ) {}
  check = (m: Readonly<Model>) => m.hrWorkers.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const w = pickWorker(m, this.worker);
    const from = w.dept;
    if (!w.left) w.dept = this.dept;
    r.trace.push(`${this} [${w.username} from ${from}${w.left ? ', left' : ''}] → ${await send(r, 'mover', w, { department: this.dept })}`);
  }
  toString() {
    return `hr.mover(hr#${this.worker}, ${this.dept})`;
  }
}

class HrLeaveCmd implements Cmd {
  constructor(readonly worker: number) {}
  check = (m: Readonly<Model>) => m.hrWorkers.length > 0;
  async run(m: Model, r: Real): Promise<void> {
    const w = pickWorker(m, this.worker);
    w.left = true;
    r.trace.push(`${this} [${w.username}] → ${await send(r, 'leaver', w, {})}`);
  }
  toString() {
    return `hr.leaver(hr#${this.worker})`;
  }
}

const dept = fc.oneof({ weight: 2, arbitrary: fc.constantFrom<HrDept>('model-a', 'model-b') }, { weight: 1, arbitrary: fc.constant<HrDept>('none') });
const hrIdx = fc.nat({ max: 2 });

/** Joiners first (movers and leavers are skipped until someone has joined): about one step in six is HR. */
export const hrWeighted = [
  { weight: 3, arbitrary: dept.map((d) => new HrJoinCmd(d)) },
  { weight: 2, arbitrary: fc.tuple(hrIdx, dept).map(([i, d]) => new HrMoveCmd(i, d)) },
  { weight: 2, arbitrary: hrIdx.map((i) => new HrLeaveCmd(i)) },
].map(({ weight, arbitrary }) => ({ weight, arbitrary: arbitrary as fc.Arbitrary<Cmd> }));

export const hrCmd = {
  joiner: (d: HrDept) => new HrJoinCmd(d),
  mover: (i: number, d: HrDept) => new HrMoveCmd(i, d),
  leaver: (i: number) => new HrLeaveCmd(i),
};
