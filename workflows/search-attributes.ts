import type { SearchAttributeKey } from '@temporalio/common/lib/search-attributes.js';
import type { SearchAttributeType } from '@temporalio/common';

// Sandbox-safe (imported by workflows and by the API/worker): a search-attribute key is a
// plain {name, type} object, so we build keys here without importing @temporalio/common values.
const key = <T extends SearchAttributeType>(name: string, type: T): SearchAttributeKey<T> => ({ name, type });

// Opaque ids only: never e-mails, names or usernames (they are visible to every UI user).
export const AccessStateKey = key('AccessState', 'KEYWORD');
export const AccessExpiresAtKey = key('AccessExpiresAt', 'DATETIME');
export const IdentityRefKey = key('IdentityRef', 'KEYWORD');
export const EntitlementRefKey = key('EntitlementRef', 'KEYWORD');
export const SystemRefKey = key('SystemRef', 'KEYWORD');
export const RiskTierKey = key('RiskTier', 'KEYWORD');
export const TicketRefKey = key('TicketRef', 'KEYWORD');
/** Set at the start of a break-glass lease (docs/break-glass.md). */
export const BreakGlassKey = key('BreakGlass', 'BOOL');

export const allSearchAttributeKeys = [
  AccessStateKey,
  AccessExpiresAtKey,
  IdentityRefKey,
  EntitlementRefKey,
  SystemRefKey,
  RiskTierKey,
  TicketRefKey,
  BreakGlassKey,
] as const;
