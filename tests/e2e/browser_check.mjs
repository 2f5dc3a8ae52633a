// Open the example client page in headless Chromium, wait for a final #status, report as JSON.
//
//   ENVSYNC_PAGE_URL=URL node browser_check.mjs [--screenshot FILE] [--timeout-ms N]
//       [--public] [--grant-local-network] [--send-lock] [--rerun]
//
// The page URL (it carries the gateway token) comes from the environment, not argv, where
// `ps` would show it; a URL argument is accepted too, for trying things by hand.
//   --public               Chromium treats the page's server as a PUBLIC address
//                          (--ip-address-space-overrides), so Local Network Access applies
//   --grant-local-network  grant the page's origin the loopback-network permission over CDP,
//                          as a user who allows the browser's prompt
//   --send-lock            after the first final state, press #send-lock and wait for a final
//                          #lock-result (ready, failed, refused, error)
//   --rerun                then press #run and wait for a final #status again
// Prints one JSON line on stdout: {state, status, kernel, fingerprint, match, result, warning,
// env_state, verified, diff, lock_result, ..., first: {the same, before --send-lock},
// console: [...], page_errors: [...], failed_requests: [...]}; exit code 0 when every wait
// reached a final state (whatever it is), 1 on a timeout or a browser failure.
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
const LOCK_FINAL = ['ready', 'failed', 'refused', 'error'];

// Reports end up in test failure messages: never the token.
const redact = (text) => String(text).replace(/([?&#]token=)[^&\s'"]*/gi, '$1[secret]');

function parseArgs(argv) {
  const out = { url: process.env.ENVSYNC_PAGE_URL || '', screenshot: '', timeoutMs: 60000 };
  const flags = { '--public': 'public', '--grant-local-network': 'grant', '--send-lock': 'sendLock', '--rerun': 'rerun' };
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--screenshot') out.screenshot = argv[++i];
    else if (argv[i] === '--timeout-ms') out.timeoutMs = Number(argv[++i]);
    else if (flags[argv[i]]) out[flags[argv[i]]] = true;
    else out.url = argv[i];
  }
  if (!out.url) throw new Error('usage: ENVSYNC_PAGE_URL=URL browser_check.mjs [--screenshot FILE] [--timeout-ms N]');
  return out;
}

// What the page shows, by element id.
function readPage(page) {
  return page.evaluate(() => {
    const text = (id) => (document.getElementById(id)?.textContent || '').trim();
    const state = (id) => document.getElementById(id)?.dataset.state || '';
    const warning = document.getElementById('warning');
    const send = document.getElementById('send-lock');
    return {
      state: state('status'),
      status: text('status'),
      kernel: text('kernel'),
      fingerprint: text('fingerprint'),
      expected: text('expected-shown'),
      match: text('match'),
      result: text('result'),
      warning: warning && !warning.hidden ? text('warning') : '',
      env_state: text('env-state'),
      env_state_state: state('env-state'),
      verified: text('verified'),
      verified_state: state('verified'),
      env_python: text('env-python'),
      env_packages: text('env-packages'),
      lock_updates: text('lock-updates'),
      diff: text('diff'),
      diff_state: state('diff'),
      send_lock_offered: Boolean(send && !send.hidden),
      lock_result: text('lock-result'),
      lock_result_state: state('lock-result'),
      location: window.location.href,
    };
  });
}

function waitForState(page, id, states, timeout) {
  return page.waitForFunction(
    ([el, wanted]) => wanted.includes(document.getElementById(el)?.dataset.state),
    [id, states],
    { timeout, polling: 100 },
  );
}

function chromiumArgs(args) {
  const list = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--disable-background-networking',
    '--disable-quic',
    '--no-first-run',
    '--disable-component-update',
    '--disable-sync',
  ];
  if (args.public) {
    const page = new URL(args.url);
    list.push(`--ip-address-space-overrides=${page.hostname}:${page.port}=public`);
  }
  return list;
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const profile = mkdtempSync(path.join(tmpdir(), 'envsync-chromium-'));
  const report = { console: [], page_errors: [], failed_requests: [] };
  let browser;
  let code = 1;
  try {
    // launchPersistentContext is the playwright way to give Chromium its own --user-data-dir;
    // CDP's Browser.grantPermissions applies to this (the default) browser context.
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: process.env.ENVSYNC_CHROMIUM || '/usr/bin/chromium',
      headless: true,
      args: chromiumArgs(args),
      viewport: { width: 1000, height: 900 },
      timeout: 30000,
    });
    browser = context;
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (msg) => report.console.push(redact(`${msg.type()}: ${msg.text()}`)));
    page.on('pageerror', (err) => report.page_errors.push(redact(err)));
    page.on('requestfailed', (req) =>
      report.failed_requests.push(redact(`${req.method()} ${req.url()}: ${req.failure()?.errorText}`)),
    );
    if (args.grant) {
      const cdp = await context.newCDPSession(page);
      await cdp.send('Browser.grantPermissions', {
        permissions: ['loopbackNetwork'],
        origin: new URL(args.url).origin,
      });
    }
    await page.goto(args.url, { waitUntil: 'load', timeout: 30000 });
    const steps = [['first run', 'status', FINAL, null]];
    if (args.sendLock) steps.push(['send lock', 'lock-result', LOCK_FINAL, '#send-lock']);
    if (args.rerun) steps.push(['rerun', 'status', FINAL, '#run']);
    let timedOut = false;
    for (const [name, id, states, button] of steps) {
      if (button) {
        report.first = report.first || (await readPage(page));
        await page.click(button, { timeout: 10000 });
      }
      try {
        await waitForState(page, id, states, args.timeoutMs);
      } catch (err) {
        timedOut = true;
        report.timeout = `${name}: ${redact(err)}`;
        break;
      }
    }
    Object.assign(report, await readPage(page));
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
