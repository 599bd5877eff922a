import { and, eq, isNull } from 'drizzle-orm';
import { appendAudit } from '../activities/domain/audit.js';
import { hashToken, newToken } from '../activities/domain/tokens.js';
import type { Db } from '../db/client.js';
import { createPolicyService } from '../activities/domain/policy/service.js';
import { apiTokens, approverGroupMembers, approverGroups, entitlements, identities, policyVersions, systems, type ApiRole } from '../db/schema.js';

export interface DemoDirectory {
  url: string;
  bindDn: string;
  suffix: string;
  placeholderDn: string;
  /** Name of the env var holding the bind password (ACCESSLOOP_SECRET_*). */
  secretEnv: string;
}

/** The demo SSH CA (files in the data dir; the key is in env under `secretEnv`). */
export interface DemoSshCa {
  stateDir: string;
  krlPath: string;
  secretEnv: string;
}

export interface DemoCatalog {
  identities: Record<'alice' | 'bob' | 'carol' | 'dave', string>;
  systemId?: string;
  entitlements: Record<string, string>;
  tokens: Record<string, { token: string; roles: ApiRole[]; principal: string }>;
}

const people = [
  { username: 'carol', displayName: 'Carol Manager', department: 'engineering', location: 'LON', kind: 'employee' as const },
  { username: 'bob', displayName: 'Bob Owner', department: 'engineering', location: 'LON', kind: 'employee' as const, manager: 'carol' },
  { username: 'alice', displayName: 'Alice Engineer', department: 'engineering', location: 'LON', kind: 'employee' as const, manager: 'carol' },
  { username: 'dave', displayName: 'Dave Contractor', department: 'finance', location: 'NYC', kind: 'contractor' as const, manager: 'carol' },
];

const demoTokens: Array<{ name: string; principal: 'alice' | 'bob' | 'carol' | 'dave' | 'client:demo-operator'; roles: ApiRole[] }> = [
  { name: 'operator', principal: 'client:demo-operator', roles: ['operator'] },
  { name: 'alice', principal: 'alice', roles: ['requester'] },
  { name: 'bob', principal: 'bob', roles: ['requester', 'approver'] },
  { name: 'carol', principal: 'carol', roles: ['requester', 'approver', 'auditor'] },
];

/**
 * Idempotent demo catalog: people, the demo directory and its groups, and API tokens.
 * Tokens are re-minted when `existingTokens` are missing or no longer valid.
 */
export async function seedDemo(db: Db, dir: DemoDirectory | undefined, existingTokens?: DemoCatalog['tokens'], opts: { policy?: boolean; ssh?: DemoSshCa } = {}): Promise<DemoCatalog> {
  const ids: Record<string, string> = {};
  for (const p of people) {
    const [found] = await db.select({ id: identities.id }).from(identities).where(eq(identities.username, p.username));
    if (found) {
      ids[p.username] = found.id;
      continue;
    }
    const [row] = await db
      .insert(identities)
      .values({
        kind: p.kind,
        username: p.username,
        displayName: p.displayName,
        email: `${p.username}@example.test`,
        externalId: `HR-${p.username.toUpperCase()}`,
        managerId: p.manager ? ids[p.manager] : null,
        department: p.department,
        location: p.location,
        employmentType: p.kind === 'contractor' ? 'contractor' : 'full_time',
        sponsorId: p.kind === 'contractor' ? ids.carol : null,
      })
      .returning({ id: identities.id });
    ids[p.username] = row!.id;
  }

  const ents: Record<string, string> = {};
  let systemId: string | undefined;
  if (dir) {
    const config = {
      url: dir.url,
      bindDn: dir.bindDn,
      baseDn: dir.suffix,
      accountDnTemplate: `uid={username},ou=people,${dir.suffix}`,
      memberAttribute: 'member',
      placeholderMember: dir.placeholderDn,
      timeoutMs: 3000,
    };
    const [existing] = await db.select().from(systems).where(eq(systems.name, 'demo-directory'));
    if (existing) {
      // The demo directory's port may change between runs.
      await db.update(systems).set({ config, secretRefs: { bindPassword: dir.secretEnv } }).where(eq(systems.id, existing.id));
      systemId = existing.id;
    } else {
      const [row] = await db
        .insert(systems)
        .values({ name: 'demo-directory', kind: 'ldap', config, secretRefs: { bindPassword: dir.secretEnv }, ownerId: ids.carol! })
        .returning({ id: systems.id });
      systemId = row!.id;
    }
    const catalog = [
      { key: 'engineering', name: 'Engineering group', tier: 'medium' as const, dflt: 3600, max: 8 * 3600, timeout: 24 * 3600 },
      { key: 'finance-readers', name: 'Finance reports (read)', tier: 'low' as const, dflt: 8 * 3600, max: 30 * 24 * 3600, timeout: 72 * 3600 },
      { key: 'prod-admins', name: 'Production administrators', tier: 'privileged' as const, dflt: 900, max: 3600, timeout: 3600 },
    ];
    for (const c of catalog) {
      const resource = `cn=${c.key},ou=groups,${dir.suffix}`;
      const [found] = await db
        .select({ id: entitlements.id })
        .from(entitlements)
        .where(and(eq(entitlements.systemId, systemId), eq(entitlements.resource, resource)));
      if (found) {
        ents[c.key] = found.id;
        continue;
      }
      const [row] = await db
        .insert(entitlements)
        .values({
          systemId,
          name: c.name,
          resource,
          ownerId: ids.bob!,
          riskTier: c.tier,
          defaultDurationSeconds: c.dflt,
          maxDurationSeconds: c.max,
          approvalPolicy: { approvalTimeoutSeconds: c.timeout },
        })
        .returning({ id: entitlements.id });
      ents[c.key] = row!.id;
    }
  }

  if (opts.ssh) ents['prod-ssh'] = await seedDemoSshCa(db, opts.ssh, ids);

  if (systemId && opts.policy !== false) await seedDemoPolicy(db, ids, ents);

  const tokens: DemoCatalog['tokens'] = {};
  for (const t of demoTokens) {
    const prior = existingTokens?.[t.name];
    if (prior) {
      const [ok] = await db.select({ id: apiTokens.id }).from(apiTokens).where(and(eq(apiTokens.tokenHash, hashToken(prior.token)), isNull(apiTokens.revokedAt)));
      if (ok) {
        tokens[t.name] = prior;
        continue;
      }
    }
    const token = newToken();
    const isClient = t.principal.startsWith('client:');
    await db.insert(apiTokens).values({
      tokenHash: hashToken(token),
      identityId: isClient ? null : ids[t.principal]!,
      clientName: isClient ? t.principal.slice('client:'.length) : null,
      roles: t.roles,
      description: `demo token (${t.name})`,
      createdBy: 'seed',
    });
    tokens[t.name] = { token, roles: t.roles, principal: isClient ? t.principal : ids[t.principal]! };
  }
  await db.transaction((tx) =>
    appendAudit(tx, { idempotencyKey: `seed/demo/${Object.values(tokens).map((t) => hashToken(t.token).slice(0, 8)).join('.')}`, actorType: 'system', actorId: 'seed', action: 'catalog.seeded', data: { entitlements: Object.keys(ents) } }),
  );
  return { identities: ids as DemoCatalog['identities'], ...(systemId ? { systemId } : {}), entitlements: ents, tokens };
}

/** An SSH CA for just-in-time root shells on production (principal `prod-root`). */
async function seedDemoSshCa(db: Db, ssh: DemoSshCa, ids: Record<string, string>): Promise<string> {
  const config = { stateDir: ssh.stateDir, krlPath: ssh.krlPath, principals: ['prod-root', 'prod-readonly'], maxValiditySeconds: 4 * 3600 };
  let [system] = await db.select({ id: systems.id }).from(systems).where(eq(systems.name, 'demo-ssh-ca'));
  if (system) await db.update(systems).set({ config, secretRefs: { caPrivateKey: ssh.secretEnv } }).where(eq(systems.id, system.id));
  else [system] = await db.insert(systems).values({ name: 'demo-ssh-ca', kind: 'ssh_ca', config, secretRefs: { caPrivateKey: ssh.secretEnv }, ownerId: ids.carol! }).returning({ id: systems.id });
  const [found] = await db.select({ id: entitlements.id }).from(entitlements).where(and(eq(entitlements.systemId, system!.id), eq(entitlements.resource, 'prod-root')));
  if (found) return found.id;
  const [row] = await db
    .insert(entitlements)
    .values({
      systemId: system!.id,
      name: 'Production root shell (SSH certificate)',
      resource: 'prod-root',
      ownerId: ids.bob!,
      riskTier: 'privileged',
      defaultDurationSeconds: 900,
      maxDurationSeconds: 4 * 3600,
      approvalPolicy: { approvalTimeoutSeconds: 3600 },
    })
    .returning({ id: entitlements.id });
  return row!.id;
}

/**
 * The demo's approval policy, published once (an operator's later PUT /v1/policies wins):
 * privileged access needs the subject's manager and then the owner; contractors never get
 * privileged access and at most an hour of anything; low-risk self-service is automatic;
 * engineering + finance-readers together need a security-team exception.
 */
async function seedDemoPolicy(db: Db, ids: Record<string, string>, ents: Record<string, string>) {
  const [existing] = await db.select({ id: policyVersions.id }).from(policyVersions).limit(1);
  if (existing) return;
  let [team] = await db.select({ id: approverGroups.id }).from(approverGroups).where(eq(approverGroups.name, 'security-team'));
  if (!team) {
    [team] = await db.insert(approverGroups).values({ name: 'security-team' }).returning({ id: approverGroups.id });
    await db.insert(approverGroupMembers).values({ groupId: team!.id, identityId: ids.carol! });
  }
  const doc = {
    apiVersion: 'accessloop/v1',
    securityTeam: `group:${team!.id}`,
    policies: [
      {
        name: 'default',
        stages: [{ name: 'owner', approvers: ['entitlement_owner'] }],
        contractorMaxDurationSeconds: 3600,
        conditions: [
          { name: 'no-contractor-privileged', when: 'subject.employment_type == "contractor" && entitlement.risk_tier == "privileged"', effect: 'deny', reason: 'contractors cannot hold privileged access' },
          { name: 'low-risk-self-service', when: 'entitlement.risk_tier == "low" && request.self_request', effect: 'auto_approve', reason: 'low-risk self-service' },
        ],
      },
      {
        name: 'privileged',
        appliesTo: { riskTiers: ['privileged'] },
        stages: [
          { name: 'manager', approvers: ['manager'] },
          { name: 'owner', approvers: ['entitlement_owner'] },
        ],
        conditions: [{ name: 'no-contractor-privileged', when: 'subject.employment_type == "contractor"', effect: 'deny', reason: 'contractors cannot hold privileged access' }],
      },
    ],
    sod: [{ name: 'engineering-vs-finance', entitlementIds: [ents.engineering, ents['finance-readers']], effect: 'exception', exceptionApprover: 'security_team', exceptionMaxDurationSeconds: 3600 }],
  };
  await createPolicyService(db).publish(JSON.stringify(doc), 'seed:demo', 'seed');
}

/** `ACCESSLOOP_BOOTSTRAP_TOKEN`: an operator token with exactly that value exists after start. */
export async function ensureBootstrapToken(db: Db, token: string): Promise<void> {
  const h = hashToken(token);
  const [found] = await db.select({ id: apiTokens.id }).from(apiTokens).where(eq(apiTokens.tokenHash, h));
  if (found) return;
  await db.transaction(async (tx) => {
    // Two replicas starting at once: one inserts (and audits), the other finds nothing to do.
    const [t] = await tx
      .insert(apiTokens)
      .values({ tokenHash: h, clientName: 'bootstrap', roles: ['operator'], description: 'ACCESSLOOP_BOOTSTRAP_TOKEN', createdBy: 'bootstrap' })
      .onConflictDoNothing({ target: apiTokens.tokenHash })
      .returning({ id: apiTokens.id });
    if (!t) return;
    // Issued by configuration: the same event an operator's POST /v1/tokens writes, by `system/startup`.
    await appendAudit(tx, { idempotencyKey: `startup/token/${t.id}/issued`, actorType: 'system', actorId: 'startup', action: 'token.issued', data: { tokenId: t.id, principalId: 'client:bootstrap', roles: ['operator'], expiresAt: null, source: 'ACCESSLOOP_BOOTSTRAP_TOKEN' } });
  });
}
