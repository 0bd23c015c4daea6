// Checking a webhook delivery on the receiving side (api.md §9), in Node (>= 20) and browsers alike
// (Web Crypto). Every delivery carries `X-Orchestra-Signature: t=<unix>,v1=<hex HMAC-SHA256(secret,
// "<t>.<raw body>")>`: the timestamp is signed with the body, so a captured request cannot be replayed
// once older than the tolerance. Verify the raw body exactly as received and dedupe by
// `X-Orchestra-Delivery` (deliveries are at-least-once).

import { AuthenticationError } from './errors.js';

export const SIGNATURE_HEADER = 'X-Orchestra-Signature';

/** A webhook request whose signature is missing, malformed, wrong or too old: do not act on it. */
export class WebhookSignatureError extends AuthenticationError {}

const encoder = new TextEncoder();

function headerValue(headers, name) {
  const wanted = name.toLowerCase();
  if (typeof headers?.get === 'function') return headers.get(name) ?? undefined; // fetch's Headers
  for (const [key, value] of Object.entries(headers ?? {})) {
    if (key.toLowerCase() === wanted) return Array.isArray(value) ? value[0] : value;
  }
  return undefined;
}

function toBytes(body) {
  if (typeof body === 'string') return encoder.encode(body);
  if (body instanceof Uint8Array) return body; // Node's Buffer too
  if (body instanceof ArrayBuffer) return new Uint8Array(body);
  throw new TypeError('body must be the raw request body: a string, Uint8Array/Buffer or ArrayBuffer');
}

// Equal-length hex strings compared without an early exit.
function constantTimeEqual(a, b) {
  let diff = a.length ^ b.length;
  for (let i = 0; i < Math.max(a.length, b.length); i++) diff |= (a.charCodeAt(i) | 0) ^ (b.charCodeAt(i) | 0);
  return diff === 0;
}

/**
 * Check a received webhook and resolve to its signed timestamp (unix seconds).
 *
 * `body` is the raw request body exactly as received (re-serialised JSON will not match). Rejects with
 * `WebhookSignatureError` when the header is missing or malformed, no `v1` signature matches (compared
 * in constant time), or the timestamp is more than `toleranceS` seconds (default 300) from `now`
 * (unix seconds, default the current time).
 */
export async function verifyWebhook(secret, headers, body, { toleranceS = 300, now } = {}) {
  const value = headerValue(headers, SIGNATURE_HEADER);
  if (!value) throw new WebhookSignatureError(`no ${SIGNATURE_HEADER} header`);
  let timestamp;
  const candidates = [];
  for (const part of String(value).split(',')) {
    const [key, ...rest] = part.trim().split('=');
    const item = rest.join('=');
    if (key === 't' && /^\d+$/.test(item)) timestamp = Number(item);
    else if (key === 'v1' && item) candidates.push(item);
  }
  if (timestamp === undefined || candidates.length === 0) {
    throw new WebhookSignatureError(`malformed ${SIGNATURE_HEADER} header`);
  }
  const current = now ?? Date.now() / 1000;
  if (Math.abs(current - timestamp) > toleranceS) {
    throw new WebhookSignatureError('webhook timestamp outside the tolerance');
  }
  const key = await globalThis.crypto.subtle.importKey(
    'raw', encoder.encode(secret), { name: 'HMAC', hash: 'SHA-256' }, false, ['sign'],
  );
  const raw = toBytes(body);
  const message = new Uint8Array(encoder.encode(`${timestamp}.`).length + raw.length);
  message.set(encoder.encode(`${timestamp}.`));
  message.set(raw, encoder.encode(`${timestamp}.`).length);
  const mac = new Uint8Array(await globalThis.crypto.subtle.sign('HMAC', key, message));
  const expected = Array.from(mac, (b) => b.toString(16).padStart(2, '0')).join('');
  let matched = false;
  for (const candidate of candidates) matched = constantTimeEqual(expected, candidate) || matched;
  if (!matched) throw new WebhookSignatureError('webhook signature does not match');
  return timestamp;
}
