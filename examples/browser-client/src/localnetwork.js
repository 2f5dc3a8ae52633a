// Why a request to the local gateway failed: the browser's local-network permission, CORS,
// or nothing listening.
//
// Chromium's Local Network Access keeps a page on a public origin (https://editor.example)
// from reaching 127.0.0.1 or a private address until the user allows it ("apps on your
// device"). A blocked request fails like a CORS refusal (TypeError: Failed to fetch), so the
// page asks the Permissions API, and probes the gateway with a no-cors request, which CORS
// does not block but the permission does.

export const LOCAL_NETWORK_MESSAGE =
  'This site needs permission to access apps on your device (local network access). ' +
  "Allow it in the browser's prompt or site settings, then retry.";

const V4_PRIVATE = [/^10\./, /^192\.168\./, /^172\.(1[6-9]|2\d|3[01])\./, /^169\.254\./];

/** 'loopback', 'private' or 'public' for a URL host name, as Local Network Access sees it. */
export function addressSpace(hostname) {
  const host = String(hostname).toLowerCase().replace(/^\[|\]$/g, '');
  if (host === 'localhost' || host.endsWith('.localhost') || /^127\./.test(host) || host === '::1') {
    return 'loopback';
  }
  if (V4_PRIVATE.some((re) => re.test(host)) || host.endsWith('.local') || /^f[cd][0-9a-f]{2}:/.test(host) || /^fe80:/.test(host)) {
    return 'private';
  }
  return 'public';
}

// Chromium 156 answers 'loopback-network' for 127.0.0.1 and 'local-network' for the LAN;
// 'local-network-access' is the name earlier versions used for both. Unknown names throw.
const PERMISSION_NAMES = {
  loopback: ['loopback-network', 'local-network-access'],
  private: ['local-network', 'local-network-access'],
};

/** 'granted' | 'prompt' | 'denied' for reaching `gatewayUrl`, or 'unknown' without the API. */
export async function localNetworkPermission(gatewayUrl) {
  const space = addressSpace(new URL(gatewayUrl).hostname);
  const names = PERMISSION_NAMES[space];
  if (!names || typeof navigator === 'undefined' || !navigator.permissions) return 'unknown';
  for (const name of names) {
    try {
      return (await navigator.permissions.query({ name })).state;
    } catch {
      // TypeError: this browser does not know the name; try the next one.
    }
  }
  return 'unknown';
}

/** Whether anything answers at the gateway, with CORS out of the way (an opaque response). */
export async function reachable(gatewayUrl) {
  try {
    await fetch(new URL('/api', gatewayUrl).href, { mode: 'no-cors', credentials: 'omit', cache: 'no-store' });
    return true;
  } catch {
    return false;
  }
}

/**
 * 'local-network' when the browser's permission is what stopped the request, else 'cors'
 * (the gateway answered, but not for this origin) or 'unreachable'.
 */
export async function diagnoseNetworkError(gatewayUrl, pageLocation) {
  const target = addressSpace(new URL(gatewayUrl).hostname);
  if (target === 'public') return (await reachable(gatewayUrl)) ? 'cors' : 'unreachable';
  const permission = await localNetworkPermission(gatewayUrl);
  if (permission === 'granted') return (await reachable(gatewayUrl)) ? 'cors' : 'unreachable';
  if (await reachable(gatewayUrl)) return 'cors';
  if (permission === 'denied' || permission === 'prompt') return 'local-network';
  // No Permissions API for it: a page that is itself public is the one the browser blocks.
  return addressSpace(pageLocation.hostname) === 'public' ? 'local-network' : 'unreachable';
}
