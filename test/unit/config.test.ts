import { describe, expect, it } from 'vitest';
import { ConfigError, lifecycleTiming, loadConfig } from '../../temporal/config.js';

describe('loadConfig', () => {
  it('applies the embedded defaults (docs/architecture.md, runtime pieces)', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({ PORT: 3000, HOST: '127.0.0.1', TEMPORAL_NAMESPACE: 'default', TEMPORAL_TASK_QUEUE: 'accessloop', ACCESSLOOP_DEMO: true });
    expect(c.TEMPORAL_ADDRESS).toBeUndefined();
    expect(c.DATABASE_URL).toBeUndefined();
    expect(c.ACCESSLOOP_DATA_DIR).toMatch(/\/\.data$/);
  });

  it('treats empty strings as unset so `FOO= npm start` does not point at an empty address', () => {
    const c = loadConfig({ TEMPORAL_ADDRESS: '', DATABASE_URL: '  ' });
    expect(c.TEMPORAL_ADDRESS).toBeUndefined();
    expect(c.DATABASE_URL).toBeUndefined();
  });

  it('names every invalid variable in one error', () => {
    expect(() => loadConfig({ PORT: 'eighty', ACCESSLOOP_BOOTSTRAP_TOKEN: 'short' })).toThrowError(
      expect.objectContaining({ name: 'Error', message: expect.stringMatching(/PORT[\s\S]*ACCESSLOOP_BOOTSTRAP_TOKEN: .*at least 24/) }),
    );
    expect(() => loadConfig({ PORT: 'eighty' })).toThrowError(ConfigError);
  });

  it('requires a TLS client certificate and key together', () => {
    expect(() => loadConfig({ TEMPORAL_TLS_CERT_PATH: '/c.pem' })).toThrowError(/TEMPORAL_TLS_CERT_PATH and TEMPORAL_TLS_KEY_PATH must be set together/);
    expect(loadConfig({ TEMPORAL_TLS_CERT_PATH: '/c.pem', TEMPORAL_TLS_KEY_PATH: '/k.pem' }).TEMPORAL_TLS_KEY_PATH).toBe('/k.pem');
  });

  it('hands lifecycle timing to workflows', () => {
    expect(lifecycleTiming(loadConfig({ ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS: '7', ACCESSLOOP_VERIFY_MAX_INTERVAL_SECONDS: '2' }))).toEqual({
      revokeVerifyDeadlineSeconds: 7,
      verifyMaxIntervalSeconds: 2,
      defaultApprovalTimeoutSeconds: 72 * 3600,
    });
  });
});
