// The gateway's editor API: /api/envsync (state), /api/envsync/diff, /api/envsync/lock.
import { ServerConnection } from '@jupyterlab/services';

/** An answer the page shows as is: HTTP status, the server's reason and one-line message. */
export class ApiAnswer extends Error {
  constructor(status, body) {
    const message = (body && (body.message || body.reason)) || `HTTP ${status}`;
    super(message);
    this.status = status;
    this.reason = (body && body.reason) || '';
  }
}

async function request(settings, path, init) {
  const url = new URL(path, settings.baseUrl).href;
  // makeRequest adds "Authorization: token …"; its NetworkError is what a blocked fetch gives.
  const response = await ServerConnection.makeRequest(url, init, settings);
  let body = null;
  try {
    body = await response.json();
  } catch {
    body = null;
  }
  return { status: response.status, body };
}

/** GET /api/envsync; null when the gateway has no editor API (404). */
export async function envState(settings) {
  const { status, body } = await request(settings, 'api/envsync', { method: 'GET' });
  if (status === 404) return null;
  if (status !== 200) throw new ApiAnswer(status, body);
  return body;
}

function post(settings, path, manifest) {
  return request(settings, path, {
    method: 'POST',
    headers: { 'Content-Type': 'application/json' },
    body: JSON.stringify({ manifest }),
  });
}

/** POST /api/envsync/diff: how the page's lock differs from the one the gateway serves. */
export async function lockDiff(settings, manifest) {
  const { status, body } = await post(settings, 'api/envsync/diff', manifest);
  if (status !== 200) throw new ApiAnswer(status, body);
  return body;
}

/** POST /api/envsync/lock: {status, body}; 202 means the gateway builds the new env. */
export function sendLock(settings, manifest) {
  return post(settings, 'api/envsync/lock', manifest);
}

/** One line per difference, as `envsync diff` words them. */
export function diffLines(diff) {
  if (!diff || diff.empty) return ['same lock'];
  const lines = (diff.changes || []).map((c) => {
    if (c.kind === 'added') return `+ ${c.name} ${c.new}`;
    if (c.kind === 'removed') return `- ${c.name} ${c.old}`;
    if (c.old && c.new && c.old !== c.new) return `~ ${c.name} ${c.old} → ${c.new} (${c.kind})`;
    return `~ ${c.name} (${c.kind})`;
  });
  if (diff['requires-python']) lines.push(`requires-python: ${diff['requires-python'].join(' → ')}`);
  if (diff.environments) lines.push(`environments: ${diff.environments.map((e) => e.join(' ')).join(' → ')}`);
  if (diff['hash-changes']) lines.push(`${diff['hash-changes']} file hash(es) changed`);
  return lines;
}

/** What #verified says: only a clean file check is "verified". */
export function verificationText(state, expected) {
  const v = state && state.verification;
  if (v && v.clean === true) {
    return { state: 'verified', text: `verified: the env's files match its lock (${v.mode} check, ${v.when})` };
  }
  if (v && v.clean === false) {
    const files = (v.files || []).map((f) => `${f.path || f.distribution} (${f.problem})`);
    return { state: 'modified', text: `NOT verified: ${files.length} file(s) differ from the lock: ${files.slice(0, 5).join(', ')}` };
  }
  if (state && expected && state.fingerprint === expected) {
    return { state: 'unverified', text: 'lock matches, files not verified' };
  }
  return { state: 'unverified', text: 'files not verified' };
}
