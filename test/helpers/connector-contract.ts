/**
 * Reusable contract suite for target connectors (activities/connectors/types.ts).
 *
 * Every connector must pass it against a real target; `readTruth` reads the target
 * through an independent path (e.g. ldapsearch, psql) so the connector cannot grade
 * its own homework.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  ConnectorError,
  type Connector,
  type ConnectorErrorType,
  type GrantOptions,
  type Membership,
} from '../../activities/connectors/types.js';

export interface ConnectorContractFixture {
  connector: Connector;
  /** A fresh, valid account on every call (never granted before). */
  account: () => string;
  /** An existing resource the connector may grant and revoke. */
  resource: string;
  /** A well-formed resource that does not exist on the target. */
  missingResource: string;
  /** Independent read of the target's truth. */
  readTruth: (m: Membership) => Promise<boolean>;
  stopTarget?: () => Promise<void>;
  startTarget?: () => Promise<void>;
  /** The connector's configured operation timeout (default 5000 ms). */
  timeoutMs?: number;
  /**
   * Second argument of every grant the suite makes, for connectors whose grant needs lease
   * facts (SSH CA: the public key to certify and the lease end). Omitted: grant(m) alone.
   */
  grantOptions?: (m: Membership) => GrantOptions;
  teardown: () => Promise<void>;
}

/** Awaits `p` and returns the ConnectorError it rejected with (fails the test otherwise). */
export async function expectConnectorError(p: Promise<unknown>, ...types: ConnectorErrorType[]): Promise<ConnectorError> {
  let result: unknown;
  try {
    result = await p;
  } catch (err) {
    expect(err, `expected a ConnectorError, got ${String(err)}`).toBeInstanceOf(ConnectorError);
    const ce = err as ConnectorError;
    if (types.length > 0) expect(types, `unexpected error type ${ce.type}: ${ce.message}`).toContain(ce.type);
    return ce;
  }
  throw new Error(`expected a ConnectorError (${types.join('|') || 'any'}), but the call resolved with ${JSON.stringify(result)}`);
}

export interface ConnectorContractOptions {
  /**
   * Whether the suite stops and restarts the target (default true). When true the
   * fixture must provide stopTarget and startTarget.
   */
  stoppable?: boolean;
}

export function describeConnectorContract(
  name: string,
  setup: () => Promise<ConnectorContractFixture>,
  options: ConnectorContractOptions = {},
): void {
  const stoppable = options.stoppable ?? true;
  describe(`${name} connector contract`, () => {
    let fx: ConnectorContractFixture;
    /** grant as the suite calls it: with the fixture's lease facts when it has any. */
    const grant = (m: Membership) => (fx.grantOptions ? fx.connector.grant(m, fx.grantOptions(m)) : fx.connector.grant(m));

    beforeAll(async () => {
      fx = await setup();
    });

    afterAll(async () => {
      await fx?.teardown();
    });

    it('grant twice changes once and the membership is present', async () => {
      const m = { account: fx.account(), resource: fx.resource };
      expect(await fx.readTruth(m)).toBe(false);
      expect((await grant(m)).changed).toBe(true);
      expect(await fx.readTruth(m)).toBe(true);
      expect((await grant(m)).changed).toBe(false);
      expect(await fx.readTruth(m)).toBe(true);
    });

    it('revoke twice changes once and the membership is absent', async () => {
      const m = { account: fx.account(), resource: fx.resource };
      await grant(m);
      expect(await fx.readTruth(m)).toBe(true);
      expect(await fx.connector.revoke(m)).toEqual({ changed: true });
      expect(await fx.readTruth(m)).toBe(false);
      expect(await fx.connector.revoke(m)).toEqual({ changed: false });
      expect(await fx.readTruth(m)).toBe(false);
    });

    it('revoking a never-granted membership reports no change', async () => {
      const m = { account: fx.account(), resource: fx.resource };
      expect(await fx.connector.revoke(m)).toEqual({ changed: false });
      expect(await fx.readTruth(m)).toBe(false);
    });

    it('check agrees with the independent read', async () => {
      const m = { account: fx.account(), resource: fx.resource };
      expect(await fx.connector.check(m)).toEqual({ present: await fx.readTruth(m) });
      expect((await fx.connector.check(m)).present).toBe(false);
      await grant(m);
      expect(await fx.connector.check(m)).toEqual({ present: await fx.readTruth(m) });
      expect((await fx.connector.check(m)).present).toBe(true);
      await fx.connector.revoke(m);
      expect(await fx.connector.check(m)).toEqual({ present: await fx.readTruth(m) });
      expect((await fx.connector.check(m)).present).toBe(false);
    });

    it('list contains granted accounts and not revoked ones', async () => {
      const kept = { account: fx.account(), resource: fx.resource };
      const gone = { account: fx.account(), resource: fx.resource };
      await grant(kept);
      await grant(gone);
      await fx.connector.revoke(gone);
      // targets may return their own spelling (case) of an account; compare case-insensitively
      const listed = (await fx.connector.list(fx.resource)).map((l) => l.toLowerCase());
      expect(listed).toContain(kept.account.toLowerCase());
      expect(listed).not.toContain(gone.account.toLowerCase());
      await fx.connector.revoke(kept);
      const after = (await fx.connector.list(fx.resource)).map((l) => l.toLowerCase());
      expect(after).not.toContain(kept.account.toLowerCase());
    });

    it('an unknown resource is NoSuchResource (non-retryable)', async () => {
      const m = { account: fx.account(), resource: fx.missingResource };
      for (const call of [
        () => grant(m),
        () => fx.connector.revoke(m),
        () => fx.connector.check(m),
        () => fx.connector.list(fx.missingResource),
      ]) {
        const err = await expectConnectorError(call(), 'NoSuchResource');
        expect(err.retryable).toBe(false);
      }
    });

    it('hostile inputs are InvalidInput and change nothing', async () => {
      const before = (await fx.connector.list(fx.resource)).slice().sort();
      const fresh = fx.account();
      const longString = 'a'.repeat(5000);
      const cases: Membership[] = [
        { account: `${fresh}\0`, resource: fx.resource },
        { account: `\0${fresh}`, resource: fx.resource },
        { account: longString, resource: fx.resource },
        { account: `${fresh}${longString}`, resource: fx.resource },
        { account: fresh, resource: `${fx.resource}\0` },
        { account: fresh, resource: longString },
        { account: fresh, resource: `${fx.resource}${longString}` },
      ];
      for (const m of cases) {
        for (const call of [() => grant(m), () => fx.connector.revoke(m), () => fx.connector.check(m)]) {
          const err = await expectConnectorError(call(), 'InvalidInput');
          expect(err.retryable).toBe(false);
        }
      }
      for (const resource of [`${fx.resource}\0`, longString]) {
        await expectConnectorError(fx.connector.list(resource), 'InvalidInput');
      }
      expect(await fx.readTruth({ account: fresh, resource: fx.resource })).toBe(false);
      expect((await fx.connector.list(fx.resource)).slice().sort()).toEqual(before);
    });

    if (!stoppable) return;

    it('a stopped target gives retryable errors within the timeout, and calls succeed after restart', async () => {
      if (!fx.stopTarget || !fx.startTarget) {
        throw new Error('fixture must provide stopTarget and startTarget (or pass { stoppable: false })');
      }
      const { stopTarget, startTarget } = fx;
      const limit = (fx.timeoutMs ?? 5000) + 2000;
      const m = { account: fx.account(), resource: fx.resource };
      // warm up: the connector holds whatever connection state it keeps
      expect(await fx.connector.check(m)).toEqual({ present: false });
      await stopTarget();
      try {
        for (const call of [
          () => grant(m),
          () => fx.connector.check(m),
          () => fx.connector.revoke(m),
          () => fx.connector.list(fx.resource),
        ]) {
          const started = Date.now();
          const err = await expectConnectorError(call(), 'TargetUnavailable', 'Timeout');
          expect(err.retryable).toBe(true);
          expect(Date.now() - started).toBeLessThan(limit);
        }
      } finally {
        await startTarget();
      }
      // A retrying caller (Temporal) gets through within a few attempts.
      let result: Awaited<ReturnType<Connector['grant']>> | undefined;
      let lastError: unknown;
      for (let attempt = 0; attempt < 3 && !result; attempt++) {
        try {
          result = await grant(m);
        } catch (err) {
          lastError = err;
          if (!(err instanceof ConnectorError) || !err.retryable) throw err;
        }
      }
      expect(result, `grant after restart kept failing: ${String(lastError)}`).toBeDefined();
      expect(result?.changed).toBe(true);
      expect(await fx.readTruth(m)).toBe(true);
      expect(await fx.connector.revoke(m)).toEqual({ changed: true });
      expect(await fx.readTruth(m)).toBe(false);
    });
  });
}
