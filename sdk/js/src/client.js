// AIOrchestra: the REST endpoints over fetch, streaming over one WebSocket per session.

import { camelize, snakeBody } from './case.js';
import {
  ConnectionError,
  OrchestraError,
  TimeoutError,
  ValidationError,
  errorFromResponse,
} from './errors.js';
import { abortReason, deadline, parseRetryAfter, retryDelayMs, sleep } from './retry.js';
import { ChatStream } from './stream.js';
import { openConnection, webSocketClass } from './websocket.js';

export const VERSION = '0.1.0';
export const DEFAULT_BASE_URL = 'http://localhost:8000';
/** Longer than the longest mode deadline (quality, 300 s): the server's 504 comes first. */
export const DEFAULT_TIMEOUT_MS = 360_000;
export const DEFAULT_MAX_RETRIES = 2;
export const DEFAULT_WS_IDLE_TIMEOUT_MS = 30_000;
const CONNECT_TIMEOUT_MS = 30_000;

const CHAT_FIELDS = ['message', 'sessionId', 'optimizationMode', 'swarmType', 'useMemory', 'userContext'];
const REQUEST_OPTIONS = ['signal', 'timeoutMs', 'maxRetries', 'requestId'];

function env(name) {
  // process.env in Node; nothing in a browser
  const value = globalThis.process?.env?.[name];
  return value === '' ? undefined : value;
}

function pick(params, fields, what) {
  if (params === null || typeof params !== 'object') {
    throw new ValidationError(`${what} takes an object of options`, {
      details: { field: '<params>', reason: 'not an object' },
    });
  }
  const allowed = new Set([...fields, ...REQUEST_OPTIONS]);
  const unknown = Object.keys(params).filter((k) => !allowed.has(k));
  if (unknown.length > 0) {
    throw new ValidationError(`unknown ${what} option(s): ${unknown.join(', ')}`, {
      details: { field: unknown[0], reason: `unknown option; known: ${[...allowed].join(', ')}` },
    });
  }
  const body = {};
  for (const f of fields) if (params[f] !== undefined) body[f] = params[f];
  return body;
}

function sessionPath(sessionId) {
  if (typeof sessionId !== 'string' || sessionId === '') {
    throw new ValidationError('sessionId must be a non-empty string', {
      details: { field: 'session_id', reason: 'required' },
    });
  }
  return `/chat/v2/sessions/${encodeURIComponent(sessionId)}`;
}

export class AIOrchestra {
  /**
   * @param {object} [options]
   * @param {string} [options.apiKey] default `process.env.ORCHESTRA_API_KEY` (Node)
   * @param {string} [options.baseUrl] default `process.env.ORCHESTRA_BASE_URL`, then http://localhost:8000
   * @param {number} [options.timeoutMs] per attempt (REST) / per streamed chat; default 360 000
   * @param {number} [options.maxRetries] default 2
   */
  constructor(options = {}) {
    const {
      apiKey = env('ORCHESTRA_API_KEY'),
      baseUrl = env('ORCHESTRA_BASE_URL') ?? DEFAULT_BASE_URL,
      timeoutMs = DEFAULT_TIMEOUT_MS,
      maxRetries = DEFAULT_MAX_RETRIES,
      fetch: fetchImpl,
      WebSocket: webSocketImpl,
      clientId,
      wsIdleTimeoutMs = DEFAULT_WS_IDLE_TIMEOUT_MS,
    } = options;
    if (!Number.isInteger(maxRetries) || maxRetries < 0) {
      throw new ValidationError('maxRetries must be an integer >= 0', {
        details: { field: 'maxRetries', reason: 'not an integer >= 0' },
      });
    }
    this.apiKey = apiKey;
    this.baseUrl = String(baseUrl).replace(/\/+$/, '');
    this.timeoutMs = timeoutMs;
    this.maxRetries = maxRetries;
    /** The `client_id` of this client's WebSocket connections. */
    this.clientId = clientId ?? `js-${Math.random().toString(36).slice(2, 10)}`;
    this.wsIdleTimeoutMs = wsIdleTimeoutMs;
    this._fetch = fetchImpl ?? ((...args) => globalThis.fetch(...args));
    this._WebSocket = webSocketImpl;
    this._sockets = new Map(); // sessionId -> {conn?, opening?}
    this._generation = 0; // counts close() calls
    Object.defineProperty(this, 'apiKey', { enumerable: false }); // not in logs of the client
  }

  /** The WebSocket base URL: the base URL with ws:// or wss://. */
  get wsUrl() {
    return this.baseUrl.replace(/^http(s?):/i, 'ws$1:');
  }

  // -- REST ------------------------------------------------------------------------------------------

  /** `POST /chat/v2/chat`: one chat turn with a swarm; resolves to the answer (camelCase). */
  async chat(params) {
    const fields = pick(params, CHAT_FIELDS, 'chat');
    const body = snakeBody(fields);
    const res = await this._request('POST', '/chat/v2/chat', { ...params, body });
    return { ...camelize(res.data), requestId: res.requestId };
  }

  /** `POST /chat/v1/chat` (deprecated): `{text, sessionId}` → `{response, sessionId, requestId, deprecation}`. */
  async chatV1(params) {
    const body = pick(params, ['text', 'sessionId'], 'chatV1');
    const res = await this._request('POST', '/chat/v1/chat', { ...params, body });
    return {
      ...camelize(res.data),
      requestId: res.requestId,
      deprecation: {
        deprecated: res.headers.get('deprecation') === 'true',
        sunset: res.headers.get('sunset') ?? undefined,
        link: res.headers.get('link') ?? undefined,
      },
    };
  }

  /** `GET /chat/v2/sessions/{id}`: the caller's session with its turns. */
  async getSession(sessionId, options = {}) {
    pick(options, [], 'getSession');
    const res = await this._request('GET', sessionPath(sessionId), options);
    return { ...camelize(res.data), requestId: res.requestId };
  }

  /** `DELETE /chat/v2/sessions/{id}`: end the session (and close this client's socket of it). */
  async endSession(sessionId, options = {}) {
    pick(options, [], 'endSession');
    const res = await this._request('DELETE', sessionPath(sessionId), options);
    this._sockets.get(sessionId)?.conn?.close(1000, 'session ended');
    return { ...camelize(res.data), requestId: res.requestId };
  }

  /** `GET /health` (no key needed): the status report, also when it is `unhealthy` (HTTP 503). */
  async health(options = {}) {
    pick(options, [], 'health');
    const res = await this._request('GET', '/health', { ...options, allow: [503], envelope: false });
    return camelize(res.body);
  }

  /** `GET /readiness` (no key needed): `{ready, checks}`, also when not ready (HTTP 503). */
  async readiness(options = {}) {
    pick(options, [], 'readiness');
    const res = await this._request('GET', '/readiness', { ...options, allow: [503], envelope: false });
    return camelize(res.body);
  }

  // -- streaming -------------------------------------------------------------------------------------

  /**
   * Stream one chat over the session's WebSocket. Returns a `ChatStream` at once: await it for the
   * answer, iterate it for the events, `cancel()` it to stop the run.
   */
  streamChat(params = {}) {
    return new ChatStream(this, params);
  }

  /**
   * Close every WebSocket of this client now; chats still open on them reject with `ConnectionError`
   * (not retried). A later `streamChat()` opens a new connection.
   */
  close() {
    this._generation += 1;
    for (const entry of this._sockets.values()) entry.conn?.close(1000, 'client closed');
    this._sockets.clear();
  }

  /** The open connection of `sessionId`, opened now if there is none (one attempt; callers retry). */
  async _connection(sessionId, signal) {
    let entry = this._sockets.get(sessionId);
    if (entry?.conn && !entry.conn.isOpen) {
      this._sockets.delete(sessionId);
      entry = undefined;
    }
    if (entry?.conn) return entry.conn;
    if (!entry) {
      entry = {};
      const url = `${this.wsUrl}/chat/ws/${encodeURIComponent(this.clientId)}/${encodeURIComponent(sessionId)}`;
      entry.opening = webSocketClass(this._WebSocket)
        .then((WebSocket) =>
          openConnection({
            url,
            apiKey: this.apiKey,
            WebSocket,
            timeoutMs: Math.min(this.timeoutMs, CONNECT_TIMEOUT_MS),
            idleTimeoutMs: this.wsIdleTimeoutMs,
          }),
        )
        .then(
          (conn) => {
            entry.opening = undefined;
            if (this._sockets.get(sessionId) !== entry) {
              conn.close(1000, 'client closed'); // close() was called while it opened
              throw new ConnectionError('the client was closed while the WebSocket opened');
            }
            entry.conn = conn;
            conn.onGone = () => {
              if (this._sockets.get(sessionId) === entry) this._sockets.delete(sessionId);
            };
            return conn;
          },
          (error) => {
            if (this._sockets.get(sessionId) === entry) this._sockets.delete(sessionId);
            throw error;
          },
        );
      entry.opening.catch(() => {}); // observed by every caller below
      this._sockets.set(sessionId, entry);
    }
    return raceAbort(entry.opening, signal);
  }

  /**
   * One REST call with the retry rules: 429/503/504, connection errors and timeouts are retried up to
   * `maxRetries` times, waiting `Retry-After` when the server sent one, else the backoff.
   */
  async _request(method, path, options = {}) {
    const { body, signal, allow = [], envelope = true } = options;
    const timeoutMs = options.timeoutMs ?? this.timeoutMs;
    const maxRetries = options.maxRetries ?? this.maxRetries;
    const { requestId } = options; // the same on every attempt: one logical request
    for (let attempt = 0; ; attempt++) {
      try {
        return await this._once(method, path, { body, signal, timeoutMs, requestId, allow, envelope });
      } catch (error) {
        const delay = signal?.aborted ? undefined : retryDelayMs(error, attempt, maxRetries);
        if (delay === undefined) throw error;
        await sleep(delay, signal);
      }
    }
  }

  async _once(method, path, { body, signal, timeoutMs, requestId, allow, envelope }) {
    const headers = { Accept: 'application/json' };
    if (this.apiKey) headers.Authorization = `Bearer ${this.apiKey}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (requestId !== undefined) headers['X-Request-ID'] = requestId;
    const limit = deadline(signal, timeoutMs);
    let res;
    let text;
    try {
      res = await this._fetch(`${this.baseUrl}${path}`, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        signal: limit.signal,
      });
      text = await res.text();
    } catch (cause) {
      if (signal?.aborted) throw abortReason(signal);
      if (limit.timedOut()) {
        throw new TimeoutError(`${method} ${path} got no answer within ${timeoutMs} ms`, {
          statusCode: undefined,
          requestId,
          details: { timeoutMs },
          cause,
        });
      }
      throw new ConnectionError(`${method} ${this.baseUrl}${path} failed: ${describe(cause)}`, {
        cause,
        requestId,
      });
    } finally {
      limit.dispose();
    }
    let parsed;
    try {
      parsed = text === '' ? undefined : JSON.parse(text);
    } catch {
      parsed = undefined;
    }
    const headerId = res.headers.get('x-request-id') ?? undefined;
    if (!res.ok && !allow.includes(res.status)) {
      throw errorFromResponse({
        status: res.status,
        body: parsed,
        requestId: headerId ?? requestId,
        retryAfter: parseRetryAfter(res.headers.get('retry-after')),
      });
    }
    if (parsed === undefined || (envelope && (parsed === null || typeof parsed !== 'object'))) {
      throw new OrchestraError(`${method} ${path}: the server's answer is not JSON`, {
        code: 'INVALID_RESPONSE',
        statusCode: res.status,
        requestId: headerId,
      });
    }
    return {
      status: res.status,
      headers: res.headers,
      body: parsed,
      data: envelope ? parsed.data : parsed,
      requestId: (envelope && parsed.metadata?.request_id) || headerId,
    };
  }
}

function describe(cause) {
  const inner = cause?.cause;
  const code = inner?.code ?? cause?.code;
  const message = inner?.message ?? cause?.message ?? String(cause);
  return code && !message.includes(code) ? `${code} ${message}` : message;
}

function raceAbort(promise, signal) {
  if (!signal) return promise;
  if (signal.aborted) return Promise.reject(abortReason(signal));
  return new Promise((resolve, reject) => {
    const onAbort = () => reject(abortReason(signal));
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (value) => {
        signal.removeEventListener('abort', onAbort);
        resolve(value);
      },
      (error) => {
        signal.removeEventListener('abort', onAbort);
        reject(error);
      },
    );
  });
}
