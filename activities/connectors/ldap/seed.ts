/**
 * Seed data for the demo directory (and the integration tests): the suffix entry,
 * ou=people with four users and ou=groups with three groupOfNames groups that each
 * hold only the placeholder member (groupOfNames requires at least one member).
 * Every demo user has the password DEMO_USER_PASSWORD so that binds (and account
 * disable) can be tried out.
 */
import { parseDn } from './dn.js';

/** Suffix used by the demo and the tests. */
export const DEMO_SUFFIX = 'dc=accessloop,dc=test';

/** Placeholder member DN that keeps groupOfNames groups non-empty. */
export function placeholderMemberDn(suffix: string): string {
  return `cn=placeholder,${suffix}`;
}

export const DEMO_PLACEHOLDER_DN = placeholderMemberDn(DEMO_SUFFIX);

export const DEMO_USERS = ['alice', 'bob', 'carol', 'dave'] as const;

/**
 * Password of every demo user. DEMO ONLY: it is public, and stored in cleartext by the
 * seed (slapadd bypasses ppolicy_hash_cleartext). Never use this seed for a real directory.
 */
export const DEMO_USER_PASSWORD = 'demo-password';
export const DEMO_GROUPS = ['engineering', 'finance-readers', 'prod-admins'] as const;

export function demoPeopleDn(suffix: string): string {
  return `ou=people,${suffix}`;
}

export function demoGroupsDn(suffix: string): string {
  return `ou=groups,${suffix}`;
}

export function demoUserDn(suffix: string, uid: string): string {
  return `uid=${uid},${demoPeopleDn(suffix)}`;
}

export function demoGroupDn(suffix: string, cn: string): string {
  return `cn=${cn},${demoGroupsDn(suffix)}`;
}

function capitalise(s: string): string {
  return s.charAt(0).toUpperCase() + s.slice(1);
}

/** LDIF (for slapadd) creating the demo tree under `suffix` (e.g. dc=accessloop,dc=test). */
export function demoSeedLdif(suffix: string = DEMO_SUFFIX): string {
  const first = parseDn(suffix)[0]?.[0];
  if (!first) throw new Error(`invalid suffix: ${suffix}`);
  const type = first.type.toLowerCase();
  const blocks: string[] = [];
  if (type === 'dc') {
    blocks.push(
      [`dn: ${suffix}`, 'objectClass: top', 'objectClass: dcObject', 'objectClass: organization', `dc: ${first.value}`, `o: ${first.value}`].join('\n'),
    );
  } else if (type === 'o') {
    blocks.push([`dn: ${suffix}`, 'objectClass: top', 'objectClass: organization', `o: ${first.value}`].join('\n'));
  } else {
    throw new Error(`demo seed supports dc= or o= suffixes, got: ${suffix}`);
  }
  blocks.push([`dn: ${demoPeopleDn(suffix)}`, 'objectClass: top', 'objectClass: organizationalUnit', 'ou: people'].join('\n'));
  blocks.push([`dn: ${demoGroupsDn(suffix)}`, 'objectClass: top', 'objectClass: organizationalUnit', 'ou: groups'].join('\n'));
  for (const uid of DEMO_USERS) {
    blocks.push(
      [
        `dn: ${demoUserDn(suffix, uid)}`,
        'objectClass: top',
        'objectClass: person',
        'objectClass: organizationalPerson',
        'objectClass: inetOrgPerson',
        `uid: ${uid}`,
        `cn: ${capitalise(uid)} Example`,
        'sn: Example',
        `givenName: ${capitalise(uid)}`,
        `mail: ${uid}@accessloop.test`,
        `userPassword: ${DEMO_USER_PASSWORD}`,
      ].join('\n'),
    );
  }
  for (const cn of DEMO_GROUPS) {
    blocks.push(
      [
        `dn: ${demoGroupDn(suffix, cn)}`,
        'objectClass: top',
        'objectClass: groupOfNames',
        `cn: ${cn}`,
        `member: ${placeholderMemberDn(suffix)}`,
      ].join('\n'),
    );
  }
  return blocks.join('\n\n') + '\n';
}
