// Example web client for an envsync Kernel Gateway.
//
// The flow a web editor needs, with the official client library @jupyterlab/services:
//   1. settings for a gateway on ANOTHER origin (baseUrl, wsUrl, token, appendToken),
//   2. list the kernelspecs and read metadata.envsync.fingerprint of the envsync kernel,
//   3. compare it with the fingerprint in the notebook's lock; refuse to run on a mismatch,
//   4. start the kernel, execute code, show the output, shut the kernel down.
//
// Stable element ids (the end-to-end tests read them): #status (with data-state),
// #kernel, #fingerprint, #expected-shown, #match, #warning, #result.
import { KernelManager, KernelSpecAPI, ServerConnection } from '@jupyterlab/services';

export const CODE = 'import numpy; print(numpy.__version__)';
// A kernel whose WebSocket never connects (token refused, proxy in the way) would otherwise
// leave the page waiting forever.
const CONNECT_TIMEOUT_MS = 30000;
const EXECUTE_TIMEOUT_MS = 60000;

const $ = (id) => document.getElementById(id);

function show(id, text) {
  const el = $(id);
  if (el) el.textContent = text;
}

// data-state: idle | running | done | mismatch | error. Tests wait for a final state.
function setStatus(state, text) {
  const el = $('status');
  el.dataset.state = state;
  el.textContent = text;
}

function warn(text) {
  const el = $('warning');
  el.textContent = text;
  el.hidden = !text;
}

/** Connection settings for a gateway on another origin. */
export function gatewaySettings(gatewayUrl, token) {
  const url = new URL(gatewayUrl);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`the gateway URL must be http(s)://host:port, not ${gatewayUrl}`);
  }
  const baseUrl = url.origin + '/';
  return ServerConnection.makeSettings({
    baseUrl,
    wsUrl: (url.protocol === 'https:' ? 'wss://' : 'ws://') + url.host + '/',
    token,
    // A browser WebSocket cannot send an Authorization header, so the token must go on the
    // channels URL as ?token=. @jupyterlab/services only appends it on its own when the page
    // and the gateway have different host NAMES; 127.0.0.1:8000 vs 127.0.0.1:8888 share one.
    appendToken: true,
    // No cookies: the token is the only credential, and a cross-origin gateway sets none.
    init: { cache: 'no-store', credentials: 'omit' },
  });
}

/** The kernelspec envsync registered: `wanted` by name, else the one with metadata.envsync. */
export function pickEnvsyncSpec(specs, wanted) {
  const all = Object.values(specs.kernelspecs);
  const ours = all.filter((s) => s && s.metadata && typeof s.metadata.envsync === 'object');
  if (wanted) {
    const spec = specs.kernelspecs[wanted];
    if (!spec) throw new Error(`the gateway has no kernel named ${wanted}`);
    return spec;
  }
  if (ours.length === 0) {
    throw new Error('the gateway offers no envsync kernel (no kernelspec has metadata.envsync)');
  }
  return ours.find((s) => s.name === specs.default) || ours[0];
}

function withTimeout(promise, ms, message) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(message)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

/** Resolve once the kernel's WebSocket is connected. */
function connected(kernel) {
  if (kernel.connectionStatus === 'connected') return Promise.resolve();
  return new Promise((resolve) => {
    const onChange = (_sender, status) => {
      if (status === 'connected') {
        kernel.connectionStatusChanged.disconnect(onChange);
        resolve();
      }
    };
    kernel.connectionStatusChanged.connect(onChange);
  });
}

/** Run `code` and collect its stdout/stderr/results; reject when the cell raises. */
async function execute(kernel, code) {
  const out = [];
  const future = kernel.requestExecute({ code, store_history: false });
  future.onIOPub = (msg) => {
    const c = msg.content;
    switch (msg.header.msg_type) {
      case 'stream':
        out.push(c.text);
        break;
      case 'execute_result':
      case 'display_data':
        out.push(String((c.data && c.data['text/plain']) || ''));
        break;
      case 'error':
        out.push(`${c.ename}: ${c.evalue}`);
        break;
      default:
        break;
    }
  };
  const reply = await withTimeout(future.done, EXECUTE_TIMEOUT_MS, `no reply to the code in ${EXECUTE_TIMEOUT_MS / 1000} s`);
  if (reply.content.status !== 'ok') {
    throw new Error(`the code raised ${reply.content.ename}: ${reply.content.evalue}`);
  }
  return out.join('');
}

function describeError(err, gatewayUrl) {
  if (err instanceof ServerConnection.NetworkError) {
    // The browser hides why a cross-origin request failed; these are the usual causes.
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
  return err && err.message ? err.message : String(err);
}

/** The whole flow; every failure ends in #status "error: ...". */
export async function run({ gateway, token, expected, kernelName }) {
  let manager = null;
  let kernel = null;
  warn('');
  show('result', '');
  show('fingerprint', '');
  show('kernel', '');
  show('match', '');
  show('expected-shown', expected || '(none given)');
  try {
    if (!gateway || !token) throw new Error('give the gateway URL and its token');
    const settings = gatewaySettings(gateway, token);

    setStatus('running', 'listing kernelspecs…');
    const specs = await KernelSpecAPI.getSpecs(settings);
    const spec = pickEnvsyncSpec(specs, kernelName);
    const fingerprint = (spec.metadata && spec.metadata.envsync && spec.metadata.envsync.fingerprint) || '';
    show('kernel', spec.name);
    show('fingerprint', fingerprint || '(none)');

    if (expected) {
      if (fingerprint !== expected) {
        show('match', 'mismatch');
        warn(
          `This gateway's environment (${fingerprint || 'no fingerprint'}) is not the one the ` +
            `notebook's lock describes (${expected}). Nothing was run. Re-run ` +
            '`envsync launch` on the current notebook, then reload this page.',
        );
        setStatus('mismatch', 'mismatch: the kernel environment does not match the notebook lock; not running');
        return { state: 'mismatch', fingerprint };
      }
      show('match', 'match');
    } else {
      show('match', 'not checked');
      warn('No expected fingerprint given: the environment is not verified against the notebook lock.');
    }

    setStatus('running', `starting kernel ${spec.name}…`);
    manager = new KernelManager({ serverSettings: settings });
    kernel = await manager.startNew({ name: spec.name });
    await withTimeout(
      connected(kernel),
      CONNECT_TIMEOUT_MS,
      `the kernel's WebSocket did not connect in ${CONNECT_TIMEOUT_MS / 1000} s ` +
        '(was the token refused on the WebSocket? see the browser console)',
    );

    setStatus('running', 'executing…');
    const output = await execute(kernel, CODE);
    show('result', output.trim());

    setStatus('running', 'shutting the kernel down…');
    await kernel.shutdown();
    kernel = null;
    setStatus('done', 'done: numpy ' + output.trim() + ' in ' + spec.name);
    return { state: 'done', fingerprint, output };
  } catch (err) {
    setStatus('error', 'error: ' + describeError(err, gateway));
    console.error(err);
    return { state: 'error', error: String(err) };
  } finally {
    if (kernel) {
      try {
        await kernel.shutdown();
      } catch {
        // already reported above
      }
    }
    if (manager) manager.dispose();
  }
}

/** Parameters from the page address: the query string, or the #fragment (never sent to a server). */
export function readParams(location) {
  const query = new URLSearchParams(location.search);
  const hash = new URLSearchParams(location.hash.replace(/^#/, ''));
  const get = (k) => hash.get(k) || query.get(k) || '';
  return {
    gateway: get('gateway'),
    token: get('token'),
    expected: get('expected'),
    kernelName: get('kernel'),
  };
}

function main() {
  const params = readParams(window.location);
  const form = $('connect');
  form.elements.gateway.value = params.gateway;
  form.elements.token.value = params.token;
  form.elements.expected.value = params.expected;
  form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const f = form.elements;
    run({
      gateway: f.gateway.value.trim(),
      token: f.token.value.trim(),
      expected: f.expected.value.trim(),
      kernelName: params.kernelName,
    });
  });
  if (params.token) {
    // Drop the token from the address bar and the history (local demos only, see README).
    const clean = new URL(window.location.href);
    clean.searchParams.delete('token');
    clean.hash = '';
    window.history.replaceState(null, '', clean.href);
  }
  if (params.gateway && params.token) {
    run(params);
  } else {
    setStatus('idle', 'idle: enter the gateway URL and token printed by `envsync launch`');
  }
}

if (typeof window !== 'undefined' && typeof document !== 'undefined') {
  if (document.readyState === 'loading') {
    document.addEventListener('DOMContentLoaded', main);
  } else {
    main();
  }
}
