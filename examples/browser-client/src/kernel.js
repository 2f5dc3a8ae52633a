// Start the envsync kernel, run one cell, shut it down: plain @jupyterlab/services.
import { KernelManager, KernelSpecAPI } from '@jupyterlab/services';

// A kernel whose WebSocket never connects (token refused, proxy in the way) would otherwise
// leave the page waiting forever.
const CONNECT_TIMEOUT_MS = 30000;
const EXECUTE_TIMEOUT_MS = 60000;

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

export async function envsyncSpec(settings, wanted) {
  const spec = pickEnvsyncSpec(await KernelSpecAPI.getSpecs(settings), wanted);
  const fingerprint = (spec.metadata && spec.metadata.envsync && spec.metadata.envsync.fingerprint) || '';
  return { spec, fingerprint };
}

export function withTimeout(promise, ms, message) {
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

/** Start a kernel from `spec`, run `code` in it, shut it down; what the code printed. */
export async function runOnce(settings, spec, code, onStep) {
  const manager = new KernelManager({ serverSettings: settings });
  let kernel = null;
  try {
    onStep(`starting kernel ${spec.name}…`);
    kernel = await manager.startNew({ name: spec.name });
    await withTimeout(
      connected(kernel),
      CONNECT_TIMEOUT_MS,
      `the kernel's WebSocket did not connect in ${CONNECT_TIMEOUT_MS / 1000} s ` +
        '(was the token refused on the WebSocket? see the browser console)',
    );
    onStep('executing…');
    const output = await execute(kernel, code);
    onStep('shutting the kernel down…');
    const done = kernel;
    kernel = null;
    await done.shutdown();
    return output;
  } finally {
    if (kernel) {
      try {
        await kernel.shutdown();
      } catch {
        // the error that got us here is the one to report
      }
    }
    manager.dispose();
  }
}
