import { inject } from 'vitest';
import { startStackAt, type Stack, type StackOptions } from './stack-core.js';

export { waitFor, LDAP_SECRET_ENV, type Stack, type ApiResponse } from './stack-core.js';

/** A stack on the integration run's Temporal dev server (see global-setup.ts). */
export function startStack(opts: Omit<StackOptions, 'temporalAddress'> = {}): Promise<Stack> {
  return startStackAt({ ...opts, temporalAddress: inject('temporalAddress') });
}
