/**
 * What the model-based test drives and reads: the real stack, a postgres.js client of its own on
 * the test database (invariants read rows directly, not through our API or drizzle layer), and,
 * per run, three fresh directory groups with their own catalog items so that runs (and the
 * shrinker's replays) never see each other's leases.
 */
import { randomBytes } from 'node:crypto';
import postgres from 'postgres';
import { demoGroupDn, DEMO_PLACEHOLDER_DN, DEMO_SUFFIX } from '../../activities/connectors/ldap/seed.js';
import { ldapModify, ldapsearchMembers, type LdapAdminHandle } from '../helpers/ldap.js';
import type { Stack } from '../helpers/stack.js';
import { createHrEnv, type HrEnv } from './hr.js';
import { startModelWorker, type ModelWorker } from './restarts.js';

export const PEOPLE = ['alice', 'bob', 'carol', 'dave'] as const;
export type Person = (typeof PEOPLE)[number];
/** Who can act through the API: the four people and the operator client. */
export const PRINCIPALS = [...PEOPLE, 'operator'] as const;
export type Principal = (typeof PRINCIPALS)[number];

/**
 * The per-run catalog, shaped like the demo's: medium, low and privileged risk, with owners
 * chosen so that "the owner is the subject" happens (bob for eng/prod, alice for fin) and short
 * maximum durations so that extensions can be refused by policy.
 */
export const ENTITLEMENTS = {
  eng: { owner: 'bob', riskTier: 'medium', maxDurationSeconds: 20 },
  fin: { owner: 'alice', riskTier: 'low', maxDurationSeconds: 30 },
  prod: { owner: 'bob', riskTier: 'privileged', maxDurationSeconds: 10 },
} as const satisfies Record<string, { owner: Person; riskTier: string; maxDurationSeconds: number }>;
export type EntKey = keyof typeof ENTITLEMENTS;
export const ENT_KEYS = Object.keys(ENTITLEMENTS) as EntKey[];

export interface PersonRef {
  id: string;
  token: string;
  username: string;
  displayName: string;
  email: string | null;
  externalId: string | null;
}

export interface ModelEnv {
  stack: Stack;
  sql: postgres.Sql;
  ldap: LdapAdminHandle;
  people: Record<Person, PersonRef>;
  operatorToken: string;
  /** The Temporal CLI binary and address, to read raw history without our codec. */
  temporalCli: string;
  temporalAddress: string;
  placeholderDn: string;
  /** The HR system's token, signing key and birthright groups (shared by all runs). */
  hr: HrEnv;
  /** The Temporal worker, restartable (the stack itself runs without one). */
  worker: ModelWorker;
}

export interface RunCatalog {
  tag: string;
  ents: Record<EntKey, { id: string; groupDn: string }>;
}

/** `stack` must run without its own worker and accept webhooks signed with `hrKey`. */
export async function createModelEnv(stack: Stack, temporal: { cli: string; address: string }, hrKey: Buffer): Promise<ModelEnv> {
  const sql = postgres(stack.tdb.url, { max: 3, onnotice: () => {} });
  const operatorToken = stack.catalog.tokens.operator!.token;
  // dave has no demo token, and alice's demo token cannot approve: mint both, so that every
  // person can request and approve (alice owns one of the run's entitlements).
  const mint = async (p: 'alice' | 'dave') => {
    const r = await stack.call('POST', '/v1/tokens', operatorToken, { principalId: stack.catalog.identities[p], roles: ['requester', 'approver'] });
    if (r.status !== 201) throw new Error(`cannot mint ${p}'s token: ${r.status} ${JSON.stringify(r.body)}`);
    return r.body.token as string;
  };
  const tokens: Record<Person, string> = {
    alice: await mint('alice'),
    bob: stack.catalog.tokens.bob!.token,
    carol: stack.catalog.tokens.carol!.token,
    dave: await mint('dave'),
  };
  const rows = await sql<Array<{ id: string; username: string; display_name: string; email: string | null; external_id: string | null }>>`
    select id, username, display_name, email, external_id from identity where username in ${sql([...PEOPLE])}`;
  const people = Object.fromEntries(
    PEOPLE.map((p) => {
      const r = rows.find((x) => x.username === p);
      if (!r) throw new Error(`demo identity ${p} missing`);
      return [p, { id: r.id, token: tokens[p], username: r.username, displayName: r.display_name, email: r.email, externalId: r.external_id }];
    }),
  ) as Record<Person, PersonRef>;
  const ldap = { url: stack.slapd.url, rootDn: stack.slapd.rootDn, rootPassword: stack.slapd.rootPassword };
  return {
    stack,
    sql,
    ldap,
    people,
    operatorToken,
    temporalCli: temporal.cli,
    temporalAddress: temporal.address,
    placeholderDn: DEMO_PLACEHOLDER_DN,
    hr: await createHrEnv(stack, ldap, operatorToken, hrKey),
    worker: await startModelWorker(stack),
  };
}

/** Three new groups (holding only the placeholder) and their catalog items, owned as in ENTITLEMENTS. */
export async function createRunCatalog(env: ModelEnv): Promise<RunCatalog> {
  const tag = randomBytes(3).toString('hex');
  const ents = {} as RunCatalog['ents'];
  for (const key of ENT_KEYS) {
    const spec = ENTITLEMENTS[key];
    const cn = `model-${tag}-${key}`;
    const groupDn = demoGroupDn(DEMO_SUFFIX, cn);
    await ldapModify(env.ldap, `dn: ${groupDn}\nchangetype: add\nobjectClass: groupOfNames\ncn: ${cn}\nmember: ${env.placeholderDn}\n`);
    const r = await env.stack.call('POST', '/v1/entitlements', env.operatorToken, {
      systemId: env.stack.catalog.systemId,
      name: `Model ${key} ${tag}`,
      resource: groupDn,
      ownerId: env.people[spec.owner].id,
      riskTier: spec.riskTier,
      defaultDurationSeconds: 4,
      maxDurationSeconds: spec.maxDurationSeconds,
    });
    if (r.status !== 201) throw new Error(`cannot create entitlement ${key}: ${r.status} ${JSON.stringify(r.body)}`);
    ents[key] = { id: r.body.id as string, groupDn };
  }
  return { tag, ents };
}

/** Members of a run group, read with ldapsearch (never through our connector). */
export const groupMembers = (env: ModelEnv, groupDn: string) => ldapsearchMembers(env.ldap, groupDn);

export async function closeModelEnv(env: ModelEnv | undefined): Promise<void> {
  await env?.worker.stop();
  await env?.sql.end({ timeout: 5 });
}
