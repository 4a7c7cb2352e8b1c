/**
 * Real headless Chromium (Debian's `chromium`, driven by playwright-core) against a test server's
 * dashboard. Every page collects console errors and uncaught exceptions; `assertNoPageErrors`
 * fails a test that caused any. Screenshots go to docs/screenshots/ when
 * EDGEFLOW_SCREENSHOTS=update (`npm run screenshots`), else to a temporary directory (still taken,
 * so a page that cannot be captured fails in CI too).
 */
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import path from 'node:path';
import { type Browser, chromium, type Page } from 'playwright-core';
import { startTestServer, stopSharedServices, type TestServer } from './server.ts';
import { tempDir } from './temp.ts';

export const CHROMIUM = process.env.EDGEFLOW_CHROMIUM ?? '/usr/bin/chromium';

/** Why the browser tests cannot run here, or undefined. Under CI a missing Chromium fails instead. */
export function chromiumMissing(): string | undefined {
  if (existsSync(CHROMIUM)) return undefined;
  const reason = `no Chromium at ${CHROMIUM} (apt-get install chromium)`;
  if (process.env.CI === 'true') throw new Error(reason);
  return reason;
}

export function launchChromium(): Promise<Browser> {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking'],
  });
}

export const PHONE = { width: 390, height: 844 };
export const DESKTOP = { width: 1280, height: 860 };

const pageErrors = new WeakMap<Page, string[]>();

/** A new page (its own context: its own sessionStorage) at the dashboard, errors collected. */
export async function openDashboard(
  browser: Browser,
  url: string,
  viewport: { width: number; height: number } = DESKTOP,
): Promise<Page> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  const errors: string[] = [];
  pageErrors.set(page, errors);
  page.on('console', (message) => {
    if (message.type() === 'error') errors.push(`console: ${message.text()}`);
  });
  page.on('pageerror', (error) => errors.push(`uncaught: ${error.message}`));
  page.on('dialog', (dialog) => void dialog.accept());
  await page.goto(url);
  return page;
}

/** Signs in through the form and waits for the signed-in shell. */
export async function signIn(page: Page, key: string): Promise<void> {
  await page.getByLabel('API key').fill(key);
  await page.getByRole('button', { name: 'Sign in' }).click();
  await page.getByRole('button', { name: 'Sign out' }).waitFor();
}

export function assertNoPageErrors(page: Page): void {
  assert.deepEqual(pageErrors.get(page) ?? [], [], 'the page logged errors');
}

/** Errors the page logged so far that match (a test that provokes one, e.g. a 401, checks it here). */
export function pageErrorsOf(page: Page): string[] {
  return pageErrors.get(page) ?? [];
}

let screenshotDir: Promise<string> | undefined;

export async function screenshot(page: Page, name: string): Promise<string> {
  screenshotDir ??=
    process.env.EDGEFLOW_SCREENSHOTS === 'update'
      ? mkdir('docs/screenshots', { recursive: true }).then(() => 'docs/screenshots')
      : tempDir('edgeflow-screenshots-');
  const file = path.join(await screenshotDir, `${name}.png`);
  await page.screenshot({ path: file, fullPage: true });
  return file;
}

export interface DashboardStand {
  server: TestServer;
  browser: Browser;
  stop(...first: ({ stop(): Promise<void> } | undefined)[]): Promise<void>;
}

/**
 * What a dashboard test file needs, started together: a server on the embedded defaults
 * (PGlite and the local store; the API suites cover the other backends) that dispatches every
 * 200 ms, with `env` besides and the clock of windows and budgets `now` if given, and Chromium.
 * `stop` closes both, and whatever else the file started first.
 */
export async function startDashboardStand(
  options: { env?: Record<string, string>; now?: () => number } = {},
): Promise<DashboardStand> {
  const [server, browser] = await Promise.all([
    startTestServer(
      { db: 'pglite', store: 'local', name: 'pglite+local' },
      {
        env: { EDGEFLOW_DISPATCH_INTERVAL_MS: '200', ...options.env },
        ...(options.now ? { now: options.now } : {}),
      },
    ),
    launchChromium(),
  ]);
  return {
    server,
    browser,
    async stop(...first) {
      await browser.close();
      for (const part of first) await part?.stop();
      await server.close();
      await stopSharedServices();
    },
  };
}
