import { createHash, randomUUID } from 'node:crypto';
import { and, desc, eq, gt, inArray, isNull, or, sql } from 'drizzle-orm';
import type { z } from 'zod';
import { ZodError } from 'zod';
import { connectorKinds, SECRET_ENV_PREFIX } from '../../activities/connectors/registry.js';
import { appendAudit, type Tx } from '../../activities/domain/audit.js';
import { PolicyError, type PolicyService } from '../../activities/domain/policy/service.js';
import { policyImpact, type PolicyImpact } from '../../activities/domain/policy/impact.js';
import type { PolicyDocument } from '../../activities/domain/policy/schema.js';
import { hashToken, newToken } from '../../activities/domain/tokens.js';
import type { Db } from '../../db/client.js';
import { apiTokens, approverGroupMembers, approverGroups, delegations, entitlements, identities, systems } from '../../db/schema.js';
import { actorRef, hasRole, identityOf, type Principal } from '../auth.js';
import { badRequest, conflict, forbidden, notFound, zodDetails } from '../errors.js';
import type { createDelegationBody, createEntitlementBody, createGroupBody, createIdentityBody, createSystemBody, createTokenBody } from '../schemas.js';

/** Grant ids named in the `policy.published` audit event (the response lists them all). */
const IMPACT_AUDIT_LIMIT = 500;

/** Who acts, as the token says, and the HTTP request that carried it (for the audit trail). */
export interface AdminActor {
  principal: Principal;
  httpRequestId: string;
}

export interface AdminDeps {
  db: Db;
  policies: Pick<PolicyService, 'publish'>;
  /** Called after a system commits (its reconciliation schedule). */
  onSystemCreated?: (systemId: string) => Promise<void>;
  /** Called after a policy version commits, with the leases it no longer allows (micro-reviews, docs/reviews.md); its answer joins the response. */
  onPolicyImpact?: (impact: PolicyImpact, version: string, document: PolicyDocument, actorId: string) => Promise<unknown>;
}

/** Postgres unique violation → 409 instead of a 500. */
function onUnique(what: string) {
  return (e: unknown): never => {
    const code = (e as { code?: string; cause?: { code?: string } })?.cause?.code ?? (e as { code?: string })?.code;
    if (code === '23505') throw conflict('already_exists', `${what} already exists`);
    throw e;
  };
}

async function mustExist(db: Pick<Db, 'select'>, id: string | undefined, what: string) {
  if (!id) return;
  const [row] = await db.select({ id: identities.id }).from(identities).where(eq(identities.id, id));
  if (!row) throw badRequest('unknown_reference', `${what} ${id} does not exist`);
}

async function assertIdentities(db: Pick<Db, 'select'>, ids: string[]) {
  if (ids.length === 0) return;
  const found = await db.select({ id: identities.id }).from(identities).where(inArray(identities.id, ids));
  const missing = ids.filter((id) => !found.some((f) => f.id === id));
  if (missing.length) throw badRequest('unknown_reference', `identities do not exist: ${missing.join(', ')}`);
}

/** The listing form of a token: never the token, never its hash. */
const tokenView = (t: typeof apiTokens.$inferSelect) => ({
  id: t.id,
  principalId: t.identityId ?? `client:${t.clientName}`,
  roles: t.roles,
  description: t.description,
  createdBy: t.createdBy,
  createdAt: t.createdAt,
  expiresAt: t.expiresAt,
  revokedAt: t.revokedAt,
});
export type TokenView = ReturnType<typeof tokenView>;

/**
 * Operator set-up: identities, the catalog, approver groups, delegations, tokens and policy
 * publication. Every change and its audit event commit in one transaction, in the one chain,
 * with the token's principal as the actor. Audit data holds opaque ids and non-secret facts
 * only: never a token or its hash, never a secret value (secret *reference names* are config).
 */
export function createAdminService(deps: AdminDeps) {
  const { db, policies } = deps;

  /** One admin event. The key is unique per effect (row ids, or a fresh id for repeatable edits). */
  const audit = (tx: Tx, a: AdminActor, action: string, key: string, fields: { identityId?: string | null; reason?: string | null; policyVersion?: string; data?: Record<string, unknown> } = {}) =>
    appendAudit(tx, {
      idempotencyKey: `admin/${key}`,
      actorType: a.principal.identityId ? 'identity' : 'client',
      actorId: actorRef(a.principal),
      action,
      identityId: fields.identityId ?? null,
      reason: fields.reason ?? null,
      policyVersion: fields.policyVersion ?? null,
      data: { ...fields.data, httpRequestId: a.httpRequestId },
    });

  return {
    async createIdentity(a: AdminActor, body: z.output<typeof createIdentityBody>) {
      await mustExist(db, body.managerId, 'managerId');
      await mustExist(db, body.ownerId, 'ownerId');
      await mustExist(db, body.sponsorId, 'sponsorId');
      return db
        .transaction(async (tx) => {
          const [row] = await tx
            .insert(identities)
            .values({ ...body, endDate: body.endDate ? new Date(body.endDate) : null })
            .returning();
          // ids and the kind of identity, not its name or e-mail (personal data stays in its row)
          await audit(tx, a, 'identity.created', `identity/${row!.id}/created`, {
            identityId: row!.id,
            data: { kind: row!.kind, managerId: row!.managerId, ownerId: row!.ownerId, sponsorId: row!.sponsorId },
          });
          return row!;
        })
        .catch(onUnique('an identity with this username or externalId'));
    },

    /**
     * The key SSH certificates are issued for. The person themselves, the owner of a non-human
     * identity, or an operator may set it; only the public half ever reaches us.
     */
    async setSshPublicKey(a: AdminActor, identityId: string, publicKey: string) {
      const p = a.principal;
      const [who] = await db.select().from(identities).where(eq(identities.id, identityId));
      const mayWrite = hasRole(p, 'operator') || (p.identityId !== null && (p.identityId === who?.id || p.identityId === who?.ownerId));
      if (!who || !mayWrite) throw notFound('identity');
      const fingerprint = `SHA256:${createHash('sha256').update(Buffer.from(publicKey.split(' ')[1]!, 'base64')).digest('base64').replace(/=+$/, '')}`;
      await db.transaction(async (tx) => {
        await tx
          .update(identities)
          .set({ attributes: sql`${identities.attributes} || ${JSON.stringify({ sshPublicKey: publicKey })}::jsonb`, updatedAt: new Date() })
          .where(eq(identities.id, who.id));
        await appendAudit(tx, {
          idempotencyKey: `ssh-key/${who.id}/${fingerprint}/${randomUUID()}`,
          actorType: p.identityId ? 'identity' : 'client',
          actorId: actorRef(p),
          action: 'identity.ssh_key_set',
          identityId: who.id,
          data: { fingerprint, httpRequestId: a.httpRequestId },
        });
      });
      return { identityId: who.id, fingerprint };
    },

    async createSystem(a: AdminActor, body: z.output<typeof createSystemBody>) {
      const kind = connectorKinds[body.kind]!;
      let config: unknown;
      try {
        config = kind.parseConfig(body.config);
      } catch (e) {
        if (e instanceof ZodError) throw badRequest('invalid_config', `invalid ${body.kind} config`, zodDetails(e));
        throw e;
      }
      for (const name of kind.secrets) {
        const ref = body.secretRefs[name];
        if (!ref) throw badRequest('missing_secret_ref', `secretRefs.${name} is required for ${body.kind} systems`);
        if (!ref.startsWith(SECRET_ENV_PREFIX)) throw badRequest('invalid_secret_ref', `secretRefs.${name} must name an environment variable starting with ${SECRET_ENV_PREFIX}`);
      }
      const unknown = Object.keys(body.secretRefs).filter((k) => !kind.secrets.includes(k));
      if (unknown.length) throw badRequest('invalid_secret_ref', `unknown secret names for ${body.kind}: ${unknown.join(', ')}`);
      await mustExist(db, body.ownerId, 'ownerId');
      const row = await db
        .transaction(async (tx) => {
          const [s] = await tx
            .insert(systems)
            .values({ name: body.name, kind: body.kind, config: config as Record<string, unknown>, secretRefs: body.secretRefs, ownerId: body.ownerId })
            .returning();
          // secret reference names are configuration (env variable names), never the values
          await audit(tx, a, 'system.created', `system/${s!.id}/created`, { data: { systemId: s!.id, kind: s!.kind, ownerId: s!.ownerId, secretRefs: s!.secretRefs } });
          return s!;
        })
        .catch(onUnique('a system with this name'));
      await deps.onSystemCreated?.(row.id);
      return row;
    },

    async createEntitlement(a: AdminActor, body: z.output<typeof createEntitlementBody>) {
      const [system] = await db.select({ id: systems.id, kind: systems.kind }).from(systems).where(eq(systems.id, body.systemId));
      if (!system) throw badRequest('unknown_reference', `systemId ${body.systemId} does not exist`);
      // `credential` is not a free attribute: it decides what a grant issues.
      if (body.attributes.credential !== undefined && !(body.attributes.credential === 'password' && system.kind === 'postgres')) {
        throw badRequest('invalid_credential', 'attributes.credential must be "password", on a postgres system (SSH CA grants are always certificates)');
      }
      await mustExist(db, body.ownerId, 'ownerId');
      return db
        .transaction(async (tx) => {
          const [e] = await tx.insert(entitlements).values(body).returning();
          await audit(tx, a, 'entitlement.created', `entitlement/${e!.id}/created`, {
            data: { entitlementId: e!.id, systemId: e!.systemId, ownerId: e!.ownerId, riskTier: e!.riskTier, maxDurationSeconds: e!.maxDurationSeconds, requestable: e!.requestable },
          });
          return e!;
        })
        .catch(onUnique('an entitlement for this resource on this system'));
    },

    async createGroup(a: AdminActor, body: z.output<typeof createGroupBody>) {
      await assertIdentities(db, body.memberIds);
      const memberIds = [...new Set(body.memberIds)];
      const group = await db
        .transaction(async (tx) => {
          const [g] = await tx.insert(approverGroups).values({ name: body.name }).returning();
          if (memberIds.length) await tx.insert(approverGroupMembers).values(memberIds.map((identityId) => ({ groupId: g!.id, identityId })));
          await audit(tx, a, 'approver_group.created', `group/${g!.id}/created`, { data: { groupId: g!.id, memberIds } });
          return g!;
        })
        .catch(onUnique('a group with this name'));
      return { ...group, ref: `group:${group.id}`, memberIds: body.memberIds };
    },

    async setGroupMembers(a: AdminActor, groupId: string, identityIds: string[]) {
      const [g] = await db.select().from(approverGroups).where(eq(approverGroups.id, groupId));
      if (!g) throw notFound('group');
      await assertIdentities(db, identityIds);
      const memberIds = [...new Set(identityIds)];
      await db.transaction(async (tx) => {
        const before = await tx.delete(approverGroupMembers).where(eq(approverGroupMembers.groupId, g.id)).returning({ id: approverGroupMembers.identityId });
        if (memberIds.length) await tx.insert(approverGroupMembers).values(memberIds.map((identityId) => ({ groupId: g.id, identityId })));
        const was = new Set(before.map((m) => m.id));
        await audit(tx, a, 'approver_group.members_set', `group/${g.id}/members/${randomUUID()}`, {
          data: { groupId: g.id, memberIds, added: memberIds.filter((m) => !was.has(m)), removed: [...was].filter((m) => !memberIds.includes(m)) },
        });
      });
      return { id: g.id, ref: `group:${g.id}`, memberIds: identityIds };
    },

    async createDelegation(a: AdminActor, body: z.output<typeof createDelegationBody>) {
      const p = a.principal;
      const delegatorId = body.delegatorId ?? identityOf(p);
      if (delegatorId !== p.identityId && !hasRole(p, 'operator')) throw forbidden('you may delegate only your own approval tasks');
      if (delegatorId === body.delegateId) throw badRequest('invalid_request', 'cannot delegate to yourself');
      const people = await db.select({ id: identities.id, status: identities.status }).from(identities).where(inArray(identities.id, [delegatorId, body.delegateId]));
      if (people.length !== 2) throw badRequest('unknown_reference', 'delegator or delegate does not exist');
      if (people.some((x) => x.status !== 'active')) throw conflict('identity_inactive', 'delegator and delegate must both be active');
      return db.transaction(async (tx) => {
        const [row] = await tx
          .insert(delegations)
          .values({
            delegatorId,
            delegateId: body.delegateId,
            startsAt: body.startsAt ? new Date(body.startsAt) : new Date(),
            endsAt: new Date(body.endsAt),
            reason: body.reason ?? null,
            createdBy: actorRef(p),
          })
          .returning();
        await audit(tx, a, 'delegation.created', `delegation/${row!.id}/created`, {
          identityId: delegatorId,
          reason: row!.reason,
          data: { delegationId: row!.id, delegatorId, delegateId: row!.delegateId, startsAt: row!.startsAt, endsAt: row!.endsAt },
        });
        return row!;
      });
    },

    async endDelegation(a: AdminActor, id: string) {
      const p = a.principal;
      const [d] = await db.select().from(delegations).where(eq(delegations.id, id));
      if (!d || (d.delegatorId !== p.identityId && !hasRole(p, 'operator'))) throw notFound('delegation');
      await db.transaction(async (tx) => {
        // only the first end is a change (and an event); ending it again is a no-op
        const ended = await tx.update(delegations).set({ revokedAt: new Date() }).where(and(eq(delegations.id, d.id), isNull(delegations.revokedAt))).returning({ id: delegations.id });
        if (ended.length) await audit(tx, a, 'delegation.ended', `delegation/${d.id}/ended`, { identityId: d.delegatorId, data: { delegationId: d.id, delegateId: d.delegateId } });
      });
    },

    /** Publishes a policy; a new version and its `policy.published` event commit together. */
    async publishPolicy(a: AdminActor, text: string, source: string) {
      try {
        // Which live leases the new version would no longer allow: computed in the publishing
        // transaction, recorded with it, and answered to the publisher.
        let impact: PolicyImpact = { checked: 0, grants: [] };
        let published: PolicyDocument | undefined;
        const out = await policies.publish(text, source, actorRef(a.principal), async (tx, version, document) => {
          published = document;
          impact = await policyImpact(tx, document, version);
          await audit(tx, a, 'policy.published', `policy/${version}/${randomUUID()}`, {
            policyVersion: version,
            data: { source, impact: { checked: impact.checked, noLongerAllowed: impact.grants.length, grants: impact.grants.slice(0, IMPACT_AUDIT_LIMIT).map((g) => ({ grantId: g.grantId, kind: g.kind })) } },
          });
        });
        const reviews = deps.onPolicyImpact && published ? await deps.onPolicyImpact(impact, out.version, published, actorRef(a.principal)) : undefined;
        return { ...out, impact: { checked: impact.checked, noLongerAllowed: impact.grants.length, grants: impact.grants }, ...(reviews === undefined ? {} : { reviews }) };
      } catch (e) {
        if (e instanceof PolicyError) throw badRequest('invalid_policy', e.message, e.problems);
        throw e;
      }
    },

    ...tokenActions(db, audit),
  };
}

type Audit = (tx: Tx, a: AdminActor, action: string, key: string, fields?: { identityId?: string | null; data?: Record<string, unknown> }) => Promise<unknown>;

/** Token issue, listing and revocation. */
function tokenActions(db: Db, audit: Audit) {
  return {
    async issueToken(a: AdminActor, body: z.output<typeof createTokenBody>) {
      const isClient = body.principalId.startsWith('client:');
      if (!isClient) {
        const [who] = await db.select({ status: identities.status }).from(identities).where(eq(identities.id, body.principalId));
        if (!who) throw badRequest('unknown_reference', `identity ${body.principalId} does not exist`);
        if (who.status !== 'active') throw conflict('identity_inactive', 'tokens are issued to active identities only');
      }
      const expiresAt = body.expiresAt ? new Date(body.expiresAt) : body.expiresInSeconds ? new Date(Date.now() + body.expiresInSeconds * 1000) : null;
      const token = newToken();
      const row = await db.transaction(async (tx) => {
        const [t] = await tx
          .insert(apiTokens)
          .values({
            tokenHash: hashToken(token),
            identityId: isClient ? null : body.principalId,
            clientName: isClient ? body.principalId.slice('client:'.length) : null,
            roles: [...new Set(body.roles)],
            description: body.description ?? null,
            createdBy: actorRef(a.principal),
            expiresAt,
          })
          .returning();
        // the token's id and what it may do; the token and its hash never leave this function but in the answer
        await audit(tx, a, 'token.issued', `token/${t!.id}/issued`, {
          identityId: t!.identityId,
          data: { tokenId: t!.id, principalId: body.principalId, roles: t!.roles, expiresAt: t!.expiresAt },
        });
        return t!;
      });
      // Shown once; only its hash is stored.
      return { id: row.id, token, principalId: body.principalId, roles: row.roles, expiresAt: row.expiresAt };
    },

    async listTokens(): Promise<TokenView[]> {
      const rows = await db.select().from(apiTokens).orderBy(desc(apiTokens.createdAt));
      return rows.map(tokenView);
    },

    /**
     * Revokes a token at once (authentication checks `revoked_at` on every request). Refused
     * (409 `last_operator_token`) when it is the last live operator token: nobody could then
     * issue another or undo the mistake. Revoking an already revoked token changes nothing.
     */
    async revokeToken(a: AdminActor, id: string): Promise<TokenView> {
      return db.transaction(async (tx) => {
        const [t] = await tx.select().from(apiTokens).where(eq(apiTokens.id, id)).for('update');
        if (!t) throw notFound('token');
        if (t.revokedAt) return tokenView(t);
        if (t.roles.includes('operator')) {
          const now = new Date();
          // Locks the live operator tokens, so two concurrent revocations cannot each leave the other as the last.
          const live = await tx
            .select({ id: apiTokens.id })
            .from(apiTokens)
            .leftJoin(identities, eq(identities.id, apiTokens.identityId))
            .where(and(isNull(apiTokens.revokedAt), or(isNull(apiTokens.expiresAt), gt(apiTokens.expiresAt, now)), sql`'operator' = any(${apiTokens.roles})`, or(isNull(apiTokens.identityId), eq(identities.status, 'active'))))
            .for('update', { of: apiTokens });
          if (!live.some((x) => x.id !== t.id)) throw conflict('last_operator_token', 'this is the last live operator token; issue another operator token before revoking it');
        }
        const [row] = await tx.update(apiTokens).set({ revokedAt: new Date() }).where(eq(apiTokens.id, t.id)).returning();
        await audit(tx, a, 'token.revoked', `token/${t.id}/revoked`, {
          identityId: t.identityId,
          data: { tokenId: t.id, principalId: t.identityId ?? `client:${t.clientName}`, roles: t.roles, self: t.id === a.principal.tokenId },
        });
        return tokenView(row!);
      });
    },
  };
}

export type AdminService = ReturnType<typeof createAdminService>;
