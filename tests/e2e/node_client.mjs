// Drive an envsync Kernel Gateway from Node with @jupyterlab/services (no browser).
//
//   ENVSYNC_GATEWAY_TOKEN=T node node_client.mjs GATEWAY_URL
//
// The token comes from the environment (not argv, where `ps` shows it). It goes in the
// Authorization header of every HTTP request and as ?token= on the kernel WebSocket.
// Prints one JSON line on stdout with what the gateway and the kernel reported; exit code 0
// when every step worked, 1 otherwise (the JSON then has "error").
import { createRequire } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientDir = process.env.ENVSYNC_CLIENT_DIR || path.resolve(here, '../../examples/browser-client');
const require = createRequire(path.join(clientDir, 'package.json'));
const { KernelAPI, KernelManager, KernelSpecAPI, ServerConnection } = require('@jupyterlab/services');
// The WebSocket implementation @jupyterlab/services itself uses under Node.
const WebSocket = require(require.resolve('ws', { paths: [require.resolve('@jupyterlab/services')] }));

const DEADLINE_MS = Number(process.env.ENVSYNC_NODE_CLIENT_TIMEOUT_MS || 90000);

function withTimeout(promise, ms, what) {
  let timer;
  return Promise.race([
    promise,
    new Promise((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}

async function execute(kernel, code) {
  const stdout = [];
  const stderr = [];
  const future = kernel.requestExecute({ code, store_history: false });
  future.onIOPub = (msg) => {
    if (msg.header.msg_type === 'stream') {
      (msg.content.name === 'stderr' ? stderr : stdout).push(msg.content.text);
    }
  };
  const reply = await withTimeout(future.done, 60000, `execute ${code}`);
  return { status: reply.content.status, stdout: stdout.join(''), stderr: stderr.join('') };
}

/** Status of a request without any token: the gateway must refuse it. */
async function statusWithoutToken(baseUrl) {
  const res = await fetch(new URL('api/kernelspecs', baseUrl));
  return res.status;
}

/** Open the channels WebSocket of `kernelId` WITHOUT the token; report how it ended. */
function websocketWithoutToken(wsUrl, kernelId) {
  return new Promise((resolve) => {
    const ws = new WebSocket(new URL(`api/kernels/${kernelId}/channels`, wsUrl).href);
    const done = (outcome) => {
      try {
        ws.terminate();
      } catch {
        // closed already
      }
      resolve(outcome);
    };
    ws.on('unexpected-response', (_req, res) => done(`refused ${res.statusCode}`));
    ws.on('open', () => done('opened'));
    ws.on('error', (err) => done(`error ${err.message}`));
    setTimeout(() => done('timeout'), 10000);
  });
}

async function main() {
  const gateway = process.argv[2];
  const token = process.env.ENVSYNC_GATEWAY_TOKEN || '';
  const report = { gateway };
  let manager = null;
  let kernel = null;
  let code = 1;
  try {
    if (!gateway || !token) throw new Error('usage: ENVSYNC_GATEWAY_TOKEN=T node node_client.mjs GATEWAY_URL');
    const base = new URL(gateway);
    const settings = ServerConnection.makeSettings({
      baseUrl: base.origin + '/',
      wsUrl: (base.protocol === 'https:' ? 'wss://' : 'ws://') + base.host + '/',
      token,
      appendToken: true, // the WebSocket carries the token as ?token=
    });
    report.http_without_token = await statusWithoutToken(settings.baseUrl);

    const specs = await withTimeout(KernelSpecAPI.getSpecs(settings), 15000, 'list kernelspecs');
    report.kernelspecs = Object.keys(specs.kernelspecs);
    report.default = specs.default;
    const spec = Object.values(specs.kernelspecs).find((s) => s.metadata && s.metadata.envsync);
    if (!spec) throw new Error('no kernelspec with metadata.envsync');
    report.kernel_name = spec.name;
    report.fingerprint = spec.metadata.envsync.fingerprint;

    manager = new KernelManager({ serverSettings: settings });
    await withTimeout(manager.ready, 15000, 'kernel manager ready');
    kernel = await withTimeout(manager.startNew({ name: spec.name }), 60000, 'start kernel');
    report.kernel_id = kernel.id;
    const info = await withTimeout(kernel.info, 60000, 'kernel_info');
    report.language = info.language_info.name;
    report.websocket_without_token = await websocketWithoutToken(settings.wsUrl, kernel.id);

    const exe = await execute(kernel, 'import sys; print(sys.executable)');
    report.sys_executable = exe.stdout.trim();
    const np = await execute(kernel, 'import numpy; print(numpy.__version__)');
    report.numpy_version = np.stdout.trim();
    report.execute_status = [exe.status, np.status];

    report.running_before_shutdown = (await KernelAPI.listRunning(settings)).map((k) => k.id);
    await withTimeout(kernel.shutdown(), 30000, 'kernel shutdown');
    kernel = null;
    report.running_after_shutdown = (await KernelAPI.listRunning(settings)).map((k) => k.id);
    code = 0;
  } catch (err) {
    report.error = String(err && err.stack ? err.stack : err);
  } finally {
    if (kernel) await kernel.shutdown().catch(() => {});
    if (manager) manager.dispose();
  }
  process.stdout.write(JSON.stringify(report) + '\n');
  process.exit(code);
}

const timer = setTimeout(() => {
  process.stdout.write(JSON.stringify({ error: `node_client.mjs exceeded ${DEADLINE_MS} ms` }) + '\n');
  process.exit(1);
}, DEADLINE_MS);
timer.unref();
main();
