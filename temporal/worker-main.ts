import { loadConfig } from './config.js';
import { createLogger } from './logger.js';
import { startRuntime } from './runtime.js';

/**
 * `npm run worker`: a stateless worker process. Production runs N of these on one task
 * queue against TEMPORAL_ADDRESS and DATABASE_URL; no API, no demo catalog.
 */
const config = loadConfig({ ACCESSLOOP_DEMO: 'false', ...process.env });
const log = createLogger(config.LOG_LEVEL);
if (!config.TEMPORAL_ADDRESS || !config.DATABASE_URL) {
  console.error('npm run worker needs TEMPORAL_ADDRESS and DATABASE_URL (npm start runs everything embedded)');
  process.exit(2);
}
const rt = await startRuntime({ config, log, api: false, worker: true });
log.info({ taskQueue: config.TEMPORAL_TASK_QUEUE }, 'worker running');
// Tests and supervisors wait for this line before relying on the worker.
process.stdout.write('accessloop-worker-ready\n');
for (const sig of ['SIGTERM', 'SIGINT'] as const) {
  process.once(sig, async () => {
    await rt.stop();
    process.exit(0);
  });
}
