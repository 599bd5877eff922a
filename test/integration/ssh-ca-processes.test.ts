/**
 * Two worker processes on one SSH CA state dir and KRL at once: the ledger and KRL writes are
 * serialised across processes, not only inside one. Each process grants certificates to its own
 * accounts and revokes every other one; afterwards the ledger must hold every certificate
 * either process was issued (under its own serial), and `ssh-keygen -Q`, asked here about the
 * certificates the processes printed, must find exactly the revoked ones in the KRL.
 */
import { execFile, spawn } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, utimes, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import lockfile from 'proper-lockfile';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { generateCaKeyPair, generateUserKeyPair, type SshKeyPair } from '../../activities/connectors/ssh-ca/ca.js';
import { createSshCaConnector, type SshCaSystemConfigInput } from '../../activities/connectors/ssh-ca/connector.js';
import { expectConnectorError } from '../helpers/connector-contract.js';
import type { SshCaProcessResult } from '../helpers/ssh-ca-process.js';

const execFileAsync = promisify(execFile);
const root = fileURLToPath(new URL('../..', import.meta.url));
const OPS_PER_PROCESS = 20;

let dir: string;
let ca: SshKeyPair;
let user: SshKeyPair;

beforeAll(async () => {
  dir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-ssh-ca-procs-'));
  ca = await generateCaKeyPair(dir);
  user = await generateUserKeyPair(dir);
});

afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

interface Child {
  ready: Promise<void>;
  go(): void;
  done: Promise<SshCaProcessResult>;
}

function startProcess(name: string, config: SshCaSystemConfigInput): Child {
  const child = spawn(process.execPath, ['--import', 'tsx', 'test/helpers/ssh-ca-process.ts'], {
    cwd: root,
    env: {
      ...process.env,
      SSH_CA_CONFIG: JSON.stringify(config),
      SSH_CA_PRIVATE_KEY: ca.privateKey,
      SSH_CA_PUBLIC_KEY: user.publicKey,
      SSH_CA_OPS: String(OPS_PER_PROCESS),
      SSH_CA_NAME: name,
    },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  const killOnExit = () => child.kill('SIGKILL');
  process.once('exit', killOnExit);
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
  const lines = createInterface({ input: child.stdout });
  let readyResolve!: () => void;
  const ready = new Promise<void>((resolve) => (readyResolve = resolve));
  let last = '';
  lines.on('line', (line) => {
    if (line === 'ready') readyResolve();
    else last = line;
  });
  const done = new Promise<SshCaProcessResult>((resolve, reject) => {
    child.once('exit', (code, signal) => {
      process.removeListener('exit', killOnExit);
      if (code === 0) resolve(JSON.parse(last) as SshCaProcessResult);
      else reject(new Error(`${name} exited ${code ?? signal}: ${stderr.slice(-2000)}`));
    });
  });
  // a child that dies before it is ready fails the test instead of hanging it
  void done.catch(() => readyResolve());
  return { ready, done, go: () => child.stdin.end('go\n') };
}

/** `ssh-keygen -Q`: exit 0 = not revoked, 1 = revoked (anything else rejects). */
async function krlRevokes(krlPath: string, certPath: string): Promise<boolean> {
  try {
    await execFileAsync('ssh-keygen', ['-Q', '-f', krlPath, certPath]);
    return false;
  } catch (err) {
    if ((err as { code?: unknown }).code === 1) return true;
    throw err;
  }
}

async function sharedConfig(): Promise<SshCaSystemConfigInput> {
  const base = await mkdtemp(path.join(dir, 'shared-'));
  return {
    stateDir: path.join(base, 'state'),
    krlPath: path.join(base, 'krl', 'revoked.krl'),
    principals: ['prod-root'],
    maxValiditySeconds: 3600,
    timeoutMs: 5000,
  };
}

const lease = () => ({ publicKey: user.publicKey, notAfter: new Date(Date.now() + 10 * 60_000) });

describe('ssh-ca across worker processes', () => {
  it('two processes granting and revoking at once lose no ledger entry and no revocation', async () => {
    const config = await sharedConfig();
    const base = path.dirname(config.stateDir);
    const children = [startProcess('a', config), startProcess('b', config)];
    await Promise.all(children.map((c) => c.ready));
    for (const c of children) c.go();
    const results = await Promise.all(children.map((c) => c.done));
    const issued = results.flatMap((r) => r.issued);
    expect(issued).toHaveLength(2 * OPS_PER_PROCESS);

    // every certificate under its own serial, and the ledger holds each of them
    expect(new Set(issued.map((c) => c.serial)).size).toBe(issued.length);
    const ledger = JSON.parse(await readFile(path.join(config.stateDir, 'ledger.json'), 'utf8')) as {
      lastSerial: number;
      certificates: { serial: number; account: string; revokedAt: string | null }[];
    };
    const inLedger = new Map(ledger.certificates.map((r) => [String(r.serial), r]));
    const missing = issued.filter((c) => inLedger.get(c.serial)?.account !== c.account).map((c) => `${c.account}#${c.serial}`);
    expect(missing).toEqual([]);
    expect(ledger.lastSerial).toBe(issued.length);

    // the KRL, asked independently, revokes exactly the revoked certificates
    const wrong: string[] = [];
    for (const c of issued) {
      const file = path.join(base, `${c.account}-cert.pub`);
      await writeFile(file, c.certificate);
      const revoked = await krlRevokes(config.krlPath, file);
      if (revoked !== c.revoked) wrong.push(`${c.account}#${c.serial} ${revoked ? 'revoked' : 'not revoked'}`);
      expect(inLedger.get(c.serial)?.revokedAt !== null).toBe(c.revoked);
    }
    expect(wrong).toEqual([]);
  });

  it('a lock left by a crashed process is taken over once stale', async () => {
    const config = await sharedConfig();
    await mkdir(config.stateDir, { recursive: true });
    // what a SIGKILLed holder leaves: the lock directory, no longer refreshed
    const lockDir = path.join(config.stateDir, 'ledger.json.lock');
    await mkdir(lockDir);
    const past = new Date(Date.now() - 60_000);
    await utimes(lockDir, past, past);
    const c = createSshCaConnector(config, { caPrivateKey: ca.privateKey });
    try {
      expect((await c.grant({ account: 'after-crash', resource: 'prod-root' }, lease())).changed).toBe(true);
    } finally {
      await c.close();
    }
  });

  it('a lock another live process holds is a retryable Timeout, not a wait without end', async () => {
    const config = await sharedConfig();
    await mkdir(config.stateDir, { recursive: true });
    // held and refreshed, as by a live process in the middle of a long write
    const release = await lockfile.lock(path.join(config.stateDir, 'ledger.json'), { realpath: false });
    const c = createSshCaConnector(config, { caPrivateKey: ca.privateKey });
    try {
      const started = Date.now();
      const err = await expectConnectorError(c.grant({ account: 'blocked', resource: 'prod-root' }, lease()), 'Timeout');
      expect(err.retryable).toBe(true);
      expect(err.message).toMatch(/locked by another process/);
      // within the 15 s target-write activity timeout
      expect(Date.now() - started).toBeLessThan(15_000);
    } finally {
      await release();
      await c.close();
    }
    const c2 = createSshCaConnector(config, { caPrivateKey: ca.privateKey });
    try {
      expect((await c2.grant({ account: 'blocked', resource: 'prod-root' }, lease())).changed).toBe(true);
    } finally {
      await c2.close();
    }
  });
});
