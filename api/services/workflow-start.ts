import { WorkflowExecutionAlreadyStartedError } from '@temporalio/client';

export interface StartRetry {
  /** Attempts in all, the first included. */
  attempts: number;
  /** Pause before each retry; the last entry repeats. */
  backoffMs: readonly number[];
}

/**
 * The client already retries transient gRPC errors inside each call; these few outer attempts
 * cover what it gives up on, and the ambiguous case (the server started the workflow but the
 * answer was lost), which the next attempt resolves as "already started".
 */
export const DEFAULT_START_RETRY: StartRetry = { attempts: 3, backoffMs: [250, 1000] };

/**
 * Runs `start` (a start or signal-with-start under a deterministic workflow id) until it
 * succeeds, treating "already started" for that id as success, so it is safe to repeat. Throws
 * the last error once the attempts are spent.
 */
export async function startIdempotently(start: () => Promise<unknown>, retry: StartRetry = DEFAULT_START_RETRY): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    try {
      await start();
      return;
    } catch (e) {
      if (e instanceof WorkflowExecutionAlreadyStartedError) return;
      if (attempt >= retry.attempts) throw e;
      const pause = retry.backoffMs[Math.min(attempt - 1, retry.backoffMs.length - 1)] ?? 0;
      await new Promise((resolve) => setTimeout(resolve, pause));
    }
  }
}
