import type { EvidenceSigner } from './domain/evidence/signing.js';
import type { Client } from '@temporalio/client';
import type { Db } from '../db/client.js';
import type { Logger } from '../temporal/logger.js';
import type { ConnectorRegistry } from './connectors/registry.js';
import type { CredentialVault } from './domain/vault.js';
import type { Metrics } from './domain/metrics.js';
import type { Notifier } from './domain/notifier.js';
import type { PolicyService } from './domain/policy/service.js';
import type { RequestOps } from './domain/request-ops.js';

/** Everything the worker's activities may use; each factory takes only its `Pick<>` of it. */
export interface ActivityDeps {
  db: Db;
  policies: PolicyService;
  notifier: Notifier;
  connectors: ConnectorRegistry;
  log: Logger;
  metrics: Metrics;
  /** Seals issued credentials until their owner reads them once. */
  vault: CredentialVault;
  /** The sentinel describes lease workflows (last workflow task failed?); absent: that check is skipped. */
  temporal?: Pick<Client, 'workflow'> | undefined;
  /** Where people reach the API: links in ticket write-backs (evidence bundles). */
  publicUrl?: string | undefined;
  /** Env the service desks' secret references resolve from (defaults to process.env). */
  secretEnv?: Record<string, string | undefined> | undefined;
  /** The evidence key, which signs the audit log's checkpoints; absent: no checkpoints from this worker. */
  evidenceSigner?: (() => Promise<EvidenceSigner>) | undefined;
  /** The request rules, for the service desk's intake and ticket actions; absent: desks are not pumped. */
  requests?: RequestOps | undefined;
}

export type { Outcome, RequestOps } from './domain/request-ops.js';
