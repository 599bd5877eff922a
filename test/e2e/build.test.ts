import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes, randomUUID } from 'node:crypto';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Client, Connection } from '@temporalio/client';
import postgres from 'postgres';
import { afterAll, beforeAll, describe, expect, inject, it } from 'vitest';
import { createDataConverter, keyRing } from '../../temporal/codec.js';
import { lifecycleTiming, loadConfig } from '../../temporal/config.js';
import { prebuiltWorkflowBundlePath } from '../../temporal/worker.js';
import { identityWorkflow } from '../../workflows/index.js';
import { identityWorkflowId } from '../../workflows/ids.js';
import { identityStateQuery } from '../../workflows/messages.js';
import { repoRoot, run } from '../helpers/cli.js';
import { adminUrl } from '../helpers/db.js';

// `npm run build` from a clean dist/, then the compiled entry points as production runs them:
// the bin on dist/api/cli.js, `npm run worker` executing workflow code from the prebuilt bundle
// (no webpack at start), `npm run api` serving its docs page from dist/. The database starts
// empty, so the compiled worker's migrateDb proves the migrations were copied next to it.
const dist = path.join(repoRoot, 'dist');
const hadDist = existsSync(dist);
const children = new Set<ChildProcess>();
const payloadKey = `build-test:${randomBytes(32).toString('hex')}`;
let env: Record<string, string>;
let dbName: string;
let dataDir: string;

beforeAll(async () => {
  await rm(dist, { recursive: true, force: true });
  const built = await run('npm', ['run', 'build'], {}, 120_000);
  expect(built.code, built.stdout + built.stderr).toBe(0);

  dbName = `accessloop_build_${randomBytes(5).toString('hex')}`;
  const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
  await admin.unsafe(`create database ${dbName}`);
  await admin.end();
  const url = new URL(adminUrl);
  url.pathname = `/${dbName}`;
  dataDir = await mkdtemp(path.join(os.tmpdir(), 'accessloop-build-'));
  env = {
    TEMPORAL_ADDRESS: inject('temporalAddress'),
    DATABASE_URL: url.toString(),
    TEMPORAL_TASK_QUEUE: `build-${randomBytes(4).toString('hex')}`,
    ACCESSLOOP_DATA_DIR: dataDir,
    ACCESSLOOP_PAYLOAD_KEYS: payloadKey,
    ACCESSLOOP_DEMO: 'false',
    PORT: '0',
    LOG_LEVEL: 'warn',
  };
}, 180_000);

afterAll(async () => {
  for (const c of [...children]) await stop(c, 'SIGKILL');
  if (dbName) {
    const admin = postgres(adminUrl, { max: 1, onnotice: () => {} });
    await admin.unsafe(`drop database if exists ${dbName} with (force)`);
    await admin.end();
  }
  if (dataDir) await rm(dataDir, { recursive: true, force: true });
  // Leave the tree as it was: without a dist/, the bin (and test/e2e/cli.test.ts) run the source.
  if (!hadDist) await rm(dist, { recursive: true, force: true });
});

/**
 * Starts the command of `npm run <script>` and resolves once its output matches `ready`. Run
 * without npm in between, so SIGTERM reaches our process and its exit code is its own.
 */
async function startScript(script: 'api' | 'worker', ready: RegExp): Promise<{ child: ChildProcess; match: RegExpMatchArray }> {
  const pkg = JSON.parse(await readFile(path.join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const [command, ...args] = pkg.scripts[script]!.split(' ');
  expect(command).toBe('node');
  const child = spawn(process.execPath, args, { cwd: repoRoot, env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  children.add(child);
  child.on('exit', () => children.delete(child));
  let out = '';
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`npm run ${script} did not become ready: ${out}`)), 30_000);
    const seen = (d: Buffer) => {
      out += d.toString();
      const match = out.match(ready);
      if (match) {
        clearTimeout(t);
        resolve({ child, match });
      }
    };
    child.stdout!.on('data', seen);
    child.stderr!.on('data', seen);
    child.on('exit', (code) => reject(new Error(`npm run ${script} exited early (${code}): ${out}`)));
  });
}

async function stop(child: ChildProcess, signal: NodeJS.Signals): Promise<number | null> {
  if (child.exitCode !== null) return child.exitCode;
  const exited = new Promise<number | null>((r) => child.once('exit', (code) => r(code)));
  child.kill(signal);
  return exited;
}

describe('npm run build', () => {
  it('compiles the entry points into dist/, with the migrations and the prebuilt workflow bundle, and nothing of test/', () => {
    for (const f of ['api/server.js', 'api/cli.js', 'temporal/worker-main.js', 'workflow-bundle.js', 'db/migrations/meta/_journal.json']) {
      expect(existsSync(path.join(dist, f)), f).toBe(true);
    }
    expect(existsSync(path.join(dist, 'test'))).toBe(false);
    // A source run never picks up a bundle built from older code.
    expect(prebuiltWorkflowBundlePath).toBeUndefined();
  });

  it('the bin runs the compiled CLI', async () => {
    const help = await run(process.execPath, ['api/accessloop.mjs', '--help']);
    expect(help.code).toBe(0);
    expect(help.stdout).toContain('usage: accessloop <command>');

    const file = path.join(dataDir, 'not-a-bundle.json');
    await writeFile(file, '{"format":"something else"}');
    const verify = await run(process.execPath, ['api/accessloop.mjs', 'evidence', 'verify', file]);
    expect(verify.code).toBe(1);
    expect(verify.stdout + verify.stderr).toMatch(/INVALID .*not-a-bundle\.json/);
  });

  it('the bin prefers dist/api/cli.js and falls back to tsx on the source', async () => {
    // A copy of the shim beside stub CLIs, inside the repository so node_modules (tsx) resolves.
    const dir = path.join(repoRoot, '.cache', `shim-${randomBytes(4).toString('hex')}`);
    try {
      await mkdir(path.join(dir, 'api'), { recursive: true });
      await cp(path.join(repoRoot, 'api', 'accessloop.mjs'), path.join(dir, 'api', 'accessloop.mjs'));
      await writeFile(path.join(dir, 'api', 'cli.ts'), 'export async function main(argv: string[]): Promise<number> {\n  console.log(`source ${argv.join(" ")}`);\n  return 4;\n}\n');
      const fromSource = await run(process.execPath, [path.join(dir, 'api', 'accessloop.mjs'), 'x']);
      expect([fromSource.code, fromSource.stdout.trim()]).toEqual([4, 'source x']);

      await mkdir(path.join(dir, 'dist', 'api'), { recursive: true });
      await writeFile(path.join(dir, 'dist', 'api', 'cli.js'), 'export async function main(argv) {\n  console.log(`compiled ${argv.join(" ")}`);\n  return 3;\n}\n');
      const compiled = await run(process.execPath, [path.join(dir, 'api', 'accessloop.mjs'), 'x']);
      expect([compiled.code, compiled.stdout.trim()]).toEqual([3, 'compiled x']);
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  it('npm run worker runs workflow code from the prebuilt bundle', async () => {
    // The compiled worker module picks the bundle, not webpack.
    const compiled = (await import(pathToFileURL(path.join(dist, 'temporal', 'worker.js')).href)) as typeof import('../../temporal/worker.js');
    expect(await compiled.workflowBundle()).toEqual({ codePath: path.join(dist, 'workflow-bundle.js') });

    const { child } = await startScript('worker', /accessloop-worker-ready/);
    const config = loadConfig(env);
    const connection = await Connection.connect({ address: env.TEMPORAL_ADDRESS! });
    try {
      const client = new Client({ connection, dataConverter: createDataConverter(config, keyRing(config.ACCESSLOOP_PAYLOAD_KEYS!)) });
      const identityId = randomUUID();
      const handle = await client.workflow.start(identityWorkflow, {
        workflowId: identityWorkflowId(identityId),
        taskQueue: env.TEMPORAL_TASK_QUEUE!,
        args: [{ version: 1, identityId, timing: lifecycleTiming(config) }],
      });
      // Answering a query means the worker loaded the bundle and ran the workflow in it.
      expect((await handle.query(identityStateQuery)).identityId).toBe(identityId);
      await handle.terminate('build test done');
    } finally {
      await connection.close();
    }
    expect(await stop(child, 'SIGTERM')).toBe(0);
  });

  it('npm run api serves the API and its docs page from dist/', async () => {
    const { child, match } = await startScript('api', /API\s+(http:\/\/\S+)/);
    const api = match[1]!;
    const spec = await fetch(`${api}/openapi.json`);
    expect(spec.status).toBe(200);
    expect(((await spec.json()) as { openapi?: string }).openapi).toMatch(/^3\./);
    // swagger-ui-dist resolves from the compiled api/routes/docs.js too.
    expect((await fetch(`${api}/docs/assets/swagger-ui.css`)).status).toBe(200);
    expect(await stop(child, 'SIGTERM')).toBe(0);
  });
});
