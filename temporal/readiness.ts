import type { Client } from '@temporalio/client';
import type { Worker } from '@temporalio/worker';
import { sql } from 'drizzle-orm';
import type { Db } from '../db/client.js';

/**
 * Readiness, computed one way for every process: the API's /readyz (api/app.ts) and the
 * worker-only process's health listener (temporal/worker-health.ts) answer the same JSON.
 */
export interface Readiness {
  status: 'ready' | 'not_ready';
  database: 'ok' | 'down';
  temporal: 'ok' | 'down';
  /** absent: this process runs no worker. */
  worker: 'ok' | 'down' | 'absent';
}

export interface ReadinessSources {
  pingDb(): Promise<unknown>;
  pingTemporal(): Promise<unknown>;
  /** Whether this process's worker is polling its task queue; omitted when the process runs no worker. */
  workerReady?: () => boolean;
}

/** The database answering `select 1` and the Temporal frontend answering GetSystemInfo. */
export function servicePings(db: Db, temporal: Client): Pick<ReadinessSources, 'pingDb' | 'pingTemporal'> {
  return {
    pingDb: () => db.execute(sql`select 1`),
    pingTemporal: () => temporal.connection.workflowService.getSystemInfo({}),
  };
}

export async function checkReadiness(s: ReadinessSources): Promise<Readiness> {
  // a ping that throws rather than rejecting is down all the same
  const [dbOk, temporalOk] = (await Promise.allSettled([Promise.resolve().then(s.pingDb), Promise.resolve().then(s.pingTemporal)])).map((c) => c.status === 'fulfilled');
  // a process whose worker stopped polling leaves its share of the task queue undone
  const worker = s.workerReady ? (safely(s.workerReady) ? 'ok' : 'down') : 'absent';
  const ready = dbOk! && temporalOk! && worker !== 'down';
  return { status: ready ? 'ready' : 'not_ready', database: dbOk ? 'ok' : 'down', temporal: temporalOk ? 'ok' : 'down', worker };
}

/** Running and both pollers (workflow and activity tasks) still polling: the SDK has no last-poll time. */
export function workerPolling(worker: Pick<Worker, 'getStatus'>): boolean {
  const s = worker.getStatus();
  return s.runState === 'RUNNING' && s.workflowPollerState === 'POLLING' && s.activityPollerState === 'POLLING';
}

function safely(check: () => boolean): boolean {
  try {
    return check();
  } catch {
    return false;
  }
}
