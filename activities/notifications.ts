import type { ActivityDeps } from './deps.js';
import type { NotifyInput } from './domain/notifier.js';

export function createNotificationActivities({ notifier }: Pick<ActivityDeps, 'notifier'>) {
  return {
    async notify(input: NotifyInput) {
      return notifier.send(input);
    },
  };
}
