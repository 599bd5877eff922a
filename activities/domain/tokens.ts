import { createHash, randomBytes } from 'node:crypto';

/**
 * API tokens are high-entropy random strings, so a plain sha256 is the stored form: no
 * password-style stretching is needed, and the database compares hashes, never secrets.
 */
export const hashToken = (token: string) => createHash('sha256').update(token).digest('hex');
export const newToken = () => `al_${randomBytes(32).toString('base64url')}`;
