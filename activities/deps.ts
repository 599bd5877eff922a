import type { Client } from '@temporalio/client';
import type { Db } from '../db/client.js';
import type { Logger } from '../temporal/logger.js';
import type { ConnectorRegistry } from './connectors/registry.js';
import type { CredentialVault } from './domain/vault.js';
import type { Metrics } from './domain/metrics.js';
import type { Notifier } from './domain/notifier.js';
import type { PolicyService } from './domain/policy/service.js';

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
}
