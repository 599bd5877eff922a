/**
 * Randomized, model-based runs against the real stack (issue 11): fast-check generates
 * sequences of requests, decisions by random principals (through the API and straight to the
 * workflow), extensions, revokes through the API and as raw Temporal signals with valid and
 * invalid payloads, HR joiners, movers and leavers through the signed webhook (fresh workers per
 * sequence), and rare restarts: the worker process SIGKILLed (or, less often, stopped with
 * SIGTERM) and started again, and slapd; each sequence then goes quiet and the invariants are read
 * from slapd, Postgres and the raw history (invariants.ts).
 *
 * Sizes and replay (env):
 *   MODEL_RUNS    sequences (default 4; `npm run soak` runs 40)
 *   MODEL_OPS     maximum operations per sequence (default 14; soak 25)
 *   MODEL_SEED    replay: the seed printed by a failing (or any) run (CI=true without MODEL_RUNS: a fixed seed)
 *   MODEL_PATH    replay: the path printed with it (goes straight to the shrunk case; same MODEL_OPS)
 *   MODEL_SHRINKS shrink attempts (default 6; every attempt replays a sequence on the real stack)
 *   MODEL_TIME_LIMIT_SECONDS  stop generating (and shrinking) after this long (default 240)
 *   MODEL_RESTART_WEIGHT  how often worker crashes/restarts and slapd restarts are drawn (default 1: about one step in forty each kind; the bench uses 3)
 *   MODEL_VERBOSE print every sequence's trace, passing or not
 *   MODEL_COLLECT survey: run every sequence, then print pass/fail per invariant (no shrinking)
 *   MODEL_REPORT  write what the random sequences did (operations by kind, restarts, violations per
 *                 invariant, duration) as JSON to this file (report.ts; `npm run bench` uses it)
 *
 * A failing sequence, once understood, goes into REGRESSIONS below as explicit commands (seeds
 * do not survive a change to the generators), and is replayed on every run.
 */
import { Client } from '@temporalio/client';
import fc from 'fast-check';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { revokeSignal } from '../../workflows/messages.js';
import { ldapModify } from '../helpers/ldap.js';
import { startStack, type Stack } from '../helpers/stack.js';
import { cmd, commandSequence, newModel, type Model, type Real } from './commands.js';
import { closeModelEnv, createModelEnv, createRunCatalog, type ModelEnv } from './env.js';
import { hrWebhookSecret } from './hr.js';
import { checkInvariants, formatViolations, INVARIANTS, quiesce, type InvariantName } from './invariants.js';
import { ModelTally } from './report.js';

const num = (name: string, dflt: number) => (process.env[name] ? Number(process.env[name]) : dflt);
const RUNS = num('MODEL_RUNS', 4);
const OPS = num('MODEL_OPS', 14);
const SHRINKS = num('MODEL_SHRINKS', 6);
const TIME_LIMIT_MS = num('MODEL_TIME_LIMIT_SECONDS', 240) * 1000;
// CI replays one fixed seed so a landing never hinges on a draw; `npm run soak` and local runs
// draw a fresh seed each time (printed, so any failure can be replayed).
const CI_SEED = 20261201;
const SEED = num('MODEL_SEED', process.env.CI === 'true' && !process.env.MODEL_RUNS ? CI_SEED : Math.floor(Math.random() * 0x7fffffff));
const PATH = process.env.MODEL_PATH;
/** Survey mode: keep going past failures and print a tally per invariant (no shrinking). */
const COLLECT = !!process.env.MODEL_COLLECT;
const tally = new Map<string, Array<{ detail: string; sequence: string }>>();

let stack: Stack;
let env: ModelEnv;

beforeAll(async () => {
  const hr = hrWebhookSecret();
  // No worker in the stack: the model runs its own as a child process (restarts.ts), so that it can kill it.
  stack = await startStack({ worker: false, env: { ACCESSLOOP_HR_WEBHOOK_SECRETS: hr.secret } });
  env = await createModelEnv(stack, { cli: inject('temporalCli'), address: inject('temporalAddress') }, hr.key);
});
afterAll(async () => {
  await closeModelEnv(env);
  await stack?.stop();
});

const newReal = async (): Promise<Real> => ({ env, run: await createRunCatalog(env), trace: [], outages: [] });

/**
 * One sequence on a fresh set of groups: run the commands, go quiet, read the invariants. The
 * random sequences are counted for the report (`counted`); regressions are not.
 */
async function runSequence(cmds: Array<fc.AsyncCommand<Model, Real>>, counted?: ModelTally): Promise<void> {
  const real = await newReal();
  if (process.env.MODEL_VERBOSE) console.log(`[model] sequence: ${cmds.map(String).join(', ')}`);
  await fc.asyncModelRun(() => ({ model: newModel(), real }), counted ? counted.counted(cmds) : cmds);
  const quiet = Date.now();
  await quiesce(real);
  const quiesceMs = Date.now() - quiet;
  // A worker that died on its own is a finding (it is started again so the run can go on).
  const died = await env.worker.unexpectedExits();
  const violations = await checkInvariants(real);
  const timedOut = [...Object.entries(real.timeouts?.activities ?? {}), ...Object.entries(real.timeouts?.workflowTasks ?? {}).map(([k, n]) => [`workflow task (${k})`, n])];
  if (timedOut.length) real.trace.push(`history: timed out ${timedOut.map(([k, n]) => `${k} ×${n}`).join(', ')}`);
  counted?.sequence(real, cmds, quiesceMs, violations, died.length);
  if (process.env.MODEL_VERBOSE) console.log(`[model] run ${real.run.tag}:\n${real.trace.map((t) => `    ${t}`).join('\n')}`);
  if (died.length > 0) throw new Error(`the worker exited on its own:\n${died.join('\n')}\n  trace:\n${real.trace.map((t) => `    ${t}`).join('\n')}`);
  if (COLLECT) {
    for (const v of violations) tally.set(v.invariant, [...(tally.get(v.invariant) ?? []), { detail: v.detail, sequence: [...cmds].map(String).join(', ') }]);
    return;
  }
  if (violations.length > 0) throw new Error(`invariants violated:\n${formatViolations(violations)}\n  trace:\n${real.trace.map((t) => `    ${t}`).join('\n')}`);
}

/**
 * Sequences replayed on every run, written out as commands: the shapes of known bugs, each with
 * the invariant it guards and where it came from (issue item, or the seed that found it).
 */
const REGRESSIONS: Array<{
  name: string;
  commands: () => Array<fc.AsyncCommand<Model, Real>>;
  /** For the bench's "seeds that found bugs fixed on the way" (report.ts foundBugs). */
  foundBy?: { seeds: number[]; invariant: InvariantName; bug: string; fix: string };
}> = [
  {
    // no-self-approval, issue 11 item 2: the owner is the subject, so nobody else resolves as
    // approver; today the request is refused up front (403 no_eligible_approver).
    name: 'a manager requests for the owner, and the owner (the subject) approves through the API and straight to the workflow',
    commands: () => [cmd.request('carol', 'fin', 3, 'alice'), cmd.decideApi(0, 'alice'), cmd.decideTemporal(0, 'alice')],
  },
  {
    // requests-closed, found by seed 452848027 (path 0:2:1, MODEL_OPS=16) and again by the soak's
    // seed 796014011: a withdrawal (revoke signal while pending) followed at once by the approval;
    // the workflow records request.cancelled and then request.approved, completes, and leaves the
    // row `granting` with no grant (a race: it fails on most runs, not all).
    name: 'a pending request withdrawn by signal, then approved',
    commands: () => [cmd.request('alice', 'fin', 2), cmd.revokeSignal(0, 'manual'), cmd.decideApi(0, 'assigned')],
    foundBy: {
      seeds: [452848027, 796014011],
      invariant: 'requests-closed',
      bug: 'a revoke signal while pending, then an approval at once: the row ended `granting` with no grant',
      fix: 'the decide validator refuses a decision once a revoke is requested (4b6fd58)',
    },
  },
  {
    // requests-closed, the same race through the API (survey seed 194008498): the subject
    // withdraws with POST /revoke (request.revoke_submitted → request.cancelled → request.approved).
    name: 'a pending request withdrawn through the API, then approved',
    commands: () => [cmd.request('alice', 'fin', 2), cmd.revokeApi(0, 'subject', 'manual'), cmd.decideApi(0, 'assigned')],
    foundBy: {
      seeds: [194008498],
      invariant: 'requests-closed',
      bug: 'the same race through the API: POST /revoke by the subject, then the approval',
      fix: 'the same validator (4b6fd58)',
    },
  },
  {
    // leavers-removed / birthright-held, with both restarts: a joiner, a mover whose old
    // birthright ends after the grace while the worker is SIGKILLed and started again, and a
    // leaver whose removal runs while slapd is away; a lease is granted around them so the
    // restarts meet it too.
    name: 'HR joiner, mover and leaver around a worker crash and a slapd restart',
    commands: () => [
      cmd.request('alice', 'fin', 4),
      cmd.joiner('model-a'),
      cmd.joiner('model-b'),
      cmd.decideApi(0, 'assigned'),
      cmd.mover(0, 'model-b'),
      cmd.crashWorker(),
      cmd.leaver(1),
      cmd.restartSlapd(1000),
    ],
  },
];

describe('model-based runs against the real stack', () => {
  it('notices planted violations (the invariants can fail)', async () => {
    const real = await newReal();
    // A member nobody granted, written straight into the directory.
    await ldapModify(env.ldap, `dn: ${real.run.ents.eng.groupDn}\nchangetype: modify\nadd: member\nmember: ${stack.userDn('dave')}\n`);
    await fc.asyncModelRun(() => ({ model: newModel(), real }), [cmd.request('alice', 'prod', 8), cmd.decideApi(0, 'assigned')]);
    const [row] = await env.sql<Array<{ id: string; workflow_id: string }>>`select id, workflow_id from access_request where entitlement_id = ${real.run.ents.prod.id}`;
    // Personal data in history: a signal from a client without our codec carries an e-mail in clear.
    const plain = new Client({ connection: stack.rt.temporal.connection, namespace: 'default' });
    await plain.workflow.getHandle(row!.workflow_id).signal(revokeSignal, { reason: 'manual', comment: `ask ${env.people.dave.email}` });
    await quiesce(real);
    // Rows rewritten behind the product's back: the subject as approver, an unverified and overdue
    // revocation, and one audit row edited (restored afterwards: the chain is shared by later runs).
    await env.sql`update approval set approver_id = ${env.people.alice.id} where request_id = ${row!.id} and status = 'approved'`;
    await env.sql`update "grant" set removal_verified_at = null, expires_at = now() - interval '1 hour' where request_id = ${row!.id}`;
    const [audit] = await env.sql<Array<{ seq: number; reason: string | null }>>`select seq, reason from audit_event where request_id = ${row!.id} order by seq limit 1`;
    await env.sql`update audit_event set reason = 'edited' where seq = ${audit!.seq}`;
    try {
      const found = new Set((await checkInvariants(real)).map((v) => v.invariant));
      expect([...found].sort()).toEqual(['audit-chain', 'history-clean', 'members-justified', 'no-lease-past-expiry', 'no-self-approval', 'revocations-verified']);
    } finally {
      await env.sql`update audit_event set reason = ${audit!.reason} where seq = ${audit!.seq}`;
    }
  });

  it('notices planted HR violations (the HR invariants can fail)', async () => {
    const real = await newReal();
    await fc.asyncModelRun(() => ({ model: newModel(), real }), [cmd.joiner('model-a'), cmd.joiner('model-b'), cmd.leaver(1)]);
    await quiesce(real);
    const [stayer, leaver] = await env.sql<Array<{ id: string; username: string }>>`
      select id, username from identity where external_id like ${`HR-M-${real.run.tag}-%`} order by external_id`;
    // The leaver written back into a group, the stayer taken out of its birthright group, and one
    // inbox row marked unprocessed, all behind the product's back.
    await ldapModify(env.ldap, `dn: ${env.hr.ents['model-a'].groupDn}\nchangetype: modify\nadd: member\nmember: ${stack.userDn(leaver!.username)}\n`);
    await ldapModify(env.ldap, `dn: ${env.hr.ents['model-a'].groupDn}\nchangetype: modify\ndelete: member\nmember: ${stack.userDn(stayer!.username)}\n`);
    await env.sql`update hr_event set processed_at = null where identity_id = ${stayer!.id}`;
    try {
      const found = new Set((await checkInvariants(real)).map((v) => v.invariant));
      expect([...found].sort()).toEqual(['birthright-held', 'hr-events-processed', 'leavers-removed']);
    } finally {
      // Restored: the groups and the inbox are shared by later runs.
      await env.sql`update hr_event set processed_at = received_at where identity_id = ${stayer!.id} and processed_at is null`;
      await ldapModify(env.ldap, `dn: ${env.hr.ents['model-a'].groupDn}\nchangetype: modify\ndelete: member\nmember: ${stack.userDn(leaver!.username)}\n`);
      await ldapModify(env.ldap, `dn: ${env.hr.ents['model-a'].groupDn}\nchangetype: modify\nadd: member\nmember: ${stack.userDn(stayer!.username)}\n`);
    }
  });

  it.each(REGRESSIONS)('regression: $name', async ({ commands }) => {
    await runSequence(commands());
  });

  it(`holds every invariant over ${RUNS} random sequences of up to ${OPS} operations (seed ${SEED})`, { timeout: TIME_LIMIT_MS + 120_000 }, async () => {
    console.log(`[model] seed ${SEED}${PATH ? ` path ${PATH}` : ''}: ${RUNS} runs × ≤${OPS} ops; replay with MODEL_SEED=${SEED}; invariants: ${Object.keys(INVARIANTS).join(', ')}`);
    const counts = new ModelTally({ seed: SEED, path: PATH ?? null, runsRequested: RUNS, maxOps: OPS, collect: COLLECT });
    const sequences = fc.limitShrink(commandSequence(OPS), SHRINKS);
    const property = fc.asyncProperty(sequences, (cmds) => runSequence(cmds, counts));
    let details: fc.RunDetails<[Array<fc.AsyncCommand<Model, Real>>]> | undefined;
    try {
      details = await fc.check(property, { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: TIME_LIMIT_MS, ...(PATH ? { path: PATH } : {}) });
    } finally {
      console.log(`[model] ${counts.summary()}`);
      await counts.write(process.env.MODEL_REPORT, {
        fastCheckRuns: details?.numRuns ?? 0,
        shrinks: details?.numShrinks ?? 0,
        failed: details?.failed ?? true,
        interrupted: details?.interrupted ?? false,
        foundBugs: REGRESSIONS.flatMap((r) => (r.foundBy ? [r.foundBy] : [])),
      });
    }
    if (details.failed) {
      const error = details.errorInstance instanceof Error ? details.errorInstance.message : String(details.errorInstance);
      // The path is only meaningful for the same generator shape, hence MODEL_OPS in the replay line.
      const replay = `MODEL_SEED=${details.seed} MODEL_PATH=${details.counterexamplePath ?? ''} MODEL_OPS=${OPS}`;
      const shrunk = details.counterexample?.[0]?.map(String).join(', ');
      console.log(`[model] FAILED — replay with ${replay} npx vitest run test/model -t "holds every"\n[model] shrunk sequence: [${shrunk}]\n${error}`);
    }
    if (COLLECT) {
      const lines = Object.keys(INVARIANTS).map((inv) => `  ${tally.has(inv) ? '✗' : '✓'} ${inv}${tally.has(inv) ? `: ${tally.get(inv)!.length} violation(s)\n${tally.get(inv)!.map((t) => `      - ${t.detail}\n        in [${t.sequence}]`).join('\n')}` : ''}`);
      console.log(`[model] survey of ${details.numRuns} sequences (seed ${SEED}):\n${lines.join('\n')}`);
      expect([...tally.keys()]).toEqual([]);
    }
    expect(details.failed, fc.defaultReportMessage(details) ?? '').toBe(false);
    console.log(`[model] ${details.numRuns} sequences passed${details.interrupted ? ' (stopped at the time limit)' : ''}`);
  });
});
