// The example client's pure functions, run under Node: prints one JSON report of what each
// returns for the cases test_client_units.py checks.
import path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const clientDir = process.env.ENVSYNC_CLIENT_DIR || path.resolve(here, '../../examples/browser-client');
const load = (name) => import(pathToFileURL(path.join(clientDir, 'src', name)).href);

const { parseConnection, parseManifest, manifestFingerprint } = await load('connection.js');
const { diffLines, verificationText } = await load('envsyncapi.js');
const { addressSpace } = await load('localnetwork.js');

const attempt = (fn) => {
  try {
    return fn();
  } catch (err) {
    return { error: err.message };
  }
};
const fp = 'sha256:' + 'a'.repeat(64);
const clean = { fingerprint: fp, verification: { when: '2026-12-01T10:00:00Z', mode: 'fast', clean: true, files: [] } };
const report = {
  connection: parseConnection('http://127.0.0.1:8888/#token=abc', ''),
  connection_with_field: parseConnection('http://127.0.0.1:8888', 'xyz'),
  connection_token_wins: parseConnection('http://127.0.0.1:8888/#token=abc', 'xyz'),
  connection_bad_scheme: attempt(() => parseConnection('file:///etc/passwd#token=abc')),
  connection_not_url: attempt(() => parseConnection('127.0.0.1:8888#token=secret')),
  manifest_from_notebook: manifestFingerprint(
    parseManifest(JSON.stringify({ metadata: { envsync: { lock: { tool: { envsync: { fingerprint: fp } } } } } })),
  ),
  manifest_array: attempt(() => parseManifest('[]')),
  verified_clean: verificationText(clean, fp),
  verified_modified: verificationText(
    { ...clean, verification: { ...clean.verification, clean: false, files: [{ distribution: 'idna', path: 'idna/core.py', problem: 'modified' }, { distribution: 'gone', path: null, problem: 'missing' }] } },
    fp,
  ),
  verified_none_matching: verificationText({ fingerprint: fp, verification: null }, fp),
  verified_none_other: verificationText({ fingerprint: fp, verification: null }, 'sha256:' + 'b'.repeat(64)),
  diff_same: diffLines({ empty: true, changes: [] }),
  diff_lines: diffLines({
    empty: false,
    changes: [
      { name: 'idna', kind: 'upgraded', old: '3.10', new: '3.11' },
      { name: 'beta', kind: 'added', old: null, new: '1.0' },
      { name: 'gamma', kind: 'removed', old: '2.0', new: null },
      { name: 'numpy', kind: 'hashes-changed', old: '2.4.6', new: '2.4.6' },
    ],
    'requires-python': ['==3.11.*', '==3.12.*'],
    environments: null,
    'hash-changes': 1,
  }),
  spaces: Object.fromEntries(
    ['127.0.0.1', 'localhost', '[::1]', '192.168.1.5', '10.0.0.1', '172.20.0.1', '172.32.0.1', 'editor.example', 'printer.local'].map(
      (h) => [h, addressSpace(h)],
    ),
  ),
};
process.stdout.write(JSON.stringify(report) + '\n');
