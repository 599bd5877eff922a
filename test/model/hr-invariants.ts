/**
 * The HR side of the invariants, for a run's own HR identities (selected by their worker-id
 * prefix), read from Postgres and slapd directly: every event applied, leavers fully removed,
 * and the people who stay hold exactly their department's birthright.
 */
import { normalizeDn } from '../../activities/connectors/ldap/dn.js';
import { identityWorkflowId } from '../../workflows/ids.js';
import type { Real } from './commands.js';
import { groupMembers, type ModelEnv } from './env.js';
import { hrWorkerPrefix, type BirthrightDept } from './hr.js';

export const HR_INVARIANTS = {
  'hr-events-processed': 'every hr_event of the run is processed, and every applied leaver has completed',
  'leavers-removed': 'a terminated identity has no live grant, each of its grants is revoked with removal verified, and it is in no managed group',
  'birthright-held': "an active HR identity holds its department's birthright (grant active, member in slapd) and no other",
} as const;
type HrInvariant = keyof typeof HR_INVARIANTS;

const LIVE_GRANT = ['granting', 'active', 'revoking', 'revocation_unverified'];
const SETTLING_GRANT = ['granting', 'revoking', 'revocation_unverified'];

export interface HrIdentityRow {
  id: string;
  username: string;
  display_name: string;
  email: string | null;
  external_id: string;
  status: string;
  department: string | null;
}
interface HrGrantRow {
  identity_id: string;
  entitlement_id: string;
  status: string;
  removal_verified_at: Date | null;
}
interface HrEventRow {
  worker_id: string;
  type: string;
  outcome: string | null;
  processed_at: Date | null;
  completed_at: Date | null;
}

export const hrIdentities = (env: ModelEnv, tag: string) =>
  env.sql<HrIdentityRow[]>`select id, username, display_name, email, external_id, status, department from identity where external_id like ${`${hrWorkerPrefix(tag)}%`}`;
const hrGrants = (env: ModelEnv, ids: string[]) =>
  ids.length === 0 ? Promise.resolve([] as HrGrantRow[]) : env.sql<HrGrantRow[]>`select identity_id, entitlement_id, status, removal_verified_at from "grant" where identity_id in ${env.sql(ids)}`;
const hrEvents = (env: ModelEnv, tag: string) =>
  env.sql<HrEventRow[]>`select worker_id, type, outcome, processed_at, completed_at from hr_event where worker_id like ${`${hrWorkerPrefix(tag)}%`}`;

const birthrightOf = (env: ModelEnv, dept: string | null) => (dept === 'model-a' || dept === 'model-b' ? env.hr.ents[dept as BirthrightDept].id : undefined);

/** Whether the run's HR side has come to rest: events applied, leavers done, no grant mid-change, movers past their grace. */
export async function hrSettled(real: Real): Promise<boolean> {
  const { env, run } = real;
  const events = await hrEvents(env, run.tag);
  if (events.some((e) => !e.processed_at || (e.type === 'leaver' && e.outcome === 'applied' && !e.completed_at))) return false;
  const people = await hrIdentities(env, run.tag);
  const grants = await hrGrants(env, people.map((p) => p.id));
  if (grants.some((g) => SETTLING_GRANT.includes(g.status))) return false;
  // An applied joiner's grant row comes after the inbox row is marked processed: wait for it too.
  return people.every((p) => {
    const active = grants.filter((g) => g.identity_id === p.id && g.status === 'active').map((g) => g.entitlement_id);
    const want = p.status === 'active' ? birthrightOf(env, p.department) : undefined;
    return active.every((e) => e === want) && (!want || active.includes(want));
  });
}

export async function checkHrInvariants(real: Real): Promise<Array<{ invariant: HrInvariant; detail: string }>> {
  const { env, run } = real;
  const out: Array<{ invariant: HrInvariant; detail: string }> = [];
  for (const e of await hrEvents(env, run.tag)) {
    if (!e.processed_at) out.push({ invariant: 'hr-events-processed', detail: `${e.type} for ${e.worker_id} not processed` });
    else if (e.type === 'leaver' && e.outcome === 'applied' && !e.completed_at) out.push({ invariant: 'hr-events-processed', detail: `leaver for ${e.worker_id} applied but never completed` });
  }
  const people = await hrIdentities(env, run.tag);
  const grants = await hrGrants(env, people.map((p) => p.id));
  const members = new Map<string, Set<string>>();
  for (const [dept, { id, groupDn }] of Object.entries(env.hr.ents)) members.set(id, new Set((await groupMembers(env, groupDn)).map(normalizeDn)));
  const deptOfEnt = new Map(Object.entries(env.hr.ents).map(([d, e]) => [e.id, d]));
  for (const p of people) {
    const dn = normalizeDn(env.stack.userDn(p.username));
    const mine = grants.filter((g) => g.identity_id === p.id);
    const inGroups = [...members].filter(([, m]) => m.has(dn)).map(([entId]) => entId);
    if (p.status === 'terminated') {
      for (const g of mine) {
        if (LIVE_GRANT.includes(g.status)) out.push({ invariant: 'leavers-removed', detail: `${p.username} terminated but holds a ${g.status} grant on ${deptOfEnt.get(g.entitlement_id) ?? g.entitlement_id}` });
        else if (g.status === 'revoked' && !g.removal_verified_at) out.push({ invariant: 'leavers-removed', detail: `${p.username}: grant on ${deptOfEnt.get(g.entitlement_id)} revoked without removal_verified_at` });
      }
      for (const entId of inGroups) out.push({ invariant: 'leavers-removed', detail: `${p.username} terminated but still a member of ${deptOfEnt.get(entId)}` });
      continue;
    }
    const want = birthrightOf(env, p.department);
    const active = mine.filter((g) => g.status === 'active').map((g) => g.entitlement_id);
    if (want && !active.includes(want)) out.push({ invariant: 'birthright-held', detail: `${p.username} (${p.department}) has no active grant on its birthright` });
    if (want && !inGroups.includes(want)) out.push({ invariant: 'birthright-held', detail: `${p.username} (${p.department}) is not a member of its birthright group` });
    for (const entId of new Set([...active, ...inGroups])) {
      if (entId !== want) out.push({ invariant: 'birthright-held', detail: `${p.username} (${p.department ?? 'no department'}) still holds ${deptOfEnt.get(entId)} (${active.includes(entId) ? 'active grant' : 'member only'})` });
    }
  }
  return out;
}

/** The run's identity workflows and the personal data they must not show in clear. */
export async function hrHistoryMarkers(real: Real): Promise<{ workflowIds: string[]; markers: Array<{ what: string; s: string }> }> {
  const people = await hrIdentities(real.env, real.run.tag);
  return {
    workflowIds: people.map((p) => identityWorkflowId(p.id)),
    markers: people.flatMap((p) => [
      { what: `${p.username}'s display name`, s: p.display_name },
      ...(p.email ? [{ what: `${p.username}'s e-mail`, s: p.email }] : []),
      { what: `${p.username}'s HR id`, s: p.external_id },
      { what: `${p.username}'s directory DN`, s: `uid=${p.username},` },
    ]),
  };
}
