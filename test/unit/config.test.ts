import { describe, expect, it } from 'vitest';
import { ConfigError, lifecycleTiming, loadConfig, MULTI_PROCESS_SHARED_ENV } from '../../temporal/config.js';

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

  it('names the variable and the expected form for an HR webhook secret, never the secret', () => {
    const good = `whsec_${Buffer.from('a'.repeat(24)).toString('base64')}`;
    expect(loadConfig({ ACCESSLOOP_HR_WEBHOOK_SECRETS: `${good}, ${good}` }).ACCESSLOOP_HR_WEBHOOK_SECRETS).toBe(`${good}, ${good}`);
    // The padding the library's decoder refused at start ("Base64Coder: incorrect padding").
    const bad = 'whsec_c2VjcmV0LXdpdGgtbm8tcGFk';
    let message = '';
    try {
      loadConfig({ ACCESSLOOP_HR_WEBHOOK_SECRETS: `${good},${bad.slice(0, -1)}` });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/ACCESSLOOP_HR_WEBHOOK_SECRETS: secret 2 of 2: each comma-separated secret must be whsec_<base64>/);
    expect(message).not.toContain(bad.slice(6, -1));
    expect(() => loadConfig({ ACCESSLOOP_HR_WEBHOOK_SECRETS: 'whsec_' })).toThrowError(/ACCESSLOOP_HR_WEBHOOK_SECRETS: secret 1 of 1/);
  });

  it('every invalid variable is reported by name with its expected form', () => {
    const cases: Array<[string, string, RegExp]> = [
      ['PORT', 'eighty', /port number/],
      ['TEMPORAL_UI_PORT', '0', /port number 1-65535/],
      ['TEMPORAL_DEV_PORT', '70000', /port number 0-65535/],
      ['TEMPORAL_ADDRESS', 'http://temporal:7233', /host:port/],
      ['DATABASE_URL', 'mysql://x', /postgres:\/\//],
      ['TEMPORAL_TLS', 'yes', /"true"/],
      ['ACCESSLOOP_PUBLIC_URL', 'access.example.com', /http\(s\) URL/],
      ['ACCESSLOOP_NOTIFY_WEBHOOK_URL', 'ftp://x', /http\(s\) URL/],
      ['ACCESSLOOP_NOTIFY_WEBHOOK_SECRET', 'whsec_', /at least one byte/],
      ['ACCESSLOOP_BODY_LIMIT', 'lots', /64kb/],
      ['ACCESSLOOP_CREDENTIAL_KEY', 'abc', /64 hex/],
      ['ACCESSLOOP_EVIDENCE_SIGNING_KEY', 'abc', /64 hex/],
      ['ACCESSLOOP_ACTION_LINK_SECRET', 'short', /32 characters/],
      ['ACCESSLOOP_PAYLOAD_KEYS', 'k1:zz', /<id>:<64 hex characters>/],
      ['ACCESSLOOP_PAYLOAD_ENCRYPTION', 'on', /"true"/],
      ['ACCESSLOOP_CODEC_AUTH', 'basic', /"auto"/],
      ['ACCESSLOOP_UI_ORIGIN', 'http://ui/path', /not an origin/],
      ['ACCESSLOOP_RECONCILE_INTERVAL_MINUTES', '0', />=1/],
      ['ACCESSLOOP_REVOKE_VERIFY_DEADLINE_SECONDS', '-5', />0/],
      ['ACCESSLOOP_DEMO', 'maybe', /"true"/],
      ['LOG_LEVEL', 'loud', /"info"/],
      ['ACCESSLOOP_MIGRATE', 'always', /"auto"/],
      ['ACCESSLOOP_MULTI_PROCESS', 'yes', /"true"/],
      ['ACCESSLOOP_WORKER_HEALTH_PORT', '70000', /port number 0-65535/],
      ['ACCESSLOOP_WORKER_HEALTH_PORT', 'ninety', /port number 0-65535/],
    ];
    for (const [name, value, form] of cases) {
      let message = '';
      try {
        loadConfig({ [name]: value });
      } catch (e) {
        expect(e, name).toBeInstanceOf(ConfigError);
        message = (e as Error).message;
      }
      const line = message.split('\n').find((l) => l.trim().startsWith(`${name}:`));
      expect(line, `${name}=${value} → ${message}`).toBeDefined();
      expect(line, name).toMatch(form);
    }
    expect(loadConfig({}).TEMPORAL_DEV_PORT).toBe(7233);
  });

  it('migrates at start unless told to skip', () => {
    expect(loadConfig({}).ACCESSLOOP_MIGRATE).toBe('auto');
    expect(loadConfig({ ACCESSLOOP_MIGRATE: 'skip' }).ACCESSLOOP_MIGRATE).toBe('skip');
  });

  describe('multi-process mode', () => {
    const shared = {
      DATABASE_URL: 'postgres://db.internal/accessloop',
      TEMPORAL_ADDRESS: 'temporal.internal:7233',
      ACCESSLOOP_ACTION_LINK_SECRET: 'l'.repeat(40),
      ACCESSLOOP_CREDENTIAL_KEY: 'c'.repeat(64),
      ACCESSLOOP_PAYLOAD_KEYS: `k1:${'a'.repeat(64)}`,
      ACCESSLOOP_EVIDENCE_SIGNING_KEY: 'e'.repeat(64),
      // not shared but required: the demo is refused in this mode (see below)
      ACCESSLOOP_DEMO: 'false',
    };

    it('is off by default: a lone process may generate its keys into the data dir', () => {
      expect(loadConfig({}).ACCESSLOOP_MULTI_PROCESS).toBe(false);
    });

    it('refuses to start with one error naming every missing shared key and server, never a value', () => {
      let message = '';
      try {
        loadConfig({ ACCESSLOOP_MULTI_PROCESS: 'true', ACCESSLOOP_CREDENTIAL_KEY: shared.ACCESSLOOP_CREDENTIAL_KEY });
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError);
        message = (e as Error).message;
      }
      const lines = message.split('\n').filter((l) => l.trim().startsWith('ACCESSLOOP_MULTI_PROCESS:'));
      expect(lines).toHaveLength(1);
      for (const name of MULTI_PROCESS_SHARED_ENV.filter((n) => n !== 'ACCESSLOOP_CREDENTIAL_KEY')) expect(lines[0]).toContain(name);
      expect(lines[0]).not.toContain('ACCESSLOOP_CREDENTIAL_KEY');
      expect(message).not.toContain(shared.ACCESSLOOP_CREDENTIAL_KEY);
    });

    it('starts when every shared value is configured, and needs no payload keys with encryption off', () => {
      expect(loadConfig({ ACCESSLOOP_MULTI_PROCESS: 'true', ...shared }).ACCESSLOOP_MULTI_PROCESS).toBe(true);
      for (const name of MULTI_PROCESS_SHARED_ENV) {
        expect(() => loadConfig({ ACCESSLOOP_MULTI_PROCESS: 'true', ...shared, [name]: '' }), name).toThrowError(new RegExp(`ACCESSLOOP_MULTI_PROCESS: .*set ${name} \\(`));
      }
      const { ACCESSLOOP_PAYLOAD_KEYS: _unused, ...withoutPayloadKeys } = shared;
      expect(loadConfig({ ACCESSLOOP_MULTI_PROCESS: 'true', ACCESSLOOP_PAYLOAD_ENCRYPTION: 'false', ...withoutPayloadKeys }).ACCESSLOOP_PAYLOAD_KEYS).toBeUndefined();
    });

    it('refuses the demo, explicit or by default, naming ACCESSLOOP_DEMO; a lone process keeps it on by default', () => {
      const demoLine = (env: Record<string, string | undefined>) => {
        try {
          loadConfig(env);
        } catch (e) {
          expect(e).toBeInstanceOf(ConfigError);
          return (e as Error).message.split('\n').find((l) => l.trim().startsWith('ACCESSLOOP_DEMO:'));
        }
        return undefined;
      };
      const { ACCESSLOOP_DEMO: _demo, ...sharedOnly } = shared;
      for (const demo of [{ ACCESSLOOP_DEMO: 'true' }, {}]) {
        const line = demoLine({ ...sharedOnly, ACCESSLOOP_MULTI_PROCESS: 'true', ...demo });
        expect(line, JSON.stringify(demo)).toMatch(/ACCESSLOOP_DEMO: must be false with ACCESSLOOP_MULTI_PROCESS=true .*set ACCESSLOOP_DEMO=false/);
      }
      // reported alongside the missing shared keys, not instead of them
      let message = '';
      try {
        loadConfig({ ACCESSLOOP_MULTI_PROCESS: 'true', ACCESSLOOP_DEMO: 'true' });
      } catch (e) {
        message = (e as Error).message;
      }
      expect(message).toMatch(/ACCESSLOOP_MULTI_PROCESS: .*set DATABASE_URL/);
      expect(message).toMatch(/ACCESSLOOP_DEMO: must be false/);
      // npm run worker defaults the demo off before the environment: a multi-process worker starts
      expect(loadConfig({ ACCESSLOOP_DEMO: 'false', ...sharedOnly, ACCESSLOOP_MULTI_PROCESS: 'true' }).ACCESSLOOP_DEMO).toBe(false);
      // npm start (one process) is unaffected: the demo stays on by default and may be set either way
      expect(loadConfig({}).ACCESSLOOP_DEMO).toBe(true);
      expect(loadConfig({ ACCESSLOOP_DEMO: 'true' }).ACCESSLOOP_DEMO).toBe(true);
      expect(loadConfig({ ACCESSLOOP_MULTI_PROCESS: 'false', ACCESSLOOP_DEMO: 'true' }).ACCESSLOOP_DEMO).toBe(true);
    });
  });

  describe('worker health listener', () => {
    it('is off unless a port is given; 0 asks for a free port; loopback by default', () => {
      expect(loadConfig({}).ACCESSLOOP_WORKER_HEALTH_PORT).toBeUndefined();
      expect(loadConfig({ ACCESSLOOP_WORKER_HEALTH_PORT: '' }).ACCESSLOOP_WORKER_HEALTH_PORT).toBeUndefined();
      expect(loadConfig({ ACCESSLOOP_WORKER_HEALTH_PORT: '0' }).ACCESSLOOP_WORKER_HEALTH_PORT).toBe(0);
      expect(loadConfig({ ACCESSLOOP_WORKER_HEALTH_PORT: '9464' })).toMatchObject({ ACCESSLOOP_WORKER_HEALTH_PORT: 9464, ACCESSLOOP_WORKER_HEALTH_HOST: '127.0.0.1' });
      expect(loadConfig({ ACCESSLOOP_WORKER_HEALTH_HOST: '0.0.0.0' }).ACCESSLOOP_WORKER_HEALTH_HOST).toBe('0.0.0.0');
      expect(loadConfig({ ACCESSLOOP_WORKER_HEALTH_HOST: ' ' }).ACCESSLOOP_WORKER_HEALTH_HOST).toBe('127.0.0.1');
      expect(() => loadConfig({ ACCESSLOOP_WORKER_HEALTH_PORT: '80.5' })).toThrowError(/ACCESSLOOP_WORKER_HEALTH_PORT: must be a port number 0-65535/);
      expect(() => loadConfig({ ACCESSLOOP_WORKER_HEALTH_PORT: '-1' })).toThrowError(/ACCESSLOOP_WORKER_HEALTH_PORT: must be a port number 0-65535/);
    });
  });
});
