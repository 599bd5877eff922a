/**
 * One worker process's share of SSH CA traffic, for the cross-process lock test: a connector
 * on the CA state dir given in SSH_CA_CONFIG (JSON), CA key in SSH_CA_PRIVATE_KEY. It prints
 * `ready`, waits for a line on stdin (so both processes start at once), then for each of
 * SSH_CA_OPS accounts grants a certificate and revokes every other one, and prints one JSON
 * line: every certificate it was issued and whether it revoked it.
 */
import { createInterface } from 'node:readline';
import { createSshCaConnector, type SshCaSystemConfigInput } from '../../activities/connectors/ssh-ca/connector.js';

export interface SshCaProcessResult {
  issued: { account: string; resource: string; serial: string; certificate: string; revoked: boolean }[];
}

const config = JSON.parse(process.env.SSH_CA_CONFIG ?? '') as SshCaSystemConfigInput & { principals: string[] };
const ops = Number(process.env.SSH_CA_OPS ?? '20');
const name = process.env.SSH_CA_NAME ?? 'p';
const publicKey = process.env.SSH_CA_PUBLIC_KEY ?? '';
const connector = createSshCaConnector(config, { caPrivateKey: process.env.SSH_CA_PRIVATE_KEY ?? '' });
const resource = config.principals[0] ?? '';

process.stdout.write('ready\n');
const stdin = createInterface({ input: process.stdin });
await new Promise<void>((resolve) => stdin.once('line', () => resolve()));
stdin.close(); // an open stdin would keep the process alive after the work

const result: SshCaProcessResult = { issued: [] };
for (let i = 0; i < ops; i++) {
  const membership = { account: `${name}-${i}`, resource };
  const granted = await connector.grant(membership, { publicKey, notAfter: new Date(Date.now() + 10 * 60_000) });
  const credential = granted.credential;
  if (!credential) throw new Error(`grant ${membership.account} returned no certificate`);
  const revoked = i % 2 === 0;
  if (revoked) await connector.revoke(membership);
  result.issued.push({ ...membership, serial: credential.credentialId, certificate: credential.material, revoked });
}
await connector.close();
process.stdout.write(`${JSON.stringify(result)}\n`);
