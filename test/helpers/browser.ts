import { createRequire } from 'node:module';
import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';

/** Debian's chromium (temporal/provision.sh --for test installs it). */
export const CHROMIUM = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';
export const RESULTS_DIR = path.resolve('test-results');

const axeSource = readFile(createRequire(import.meta.url).resolve('axe-core/axe.min.js'), 'utf8');

export interface BrowserHandle {
  browser: Browser;
  /** A fresh page (its own cookie jar: an incognito context), with console and CSP reports collected. */
  newPage(opts?: { width?: number; height?: number; mobile?: boolean }): Promise<WatchedPage>;
  close(): Promise<void>;
}

export interface WatchedPage {
  page: Page;
  /** Console messages of type error, and every CSP violation the page reported. */
  problems: string[];
  cspViolations: string[];
  close(): Promise<void>;
}

/** Headless Chromium through puppeteer-core, with a throwaway profile. */
export async function launchBrowser(): Promise<BrowserHandle> {
  const profile = await mkdtemp(path.join(os.tmpdir(), 'accessloop-pages-'));
  const browser = await puppeteer.launch({
    executablePath: CHROMIUM,
    headless: true,
    userDataDir: profile,
    args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage', '--no-first-run'],
  });
  return {
    browser,
    async newPage({ width = 1280, height = 900, mobile = false } = {}) {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      await page.setViewport({ width, height, isMobile: mobile, hasTouch: mobile });
      const problems: string[] = [];
      const cspViolations: string[] = [];
      page.on('console', (m) => {
        if (m.type() === 'error') problems.push(m.text());
        if (/Content Security Policy/i.test(m.text())) cspViolations.push(m.text());
      });
      page.on('pageerror', (e) => problems.push(`pageerror: ${String(e)}`));
      // The page's own securitypolicyviolation events, surfaced through a binding.
      await page.exposeFunction('__cspViolation', (v: string) => cspViolations.push(v));
      // (a string, not a function: this project compiles without the DOM library)
      await page.evaluateOnNewDocument(`document.addEventListener('securitypolicyviolation', (e) => window.__cspViolation(e.violatedDirective + ' ' + e.blockedURI))`);
      return { page, problems, cspViolations, close: () => context.close() };
    },
    async close() {
      await browser.close();
      await rm(profile, { recursive: true, force: true });
    },
  };
}

export interface AxeViolation {
  id: string;
  impact: string | null;
  help: string;
  nodes: number;
}

/**
 * axe-core run inside the page. The script is added through CDP evaluation, not a <script> tag,
 * so the page's CSP (script-src 'self') does not have to be loosened for the test.
 */
export async function axeViolations(page: Page): Promise<AxeViolation[]> {
  await page.evaluate(await axeSource);
  const result = (await page.evaluate(`axe.run(document, { resultTypes: ['violations'] }).then((r) =>
    r.violations.map((v) => ({ id: v.id, impact: v.impact, help: v.help, nodes: v.nodes.length })))`)) as AxeViolation[];
  return result;
}

export const seriousOrWorse = (v: AxeViolation[]) => v.filter((x) => x.impact === 'serious' || x.impact === 'critical');

export async function screenshot(page: Page, name: string): Promise<string> {
  await mkdir(RESULTS_DIR, { recursive: true });
  const file = path.join(RESULTS_DIR, `${name}.png`);
  await page.screenshot({ path: file as `${string}.png`, fullPage: true });
  return file;
}
