/**
 * The contract every target connector fulfils (docs/architecture.md#7-connectors-activitiesconnectors).
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

/** Lease facts for connectors whose grants are time-bound credentials (SSH certificates). */
export interface GrantOptions {
  /** End of the lease: a credential issued for the grant must not outlive it. */
  notAfter?: Date;
  /** The subject's public key, for connectors that certify keys (SSH CA). */
  publicKey?: string;
}

/**
 * A credential a grant or an issue call produced. `material` is the secret (a password) or the
 * certificate text: the activity stores it for one-time delivery to the owner and never returns
 * it to the workflow (history) or writes it to a log.
 */
export interface IssuedCredential {
  kind: 'password' | 'ssh_certificate';
  /** Target-side id (a role name, a certificate serial): not secret, safe for history and audit. */
  credentialId: string;
  material: string;
  notAfter: Date;
}

export interface GrantResult extends ChangeResult {
  /** Set by connectors whose grant is a credential (SSH CA): also when changed=false (a retry). */
  credential?: IssuedCredential;
}

export interface Connector {
  readonly kind: string;
  /** Idempotent: granting an existing membership reports changed=false. */
  grant(m: Membership, opts?: GrantOptions): Promise<GrantResult>;
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
  /** When the account last authenticated, where the target records it (shown on access reviews); `at` null: never, or not recorded. */
  lastUsed?(account: string): Promise<{ exists: boolean; at: Date | null }>;
  /**
   * Non-human credentials: makes `account` a login that authenticates with a freshly generated
   * secret valid until `notAfter` (creating the login if needed). Calling it again rotates: the
   * previous secret stops working.
   */
  issueCredential?(account: string, opts: { notAfter: Date }): Promise<IssuedCredential>;
  /** Moves the credential's end (an extended lease) without changing the secret. NoSuchAccount when it was revoked. */
  extendCredential?(account: string, opts: { notAfter: Date }): Promise<ChangeResult>;
  /** Ends the credential: the secret stops working and open sessions are terminated. Idempotent. */
  revokeCredential?(account: string): Promise<ChangeResult>;
  /** Reads the target's truth: could the account still authenticate with a credential? */
  credentialActive?(account: string): Promise<{ active: boolean }>;
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
