import type { Client } from '@temporalio/client';
import { serviceDeskWorkflow } from '../workflows/index.js';
import { serviceDeskWorkflowId } from '../workflows/ids.js';
import { checkTicketsSignal, type ServiceDeskInput } from '../workflows/service-desk.js';
import type { Config } from './config.js';

type DeskClient = Pick<Client, 'workflow'>;
type DeskConfig = Pick<Config, 'TEMPORAL_TASK_QUEUE'>;

/** The one way a desk's loop is started: its id names the desk, its summary names nothing (no queue, no URL). */
const deskLoop = (config: DeskConfig, deskId: string) => ({
  workflowId: serviceDeskWorkflowId(deskId),
  taskQueue: config.TEMPORAL_TASK_QUEUE,
  args: [{ version: 1, deskId }] as [ServiceDeskInput],
  staticSummary: 'Service desk loop',
});

/**
 * Starts the desk's long-running loop unless it is running. Idempotent: a running loop is kept
 * (`USE_EXISTING`), never a second one beside it; a loop that ended is started afresh.
 */
export async function ensureServiceDeskWorkflow(client: DeskClient, config: DeskConfig, deskId: string): Promise<void> {
  await client.workflow.start(serviceDeskWorkflow, { ...deskLoop(config, deskId), workflowIdConflictPolicy: 'USE_EXISTING' });
}

/**
 * Asks the desk's loop to check its live ticket-linked leases now. Signal-with-start, so a loop
 * that is not running is started with the signal in the same call: the request is never lost
 * between an ensure and a signal.
 */
export async function requestDeskTicketCheck(client: DeskClient, config: DeskConfig, deskId: string): Promise<void> {
  await client.workflow.signalWithStart(serviceDeskWorkflow, { ...deskLoop(config, deskId), signal: checkTicketsSignal, signalArgs: [] });
}
