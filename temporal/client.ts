import { readFile } from 'node:fs/promises';
import { Client, Connection, type ConnectionOptions } from '@temporalio/client';
import type { DataConverter } from '@temporalio/common';
import { NativeConnection, type NativeConnectionOptions } from '@temporalio/worker';
import { allSearchAttributeKeys } from '../workflows/search-attributes.js';
import type { Config } from './config.js';

type TlsSettings = { serverNameOverride?: string; serverRootCACertificate?: Buffer; clientCertPair?: { crt: Buffer; key: Buffer } };

/** Reads a file a variable names; a missing or unreadable one is reported by the variable's name. */
async function readConfiguredFile(variable: string, file: string): Promise<Buffer> {
  try {
    return await readFile(file);
  } catch (e) {
    throw new Error(`${variable}: cannot read ${file} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}); expected a readable PEM file`, { cause: e });
  }
}

/** TLS and API-key settings shared by the client and the worker connection (self-hosted mTLS or Temporal Cloud). */
async function connectionSecurity(c: Config): Promise<{ tls?: TlsSettings | boolean; apiKey?: string }> {
  const out: { tls?: TlsSettings | boolean; apiKey?: string } = {};
  if (c.TEMPORAL_TLS || c.TEMPORAL_TLS_CERT_PATH || c.TEMPORAL_API_KEY) {
    const tls: TlsSettings = {};
    if (c.TEMPORAL_TLS_SERVER_NAME) tls.serverNameOverride = c.TEMPORAL_TLS_SERVER_NAME;
    if (c.TEMPORAL_TLS_CA_PATH) tls.serverRootCACertificate = await readConfiguredFile('TEMPORAL_TLS_CA_PATH', c.TEMPORAL_TLS_CA_PATH);
    if (c.TEMPORAL_TLS_CERT_PATH && c.TEMPORAL_TLS_KEY_PATH) {
      tls.clientCertPair = { crt: await readConfiguredFile('TEMPORAL_TLS_CERT_PATH', c.TEMPORAL_TLS_CERT_PATH), key: await readConfiguredFile('TEMPORAL_TLS_KEY_PATH', c.TEMPORAL_TLS_KEY_PATH) };
    }
    out.tls = Object.keys(tls).length ? tls : true;
  }
  if (c.TEMPORAL_API_KEY) out.apiKey = c.TEMPORAL_API_KEY;
  return out;
}

/** `dataConverter` is temporal/codec.ts createDataConverter's, the same one the worker gets. */
export async function connectClient(c: Config, address: string, dataConverter: DataConverter): Promise<Client> {
  const opts: ConnectionOptions = { address, ...(await connectionSecurity(c)) };
  const connection = await Connection.connect(opts);
  return new Client({ connection, namespace: c.TEMPORAL_NAMESPACE, dataConverter });
}

export async function connectWorkerConnection(c: Config, address: string): Promise<NativeConnection> {
  const opts: NativeConnectionOptions = { address, ...(await connectionSecurity(c)) } as NativeConnectionOptions;
  return NativeConnection.connect(opts);
}

/**
 * Registers our search attributes on a cluster that lacks them (the dev server gets them as
 * start flags). Idempotent. Temporal Cloud refuses the operator API: there they are created
 * with tcld/the Cloud UI, so a refusal is reported, not fatal.
 */
export async function ensureSearchAttributes(client: Client, namespace: string, warn: (m: string) => void): Promise<void> {
  const op = client.connection.operatorService;
  try {
    const existing = await op.listSearchAttributes({ namespace });
    const have = new Set(Object.keys(existing.customAttributes ?? {}));
    const missing = allSearchAttributeKeys.filter((k) => !have.has(k.name));
    if (missing.length === 0) return;
    const typeEnum: Record<string, number> = { TEXT: 1, KEYWORD: 2, INT: 3, DOUBLE: 4, BOOL: 5, DATETIME: 6, KEYWORD_LIST: 7 };
    await op.addSearchAttributes({
      namespace,
      searchAttributes: Object.fromEntries(missing.map((k) => [k.name, typeEnum[k.type]!])),
    });
  } catch (e) {
    warn(`could not register search attributes (${(e as Error).message}); create them on the cluster: ${allSearchAttributeKeys.map((k) => `${k.name}:${k.type}`).join(', ')}`);
  }
}
