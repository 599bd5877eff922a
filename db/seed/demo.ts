import { and, eq, isNull } from 'drizzle-orm';
import { appendAudit } from '../../activities/audit.js';
import { hashToken, newToken } from '../../api/auth.js';
import type { Db } from '../client.js';
import { apiTokens, entitlements, identities, systems, type ApiRole } from '../schema.js';

export interface DemoDirectory {
  url: string;
  bindDn: string;
  suffix: string;
  placeholderDn: string;
  /** Name of the env var holding the bind password (ACCESSLOOP_SECRET_*). */
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
export async function seedDemo(db: Db, dir: DemoDirectory | undefined, existingTokens?: DemoCatalog['tokens']): Promise<DemoCatalog> {
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

/** `ACCESSLOOP_BOOTSTRAP_TOKEN`: an operator token with exactly that value exists after start. */
export async function ensureBootstrapToken(db: Db, token: string): Promise<void> {
  const h = hashToken(token);
  const [found] = await db.select({ id: apiTokens.id }).from(apiTokens).where(eq(apiTokens.tokenHash, h));
  if (found) return;
  await db.insert(apiTokens).values({ tokenHash: h, clientName: 'bootstrap', roles: ['operator'], description: 'ACCESSLOOP_BOOTSTRAP_TOKEN', createdBy: 'bootstrap' });
}
