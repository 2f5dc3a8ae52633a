// The gateway's address and token, from what a user pastes, and the client settings for it.
import { ServerConnection } from '@jupyterlab/services';

/**
 * Split what the user gave into the gateway origin and its token.
 *
 * `envsync launch` prints one connection string with the token in the URL fragment
 * (`http://127.0.0.1:8888/#token=…`): a fragment is never sent to any server. A plain URL
 * plus a separate token works too; a token in the string wins over the token field.
 */
export function parseConnection(text, tokenField = '') {
  const raw = String(text || '').trim();
  if (!raw) return { gateway: '', token: String(tokenField || '').trim() };
  let url;
  try {
    url = new URL(raw);
  } catch {
    throw new Error(`not a gateway URL or connection string: ${raw.replace(/#.*$/, '#…')}`);
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`the gateway URL must be http(s)://host:port, not ${url.protocol}//…`);
  }
  const fragment = new URLSearchParams(url.hash.replace(/^#/, ''));
  const token = fragment.get('token') || String(tokenField || '').trim();
  return { gateway: url.origin, token };
}

/** Connection settings for a gateway on another origin. */
export function gatewaySettings(gatewayUrl, token) {
  const url = new URL(gatewayUrl);
  if (url.protocol !== 'http:' && url.protocol !== 'https:') {
    throw new Error(`the gateway URL must be http(s)://host:port, not ${gatewayUrl}`);
  }
  return ServerConnection.makeSettings({
    baseUrl: url.origin + '/',
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

/** The lock fingerprint a notebook's metadata.envsync carries, or ''. */
export function manifestFingerprint(manifest) {
  const fp = manifest && manifest.lock && manifest.lock.tool && manifest.lock.tool.envsync;
  return (fp && typeof fp.fingerprint === 'string' && fp.fingerprint) || '';
}

/** Parse the pasted metadata.envsync (or a whole notebook, whose metadata.envsync is taken). */
export function parseManifest(text) {
  const raw = String(text || '').trim();
  if (!raw) return null;
  let value;
  try {
    value = JSON.parse(raw);
  } catch (err) {
    throw new Error(`the notebook manifest is not JSON: ${err.message}`);
  }
  if (value && value.metadata && typeof value.metadata.envsync === 'object') value = value.metadata.envsync;
  if (!value || typeof value !== 'object' || Array.isArray(value)) {
    throw new Error('the notebook manifest must be the JSON object in metadata.envsync');
  }
  return value;
}
