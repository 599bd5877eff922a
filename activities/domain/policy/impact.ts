import { and, eq, inArray } from 'drizzle-orm';
import type { Db } from '../../../db/client.js';
import { accessRequests, entitlements, grants, identities, systems } from '../../../db/schema.js';
import { CompiledPolicy } from './evaluate.js';
import type { PolicyDocument } from './schema.js';
import { contextOf } from './service.js';

/** A live lease the candidate policy would not grant today, and why. */
export interface ImpactedGrant {
  grantId: string;
  requestId: string;
  identityId: string;
  entitlementId: string;
  /** `denied`: a deny rule or SoD rule refuses it now; `over_maximum`: the lease runs longer than the new maximum allows. */
  kind: 'denied' | 'over_maximum';
  reason: string;
  /** The rule that decided (a policy or a condition name), when one did. */
  rule?: string | undefined;
}

export interface PolicyImpact {
  /** Live requested or break-glass leases checked (birthright access follows its rules through the identity workflow). */
  checked: number;
  grants: ImpactedGrant[];
}

/**
 * What a policy version would change for access that already exists: every live lease that came
 * from a request is evaluated as if it were requested again now, by the same requester for the
 * same subject, with the subject's other live access as SoD facts. Read-only; the caller decides
 * what becomes of the result (findings, micro-reviews, the publish response).
 */
export async function policyImpact(db: Pick<Db, 'select'>, document: PolicyDocument, version: string, now = new Date()): Promise<PolicyImpact> {
  const policy = new CompiledPolicy(document, version);
  const live = await db
    .select({
      grantId: grants.id,
      identityId: grants.identityId,
      entitlementId: grants.entitlementId,
      grantedAt: grants.grantVerifiedAt,
      expiresAt: grants.expiresAt,
      requestId: accessRequests.id,
      requesterId: accessRequests.requesterId,
      justification: accessRequests.justification,
      duration: accessRequests.requestedDurationSeconds,
      ticketRef: accessRequests.ticketRef,
    })
    .from(grants)
    .innerJoin(accessRequests, eq(accessRequests.id, grants.requestId))
    .where(and(eq(grants.status, 'active'), inArray(grants.source, ['request', 'break_glass'])));
  if (live.length === 0) return { checked: 0, grants: [] };

  const identityIds = [...new Set(live.flatMap((g) => [g.identityId, g.requesterId]))];
  const entIds = [...new Set(live.map((g) => g.entitlementId))];
  const [people, ents] = await Promise.all([
    db.select().from(identities).where(inArray(identities.id, identityIds)),
    db.select().from(entitlements).where(inArray(entitlements.id, entIds)),
  ]);
  const sys = await db.select().from(systems).where(inArray(systems.id, [...new Set(ents.map((e) => e.systemId))]));
  const person = new Map(people.map((p) => [p.id, p]));
  const ent = new Map(ents.map((e) => [e.id, e]));
  const system = new Map(sys.map((s) => [s.id, s]));
  const heldBy = new Map<string, Set<string>>();
  for (const g of live) {
    if (!heldBy.has(g.identityId)) heldBy.set(g.identityId, new Set());
    heldBy.get(g.identityId)!.add(g.entitlementId);
  }

  const out: ImpactedGrant[] = [];
  for (const g of live) {
    const subject = person.get(g.identityId);
    const requester = person.get(g.requesterId);
    const e = ent.get(g.entitlementId);
    const s = e && system.get(e.systemId);
    if (!subject || !requester || !e || !s) continue;
    const held = new Set(heldBy.get(g.identityId));
    held.delete(g.entitlementId);
    const facts = { requesterId: g.requesterId, subjectId: g.identityId, entitlementId: g.entitlementId, durationSeconds: g.duration, justification: g.justification, ticketRef: g.ticketRef, requestId: g.requestId };
    const decision = policy.evaluate(contextOf(subject, requester, e, s, facts), { heldOrPending: held });
    const base = { grantId: g.grantId, requestId: g.requestId, identityId: g.identityId, entitlementId: g.entitlementId };
    if (decision.effect === 'deny') {
      out.push({ ...base, kind: 'denied', reason: decision.reason, rule: decision.fired.at(-1)?.rule ?? decision.policy ?? undefined });
      continue;
    }
    // The lease as held: from its verified grant to its current expiry.
    const start = g.grantedAt ?? now;
    const heldSeconds = g.expiresAt ? Math.round((g.expiresAt.getTime() - start.getTime()) / 1000) : 0;
    if (heldSeconds > decision.maxDurationSeconds) {
      out.push({ ...base, kind: 'over_maximum', reason: `the lease runs ${heldSeconds} seconds; the policy now allows at most ${decision.maxDurationSeconds}`, rule: decision.policy });
    }
  }
  return { checked: live.length, grants: out };
}
