/**
 * Key generation for the SSH CA demo and tests: ed25519 key pairs made by `ssh-keygen`
 * itself, so the files are exactly what an operator would produce by hand
 * (`ssh-keygen -t ed25519 -N '' -f <path>`: OpenSSH private key format, mode 0600).
 *
 * The keys have no passphrase: the connector must sign without a prompt (it refuses
 * encrypted CA keys with InvalidConfig). Protect a real CA key with file permissions or a
 * secret store instead.
 */
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';

export interface SshKeyPair {
  privateKeyPath: string;
  /** `<privateKeyPath>.pub` */
  publicKeyPath: string;
  /** OpenSSH private key text (secret). */
  privateKey: string;
  /** One `ssh-ed25519 AAAA... comment` line, without the newline. */
  publicKey: string;
}

const KEYGEN_TIMEOUT_MS = 10_000;

async function generateEd25519(dir: string, name: string, comment: string): Promise<SshKeyPair> {
  if (!/^[A-Za-z0-9._-]+$/.test(name) || name.startsWith('-')) throw new Error(`invalid key file name ${JSON.stringify(name)}`);
  await mkdir(dir, { recursive: true });
  const privateKeyPath = path.join(path.resolve(dir), name);
  const publicKeyPath = `${privateKeyPath}.pub`;
  // ssh-keygen would ask "Overwrite (y/n)?" and fail on our closed stdin: say why instead
  if (existsSync(privateKeyPath) || existsSync(publicKeyPath)) throw new Error(`${privateKeyPath} already exists`);
  await new Promise<void>((resolve, reject) => {
    execFile(
      'ssh-keygen',
      ['-q', '-t', 'ed25519', '-N', '', '-C', comment, '-f', privateKeyPath],
      { timeout: KEYGEN_TIMEOUT_MS, killSignal: 'SIGKILL', env: { PATH: process.env.PATH ?? '/usr/bin:/bin', LC_ALL: 'C' } },
      (err, _stdout, stderr) => {
        if (err) reject(new Error(`ssh-keygen -t ed25519 failed for ${privateKeyPath}: ${String(stderr).trim() || err.message}`, { cause: err }));
        else resolve();
      },
    ).stdin?.end();
  });
  const [privateKey, publicKey] = await Promise.all([readFile(privateKeyPath, 'utf8'), readFile(publicKeyPath, 'utf8')]);
  return { privateKeyPath, publicKeyPath, privateKey, publicKey: publicKey.trim() };
}

/** A certificate authority key pair: `<dir>/<name>` and `<dir>/<name>.pub` (servers trust the .pub). */
export function generateCaKeyPair(dir: string, name = 'ca'): Promise<SshKeyPair> {
  return generateEd25519(dir, name, 'accessloop-user-ca');
}

/** A user's key pair; the public half is what a grant certifies. */
export function generateUserKeyPair(dir: string, name = 'user'): Promise<SshKeyPair> {
  return generateEd25519(dir, name, `accessloop-user-${name}`);
}
