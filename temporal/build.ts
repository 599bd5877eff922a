import { execFileSync } from 'node:child_process';
import { cp, rename, rm, writeFile } from 'node:fs/promises';
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { bundleWorkflowCode, DefaultLogger } from '@temporalio/worker';
import { workflowBundleOptions } from './worker.js';

/**
 * `npm run build`: the production entry points (api/server.ts, api/cli.ts,
 * temporal/worker-main.ts) as JavaScript in dist/. Also into dist: the files the compiled code
 * finds next to itself (db/migrations for migrateDb), and the workflow bundle, so a production
 * worker loads it instead of running webpack at every start (temporal/worker.ts workflowBundle()).
 *
 * Built from nothing into a scratch folder that replaces dist/ only when complete: a moved or
 * deleted source file leaves nothing behind, and a failed build leaves the previous dist/ as it
 * was, so "dist/api/server.js exists" (npm run api's prebuild check) means a whole build.
 */
const root = fileURLToPath(new URL('..', import.meta.url));
const dist = path.join(root, 'dist');
// Beside dist/, at the same depth, so the source maps' relative paths stay right after the rename.
const scratch = path.join(root, '.dist-build');
const started = Date.now();

await rm(scratch, { recursive: true, force: true });
const tsc = createRequire(import.meta.url).resolve('typescript/bin/tsc');
execFileSync(process.execPath, [tsc, '-p', path.join(root, 'tsconfig.build.json'), '--outDir', scratch], { cwd: root, stdio: 'inherit' });

// db/client.ts resolves its migrations folder next to itself: dist/db/migrations.
await cp(path.join(root, 'db', 'migrations'), path.join(scratch, 'db', 'migrations'), { recursive: true });
// temporal/codec.ts loads the failure converter by path next to itself (plain CommonJS, not compiled).
await cp(path.join(root, 'temporal', 'failure-converter.cjs'), path.join(scratch, 'temporal', 'failure-converter.cjs'));
// The private RT of the demo and the tests is driven by this Perl script, read from beside rt-server.js.
await cp(path.join(root, 'activities/connectors/service-desk/rt-instance.pl'), path.join(scratch, 'activities/connectors/service-desk/rt-instance.pl'));

// Bundled from the TypeScript source (this script runs through tsx), the same code tsc compiled.
const { code } = await bundleWorkflowCode({ ...workflowBundleOptions, logger: new DefaultLogger('WARN') });
await writeFile(path.join(scratch, 'workflow-bundle.js'), code);

await rm(dist, { recursive: true, force: true });
await rename(scratch, dist);

console.log(`[build] dist/ in ${((Date.now() - started) / 1000).toFixed(1)} s: node dist/api/server.js --api-only, node dist/temporal/worker-main.js, node api/accessloop.mjs`);
