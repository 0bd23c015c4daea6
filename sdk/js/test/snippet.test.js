// The "JavaScript SDK" example of the API document runs as written, only the key and a base URL added.

import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { test } from 'node:test';

import { BASE_URL, LIVE, testKey } from './helpers.js';

const PACKAGE = fileURLToPath(new URL('..', import.meta.url));
// The API document lives beside the checkout (../shared/spec, as the README links it).
const DOC = fileURLToPath(new URL('../../../../shared/spec/original-api-doc.md', import.meta.url));

/** Verbatim from original-api-doc.md, "SDK Examples" → "JavaScript SDK". */
export const SNIPPET = `import { AIOrchestra } from '@ai-orchestra/sdk';

const client = new AIOrchestra({ apiKey: 'YOUR_TOKEN' });

// Promise-based
const response = await client.chat({
  message: 'Explain React hooks',
  optimizationMode: 'quality'
});

// WebSocket streaming
const stream = client.streamChat({
  message: 'Generate a React component',
  onToken: (token) => console.log(token)
});
`;

test('the snippet here is the API document\'s', { skip: !existsSync(DOC) && `no ${DOC}` }, () => {
  const doc = readFileSync(DOC, 'utf8');
  const block = doc.match(/### JavaScript SDK\s*```javascript\n([\s\S]*?)```/);
  assert.ok(block, 'the document has a JavaScript SDK block');
  assert.equal(block[1], SNIPPET);
});

test('the snippet runs: it chats, streams tokens, and the process exits by itself', { skip: LIVE }, async () => {
  const key = testKey(5);
  const code = SNIPPET.replace("{ apiKey: 'YOUR_TOKEN' }", `{ apiKey: '${key}', baseUrl: '${BASE_URL}' }`);
  assert.notEqual(code, SNIPPET);
  assert.equal(code.split('\n').length, SNIPPET.split('\n').length); // nothing else changed

  // An empty project elsewhere with the package installed as node_modules/@ai-orchestra/sdk.
  const dir = mkdtempSync(join(tmpdir(), 'orchestra-snippet-'));
  try {
    mkdirSync(join(dir, 'node_modules', '@ai-orchestra'), { recursive: true });
    symlinkSync(PACKAGE, join(dir, 'node_modules', '@ai-orchestra', 'sdk'), 'dir');
    writeFileSync(join(dir, 'snippet.mjs'), code);
    const env = { ...process.env };
    delete env.ORCHESTRA_API_KEY;
    delete env.ORCHESTRA_BASE_URL;
    const { status, stdout, stderr, ms } = await run(process.execPath, ['snippet.mjs'], { cwd: dir, env }, 120_000);
    assert.equal(status, 0, `exit ${status}\n${stderr}\n${stdout.slice(-2000)}`);
    assert.equal(stderr, '');
    const tokens = stdout.split('\n').filter(Boolean);
    assert.ok(tokens.length >= 3, `tokens printed: ${JSON.stringify(stdout.slice(0, 500))}`);
    // well before the idle socket's 30 s timeout: an idle connection does not hold the process
    assert.ok(ms < 20_000, `exited ${ms} ms after start`);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

function run(cmd, args, options, timeoutMs) {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(cmd, args, { ...options, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.on('data', (d) => (stdout += d));
    child.stderr.on('data', (d) => (stderr += d));
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`${args.join(' ')} still running after ${timeoutMs} ms\n${stderr}\n${stdout.slice(-2000)}`));
    }, timeoutMs);
    child.on('error', reject);
    child.on('close', (status) => {
      clearTimeout(timer);
      resolve({ status, stdout, stderr, ms: Date.now() - started });
    });
  });
}
