// Shared by the browser tests: the configuration passed by tests/dashboard.rs, a headless
// Chromium with a fresh profile, and page watchers that fail the test on script errors,
// CSP violations and dialogs.
import { chromium } from 'playwright-core';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const config = JSON.parse(process.argv[2]);

const ARGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync'];

export async function launch(extraArgs = []) {
  const profile = mkdtempSync(join(tmpdir(), 'loopsy-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: config.chromium, headless: true, args: [...ARGS, ...extraArgs], viewport: { width: 1360, height: 900 },
  });
  context.setDefaultTimeout(15000);
  return { context, close: async () => { await context.close(); rmSync(profile, { recursive: true, force: true }); } };
}

// Records what must never happen on a dashboard page.
export function watch(page) {
  const problems = [];
  page.on('dialog', (dialog) => { problems.push(`dialog: ${dialog.message()}`); dialog.dismiss().catch(() => {}); });
  page.on('pageerror', (err) => problems.push(`page error: ${err.message}`));
  page.on('console', (msg) => {
    // Refused fetches are logged as errors by Chromium; tests make those on purpose.
    const expected = ['Failed to load resource', 'CORS policy'].some((text) => msg.text().includes(text));
    if (msg.type() === 'error' && !expected) problems.push(`console: ${msg.text()}`);
  });
  return problems;
}

export function check(condition, message) {
  if (!condition) throw new Error(message);
}

export async function shot(page, name) {
  await page.screenshot({ path: join(config.screenshots, `${name}.png`), fullPage: true });
}

export async function view(page, name) {
  await page.evaluate((n) => { location.hash = `#/${n}`; }, name);
  await page.waitForSelector(`#view[data-ready="${name}"]`);
  return Number(await page.getAttribute('#view', 'data-paint-ms'));
}

export async function run(test) {
  try {
    await test();
    console.log('browser test passed');
  } catch (err) {
    console.error(err);
    process.exit(1);
  }
}
