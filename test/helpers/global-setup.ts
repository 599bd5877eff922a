import os from 'node:os';
import path from 'node:path';
import { mkdtemp } from 'node:fs/promises';
import type { TestProject } from 'vitest/node';
import { resolveTemporalBinary, startDevServer } from '../../temporal/dev-server.js';

declare module 'vitest' {
  export interface ProvidedContext {
    temporalAddress: string;
    temporalCli: string;
  }
}

/**
 * One real Temporal dev server (in-memory, headless, 127.0.0.1) for the integration run; each
 * test file gets its own task queue, database and directory so files stay independent.
 */
export default async function setup(project: TestProject) {
  const binary = await resolveTemporalBinary({ cliPath: process.env.TEMPORAL_CLI_PATH, say: (m) => console.log(`[test setup] ${m}`) });
  const logDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-temporal-'));
  const server = await startDevServer({ binary, logDir });
  project.provide('temporalAddress', server.address);
  project.provide('temporalCli', binary);
  return async () => {
    await server.stop();
  };
}
