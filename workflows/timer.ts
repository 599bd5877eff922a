import { condition } from '@temporalio/workflow';

/**
 * A deadline that can move (samples `timer-examples` `UpdatableTimer`), in epoch milliseconds.
 * Waiting is one `condition` with a timeout; moving the deadline wakes it and it waits again for
 * the new one, so an extension leaves no stale timer behind.
 */
export class UpdatableTimer {
  constructor(public deadline: number) {}

  /** Resolves `'expired'` once the deadline has passed, or `'interrupted'` as soon as `interrupt()` holds. */
  async wait(interrupt: () => boolean): Promise<'expired' | 'interrupted'> {
    for (;;) {
      const seen = this.deadline;
      const woke = await condition(() => interrupt() || this.deadline !== seen, Math.max(0, this.deadline - Date.now()));
      if (interrupt()) return 'interrupted';
      if (!woke && Date.now() >= this.deadline) return 'expired';
    }
  }
}
