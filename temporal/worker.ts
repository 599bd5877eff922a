import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { DataConverter } from '@temporalio/common';
import { bundleWorkflowCode, DefaultLogger, Runtime, Worker, type NativeConnection, type WorkflowBundleOption } from '@temporalio/worker';
import { activityMetricsInterceptor } from '../activities/activity-metrics.js';
import { createActivities, type ActivityDeps } from '../activities/index.js';
import { failureConverterPath } from './codec.js';
import type { Logger } from './logger.js';

// This module runs either compiled (dist/temporal/worker.js, `npm run worker`) or from source
// through tsx (temporal/worker.ts: npm start, tests, the bench).
const compiled = import.meta.url.endsWith('.js');

/** The one workflow entry: every workflow type the worker registers is exported there. */
export const workflowsPath = fileURLToPath(new URL(`../workflows/index.${compiled ? 'js' : 'ts'}`, import.meta.url));

/**
 * The workflow code `npm run build` bundles next to the compiled worker (dist/workflow-bundle.js),
 * so a production worker starts without running webpack. Only the compiled worker looks for it:
 * a source run bundles the workflow code as it is now, never a bundle built from older code.
 */
export const prebuiltWorkflowBundlePath = compiled ? fileURLToPath(new URL('../workflow-bundle.js', import.meta.url)) : undefined;

let bundle: Promise<WorkflowBundleOption> | undefined;

/**
 * What the workflow code is bundled with, here and in temporal/build.ts: the failure converter
 * must be inside the bundle, because failures raised in workflow code (and update rejections)
 * are converted in the sandbox, where a worker's dataConverter option does not reach once a
 * bundle is given.
 */
export const workflowBundleOptions = { workflowsPath, failureConverterPath } as const;

/**
 * The prebuilt bundle when there is one; otherwise the workflow code bundled once per process
 * (webpack is slow; tests and the bench share it).
 */
export function workflowBundle(): Promise<WorkflowBundleOption> {
  if (prebuiltWorkflowBundlePath && existsSync(prebuiltWorkflowBundlePath)) return Promise.resolve({ codePath: prebuiltWorkflowBundlePath });
  bundle ??= bundleWorkflowCode({ ...workflowBundleOptions, logger: new DefaultLogger('WARN') });
  return bundle;
}

let runtimeInstalled = false;

/**
 * Routes the SDK's own logs through our logger (once per process: the Temporal Runtime is a
 * process-wide singleton that must be configured before the first worker or connection).
 */
export function installTemporalRuntime(log: Logger): void {
  if (runtimeInstalled) return;
  runtimeInstalled = true;
  const at = (level: 'trace' | 'debug' | 'info' | 'warn' | 'error') => (message: string, meta?: Record<string, unknown>) => log[level]({ ...meta, component: 'temporal-sdk' }, message);
  Runtime.install({
    logger: {
      log: (level, message, meta) => at(level.toLowerCase() as 'info')(message, meta),
      trace: at('trace'),
      debug: at('debug'),
      info: at('info'),
      warn: at('warn'),
      error: at('error'),
    },
  });
}

export interface WorkerOptions {
  connection: NativeConnection;
  namespace: string;
  taskQueue: string;
  deps: ActivityDeps;
  identity?: string;
  maxConcurrentActivityTaskExecutions?: number;
  /** temporal/codec.ts createDataConverter's, the same one the API's client gets. */
  dataConverter: DataConverter;
}

export async function createWorker(opts: WorkerOptions): Promise<Worker> {
  return Worker.create({
    connection: opts.connection,
    namespace: opts.namespace,
    taskQueue: opts.taskQueue,
    workflowBundle: await workflowBundle(),
    activities: createActivities(opts.deps),
    dataConverter: opts.dataConverter,
    interceptors: { activity: [activityMetricsInterceptor(opts.deps.metrics)] },
    identity: opts.identity ?? `accessloop-worker@${process.pid}`,
    maxConcurrentActivityTaskExecutions: opts.maxConcurrentActivityTaskExecutions ?? 100,
    // Drain in-flight activities on SIGTERM before the process exits.
    shutdownGraceTime: '10s',
    // A crashed worker holds its cached workflows' tasks on its sticky queue until this timeout;
    // the SDK default (10 s) would add that much to time-to-revoke for every lease it owned.
    // The cost of a short value is an occasional full-history replay on a busy worker.
    stickyQueueScheduleToStartTimeout: '2s',
  });
}
