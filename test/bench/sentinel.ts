/**
 * The sentinel (issue 11): time from a wedged lease's expiry to the alert and to the verified
 * removal. Wedged = an active grant with its member in slapd and no lease workflow to end it.
 * Its own stack, because the sentinel's interval and grace are fixed at start.
 */
import { and, eq, inArray } from 'drizzle-orm';
import { DEMO_SUFFIX, demoGroupDn } from '../../activities/connectors/ldap/seed.js';
import { auditEvents, grants, identities } from '../../db/schema.js';
import { ldapModify } from '../helpers/ldap.js';
import { startStackAt, waitFor } from '../helpers/stack-core.js';
import { summary } from './stats.js';

const LEASES = Number(process.env.BENCH_SENTINEL_LEASES ?? 20);
const INTERVAL_S = 5;
const GRACE_S = 1;

export async function benchSentinel(temporalAddress: string, say: (m: string) => void): Promise<{ section: string; summary: string }> {
  say(`sentinel: ${LEASES} wedged leases, interval ${INTERVAL_S} s, grace ${GRACE_S} s`);
  const s = await startStackAt({ temporalAddress, env: { ACCESSLOOP_SENTINEL_INTERVAL_SECONDS: String(INTERVAL_S), ACCESSLOOP_SENTINEL_GRACE_SECONDS: String(GRACE_S) } });
  try {
    const people = await s.rt.db
      .insert(identities)
      .values(Array.from({ length: LEASES }, (_, i) => ({ kind: 'employee' as const, username: `wedged${i}`, displayName: `Wedged ${i}` })))
      .returning({ id: identities.id, username: identities.username });
    await ldapModify(
      { url: s.slapd.url, rootDn: s.slapd.rootDn, rootPassword: s.slapd.rootPassword },
      `dn: ${demoGroupDn(DEMO_SUFFIX, 'engineering')}\nchangetype: modify\nadd: member\n${people.map((p) => `member: uid=${p.username},ou=people,${DEMO_SUFFIX}`).join('\n')}\n`,
    );
    // Expiries spread over two intervals, so the samples cover every phase of the schedule.
    const start = Date.now() + 2000;
    const rows = await s.rt.db
      .insert(grants)
      .values(
        people.map((p, i) => ({
          identityId: p.id,
          entitlementId: s.catalog.entitlements.engineering!,
          source: 'birthright' as const,
          status: 'active' as const,
          grantedAt: new Date(),
          grantVerifiedAt: new Date(),
          expiresAt: new Date(start + Math.round((i * 2 * INTERVAL_S * 1000) / LEASES)),
        })),
      )
      .returning({ id: grants.id, expiresAt: grants.expiresAt });
    const ids = rows.map((r) => r.id);
    await waitFor(
      async () => (await s.rt.db.$count(grants, and(inArray(grants.id, ids), eq(grants.status, 'revoked')))) === LEASES,
      'the sentinel to end every wedged lease',
      (2 * INTERVAL_S + GRACE_S) * 1000 + 60_000,
      250,
    );
    const ended = await s.rt.db.select({ id: grants.id, reason: grants.revokeReason, verifiedAt: grants.removalVerifiedAt }).from(grants).where(inArray(grants.id, ids));
    const alerts = await s.rt.db.select({ grantId: auditEvents.grantId, at: auditEvents.at }).from(auditEvents).where(and(inArray(auditEvents.grantId, ids), eq(auditEvents.action, 'sentinel.alert')));
    const expiry = new Map(rows.map((r) => [r.id, r.expiresAt!.getTime()]));
    if (alerts.length !== LEASES || ended.some((g) => g.reason !== 'sentinel' || !g.verifiedAt)) throw new Error('sentinel bench: missing alerts or unverified removals');
    const members = await s.ldapMembers('engineering');
    if (people.some((p) => members.includes(s.userDn(p.username)))) throw new Error('sentinel bench: a wedged member is still in slapd');
    const toAlert = summary(alerts.map((a) => (a.at.getTime() - expiry.get(a.grantId!)!) / 1000));
    const toRemoval = summary(ended.map((g) => (g.verifiedAt!.getTime() - expiry.get(g.id)!) / 1000));
    const f = (v: number) => v.toFixed(2);
    return {
      summary: `sentinel: expiry → alert p50 ${f(toAlert.p50)} s max ${f(toAlert.max)} s; → verified removal p50 ${f(toRemoval.p50)} s max ${f(toRemoval.max)} s`,
      section: `
## Sentinel: a wedged lease's expiry → alert → verified removal

${LEASES} active grants whose members are in slapd and which have no lease workflow to end them
(what a stranded lease looks like to the database), with expiries spread over two sentinel
intervals. The sentinel runs on its Schedule every ${INTERVAL_S} s with ${GRACE_S} s of grace; the default policy
(\`sentinel.remove: expired\`) removes each member through the connector, reads it back, and
closes the grant as \`sentinel\`. Times run from \`expires_at\` to the \`sentinel.alert\` audit event and to
\`removal_verified_at\`. Every member is then checked absent with \`ldapsearch\`. The expected bound
is grace + one interval + the run's own time.

| n | expiry → alert p50 | max | expiry → verified removal p50 | max |
|---:|---:|---:|---:|---:|
| ${LEASES} | ${f(toAlert.p50)} s | ${f(toAlert.max)} s | ${f(toRemoval.p50)} s | ${f(toRemoval.max)} s |

The removal is made before the alert is sent, so a webhook that is down cannot hold it up.
`,
    };
  } finally {
    await s.stop();
  }
}
