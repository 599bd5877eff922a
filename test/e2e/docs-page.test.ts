/**
 * The interactive API docs rendered by a real browser: headless Chromium (Debian `chromium`)
 * loads /docs, Swagger UI fetches /openapi.json and renders every operation. The screenshot is
 * kept in test-results/docs-page.png for a human to look at.
 */
import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { startStack, type Stack } from '../helpers/stack.js';

const CHROMIUM = '/usr/bin/chromium';
const SCREENSHOT = path.resolve('test-results/docs-page.png');
let s: Stack;
let profile: string;

/** Headless Chromium with a throwaway profile; `--virtual-time-budget` lets the page's scripts finish first. */
function chromium(args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(
      CHROMIUM,
      ['--headless', '--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--hide-scrollbars', '--no-first-run', `--user-data-dir=${profile}`, '--window-size=1280,1800', '--virtual-time-budget=20000', ...args],
      { timeout: 60_000, maxBuffer: 32 * 1024 * 1024, killSignal: 'SIGKILL' },
      (err, stdout, stderr) => (err ? reject(new Error(`chromium failed: ${err.message}\n${stderr}`)) : resolve(stdout)),
    );
  });
}

/** Width and height from a PNG's IHDR chunk. */
function pngSize(buf: Buffer): { width: number; height: number } {
  expect(buf.subarray(0, 8).equals(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a])), 'PNG signature').toBe(true);
  return { width: buf.readUInt32BE(16), height: buf.readUInt32BE(20) };
}

beforeAll(async () => {
  s = await startStack();
  profile = await mkdtemp(path.join(os.tmpdir(), 'accessloop-chromium-'));
  await mkdir(path.dirname(SCREENSHOT), { recursive: true });
}, 60_000);

afterAll(async () => {
  await s?.stop();
  if (profile) await rm(profile, { recursive: true, force: true });
});

describe('API docs page', () => {
  it('renders every documented operation in headless Chromium', async () => {
    const dom = await chromium(['--dump-dom', `${s.rt.apiUrl}/docs`]);
    expect(dom).toContain('swagger-ui');
    expect(dom).toContain('accessloop');
    const spec = (await (await fetch(`${s.rt.apiUrl}/openapi.json`)).json()) as { openapi: string; paths: Record<string, Record<string, unknown>> };
    expect(spec.openapi).toBe('3.1.0');
    // Swagger UI renders each path in an opblock summary; every documented one must be on the page
    const rendered = new Set([...dom.matchAll(/class="opblock-summary-path"[^>]*data-path="([^"]+)"/g)].map((m) => m[1]));
    expect(rendered.size).toBeGreaterThan(10);
    for (const p of Object.keys(spec.paths)) expect(rendered, p).toContain(p);
  });

  it('saves a screenshot that shows a rendered page, not a blank one', async () => {
    await rm(SCREENSHOT, { force: true });
    await chromium([`--screenshot=${SCREENSHOT}`, `${s.rt.apiUrl}/docs`]);
    const shot = await readFile(SCREENSHOT);
    expect(pngSize(shot)).toEqual({ width: 1280, height: 1800 });
    // the same browser's picture of an empty page, for scale
    const blank = path.join(profile, 'blank.png');
    await chromium([`--screenshot=${blank}`, 'about:blank']);
    expect((await stat(SCREENSHOT)).size).toBeGreaterThan(5 * (await stat(blank)).size);
  });

  it('serves only the page, its script and the listed assets, under a strict CSP', async () => {
    const page = await fetch(`${s.rt.apiUrl}/docs`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-security-policy')).toContain("script-src 'self'");
    expect((await page.text()).includes('<script>')).toBe(false); // no inline script
    expect((await fetch(`${s.rt.apiUrl}/docs/assets/swagger-ui-bundle.js`)).status).toBe(200);
    for (const p of ['/docs/assets/package.json', '/docs/assets/..%2F..%2Fpackage.json', '/docs/assets/swagger-ui-bundle.js.map']) {
      expect((await fetch(`${s.rt.apiUrl}${p}`)).status, p).toBe(404);
    }
  });
});
