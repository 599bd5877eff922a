import { condition, continueAsNew, defineSignal, proxyActivities, setCurrentDetails, setHandler, workflowInfo } from '@temporalio/workflow';
import type { ServiceDeskActivities } from '../activities/index.js';
import { BOOKKEEPING, DESK_PUMP } from './activity-options.js';

const pump = proxyActivities<ServiceDeskActivities>(DESK_PUMP);
const book = proxyActivities<ServiceDeskActivities>({ ...BOOKKEEPING, startToCloseTimeout: '5m' });

export interface ServiceDeskInput {
  version: 1;
  deskId: string;
}

/** Checks every live ticket-linked lease against its ticket now (operators, tests), rather than at the next interval. */
export const checkTicketsSignal = defineSignal('checkTickets');

/** Pump rounds per run: each is a few minutes, so a run's history stays short and replays are cheap. */
const ROUNDS_PER_RUN = 12;

/**
 * A service desk in the loop (docs/architecture.md, "Service desk"): the pump reads the desk's
 * events after a durable cursor (intake, decisions, cancellations, end-date changes) and posts
 * the outbox to the tickets, round after round; beside it, the ticket check finds live access
 * whose ticket was closed or lost. Nothing here waits on the desk: the leases never call it.
 */
export async function serviceDeskWorkflow(input: ServiceDeskInput): Promise<void> {
  let checkRequested = false;
  let pumping = true;
  setHandler(checkTicketsSignal, () => void (checkRequested = true));
  setCurrentDetails(`**pumping** service desk \`${input.deskId}\``);

  const rounds = (async () => {
    try {
      for (let i = 0; i < ROUNDS_PER_RUN && !workflowInfo().continueAsNewSuggested; i++) await pump.pumpServiceDesk({ deskId: input.deskId });
    } finally {
      pumping = false;
    }
  })();
  const checks = (async () => {
    let interval = (await book.ticketCheckIntervalSeconds({ deskId: input.deskId })) * 1000;
    // A check asked for while the run's last one ran is still done in this run, not dropped by the continue-as-new.
    while (pumping || checkRequested) {
      await condition(() => checkRequested || !pumping, interval);
      if (!pumping && !checkRequested) return;
      checkRequested = false;
      const found = await book.checkDeskTickets({ deskId: input.deskId });
      interval = found.intervalSeconds * 1000;
      setCurrentDetails(`**pumping** service desk \`${input.deskId}\`\n\nlast ticket check: ${found.checked} checked, ${found.findings} finding(s)`);
    }
  })();
  await Promise.all([rounds, checks]);
  await continueAsNew<typeof serviceDeskWorkflow>(input);
}
