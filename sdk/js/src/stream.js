// The handle `client.streamChat()` returns: awaitable, cancellable, async-iterable.

import { camelize } from './case.js';
import {
  CancelledError,
  ConnectionError,
  StreamInterruptedError,
  TimeoutError,
  ValidationError,
} from './errors.js';
import { deadline, retryDelayMs, sleep } from './retry.js';

const noop = () => {};

export function randomId() {
  const c = globalThis.crypto;
  if (typeof c?.randomUUID === 'function') return c.randomUUID();
  const bytes = new Uint8Array(16);
  if (typeof c?.getRandomValues === 'function') c.getRandomValues(bytes);
  else for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = [...bytes].map((b) => b.toString(16).padStart(2, '0')).join('');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The request id of retry `attempt` of a chat whose first id was `base` (ids of one connection are unique). */
export function retryRequestId(base, attempt) {
  if (attempt === 0) return base;
  const suffix = `.retry${attempt}`;
  return `${base.slice(0, 128 - suffix.length)}${suffix}`;
}

const KNOWN = new Set([
  'message',
  'sessionId',
  'optimizationMode',
  'swarmType',
  'useMemory',
  'userContext',
  'requestId',
  'onToken',
  'onEvent',
  'signal',
  'timeoutMs',
  'maxRetries',
]);

export class ChatStream {
  /** @param client the AIOrchestra client (its `_connection(sessionId, signal)` gives a Connection). */
  constructor(client, params = {}) {
    const unknown = Object.keys(params).filter((k) => !KNOWN.has(k));
    this._client = client;
    this._generation = client._generation; // client.close() ends the chats started before it
    /** The session the chat belongs to (generated when not given). */
    this.sessionId = params.sessionId ?? `js-${randomId()}`;
    this._baseRequestId = params.requestId ?? randomId();
    /** The id of the chat on the wire (a retry gets `<id>.retry<n>`). */
    this.requestId = this._baseRequestId;
    this._onToken = params.onToken;
    this._onEvent = params.onEvent;
    this._timeoutMs = params.timeoutMs ?? client.timeoutMs;
    this._maxRetries = params.maxRetries ?? client.maxRetries;
    this._frame = {
      message: params.message,
      ...(params.userContext !== undefined && { context: params.userContext }),
      ...(params.optimizationMode !== undefined && { optimization_mode: params.optimizationMode }),
      ...(params.swarmType !== undefined && { swarm_type: params.swarmType }),
      ...(params.useMemory !== undefined && { use_memory: params.useMemory }),
    };
    this._events = [];
    this._waiters = [];
    this._settled = false;
    this._error = undefined;
    this._result = undefined;
    this._received = false; // a frame of this chat arrived: it cannot be sent again
    this._conn = undefined; // the connection the chat was sent on
    this._sent = false;
    this._observed = false;
    this._abort = new AbortController(); // user signal, local cancel
    const signal = params.signal;
    this._unlisten = noop;
    if (signal) {
      const onAbort = () => {
        this._markObserved(); // an aborted chat rejects with the signal's reason, never unhandled
        this._abort.abort(signal.reason);
      };
      if (signal.aborted) onAbort();
      else {
        signal.addEventListener('abort', onAbort, { once: true });
        this._unlisten = () => signal.removeEventListener('abort', onAbort);
      }
    }
    const run =
      unknown.length > 0
        ? Promise.reject(
            new ValidationError(`unknown streamChat option(s): ${unknown.join(', ')}`, {
              details: { field: unknown[0], reason: 'unknown option' },
            }),
          )
        : this._run();
    this._promise = run.then(
      (result) => {
        const failed = this._settle(undefined, result);
        if (failed !== undefined) throw failed;
        return result;
      },
      (error) => {
        throw this._settle(error);
      },
    );
    if (this._observed) this._promise.catch(noop);
  }

  get [Symbol.toStringTag]() {
    return 'ChatStream';
  }

  /** Whether the chat has ended (answered, failed or cancelled). */
  get done() {
    return this._settled;
  }

  then(onFulfilled, onRejected) {
    this._markObserved();
    return this._promise.then(onFulfilled, onRejected);
  }

  catch(onRejected) {
    return this.then(undefined, onRejected);
  }

  finally(onFinally) {
    this._markObserved();
    return this._promise.finally(onFinally);
  }

  /**
   * Cancel the chat: sends the WebSocket `cancel` command for it. Resolves to `true` when the server
   * cancelled it (the handle then rejects with `CancelledError`), `false` when it had already ended.
   */
  async cancel() {
    this._markObserved();
    if (this._settled) return false;
    if (!this._sent || !this._conn?.isOpen) {
      this._abort.abort(
        new CancelledError(`chat ${this.requestId} was cancelled before it was sent`, {
          requestId: this.requestId,
        }),
      );
      return true;
    }
    try {
      const result = await this._conn.command('cancel', { request_id: this.requestId });
      return Array.isArray(result?.cancelled) && result.cancelled.includes(this.requestId);
    } catch {
      return false;
    }
  }

  /**
   * Every event of the chat in order, from the first (even if iteration starts late): `turn_start`,
   * `token`, `turn_end` (each with agent, role, round), then `{type: 'result', result}`. A failed chat
   * throws its error after its events. Leaving the loop early (`break`) cancels the chat.
   */
  [Symbol.asyncIterator]() {
    this._markObserved();
    let i = 0;
    let finished = false;
    const iterator = {
      next: async () => {
        for (;;) {
          if (finished) return { value: undefined, done: true };
          if (i < this._events.length) return { value: this._events[i++], done: false };
          if (this._settled) {
            finished = true;
            if (this._error !== undefined) throw this._error;
            return { value: undefined, done: true };
          }
          await new Promise((resolve) => this._waiters.push(resolve));
        }
      },
      return: async () => {
        finished = true;
        if (!this._settled) await this.cancel();
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]() {
        return iterator;
      },
    };
    return iterator;
  }

  _markObserved() {
    if (this._observed) return;
    this._observed = true;
    this._promise?.catch(noop); // errors reach the caller through what they observe
  }

  /** End the chat; returns the error it ended with (`undefined` when answered). */
  _settle(error, result) {
    if (this._settled) return this._error;
    if (error === undefined) {
      const event = { type: 'result', result };
      this._events.push(event);
      try {
        this._onEvent?.(event);
      } catch (thrown) {
        error = thrown; // the callback's error fails the chat, as during the stream
      }
    }
    if (error === undefined) this._result = result;
    else this._error = error;
    this._settled = true;
    this._unlisten();
    for (const wake of this._waiters.splice(0)) wake();
    return error;
  }

  _push(event) {
    this._events.push(event);
    for (const wake of this._waiters.splice(0)) wake();
    if (event.type === 'token') this._onToken?.(event.token, event);
    this._onEvent?.(event);
  }

  async _run() {
    const limit = deadline(this._abort.signal, this._timeoutMs);
    try {
      for (let attempt = 0; ; attempt++) {
        this.requestId = retryRequestId(this._baseRequestId, attempt);
        try {
          return await this._attempt(limit.signal);
        } catch (raw) {
          const error = this._stopped(limit) ?? raw;
          this._sent = false; // that attempt is over: a cancel() from now on is local
          const delay =
            this._received || limit.signal.aborted || this._client._generation !== this._generation
              ? undefined // events delivered, stopped here, or client.close() since it started
              : retryDelayMs(error, attempt, this._maxRetries);
          if (delay === undefined) throw error;
          try {
            await sleep(delay, limit.signal);
          } catch (stop) {
            throw this._stopped(limit) ?? stop;
          }
        }
      }
    } finally {
      limit.dispose();
    }
  }

  /** The error when the chat was stopped here (abort, local cancel, timeout); tells the server too. */
  _stopped(limit) {
    if (!limit.signal.aborted) return undefined;
    if (this._sent && this._conn?.isOpen && !this._settled) {
      this._conn.command('cancel', { request_id: this.requestId }).catch(noop);
    }
    if (limit.timedOut()) {
      return new TimeoutError(`the streamed chat did not finish within ${this._timeoutMs} ms`, {
        statusCode: undefined,
        requestId: this.requestId,
        details: { timeoutMs: this._timeoutMs },
      });
    }
    return this._abort.signal.reason;
  }

  async _attempt(signal) {
    this._sent = false;
    const conn = await this._client._connection(this.sessionId, signal);
    const requestId = this.requestId;
    return new Promise((resolve, reject) => {
      const done = (error, value) => {
        signal.removeEventListener('abort', onAbort);
        conn.removeChat(requestId);
        if (error) reject(error);
        else resolve(value);
      };
      const onAbort = () => done(signal.reason ?? new CancelledError('aborted'));
      const listener = {
        onStream: (data) => {
          this._received = true;
          const event = camelize({ ...data, type: data.event });
          delete event.event;
          try {
            this._push(event);
          } catch (error) {
            // a callback threw: stop the run and fail with that error
            conn.command('cancel', { request_id: requestId }).catch(noop);
            done(error);
          }
        },
        onResult: (data) => {
          this._received = true;
          done(undefined, camelize(data));
        },
        onError: (error) => done(error),
        onClose: (code, reason, cause, byClient) => {
          if (byClient) {
            done(
              new ConnectionError(`the client closed the connection (${reason}) while chat ${requestId} was open`, {
                requestId,
                details: { closeCode: code, closeReason: reason },
              }),
            );
          } else if (this._received) {
            done(
              new StreamInterruptedError(
                `the WebSocket connection dropped (close code ${code}) while chat ${requestId} was ` +
                  'running; the server cannot resume a stream mid-run and stops the run when its ' +
                  'connection goes: send the message again (the session keeps its earlier turns)',
                { requestId, cause, details: { closeCode: code, closeReason: reason || undefined } },
              ),
            );
          } else {
            done(
              new ConnectionError(
                `the WebSocket connection closed (code ${code}) before chat ${requestId} started`,
                { requestId, cause, details: { closeCode: code, closeReason: reason || undefined } },
              ),
            );
          }
        },
      };
      if (signal.aborted) {
        onAbort();
        return;
      }
      signal.addEventListener('abort', onAbort, { once: true });
      conn.addChat(requestId, listener);
      this._conn = conn;
      try {
        conn.send('chat', { ...this._frame, request_id: requestId });
        this._sent = true;
      } catch (error) {
        done(error);
      }
    });
  }
}
