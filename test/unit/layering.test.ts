import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { describe, expect, it } from 'vitest';

// The layer zones in eslint.config.js, tested the only way that counts: lint an import as if it
// sat in a given file and see whether the rule fires. A zone that stops biting (a regex typo, a
// depth not covered, a later config block overriding an earlier one) fails here.
const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({ cwd: root, overrideConfigFile: path.join(root, 'eslint.config.js') });

const RESTRICTED = '@typescript-eslint/no-restricted-imports';

async function ruleIds(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(`${code}\n`, { filePath: path.join(root, file) });
  return result!.messages.map((m) => m.ruleId ?? `fatal: ${m.message}`);
}

type Case = [file: string, code: string];

const wrong: Case[] = [
  // db/ imports nothing of ours, not even types.
  ['db/x.ts', `import { createApp } from '../api/app.js';`],
  ['db/x.ts', `import type { ActivityDeps } from '../activities/index.js';`],
  ['db/x.ts', `import { loadConfig } from '../temporal/config.js';`],
  ['db/x.ts', `import { accessRequestWorkflowId } from '../workflows/ids.js';`],

  // workflows/: values only from @temporalio/workflow, zod and other workflow files.
  ['workflows/x.ts', `import { createActivities } from '../activities/index.js';`],
  ['workflows/x.ts', `import { createHash } from 'node:crypto';`],
  ['workflows/x.ts', `import { readFileSync } from 'node:fs';`],
  ['workflows/x.ts', `import { z } from 'zod/v4/core';`],
  ['workflows/x.ts', `export { grants } from '../db/schema.js';`],

  // activities/ factories: never api/, never the wiring in temporal/, workflows only as types.
  ['activities/lease.ts', `import { createApp } from '../api/app.js';`],
  ['activities/lease.ts', `import { startRuntime } from '../temporal/runtime.js';`],
  ['activities/lease.ts', `import { createWorker } from '../temporal/worker.js';`],
  ['activities/lease.ts', `import { startDevServer } from '../temporal/dev-server.js';`],
  ['activities/lease.ts', `import { connectClient } from '../temporal/client.js';`],
  ['activities/lease.ts', `import { accessRequestWorkflow } from '../workflows/index.js';`],
  ['activities/lease.ts', `import { fakeDb } from '../test/helpers/db.js';`],

  // activities/domain/** and activities/connectors/**: as the factories, and never a factory, at any depth.
  ['activities/domain/x.ts', `import { createActivities } from '../index.js';`],
  ['activities/domain/x.ts', `import type { ActivityDeps } from '../index.js';`],
  ['activities/domain/policy/x.ts', `import { createHrActivities } from '../../hr.js';`],
  ['activities/domain/x.ts', `import { createApp } from '../../api/app.js';`],
  ['activities/domain/policy/x.ts', `import { startRuntime } from '../../../temporal/runtime.js';`],
  ['activities/connectors/x.ts', `import { createLeaseActivities } from '../lease.js';`],
  ['activities/connectors/ldap/x.ts', `import { createLeaseActivities } from '../../lease.js';`],
  ['activities/connectors/ldap/x.ts', `import { hrEventBody } from '../../../api/schemas.js';`],

  // api/: no factories, no connector code but the registry, no composition root.
  ['api/routes/x.ts', `import { hrEventBody } from '../../activities/hr.js';`],
  ['api/services/x.ts', `import { createActivities } from '../../activities/index.js';`],
  ['api/services/x.ts', `import type { ActivityDeps } from '../../activities/index.js';`],
  ['api/app.ts', `import { createCredentialActivities } from '../activities/credentials.js';`],
  ['api/routes/x.ts', `import { createLdapConnector } from '../../activities/connectors/ldap/connector.js';`],
  ['api/services/x.ts', `import { startRuntime } from '../../temporal/runtime.js';`],
  ['api/app.ts', `import { createWorker } from '../temporal/worker.js';`],
  ['api/app.ts', `import { startDevServer } from '../temporal/dev-server.js';`],
  ['api/app.ts', `import { seedDemo } from '../temporal/demo-catalog.js';`],
  ['api/app.ts', `import { fakeDb } from '../test/helpers/db.js';`],
  // The entry points may reach temporal/runtime.ts, but not around it, and not the factories.
  ['api/server.ts', `import { createWorker } from '../temporal/worker.js';`],
  ['api/server.ts', `import { createActivities } from '../activities/index.js';`],
  ['api/cli.ts', `import { startDevServer } from '../temporal/dev-server.js';`],

  // temporal/ platform modules: no api/, no factories.
  ['temporal/client.ts', `import { createApp } from '../api/app.js';`],
  ['temporal/schedules.ts', `import { createActivities } from '../activities/index.js';`],
  ['temporal/dev-server.ts', `import type { AppDeps } from '../api/app.js';`],
  // The leaves (config, logger, codec) import nothing of ours but each other.
  ['temporal/config.ts', `import { createDb } from '../db/client.js';`],
  ['temporal/codec.ts', `import { connectClient } from './client.js';`],
  ['temporal/logger.ts', `import { canonicalJson } from '../activities/domain/audit.js';`],
];

const right: Case[] = [
  ['db/client.ts', `import * as schema from './schema.js';`],
  ['workflows/x.ts', `import { proxyActivities } from '@temporalio/workflow';\nimport { approveUpdate } from './messages.js';`],
  ['workflows/x.ts', `import type { createActivities } from '../activities/index.js';`],
  // zod is pure and deterministic: the message schemas run in the sandbox and in the API alike.
  ['workflows/x.ts', `import { z } from 'zod';\nimport { revokeArgsSchema } from './message-schemas.js';`],
  ['activities/lease.ts', `import { appendAudit } from './domain/audit.js';\nimport { ConnectorError } from './connectors/types.js';\nimport { grants } from '../db/schema.js';`],
  ['activities/lease.ts', `import { createLogger } from '../temporal/logger.js';\nimport type { Config } from '../temporal/config.js';\nimport { createDataConverter } from '../temporal/codec.js';`],
  ['activities/lease.ts', `import type { HrEventType } from '../workflows/messages.js';`],
  ['activities/index.ts', `export { createLeaseActivities } from './lease.js';`],
  ['activities/domain/policy/x.ts', `import { canonicalJson } from '../audit.js';\nimport type { Db } from '../../../db/client.js';`],
  ['activities/domain/x.ts', `import type { IssuedCredential } from '../connectors/types.js';\nimport type { Logger } from '../../temporal/logger.js';`],
  ['activities/connectors/ldap/x.ts', `import { ConnectorError } from '../types.js';\nimport { systems } from '../../../db/schema.js';`],
  [
    'api/routes/x.ts',
    [
      `import { appendAudit } from '../../activities/domain/audit.js';`,
      `import { connectorKinds, SECRET_ENV_PREFIX } from '../../activities/connectors/registry.js';`,
      `import type { IssuedCredential } from '../../activities/connectors/types.js';`,
      `import { grants } from '../../db/schema.js';`,
      `import { accessRequestWorkflow } from '../../workflows/index.js';`,
      `import { approveUpdate } from '../../workflows/messages.js';`,
      `import { ensureReconcileSchedule } from '../../temporal/schedules.js';`,
      `import { connectClient } from '../../temporal/client.js';`,
      `import { PayloadCodecError } from '../../temporal/codec.js';`,
    ].join('\n'),
  ],
  ['api/server.ts', `import { startRuntime } from '../temporal/runtime.js';\nimport { loadConfig } from '../temporal/config.js';`],
  ['api/cli.ts', `import { startRuntime } from '../temporal/runtime.js';\nimport { verifyEvidenceBundle } from '../activities/domain/evidence/index.js';`],
  ['temporal/client.ts', `import { allSearchAttributeKeys } from '../workflows/search-attributes.js';\nimport type { Config } from './config.js';`],
  ['temporal/schedules.ts', `import { reconciliationWorkflow } from '../workflows/index.js';\nimport type { Db } from '../db/client.js';`],
  ['temporal/codec.ts', `import type { Config } from './config.js';`],
  // The composition root wires everything.
  ['temporal/runtime.ts', `import { createApp } from '../api/app.js';\nimport { createActivities } from '../activities/index.js';`],
  ['temporal/worker.ts', `import { createActivities } from '../activities/index.js';`],
  ['test/unit/x.ts', `import { createActivities } from '../../activities/index.js';\nimport { createApp } from '../../api/app.js';`],
];

describe('layer zones (eslint.config.js)', () => {
  it.each(wrong)('refuses in %s: %s', async (file, code) => {
    expect(await ruleIds(file, code)).toContain(RESTRICTED);
  });

  it.each(right)('allows in %s: %s', async (file, code) => {
    expect(await ruleIds(file, code)).toEqual([]);
  });

  it('refuses `import { type X }`: verbatimModuleSyntax compiles it to an import that still loads the module', async () => {
    expect(await ruleIds('workflows/x.ts', `import { type createActivities } from '../activities/index.js';`)).toContain('@typescript-eslint/no-import-type-side-effects');
  });
});
