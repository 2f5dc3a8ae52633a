// Open the example client page in headless Chromium, wait for a final #status, report as JSON.
//
//   ENVSYNC_PAGE_URL=URL node browser_check.mjs [--screenshot FILE] [--timeout-ms N]
//
// The page URL (it carries the gateway token) comes from the environment, not argv, where
// `ps` would show it; a URL argument is accepted too, for trying things by hand.
// Prints one JSON line on stdout: {state, status, kernel, fingerprint, match, result, warning,
// console: [...], page_errors: [...], failed_requests: [...]}; exit code 0 when a final state was
// reached (whatever it is), 1 on a timeout or a browser failure.
// playwright-core comes from examples/browser-client/node_modules (or ENVSYNC_CLIENT_DIR);
// Chromium is /usr/bin/chromium (or ENVSYNC_CHROMIUM): no browser download.
import { createRequire } from 'node:module';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientDir = process.env.ENVSYNC_CLIENT_DIR || path.resolve(here, '../../examples/browser-client');
const require = createRequire(path.join(clientDir, 'package.json'));
const { chromium } = require('playwright-core');

const FINAL = ['done', 'error', 'mismatch'];

// Reports end up in test failure messages: never the token.
const redact = (text) => String(text).replace(/([?&#]token=)[^&\s'"]*/gi, '$1[secret]');

function parseArgs(argv) {
  const out = { url: process.env.ENVSYNC_PAGE_URL || '', screenshot: '', timeoutMs: 60000 };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--screenshot') out.screenshot = argv[++i];
    else if (argv[i] === '--timeout-ms') out.timeoutMs = Number(argv[++i]);
    else out.url = argv[i];
  }
  if (!out.url) throw new Error('usage: ENVSYNC_PAGE_URL=URL browser_check.mjs [--screenshot FILE] [--timeout-ms N]');
  return out;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const profile = mkdtempSync(path.join(tmpdir(), 'envsync-chromium-'));
  const report = { console: [], page_errors: [], failed_requests: [] };
  let browser;
  let code = 1;
  try {
    // launchPersistentContext is the playwright way to give Chromium its own --user-data-dir.
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.ENVSYNC_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-quic',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
      ],
      viewport: { width: 1000, height: 700 },
      timeout: 30000,
    });
    browser = context;
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (msg) => report.console.push(redact(`${msg.type()}: ${msg.text()}`)));
    page.on('pageerror', (err) => report.page_errors.push(redact(err)));
    page.on('requestfailed', (req) =>
      report.failed_requests.push(redact(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`)),
    );
    await page.goto(args.url, { waitUntil: 'load', timeout: 30000 });
    let timedOut = false;
    try {
      await page.waitForFunction(
        (states) => states.includes(document.getElementById('status')?.dataset.state),
        FINAL,
        { timeout: args.timeoutMs, polling: 100 },
      );
    } catch (err) {
      timedOut = true;
      report.timeout = redact(err);
    }
    Object.assign(
      report,
      await page.evaluate(() => {
        const text = (id) => (document.getElementById(id)?.textContent || '').trim();
        const warning = document.getElementById('warning');
        return {
          state: document.getElementById('status')?.dataset.state || '',
          status: text('status'),
          kernel: text('kernel'),
          fingerprint: text('fingerprint'),
          expected: text('expected-shown'),
          match: text('match'),
          result: text('result'),
          warning: warning && !warning.hidden ? text('warning') : '',
          location: window.location.href,
        };
      }),
    );
    if (args.screenshot) {
      await page.screenshot({ path: args.screenshot, fullPage: true });
      report.screenshot = args.screenshot;
    }
    code = timedOut ? 1 : 0;
  } catch (err) {
    report.error = redact(err && err.stack ? err.stack : err);
  } finally {
    if (browser) await browser.close().catch(() => {});
    rmSync(profile, { recursive: true, force: true });
  }
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(code);
}

main();
