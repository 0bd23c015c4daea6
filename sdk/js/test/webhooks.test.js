// verifyWebhook against signatures made by hand with node:crypto (the scheme of api.md §9).
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { test } from 'node:test';

import { AuthenticationError, verifyWebhook, WebhookSignatureError } from '../src/index.js';

const SECRET = 'a-receivers-secret-of-16+';
const BODY = '{"id":"evt_1","type":"chat.completed","created":1700000000,"data":{"response":"hé"}}';
const T = 1_700_000_000;

function signed(body, t = T, secret = SECRET) {
  const mac = createHmac('sha256', secret).update(`${t}.`).update(body).digest('hex');
  return { 'x-orchestra-signature': `t=${t},v1=${mac}`, 'X-Orchestra-Event': 'chat.completed' };
}

test('a signature made by hand verifies, for a string, a Buffer and fetch Headers', async () => {
  assert.equal(await verifyWebhook(SECRET, signed(BODY), BODY, { now: T + 10 }), T);
  assert.equal(await verifyWebhook(SECRET, signed(BODY), Buffer.from(BODY), { now: T }), T);
  const headers = new Headers(signed(BODY));
  assert.equal(await verifyWebhook(SECRET, headers, new TextEncoder().encode(BODY), { now: T }), T);
});

test('an altered body, another secret, a stale or future timestamp and bad headers are refused', async () => {
  const cases = [
    [SECRET, signed(BODY), `${BODY} `, { now: T }],
    ['another-secret-of-16-chars', signed(BODY), BODY, { now: T }],
    [SECRET, signed(BODY), BODY, { now: T + 301 }],
    [SECRET, signed(BODY), BODY, { now: T - 301 }],
    [SECRET, {}, BODY, { now: T }],
    [SECRET, { 'X-Orchestra-Signature': 'v1=abc' }, BODY, { now: T }],
    [SECRET, { 'X-Orchestra-Signature': `t=${T}` }, BODY, { now: T }],
  ];
  for (const [secret, headers, body, options] of cases) {
    await assert.rejects(verifyWebhook(secret, headers, body, options), (err) => {
      assert.ok(err instanceof WebhookSignatureError && err instanceof AuthenticationError, String(err));
      return true;
    });
  }
});

test('one matching v1 among several is enough (secret rotation)', async () => {
  const good = signed(BODY)['x-orchestra-signature'];
  const header = { 'X-Orchestra-Signature': `${good},v1=${'0'.repeat(64)}` };
  assert.equal(await verifyWebhook(SECRET, header, BODY, { now: T }), T);
});
