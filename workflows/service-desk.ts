import { condition, continueAsNew, defineSignal, isCancellation, log, proxyActivities, setCurrentDetails, setHandler, sleep, workflowInfo } from '@temporalio/workflow';
import type { ServiceDeskActivities } from '../activities/index.js';
import { BOOKKEEPING, DESK_PUMP } from './activity-options.js';

const pump = proxyActivities<ServiceDeskActivities>(DESK_PUMP);
// Bounded: a check that keeps failing waits for the next interval, and must not hold the run open.
const book = proxyActivities<ServiceDeskActivities>({ ...BOOKKEEPING, startToCloseTimeout: '5m', retry: { ...BOOKKEEPING.retry, maximumAttempts: 5 } });

export interface ServiceDeskInput {
  version: 1;
  deskId: string;
}

/** Checks every live ticket-linked lease against its ticket now (operators, tests), rather than at the next interval. */
export const checkTicketsSignal = defineSignal('checkTickets');

/** Pump rounds per run: each is a few minutes, so a run's history stays short and replays are cheap. */
const ROUNDS_PER_RUN = 12;
const PUMP_RETRY_SECONDS = 60;

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
      for (let i = 0; i < ROUNDS_PER_RUN && !workflowInfo().continueAsNewSuggested; i++) {
        try {
          await pump.pumpServiceDesk({ deskId: input.deskId });
        } catch (err) {
          // A pump that failed for good (the desk row gone, no request rules on the worker) has
          // alerted or logged; the loop must outlive it, so the desk is tried again later.
          if (isCancellation(err)) throw err;
          log.warn('service desk pump failed; retrying later', { deskId: input.deskId });
          setCurrentDetails(`**pump failing** for service desk \`${input.deskId}\`; retrying every ${PUMP_RETRY_SECONDS} s`);
          await sleep(PUMP_RETRY_SECONDS * 1000);
        }
      }
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
      try {
        const found = await book.checkDeskTickets({ deskId: input.deskId });
        interval = found.intervalSeconds * 1000;
        setCurrentDetails(`**pumping** service desk \`${input.deskId}\`\n\nlast ticket check: ${found.checked} checked, ${found.findings} finding(s)`);
      } catch (err) {
        // A check that could not finish (the desk refused it) is tried again at the next interval; it never ends the loop.
        if (isCancellation(err)) throw err;
        log.warn('service desk ticket check failed', { deskId: input.deskId });
        setCurrentDetails(`**pumping** service desk \`${input.deskId}\`\n\nlast ticket check failed; next in ${Math.round(interval / 1000)} s`);
      }
    }
  })();
  await Promise.all([rounds, checks]);
  await continueAsNew<typeof serviceDeskWorkflow>(input);
}
