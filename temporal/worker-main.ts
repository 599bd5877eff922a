import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { servicePings, workerPolling } from './readiness.js';
import { startRuntime, type Runtime } from './runtime.js';
import { startHealthListener } from './worker-health.js';

/**
 * `npm run worker`: a stateless worker process. Production runs N of these on one task
 * queue against TEMPORAL_ADDRESS and DATABASE_URL; no API, no demo catalog.
 * ACCESSLOOP_WORKER_HEALTH_PORT adds GET /healthz and /readyz for a supervisor (temporal/worker-health.ts).
 */
const config = loadConfig({ ACCESSLOOP_DEMO: 'false', ...process.env });
const log = createLogger(config.LOG_LEVEL);
if (!config.TEMPORAL_ADDRESS || !config.DATABASE_URL) {
  console.error('npm run worker needs TEMPORAL_ADDRESS and DATABASE_URL (npm start runs everything embedded)');
  process.exit(2);
}
let rt: Runtime | undefined;
// Listening before the start (which bundles the workflow code) so liveness holds while it runs;
// /readyz says 503 until the worker polls.
const health =
  config.ACCESSLOOP_WORKER_HEALTH_PORT === undefined
    ? undefined
    : await startHealthListener({
        host: config.ACCESSLOOP_WORKER_HEALTH_HOST,
        port: config.ACCESSLOOP_WORKER_HEALTH_PORT,
        sources: () => rt && { ...servicePings(rt.db, rt.temporal), workerReady: () => !!rt?.worker && workerPolling(rt.worker) },
      });
try {
  rt = await startRuntime({ config, log, api: false, worker: true });
} catch (e) {
  await health?.close();
  throw e;
}
log.info({ taskQueue: config.TEMPORAL_TASK_QUEUE, ...(health ? { health: health.address } : {}) }, 'worker running');
// Tests and supervisors wait for this line before relying on the worker.
process.stdout.write(`accessloop-worker-ready${health ? ` health=${health.address}` : ''}\n`);
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, async () => {
    // the supervisor sees the process go unready before the worker drains
    await health?.close();
    await rt!.stop();
    process.exit(0);
  });
}
