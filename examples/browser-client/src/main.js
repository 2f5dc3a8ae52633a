// Example web client for an envsync Kernel Gateway: what a web notebook editor does with a
// collaborator's (or the user's own) `envsync launch`.
//
//   1. take the connection string `envsync launch` printed (URL with #token=, or URL + token),
//   2. read the env's state (GET /api/envsync): built, verified file by file, which packages,
//   3. diff the notebook's lock (its metadata.envsync) against the served one
//      (POST /api/envsync/diff), offer to send it (POST /api/envsync/lock) and follow the build,
//   4. compare the kernelspec's fingerprint with the lock's; refuse to run on a mismatch,
//   5. start the kernel, run the cell, show the output, shut the kernel down.
//
// Stable element ids (the end-to-end tests read them) are listed in README.md.
import { ServerConnection } from '@jupyterlab/services';
import { gatewaySettings, manifestFingerprint, parseConnection, parseManifest } from './connection.js';
import { ApiAnswer, diffLines, envState, lockDiff, sendLock, verificationText } from './envsyncapi.js';
import { envsyncSpec, runOnce } from './kernel.js';
import { LOCAL_NETWORK_MESSAGE, addressSpace, diagnoseNetworkError } from './localnetwork.js';

export { gatewaySettings, parseConnection } from './connection.js';
export { pickEnvsyncSpec } from './kernel.js';

export const CODE = 'import numpy; print(numpy.__version__)';
const POLL_MS = 500;
const BUILD_TIMEOUT_MS = 15 * 60 * 1000;

// The settings and manifest of the last run: what Send lock sends, and to whom.
let current = null;

const $ = (id) => document.getElementById(id);

function show(id, text, state) {
  const el = $(id);
  if (!el) return;
  el.textContent = text;
  if (state !== undefined) el.dataset.state = state;
}

// data-state: idle | running | done | mismatch | error. Tests wait for a final state.
function setStatus(state, text) {
  show('status', text, state);
}

function warn(text) {
  const el = $('warning');
  el.textContent = text;
  el.hidden = !text;
}

async function describeError(err, gatewayUrl) {
  if (err instanceof ServerConnection.NetworkError) {
    // The browser hides why a cross-origin request failed; find out which cause it was.
    const cause = await diagnoseNetworkError(gatewayUrl, window.location);
    if (cause === 'local-network') {
      const local = addressSpace(window.location.hostname) !== 'public';
      return local ? `${LOCAL_NETWORK_MESSAGE} (If it is allowed already, check that envsync launch is still running.)` : LOCAL_NETWORK_MESSAGE;
    }
    if (cause === 'unreachable') {
      return `cannot reach the gateway at ${gatewayUrl}: is envsync launch still running?`;
    }
    return (
      `cannot reach the gateway at ${gatewayUrl} (network error or CORS refused): ` +
      `is it running, and was it started with --allow-origin ${window.location.origin}?`
    );
  }
  if (err instanceof ServerConnection.ResponseError) {
    const code = err.response.status;
    const hint = code === 401 || code === 403 ? ' (wrong or missing token?)' : '';
    return `the gateway answered ${code} ${err.response.statusText}${hint}: ${err.message}`;
  }
  if (err instanceof ApiAnswer) {
    const hint = err.status === 401 ? ' (wrong or missing token?)' : '';
    return `the gateway answered ${err.status}${hint}: ${err.message}`;
  }
  return err && err.message ? err.message : String(err);
}

function progressText(state) {
  const p = state.progress;
  if (!p) return '';
  return p.total ? `${p.message} (${p.done}/${p.total})` : p.message;
}

/** Show GET /api/envsync: state, Python, packages, verification, lock-update policy. */
function showEnv(state, expected) {
  if (!state) {
    show('env-state', 'unknown (this gateway has no /api/envsync)', 'unknown');
    show('verified', 'files not verified', 'unverified');
    return;
  }
  const extra = state.state === 'failed' ? `: ${state.error}` : state.progress ? `: ${progressText(state)}` : '';
  show('env-state', `${state.state}${extra}`, state.state);
  show('env-python', state.python || '');
  show('env-packages', (state.packages || []).map((p) => `${p.name} ${p.version}`).join(', '));
  show('lock-updates', state['lock-updates'] || '');
  const v = verificationText(state, expected);
  show('verified', v.text, v.state);
}

/** POST /api/envsync/diff and show it; offer #send-lock when the locks or projects differ. */
async function showDiff(settings, manifest, served) {
  const button = $('send-lock');
  button.hidden = true;
  if (!manifest) {
    show('diff', 'no notebook manifest given', 'none');
    return;
  }
  try {
    const answer = await lockDiff(settings, manifest);
    const lines = diffLines(answer.diff);
    // The lock says nothing of the project: two projects can share one lock.
    const otherProject = served && manifest.project !== served.project;
    if (otherProject) lines.unshift(`project: ${served.project} (gateway) → ${manifest.project} (notebook)`);
    const same = answer.same && !otherProject;
    show('diff', lines.join('\n'), same ? 'same' : 'different');
    button.hidden = same;
  } catch (err) {
    if (!(err instanceof ApiAnswer)) throw err;
    show('diff', `the gateway cannot compare this manifest (${err.status}): ${err.message}`, 'refused');
    button.hidden = false; // sending shows the refusal in words
  }
}

/** The whole flow; every failure ends in #status "error: ...". */
export async function run({ connection, token, expected, manifestText, code, kernelName }) {
  // Synchronously first: a click on Run moves #status off its last final state at once.
  setStatus('running', 'checking the environment…');
  warn('');
  for (const id of ['result', 'fingerprint', 'kernel', 'match', 'env-state', 'verified', 'diff', 'env-python', 'env-packages']) {
    show(id, '');
  }
  let gateway = '';
  try {
    const parsed = parseConnection(connection, token);
    gateway = parsed.gateway;
    if (!parsed.gateway || !parsed.token) {
      throw new Error('paste the connection string envsync launch printed (or the gateway URL and its token)');
    }
    const manifest = parseManifest(manifestText);
    const wanted = expected || manifestFingerprint(manifest);
    show('expected-shown', wanted || '(none given)');
    const settings = gatewaySettings(parsed.gateway, parsed.token);
    current = { settings, manifest };

    const state = await envState(settings);
    current.lockUpdates = state ? state['lock-updates'] : '';
    showEnv(state, wanted);
    if (state) await showDiff(settings, manifest, state);

    setStatus('running', 'listing kernelspecs…');
    const { spec, fingerprint } = await envsyncSpec(settings, kernelName);
    show('kernel', spec.name);
    show('fingerprint', fingerprint || '(none)');
    if (wanted && fingerprint !== wanted) {
      show('match', 'mismatch');
      warn(
        `This gateway's environment (${fingerprint || 'no fingerprint'}) is not the one the ` +
          `notebook's lock describes (${wanted}). Nothing was run. Send the notebook's lock to ` +
          'the gateway (Send lock), or re-run `envsync launch` on the current notebook, then run again.',
      );
      setStatus('mismatch', 'mismatch: the kernel environment does not match the notebook lock; not running');
      return { state: 'mismatch', fingerprint };
    }
    show('match', wanted ? 'match' : 'not checked');
    if (!wanted) warn('No expected fingerprint given: the environment is not checked against the notebook lock.');

    const cell = code || CODE;
    const output = await runOnce(settings, spec, cell, (step) => setStatus('running', step));
    show('result', output.trim());
    const what = cell === CODE ? `numpy ${output.trim()}` : output.trim();
    setStatus('done', `done: ${what} in ${spec.name}`);
    return { state: 'done', fingerprint, output };
  } catch (err) {
    setStatus('error', 'error: ' + (await describeError(err, gateway)));
    console.error(err);
    return { state: 'error', error: String(err) };
  }
}

/** POST the page's lock, then follow GET /api/envsync until the new env is ready or failed. */
export async function sendPageLock() {
  // data-state: sending | building | ready | failed | refused | error (the last four are final).
  if (!current || !current.manifest) {
    show('lock-result', 'no notebook manifest to send', 'error');
    return;
  }
  const { settings, manifest, lockUpdates } = current;
  // With --lock-updates ask the answer waits for the person at the launch terminal.
  const waiting = lockUpdates === 'ask' ? ': accept it at the terminal where envsync launch runs' : '…';
  show('lock-result', `sending the notebook lock${waiting}`, 'sending');
  try {
    const { status, body } = await sendLock(settings, manifest);
    if (status !== 202) {
      const why = (body && (body.message || body.reason)) || `HTTP ${status}`;
      const word = status === 400 ? 'rejected' : status === 403 || status === 409 ? 'refused' : 'failed';
      show('lock-result', `${word} (${status}): ${why}`, status >= 400 && status < 500 ? 'refused' : 'error');
      return;
    }
    const target = body.fingerprint;
    show('lock-result', `accepted: building ${target}…`, 'building');
    const deadline = Date.now() + BUILD_TIMEOUT_MS;
    for (;;) {
      const state = await envState(settings);
      showEnv(state, target);
      if (state.state === 'failed') {
        show('lock-result', `failed: ${state.error}`, 'failed');
        return;
      }
      if (state.state === 'ready' && state.fingerprint === target) {
        show('lock-result', `ready: the gateway now serves ${target}; new kernels run it`, 'ready');
        await showDiff(settings, manifest, state);
        return;
      }
      if (state.state === 'building') show('progress', progressText(state));
      if (Date.now() > deadline) {
        show('lock-result', `failed: no ready env after ${BUILD_TIMEOUT_MS / 60000} minutes`, 'failed');
        return;
      }
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    }
  } catch (err) {
    show('lock-result', 'error: ' + (await describeError(err, settings.baseUrl.replace(/\/$/, ''))), 'error');
    console.error(err);
  }
}

/** Parameters from the page address: the query string, or the #fragment (never sent to a server). */
export function readParams(location) {
  const query = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const get = (k) => hash.get(k) || query.get(k) || '';
  return {
    connection: get('connection') || get('gateway'),
    token: get('token'),
    expected: get('expected'),
    manifestText: get('manifest'),
    code: get('code'),
    kernelName: get('kernel'),
  };
}

function formValues(form, params) {
  const f = form.elements;
  return {
    connection: f.gateway.value.trim(),
    token: f.token.value.trim(),
    expected: f.expected.value.trim(),
    manifestText: f.manifest.value,
    code: f.code.value.trim(),
    kernelName: params.kernelName,
  };
}

function main() {
  const params = readParams(window.location);
  const form = $('connect');
  const f = form.elements;
  f.gateway.value = params.connection;
  f.token.value = params.token;
  f.expected.value = params.expected;
  f.manifest.value = params.manifestText;
  f.code.value = params.code || CODE;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    run(formValues(form, params));
  });
  $('send-lock').addEventListener('click', () => sendPageLock());
  const secret = params.token || /token=/.test(params.connection);
  if (secret) {
    // Drop the token from the address bar and the history (local demos only, see README).
    const clean = new URL(window.location.href);
    for (const key of ['token', 'connection', 'gateway']) clean.searchParams.delete(key);
    clean.hash = '';
    window.history.replaceState(null, '', clean.href);
  }
  if (params.connection && (params.token || /token=/.test(params.connection))) {
    run(formValues(form, params));
  } else {
    setStatus('idle', 'idle: paste the connection string printed by `envsync launch`');
  }
}

if (typeof window !== 'undefined' && typeof document !== 'undefined') {
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', main);
  } else {
    main();
  }
}
