import { ApplicationFailure } from '@temporalio/activity';
import { and, desc, eq, inArray, notInArray } from 'drizzle-orm';
import { entitlements, grants, identities, reconciliationFindings, systems } from '../db/schema.js';
import { appendAudit } from './domain/audit.js';
import { connectorKinds } from './connectors/registry.js';
import { ConnectorError } from './connectors/types.js';
import type { ActivityDeps } from './deps.js';
import { isLiveJustification } from './lease-context.js';

type Kind = 'orphaned_account' | 'unauthorized_access' | 'failed_revocation' | 'missing_grant';

/**
 * Compares each entitlement's real members on the target with what the lifecycle says should
 * be there, records findings, and remediates what the policy allows:
 * - orphaned account: a member no active identity maps to;
 * - unauthorized access: an active identity that holds the membership with no grant;
 * - failed revocation: the identity's grant ended, yet the membership is there;
 * - missing grant: an active grant whose membership is absent.
 * Unauthorized access the policy leaves in place is adopted as a lease under a micro-review when
 * `reviews.onUnauthorized` is `micro_review` (docs/micro-reviews.md); the finding points at it.
 */
export function createReconciliationActivities({ db, connectors, policies, requests }: Pick<ActivityDeps, 'db' | 'connectors' | 'policies' | 'requests'>) {
  return {
    async reconcileSystem(input: { systemId: string; runId: string }) {
      const [system] = await db.select().from(systems).where(eq(systems.id, input.systemId));
      if (!system) throw ApplicationFailure.nonRetryable('system not found', 'NotFound');
      const kind = connectorKinds[system.kind]!;
      const doc = (await policies.active()).document;
      const policy = doc.reconciliation;
      const adopt = doc.reviews?.onUnauthorized === 'micro_review' && requests !== undefined;
      const { connector, accountFor } = await connectors.forSystem(system.id);
      const people = await db.select({ id: identities.id, username: identities.username, status: identities.status }).from(identities);
      const byAccount = new Map<string, (typeof people)[number]>();
      for (const p of people) {
        try {
          byAccount.set(kind.normalizeAccount(accountFor(p)), p);
        } catch {
          /* a username this system cannot render: it cannot hold an account here */
        }
      }
      const ents = await db.select().from(entitlements).where(eq(entitlements.systemId, system.id));
      const counts: Record<Kind | 'remediated' | 'adopted' | 'memberships', number> = { orphaned_account: 0, unauthorized_access: 0, failed_revocation: 0, missing_grant: 0, remediated: 0, adopted: 0, memberships: 0 };
      const seen: string[] = [];

      for (const ent of ents) {
        let actual: string[];
        try {
          actual = await connector.list(ent.resource);
        } catch (e) {
          if (e instanceof ConnectorError && e.type === 'NoSuchResource') actual = [];
          else if (e instanceof ConnectorError) throw e.retryable ? ApplicationFailure.retryable(e.message, e.type) : ApplicationFailure.nonRetryable(e.message, e.type);
          else throw e;
        }
        counts.memberships += actual.length;
        const rows = await db
          .select({ id: grants.id, identityId: grants.identityId, status: grants.status, createdAt: grants.createdAt })
          .from(grants)
          .where(eq(grants.entitlementId, ent.id))
          .orderBy(desc(grants.createdAt));
        const live = new Set(rows.filter((g) => isLiveJustification(g)).map((g) => g.identityId));
        const latestEnded = new Map<string, string>();
        for (const g of rows) if ((g.status === 'revoked' || g.status === 'revocation_unverified') && !latestEnded.has(g.identityId)) latestEnded.set(g.identityId, g.id);

        const findings: Array<{ kind: Kind; account: string; identityId: string | null; grantId: string | null; detail: string }> = [];
        const present = new Set<string>();
        for (const account of actual) {
          const norm = kind.normalizeAccount(account);
          present.add(norm);
          const who = byAccount.get(norm);
          if (who && live.has(who.id)) continue;
          if (who && latestEnded.has(who.id)) findings.push({ kind: 'failed_revocation', account, identityId: who.id, grantId: latestEnded.get(who.id)!, detail: 'grant ended, membership still present' });
          else if (!who || who.status !== 'active') findings.push({ kind: 'orphaned_account', account, identityId: who?.id ?? null, grantId: null, detail: who ? `identity is ${who.status}` : 'no identity maps to this account' });
          else findings.push({ kind: 'unauthorized_access', account, identityId: who.id, grantId: null, detail: 'no grant explains this membership' });
        }
        for (const g of rows.filter((r) => r.status === 'active')) {
          const who = people.find((p) => p.id === g.identityId);
          if (!who) continue;
          const account = accountFor(who);
          if (!present.has(kind.normalizeAccount(account))) findings.push({ kind: 'missing_grant', account, identityId: who.id, grantId: g.id, detail: 'granted, but absent on the target' });
        }

        for (const f of findings) {
          counts[f.kind]++;
          const remediate =
            (f.kind === 'unauthorized_access' && (policy.removeUnauthorized === 'all' || (policy.removeUnauthorized === 'privileged' && ent.riskTier === 'privileged'))) ||
            (f.kind === 'failed_revocation' && policy.redriveFailedRevocations);
          let status: 'open' | 'remediated' = 'open';
          if (remediate) {
            const m = { account: f.account, resource: ent.resource };
            await connector.revoke(m);
            if (!(await connector.check(m)).present) status = 'remediated';
          }
          // Found (or refreshed) as open first: a remediation then closes that same finding; inserted
          // as remediated it would never meet the open-finding index and would add a second row.
          const [row] = await db
            .insert(reconciliationFindings)
            .values({ runId: input.runId, systemId: system.id, entitlementId: ent.id, kind: f.kind, account: f.account, identityId: f.identityId, grantId: f.grantId, detail: f.detail, status: 'open' })
            .onConflictDoUpdate({
              target: [reconciliationFindings.entitlementId, reconciliationFindings.account, reconciliationFindings.kind],
              targetWhere: eq(reconciliationFindings.status, 'open'),
              set: { runId: input.runId, detail: f.detail },
            })
            .returning({ id: reconciliationFindings.id });
          if (status === 'remediated') await db.update(reconciliationFindings).set({ status, remediatedAt: new Date() }).where(eq(reconciliationFindings.id, row!.id));
          seen.push(row!.id);
          if (status === 'open' && f.kind === 'unauthorized_access' && adopt && f.identityId) {
            // Refused while the holder has an open request for it (that request decides), or on a
            // retry of this run: the lease adopted the first time is the one that stays.
            const adopted = await requests!.adopt({ subjectId: f.identityId, entitlementId: ent.id, findingId: row!.id, runId: input.runId });
            if (adopted.ok) counts.adopted++;
          }
          if (status === 'remediated') {
            counts.remediated++;
            await db.transaction((tx) =>
              appendAudit(tx, {
                idempotencyKey: `reconcile/${input.runId}/${row!.id}`,
                actorType: 'workflow',
                actorId: 'reconciliationWorkflow',
                action: 'reconciliation.remediated',
                identityId: f.identityId,
                grantId: f.grantId,
                reason: f.kind,
                data: { entitlementId: ent.id, systemId: system.id },
              }),
            );
          }
        }
      }
      // What an earlier run found and this one no longer sees was fixed elsewhere: resolved.
      await db
        .update(reconciliationFindings)
        .set({ status: 'resolved' })
        .where(and(eq(reconciliationFindings.systemId, system.id), eq(reconciliationFindings.status, 'open'), seen.length ? notInArray(reconciliationFindings.id, seen) : undefined));
      await db.transaction((tx) =>
        appendAudit(tx, { idempotencyKey: `reconcile/${input.runId}/done`, actorType: 'workflow', actorId: 'reconciliationWorkflow', action: 'reconciliation.completed', data: { systemId: system.id, ...counts } }),
      );
      return counts;
    },

    async reconcilableSystems() {
      return (await db.select({ id: systems.id }).from(systems).where(inArray(systems.kind, Object.keys(connectorKinds)))).map((s) => s.id);
    },
  };
}
