// Retry timing shared by HTTP requests and WebSocket (re)connects.

import { isRetryable } from './errors.js';

/** The longest `Retry-After` (seconds) the SDK waits out by itself; beyond it the error is thrown. */
export const MAX_RETRY_AFTER_S = 60;

/**
 * The wait before retry number `attempt` (0 for the first retry): `min(0.5 * 2^attempt, 8)` seconds
 * scaled by a random 75-100 % (jitter), in milliseconds.
 */
export function backoffMs(attempt, random = Math.random) {
  return Math.min(500 * 2 ** attempt, 8000) * (0.75 + 0.25 * random());
}

/**
 * How long to wait before retrying after `error` (ms), or `undefined` when it must not be retried:
 * not retryable, `attempt` already at `maxRetries`, or a `Retry-After` over `MAX_RETRY_AFTER_S`.
 * A `Retry-After` the server sent is waited out exactly; otherwise the backoff applies.
 */
export function retryDelayMs(error, attempt, maxRetries) {
  if (attempt >= maxRetries || !isRetryable(error)) return undefined;
  const after = error.retryAfter;
  if (typeof after === 'number' && Number.isFinite(after) && after > 0) {
    return after > MAX_RETRY_AFTER_S ? undefined : after * 1000;
  }
  return backoffMs(attempt);
}

/** `Retry-After` (delta-seconds or an HTTP date) in seconds, `undefined` when absent or unreadable. */
export function parseRetryAfter(value, now = Date.now()) {
  if (value == null || value === '') return undefined;
  const seconds = Number(value);
  if (Number.isFinite(seconds)) return Math.max(0, seconds);
  const date = Date.parse(value);
  return Number.isNaN(date) ? undefined : Math.max(0, (date - now) / 1000);
}

/** The reason an aborted signal carries (a DOMException `AbortError` when none was given). */
export function abortReason(signal) {
  if (signal.reason !== undefined) return signal.reason;
  return typeof DOMException === 'function'
    ? new DOMException('This operation was aborted', 'AbortError')
    : Object.assign(new Error('This operation was aborted'), { name: 'AbortError' });
}

/** Wait `ms`, or reject with the signal's reason as soon as it aborts. */
export function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const onAbort = () => {
      clearTimeout(timer);
      reject(abortReason(signal));
    };
    const timer = setTimeout(() => {
      signal?.removeEventListener('abort', onAbort);
      resolve();
    }, ms);
    signal?.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * A signal that aborts when `signal` does or after `timeoutMs`, whichever comes first. `timedOut()`
 * tells which; call `dispose()` when done (it clears the timer and the listener).
 */
export function deadline(signal, timeoutMs) {
  const controller = new AbortController();
  let expired = false;
  const onAbort = () => controller.abort(abortReason(signal));
  let timer;
  if (signal?.aborted) onAbort();
  else signal?.addEventListener('abort', onAbort, { once: true });
  if (timeoutMs != null && Number.isFinite(timeoutMs) && timeoutMs > 0 && !controller.signal.aborted) {
    timer = setTimeout(() => {
      expired = true;
      controller.abort();
    }, timeoutMs);
  }
  return {
    signal: controller.signal,
    timedOut: () => expired,
    dispose() {
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
    },
  };
}
