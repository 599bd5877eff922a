import { condition } from '@temporalio/workflow';

/**
 * Serialises async handlers that touch the same target (samples `safe-message-handlers`). A
 * waiting caller blocks on a `condition`, which writes nothing to history, and callers run in
 * arrival order. Uncontended, `fn` starts at once: the lock adds no step to the handler.
 */
export class Mutex {
  private locked = false;

  async runExclusive<T>(fn: () => Promise<T>): Promise<T> {
    // Every waiter wakes when the lock frees; the first to run takes it and the others wait again.
    while (this.locked) await condition(() => !this.locked);
    this.locked = true;
    try {
      return await fn();
    } finally {
      this.locked = false;
    }
  }
}
