import { ApplicationFailure } from '@temporalio/activity';
import { WorkflowNotFoundError } from '@temporalio/client';
import { and, eq, gt, inArray, isNotNull, isNull, lt, ne, notInArray, or, sql } from 'drizzle-orm';
import {
  accessRequests,
  apiTokens,
  auditEvents,
  entitlements,
  grants,
  identities,
  sentinelFindings,
  systems,
  type Grant,
  type SentinelFindingKind,
} from '../db/schema.js';
import type * as workflows from '../workflows/index.js';
import { appendAudit } from './domain/audit.js';
import { endCredentials } from './domain/vault.js';
import { revokeLoginCredential } from './credentials.js';
import { connectorKinds } from './connectors/registry.js';
import { ConnectorError, type Connector, type Membership } from './connectors/types.js';
import type { ActivityDeps } from './deps.js';
import { FINAL_GRANT_STATES, setRequestStatus, withMembershipLock } from './lease-context.js';

/** One sentinel run's settings; the schedule carries them so activities need no config of their own. */
export interface SentinelCheckInput {
  runId: string;
  /** How far past a deadline (expiry, grant, removal deadline, termination) before it is a finding. */
  graceSeconds: number;
  /** The lease workflows' verification deadline: a removal is overdue past it plus the grace. */
  revokeDeadlineSeconds: number;
  /** Running lease workflows described per run for a failing workflow task (default 500; see sentinelCheckWorkflows). */
  workflowDescribeBatch?: number | undefined;
}

export interface SentinelCounts {
  findings: number;
  alerted: number;
  removed: number;
  /** Systems whose members could not be listed this run (the next run tries again). */
  unreachable: number;
}

interface Finding {
  kind: SentinelFindingKind;
  /** What the finding is about: a grant id, `<entitlementId>/<account>`, a workflow id. */
  subjectKey: string;
  grantId?: string | undefined;
  requestId?: string | undefined;
  entitlementId?: string | undefined;
  identityId?: string | undefined;
  workflowId?: string | undefined;
  /** May name a directory account: kept in our database, never in logs, history or webhooks. */
  detail: string;
}

/** A finding the sentinel may end itself (`remove` reads the target back before it returns). */
type Removable = Finding & { remove?: (findingId: string) => Promise<void> };

const SENTINEL = { actorType: 'system', actorId: 'sentinel' } as const;
/** Requests whose lease workflow must still be running. */
const OPEN_REQUEST = ['pending_approval', 'scheduled', 'granting', 'active', 'revoking', 'revocation_unverified'] as const;
/** The lease workflow's type name; typed against the exported workflows, so a rename fails to compile. */
const LEASE_WORKFLOW_TYPE: keyof typeof workflows = 'accessRequestWorkflow';
const RUNNING_LEASE_WORKFLOWS = `WorkflowType = '${LEASE_WORKFLOW_TYPE}' AND ExecutionStatus = 'Running'`;
const DEFAULT_WORKFLOW_DESCRIBE_BATCH = 500;
/** Grant states that explain a member on the target (the in-flight ones have checks of their own). */
const EXPLAINS_MEMBER = ['granting', 'active', 'revoking', 'revocation_unverified'] as const;

/**
 * The independent sentinel: reads the database, the targets and Temporal, never asks the lease
 * workflows, and raises each finding once (audit `sentinel.alert`, metric, signed webhook to the
 * entitlement owner and the operators). Where the policy's `sentinel.remove` says so it removes
 * the access itself through the connector, reads it back, and closes the grant as `sentinel`.
 * See docs/architecture.md#sentinel.
 */
export function createSentinelActivities(deps: Pick<ActivityDeps, 'db' | 'connectors' | 'policies' | 'notifier' | 'metrics' | 'log' | 'temporal'>) {
  const { db, connectors, policies, notifier, metrics, log } = deps;
  /**
   * When each running lease workflow was last described by this worker, so the bounded batch
   * rotates through all of them, least recently described first. Kept in memory: losing it on a
   * restart only restarts the rotation.
   */
  const lastDescribed = new Map<string, number>();

  async function removalPolicy(): Promise<'expired' | 'all' | 'none'> {
    return (await policies.active()).document.sentinel?.remove ?? 'expired';
  }

  const shouldRemove = (policy: 'expired' | 'all' | 'none', kind: SentinelFindingKind) =>
    (policy === 'expired' && kind === 'expired_not_revoked') ||
    (policy === 'all' && ['expired_not_revoked', 'removal_overdue', 'terminated_with_grant', 'unjustified_member'].includes(kind));

  async function recipientsFor(entitlementId: string | undefined): Promise<string[]> {
    const operators = await db
      .selectDistinct({ id: apiTokens.identityId })
      .from(apiTokens)
      .where(and(isNotNull(apiTokens.identityId), isNull(apiTokens.revokedAt), sql`'operator' = any(${apiTokens.roles})`));
    const ids = new Set(operators.map((o) => o.id!));
    if (entitlementId) {
      const [e] = await db.select({ ownerId: entitlements.ownerId }).from(entitlements).where(eq(entitlements.id, entitlementId));
      if (e) ids.add(e.ownerId);
    }
    return [...ids].sort();
  }

  /** The finding's row (inserted once; a rerun finds the same unresolved row). */
  async function record(f: Finding) {
    await db
      .insert(sentinelFindings)
      .values({ kind: f.kind, subjectKey: f.subjectKey, grantId: f.grantId ?? null, entitlementId: f.entitlementId ?? null, identityId: f.identityId ?? null, detail: f.detail })
      .onConflictDoNothing();
    const [row] = await db
      .select()
      .from(sentinelFindings)
      .where(and(eq(sentinelFindings.kind, f.kind), eq(sentinelFindings.subjectKey, f.subjectKey), isNull(sentinelFindings.resolvedAt)));
    return row!;
  }

  /** Audit, webhook, metric: each once per finding, whatever the number of runs or retries. */
  async function alert(findingId: string, f: Finding, removed: boolean): Promise<boolean> {
    await db.transaction((tx) =>
      appendAudit(tx, {
        idempotencyKey: `sentinel/${findingId}/alert`,
        ...SENTINEL,
        action: 'sentinel.alert',
        requestId: f.requestId ?? null,
        grantId: f.grantId ?? null,
        identityId: f.identityId ?? null,
        reason: f.kind,
        data: { findingId, kind: f.kind, entitlementId: f.entitlementId ?? null, workflowId: f.workflowId ?? null, detail: f.detail, removed },
      }),
    );
    // Opaque ids and the kind only: the receiver looks details up behind access control.
    await notifier.alert({
      idempotencyKey: `sentinel/${findingId}`,
      requestId: f.requestId,
      recipientIds: await recipientsFor(f.entitlementId),
      data: { findingId, kind: f.kind, grantId: f.grantId ?? null, entitlementId: f.entitlementId ?? null, subjectId: f.identityId ?? null, workflowId: f.workflowId ?? null, removed },
    });
    const first = await db
      .update(sentinelFindings)
      .set({ alertedAt: new Date() })
      .where(and(eq(sentinelFindings.id, findingId), isNull(sentinelFindings.alertedAt)))
      .returning({ id: sentinelFindings.id });
    if (first.length === 0) return false;
    metrics.sentinelFindings.inc({ kind: f.kind });
    log.warn({ alert: 'sentinel', kind: f.kind, findingId }, 'sentinel finding');
    return true;
  }

  /** Removes the membership and reads it back; throws while it is still there. */
  async function removeVerified(connector: Connector, m: Membership): Promise<void> {
    try {
      await connector.revoke(m);
      if ((await connector.check(m)).present) throw new ConnectorError('TargetUnavailable', 'membership still present after revoke');
    } catch (e) {
      // A resource that does not exist holds no members: the removal is verified as such.
      if (!(e instanceof ConnectorError && e.type === 'NoSuchResource')) throw e;
    }
  }

  /**
   * Ends a grant directly. Overlap-safe: a membership another grant still justifies (live, not
   * past its own expiry + grace, subject not terminated) stays, and the grant ends as retained.
   */
  async function removeGrant(findingId: string, g: Grant, graceSeconds: number): Promise<void> {
    const [who] = await db.select().from(identities).where(eq(identities.id, g.identityId));
    const [ent] = await db.select().from(entitlements).where(eq(entitlements.id, g.entitlementId));
    if (!who || !ent) return;
    const cutoff = new Date(Date.now() - graceSeconds * 1000);
    const { connector, accountFor, system } = await connectors.forSystem(ent.systemId);
    const m = { account: accountFor(who), resource: ent.resource };
    // The same per-membership lock as the lease activities: a concurrent grant of this membership
    // cannot slip in between "nothing else justifies it" and the removal.
    const other = await withMembershipLock(db, { system, m }, async (tx) => {
      const [justified] =
        who.status === 'terminated'
          ? []
          : await tx
              .select({ id: grants.id })
              .from(grants)
              .where(
                and(
                  eq(grants.identityId, g.identityId),
                  eq(grants.entitlementId, g.entitlementId),
                  ne(grants.id, g.id),
                  inArray(grants.status, ['granting', 'active']),
                  or(isNull(grants.expiresAt), gt(grants.expiresAt, cutoff)),
                ),
              )
              .limit(1);
      if (!justified) {
        await removeVerified(connector, m);
        // As the lease's own removal: a login credential issued on the grant would otherwise keep
        // working until its VALID UNTIL, so it is revoked and read back before the grant closes.
        await revokeLoginCredential(tx, { connector, m, identity: who, entitlement: ent, system }, g.id);
      }
      return justified;
    });
    const now = new Date();
    await db.transaction(async (tx) => {
      const closed = await tx
        .update(grants)
        .set({ status: 'revoked', revokeReason: 'sentinel', revokedBy: 'sentinel', revokeRequestedAt: g.revokeRequestedAt ?? now, revokedAt: now, removalVerifiedAt: other ? null : now })
        .where(and(eq(grants.id, g.id), notInArray(grants.status, [...FINAL_GRANT_STATES])))
        .returning({ id: grants.id });
      if (closed.length === 0) return;
      await endCredentials(tx, g.id);
      await setRequestStatus(tx, g.requestId ?? undefined, 'revoked');
      await tx.update(sentinelFindings).set({ remediatedAt: now }).where(eq(sentinelFindings.id, findingId));
      await appendAudit(tx, {
        idempotencyKey: `sentinel/${findingId}/removed`,
        ...SENTINEL,
        action: other ? 'grant.ended_membership_retained' : 'grant.removal_verified',
        requestId: g.requestId,
        grantId: g.id,
        identityId: g.identityId,
        reason: 'sentinel',
        data: { findingId, retainedBy: other?.id ?? null },
      });
      metrics.removals.inc({ reason: 'sentinel', automated: 'true', verified: String(!other) });
    });
  }

  /**
   * Raises every finding, removes what the policy allows, and resolves this check's earlier
   * findings that are no longer seen. One failing alert or removal does not stop the others;
   * the activity then fails retryably so they are tried again.
   */
  async function handle(input: SentinelCheckInput, kinds: SentinelFindingKind[], found: Array<Removable>, counts: SentinelCounts) {
    const policy = await removalPolicy();
    const seen: string[] = [];
    let failures = 0;
    for (const f of found) {
      const row = await record(f);
      seen.push(row.id);
      counts.findings++;
      try {
        let removed = row.remediatedAt !== null;
        if (!removed && f.remove && shouldRemove(policy, f.kind)) {
          await f.remove(row.id);
          removed = true;
          counts.removed++;
        }
        if (!row.alertedAt && (await alert(row.id, f, removed))) counts.alerted++;
      } catch (e) {
        failures++;
        log.error({ alert: 'sentinel', kind: f.kind, findingId: row.id, errorType: e instanceof ConnectorError ? e.type : (e as Error).name }, 'sentinel could not act on a finding');
      }
    }
    // What a target we could not read may still show is not resolved: only a complete pass resolves.
    if (counts.unreachable === 0) {
      await db
        .update(sentinelFindings)
        .set({ resolvedAt: new Date() })
        .where(and(inArray(sentinelFindings.kind, kinds), isNull(sentinelFindings.resolvedAt), seen.length ? notInArray(sentinelFindings.id, seen) : undefined));
    }
    if (failures) throw ApplicationFailure.retryable(`sentinel could not act on ${failures} finding(s) in run ${input.runId}`, 'SentinelIncomplete');
    return counts;
  }

  const zero = (): SentinelCounts => ({ findings: 0, alerted: 0, removed: 0, unreachable: 0 });

  return {
    /** Grants the database says are overdue: past expiry, stuck granting, removal past deadline, leavers still holding. */
    async sentinelCheckGrants(input: SentinelCheckInput): Promise<SentinelCounts> {
      const now = Date.now();
      const graceCutoff = new Date(now - input.graceSeconds * 1000);
      const removalCutoff = new Date(now - (input.revokeDeadlineSeconds + input.graceSeconds) * 1000);
      const found: Array<Removable> = [];
      const ref = (g: Grant) => ({ subjectKey: g.id, grantId: g.id, requestId: g.requestId ?? undefined, entitlementId: g.entitlementId, identityId: g.identityId });
      const removal = (g: Grant) => (findingId: string) => removeGrant(findingId, g, input.graceSeconds);

      const expired = await db.select().from(grants).where(and(inArray(grants.status, ['active', 'revoking', 'revocation_unverified']), lt(grants.expiresAt, graceCutoff)));
      for (const g of expired) found.push({ kind: 'expired_not_revoked', ...ref(g), detail: `status ${g.status}, expired ${g.expiresAt!.toISOString()}`, remove: removal(g) });

      const stuck = await db.select().from(grants).where(and(eq(grants.status, 'granting'), lt(grants.createdAt, graceCutoff)));
      for (const g of stuck) found.push({ kind: 'stuck_granting', ...ref(g), detail: `granting since ${g.createdAt.toISOString()}` });

      const overdue = await db
        .select()
        .from(grants)
        .where(
          and(
            inArray(grants.status, ['revoking', 'revocation_unverified']),
            lt(grants.revokeRequestedAt, removalCutoff),
            sql`not exists (select 1 from ${auditEvents} where ${auditEvents.grantId} = ${grants.id} and ${auditEvents.action} = 'grant.revocation_unverified')`,
          ),
        );
      for (const g of overdue) found.push({ kind: 'removal_overdue', ...ref(g), detail: `revoke requested ${g.revokeRequestedAt!.toISOString()}, no unverified-revocation alert`, remove: removal(g) });

      const leavers = await db
        .select({ g: grants })
        .from(grants)
        .innerJoin(identities, eq(identities.id, grants.identityId))
        .where(and(eq(identities.status, 'terminated'), inArray(grants.status, ['granting', 'active']), sql`coalesce(${identities.terminatedAt}, ${identities.updatedAt}) < ${graceCutoff.toISOString()}::timestamptz`));
      for (const { g } of leavers) found.push({ kind: 'terminated_with_grant', ...ref(g), detail: 'identity terminated, grant still live', remove: removal(g) });

      return handle(input, ['expired_not_revoked', 'stuck_granting', 'removal_overdue', 'terminated_with_grant'], found, zero());
    },

    /** Members of managed groups that no grant explains, read from the targets themselves. */
    async sentinelCheckTargets(input: SentinelCheckInput): Promise<SentinelCounts> {
      const counts = zero();
      const found: Array<Removable> = [];
      const people = await db.select({ id: identities.id, username: identities.username }).from(identities);
      for (const system of await db.select().from(systems).where(inArray(systems.kind, Object.keys(connectorKinds)))) {
        const kind = connectorKinds[system.kind]!;
        let target: Awaited<ReturnType<typeof connectors.forSystem>>;
        try {
          target = await connectors.forSystem(system.id);
        } catch {
          counts.unreachable++;
          continue;
        }
        const byAccount = new Map<string, string>();
        for (const p of people) {
          try {
            byAccount.set(kind.normalizeAccount(target.accountFor(p)), p.id);
          } catch {
            /* a username this system cannot render: it cannot hold an account here */
          }
        }
        for (const ent of await db.select().from(entitlements).where(eq(entitlements.systemId, system.id))) {
          let members: string[];
          try {
            members = await target.connector.list(ent.resource);
          } catch (e) {
            if (e instanceof ConnectorError && e.type === 'NoSuchResource') continue;
            // A target that is down is the lease workflows' and reconciliation's alert; try next run.
            counts.unreachable++;
            break;
          }
          const holders = await db.select({ identityId: grants.identityId }).from(grants).where(and(eq(grants.entitlementId, ent.id), inArray(grants.status, [...EXPLAINS_MEMBER])));
          const justified = new Set(holders.map((h) => h.identityId));
          for (const account of members) {
            const norm = kind.normalizeAccount(account);
            const identityId = byAccount.get(norm);
            if (identityId && justified.has(identityId)) continue;
            const m = { account, resource: ent.resource };
            found.push({
              kind: 'unjustified_member',
              subjectKey: `${ent.id}/${norm}`,
              entitlementId: ent.id,
              identityId,
              detail: `member ${account} has no live grant`,
              remove: async (findingId: string) => {
                await removeVerified(target.connector, m);
                await db.transaction(async (tx) => {
                  await tx.update(sentinelFindings).set({ remediatedAt: new Date() }).where(eq(sentinelFindings.id, findingId));
                  await appendAudit(tx, { idempotencyKey: `sentinel/${findingId}/removed`, ...SENTINEL, action: 'sentinel.removed', identityId: identityId ?? null, reason: 'unjustified_member', data: { findingId, entitlementId: ent.id, account } });
                });
              },
            });
          }
        }
      }
      return handle(input, ['unjustified_member'], found, counts);
    },

    /**
     * Lease workflows of open requests that have ended, or whose last workflow task failed.
     *
     * One visibility listing of the running lease workflows replaces a describe per open request.
     * Visibility is eventually consistent, so a request whose workflow it does not list is only a
     * candidate: a describe confirms it (NotFound or a closed status) before it is a finding. A
     * failing workflow task shows in no search attribute this server has (TemporalReportedProblems
     * needs Temporal Server 1.30+; the dev server bundles 1.29.1), so running workflows are
     * described in a bounded batch per run, least recently described first, plus every workflow
     * with an unresolved finding, so a finding stays open until a describe shows it cleared.
     */
    async sentinelCheckWorkflows(input: SentinelCheckInput): Promise<SentinelCounts> {
      const counts = zero();
      const temporal = deps.temporal;
      if (!temporal) return counts;
      const cutoff = new Date(Date.now() - input.graceSeconds * 1000);
      const open = await db
        .select({ id: accessRequests.id, workflowId: accessRequests.workflowId, subjectId: accessRequests.subjectId, entitlementId: accessRequests.entitlementId, status: accessRequests.status })
        .from(accessRequests)
        .where(and(inArray(accessRequests.status, [...OPEN_REQUEST]), lt(accessRequests.updatedAt, cutoff)));
      const running = new Set<string>();
      for await (const w of temporal.workflow.list({ query: RUNNING_LEASE_WORKFLOWS, pageSize: 1000 })) running.add(w.workflowId);
      const flagged = await db
        .select({ subjectKey: sentinelFindings.subjectKey })
        .from(sentinelFindings)
        .where(and(inArray(sentinelFindings.kind, ['workflow_ended', 'workflow_task_failed']), isNull(sentinelFindings.resolvedAt)));
      const stillFlagged = new Set(flagged.map((f) => f.subjectKey));

      const confirm = open.filter((r) => !running.has(r.workflowId) || stillFlagged.has(r.workflowId));
      const batch = Math.max(0, input.workflowDescribeBatch ?? DEFAULT_WORKFLOW_DESCRIBE_BATCH);
      const rotation = open
        .filter((r) => running.has(r.workflowId) && !stillFlagged.has(r.workflowId))
        .sort((a, b) => (lastDescribed.get(a.workflowId) ?? 0) - (lastDescribed.get(b.workflowId) ?? 0))
        .slice(0, batch);
      const openIds = new Set(open.map((r) => r.workflowId));
      for (const id of lastDescribed.keys()) if (!openIds.has(id)) lastDescribed.delete(id);

      const found: Finding[] = [];
      for (const r of [...confirm, ...rotation]) {
        const base = { subjectKey: r.workflowId, requestId: r.id, entitlementId: r.entitlementId, identityId: r.subjectId, workflowId: r.workflowId };
        let d: Awaited<ReturnType<ReturnType<typeof temporal.workflow.getHandle>['describe']>>;
        try {
          d = await temporal.workflow.getHandle(r.workflowId).describe();
        } catch (e) {
          if (!(e instanceof WorkflowNotFoundError)) throw e;
          found.push({ kind: 'workflow_ended', ...base, detail: `request ${r.status}, no lease workflow` });
          continue;
        } finally {
          lastDescribed.set(r.workflowId, Date.now());
        }
        if (d.status.name !== 'RUNNING') found.push({ kind: 'workflow_ended', ...base, detail: `request ${r.status}, workflow ${d.status.name}` });
        // A pending task on its second attempt or later means the one before it failed.
        else if ((d.raw.pendingWorkflowTask?.attempt ?? 0) > 1) found.push({ kind: 'workflow_task_failed', ...base, detail: `workflow task attempt ${d.raw.pendingWorkflowTask!.attempt}` });
      }
      return handle(input, ['workflow_ended', 'workflow_task_failed'], found, counts);
    },
  };
}
