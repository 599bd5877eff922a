import { randomBytes } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { createCredentialVault } from '../../activities/domain/vault.js';

describe('credential vault (AES-256-GCM)', () => {
  const vault = createCredentialVault(randomBytes(32));

  it('round-trips a secret and never stores it in clear', () => {
    const sealed = vault.seal('s3cret-password', 'row-1');
    expect(sealed).toMatch(/^v1\.[\w-]+\.[\w-]+\.[\w-]+$/);
    expect(sealed).not.toContain('s3cret');
    expect(vault.open(sealed, 'row-1')).toBe('s3cret-password');
  });

  it('binds the ciphertext to its row: another row id does not open it', () => {
    const sealed = vault.seal('s3cret', 'row-1');
    expect(() => vault.open(sealed, 'row-2')).toThrow();
  });

  it('detects a changed ciphertext and refuses another key', () => {
    const sealed = vault.seal('s3cret', 'row-1');
    const [v, iv, ct, tag] = sealed.split('.');
    const flipped = Buffer.from(ct!, 'base64url');
    flipped[0] = flipped[0]! ^ 1;
    expect(() => vault.open([v, iv, flipped.toString('base64url'), tag].join('.'), 'row-1')).toThrow();
    expect(() => createCredentialVault(randomBytes(32)).open(sealed, 'row-1')).toThrow();
  });

  it('uses a fresh IV per seal and refuses keys that are not 32 bytes', () => {
    expect(vault.seal('same', 'r')).not.toBe(vault.seal('same', 'r'));
    expect(() => createCredentialVault(randomBytes(16))).toThrow(/32 bytes/);
  });
});
