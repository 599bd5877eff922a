/**
 * The contract every target connector fulfils (DESIGN §6).
 *
 * A membership is addressed by two opaque strings the connector understands:
 * `account` (e.g. a user DN for LDAP, a role name for PostgreSQL) and `resource`
 * (a group DN, a granted role). Both come from our catalog, never straight from a
 * request body, but connectors still escape/parameterise them because the catalog
 * is operator-edited and identity attributes come from HR feeds.
 */
export interface Membership {
  account: string;
  resource: string;
}

export interface ChangeResult {
  /** true when the call changed the target; false when it was already in the wanted state. */
  changed: boolean;
}

export interface CheckResult {
  present: boolean;
}

export interface Connector {
  readonly kind: string;
  /** Idempotent: granting an existing membership reports changed=false. */
  grant(m: Membership): Promise<ChangeResult>;
  /** Idempotent: revoking an absent membership reports changed=false. */
  revoke(m: Membership): Promise<ChangeResult>;
  /** Reads the target's truth; used for verification after grant and revoke. */
  check(m: Membership): Promise<CheckResult>;
  /** Every account holding `resource`, for reconciliation. */
  list(resource: string): Promise<string[]>;
  /** Locks the account so it can no longer authenticate (leavers). Idempotent. */
  disableAccount?(account: string): Promise<ChangeResult>;
  /** Reverses disableAccount (rehire). Idempotent. */
  enableAccount?(account: string): Promise<ChangeResult>;
  /** Reads the target's truth about the account lock. */
  accountDisabled?(account: string): Promise<{ disabled: boolean; exists: boolean }>;
  close(): Promise<void>;
}

/**
 * Stable failure types. Non-retryable ones become ApplicationFailure.nonRetryable
 * with this type in the activity layer; retryable ones let Temporal retry.
 */
export type ConnectorErrorType =
  | 'NoSuchAccount'
  | 'NoSuchResource'
  | 'PermissionDenied'
  | 'InvalidConfig'
  | 'InvalidInput'
  | 'TargetUnavailable'
  | 'Timeout'
  | 'Throttled';

const RETRYABLE: ReadonlySet<ConnectorErrorType> = new Set(['TargetUnavailable', 'Timeout', 'Throttled']);

export class ConnectorError extends Error {
  readonly retryable: boolean;
  constructor(
    readonly type: ConnectorErrorType,
    message: string,
    options?: { cause?: unknown },
  ) {
    super(message, options);
    this.name = 'ConnectorError';
    this.retryable = RETRYABLE.has(type);
  }
}
