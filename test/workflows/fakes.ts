import { ApplicationFailure } from '@temporalio/common';
import type { AdoptionActivities, ApprovalActivities, CredentialActivities, LeaseActivities, NotificationActivities } from '../../activities/index.js';

// Fake activities for accessRequestWorkflow, typed from the real factories' slices: a renamed
// activity or a changed input/result shape fails to compile here before it can pass a test by accident.

/** The slices accessRequestWorkflow (with removeUntilVerified) proxies. */
export type LifecycleActivities = ApprovalActivities & LeaseActivities & CredentialActivities & NotificationActivities & AdoptionActivities;
export type LifecycleActivityName = keyof LifecycleActivities;
export type InputOf<N extends LifecycleActivityName> = Parameters<LifecycleActivities[N]>[0];
export type ResultOf<N extends LifecycleActivityName> = Awaited<ReturnType<LifecycleActivities[N]>>;
export type PolicyResult = ResultOf<'evaluatePolicy'>;
export type PolicyStage = NonNullable<PolicyResult['stages']>[number];

/** What a test scripts: any activity's behaviour; the rest answer like a healthy target and database. */
export type Script = { [N in LifecycleActivityName]?: (input: InputOf<N>) => ResultOf<N> | Promise<ResultOf<N>> };

export interface Call<N extends LifecycleActivityName = LifecycleActivityName> {
  name: N;
  input: InputOf<N>;
  /** Wall-clock ms when the attempt started and ended (undefined while running). */
  startedAt: number;
  endedAt?: number;
  failed?: boolean;
  result?: ResultOf<N>;
}

const now = () => new Date().toISOString();

/** Unscripted, every activity answers like a healthy target and database (one entry per activity of the slices). */
const healthy: { [N in LifecycleActivityName]: (input: InputOf<N>) => ResultOf<N> | Promise<ResultOf<N>> } = {
  evaluatePolicy: () => autoApprove(),
  recordAutoApproval: () => undefined,
  openApprovalStage: () => undefined,
  recordDecision: () => undefined,
  escalateStage: () => ({ approverIds: [] }),
  notify: () => ({ status: 'sent' }),
  closeUnapproved: () => undefined,
  recordScheduled: () => undefined,
  grantAccess: () => ({ changed: true }),
  verifyGranted: (input) => ({ verifiedAt: now(), expiresAt: input.expiresAt }),
  rotateCredential: () => ({ id: 'rotated', kind: 'password', notAfter: now() }),
  renewCredential: () => undefined,
  recordExtension: () => undefined,
  closeExtension: () => undefined,
  reviewStages: () => [],
  beginRevocation: () => undefined,
  removeAndVerify: () => ({ changed: true, retainedBy: undefined, verifiedAt: now() }),
  markRevocationUnverified: () => undefined,
  completeRevocation: () => undefined,
  markFailed: () => undefined,
  recordAdoption: () => undefined,
  openAdoptionReview: () => ({ campaignId: 'campaign-1', itemId: 'item-1' }),
};

export const lifecycleActivityNames = Object.keys(healthy) as LifecycleActivityName[];

/**
 * Records every attempt in order (name, input, start and end) and answers from the script.
 * Activities run in the test's process, so the log is read directly, without a database.
 */
export class FakeActivities {
  readonly calls: Call[] = [];
  readonly activities: LifecycleActivities;

  constructor(script: Script = {}) {
    const entries = lifecycleActivityNames.map((name) => {
      const impl = (script[name] ?? healthy[name]) as (input: unknown) => unknown;
      const recorded = async (input: unknown) => {
        const call: Call = { name, input: input as never, startedAt: Date.now() };
        this.calls.push(call);
        try {
          const result = await impl(input);
          call.result = result as never;
          return result;
        } catch (err) {
          call.failed = true;
          throw err;
        } finally {
          call.endedAt = Date.now();
        }
      };
      return [name, recorded] as const;
    });
    this.activities = Object.fromEntries(entries) as unknown as LifecycleActivities;
  }

  /** Inputs of every attempt of one activity, in order. */
  inputsOf<N extends LifecycleActivityName>(name: N): Array<InputOf<N>> {
    return this.calls.filter((c) => c.name === name).map((c) => c.input as InputOf<N>);
  }

  count(name: LifecycleActivityName): number {
    return this.calls.filter((c) => c.name === name).length;
  }

  names(): LifecycleActivityName[] {
    return this.calls.map((c) => c.name);
  }

  /** Pairs of executions of these activities that ran at the same time (a running one counts as open-ended). */
  overlaps(names: LifecycleActivityName[]): Array<[Call, Call]> {
    const ops = this.calls.filter((c) => names.includes(c.name));
    const end = (c: Call) => c.endedAt ?? Infinity;
    const found: Array<[Call, Call]> = [];
    ops.forEach((a, i) => ops.slice(i + 1).forEach((b) => a.startedAt < end(b) && b.startedAt < end(a) && found.push([a, b])));
    return found;
  }
}

// ---- policy results ------------------------------------------------------------------------

const POLICY_VERSION = 'test-policy@1';

export function autoApprove(opts: { extendRequiresApproval?: boolean; maxDurationSeconds?: number } = {}): PolicyResult {
  return { effect: 'auto_approve', policyVersion: POLICY_VERSION, maxDurationSeconds: opts.maxDurationSeconds ?? 3600, fired: ['auto'], reason: 'test policy', extendRequiresApproval: opts.extendRequiresApproval ?? false, stages: [] };
}

export function routeTo(stages: PolicyStage[], opts: { extendRequiresApproval?: boolean; maxDurationSeconds?: number } = {}): PolicyResult {
  return { effect: 'route', policyVersion: POLICY_VERSION, maxDurationSeconds: opts.maxDurationSeconds ?? 3600, fired: ['route'], reason: undefined, extendRequiresApproval: opts.extendRequiresApproval ?? false, stages };
}

export function deny(reason: string): PolicyResult {
  return { effect: 'deny', policyVersion: POLICY_VERSION, maxDurationSeconds: 0, fired: ['deny'], reason, extendRequiresApproval: false, stages: [] };
}

/** One approval stage; timings in seconds, as the policy resolver returns them. */
export function stage(name: string, approverIds: string[], opts: { quorum?: number; timeoutSeconds?: number; reminderAfterSeconds?: number; escalateAfterSeconds?: number; requireComment?: boolean } = {}): PolicyStage {
  return {
    name,
    quorum: opts.quorum ?? 1,
    ...(opts.timeoutSeconds ? { timeoutSeconds: opts.timeoutSeconds } : {}),
    ...(opts.reminderAfterSeconds ? { reminderAfterSeconds: opts.reminderAfterSeconds } : {}),
    ...(opts.escalateAfterSeconds ? { escalateAfterSeconds: opts.escalateAfterSeconds } : {}),
    requireComment: opts.requireComment ?? false,
    approverIds,
    onBehalfOf: {},
  };
}

// ---- target behaviour ----------------------------------------------------------------------

/** A target that keeps a removed membership visible until the test heals it (retryable, like a lagging replica). */
export function laggingRemoval(): { removeAndVerify: NonNullable<Script['removeAndVerify']>; heal(): void; readonly verifiedAt: string | undefined } {
  let healed = false;
  let verifiedAt: string | undefined;
  return {
    removeAndVerify: () => {
      if (!healed) throw ApplicationFailure.retryable('membership still present after revoke', 'TargetUnavailable');
      verifiedAt ??= now();
      return { changed: true, retainedBy: undefined, verifiedAt };
    },
    heal: () => void (healed = true),
    get verifiedAt() {
      return verifiedAt;
    },
  };
}

export const delay = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));
