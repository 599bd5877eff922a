import { describe, expect, it } from 'vitest';
import { createAccessRequestBody, createSystemBody, createTokenBody, sshPublicKeyBody } from '../../api/schemas.js';

const ent = '6f1c1f4e-6f2c-4b7e-9a55-0c8f3c1d2e3f';

describe('API schemas', () => {
  it('refuses unknown fields, so an acting identity cannot be smuggled in the body', () => {
    expect(createAccessRequestBody.safeParse({ entitlementId: ent, justification: 'a real reason', requesterId: ent }).success).toBe(false);
  });
  it('keeps ticket references opaque (they become search attributes)', () => {
    expect(createAccessRequestBody.safeParse({ entitlementId: ent, justification: 'a real reason', ticketRef: 'INC-42/7' }).success).toBe(true);
    expect(createAccessRequestBody.safeParse({ entitlementId: ent, justification: 'a real reason', ticketRef: 'jane.doe@example.com' }).success).toBe(false);
  });
  it('requires a real justification', () => {
    expect(createAccessRequestBody.safeParse({ entitlementId: ent, justification: '   short   ' }).success).toBe(false);
  });
  it('accepts only environment-variable names as secret references', () => {
    const base = { name: 'd', kind: 'ldap', config: {}, ownerId: ent };
    expect(createSystemBody.safeParse({ ...base, secretRefs: { bindPassword: 'ACCESSLOOP_SECRET_DIR' } }).success).toBe(true);
    expect(createSystemBody.safeParse({ ...base, secretRefs: { bindPassword: 'hunter2!' } }).success).toBe(false);
  });
  it('accepts identity ids or client:<name> as token principals', () => {
    expect(createTokenBody.safeParse({ principalId: ent, roles: ['requester'] }).success).toBe(true);
    expect(createTokenBody.safeParse({ principalId: 'client:workday', roles: ['hr_system'] }).success).toBe(true);
    expect(createTokenBody.safeParse({ principalId: 'root', roles: ['operator'] }).success).toBe(false);
    expect(createTokenBody.safeParse({ principalId: ent, roles: ['superuser'] }).success).toBe(false);
  });
  it('accepts an SSH public key only when its blob is a key of the named type', () => {
    // SSH wire format: string "ssh-ed25519", string <32-byte key>
    const wire = (type: string, key: Buffer) => {
      const t = Buffer.from(type);
      const len = (n: number) => Buffer.from([0, 0, 0, n]);
      return Buffer.concat([len(t.length), t, len(key.length), key]).toString('base64');
    };
    const good = `ssh-ed25519 ${wire('ssh-ed25519', Buffer.alloc(32, 7))} alice@laptop`;
    expect(sshPublicKeyBody.safeParse({ publicKey: good }).success).toBe(true);
    for (const publicKey of [
      'ssh-ed25519 not base64!',
      `ssh-rsa ${wire('ssh-ed25519', Buffer.alloc(32, 7))}`,
      `ssh-ed25519 ${wire('ssh-ed25519', Buffer.alloc(32, 7))}\nssh-ed25519 AAAA`,
      `ssh-dss ${wire('ssh-dss', Buffer.alloc(32, 7))}`,
      'ssh-ed25519 AAAA',
    ]) {
      expect(sshPublicKeyBody.safeParse({ publicKey }).success, publicKey).toBe(false);
    }
  });
});
