// One WebSocket connection per session (WS /chat/ws/{client_id}/{session_id}, spec §7).
//
// Frames are matched to their chat by request_id; command results come back in the order the commands
// were sent (the server handles one frame after the other). While a connection has no chat or command
// in flight it is idle: in Node its socket stops holding the process open (unref), and after
// `idleTimeoutMs` it is closed. A connection that is gone is simply replaced by the next chat.

import {
  AuthenticationError,
  ConnectionError,
  RateLimitError,
  TimeoutError,
  ValidationError,
  errorFromFrame,
} from './errors.js';
import { abortReason } from './retry.js';

export const SUBPROTOCOL = 'orchestra.v2';
const OPEN = 1;

let loading;

/** The WebSocket class: the given one, else the global one (browsers, Node >= 22), else `ws` (Node 20). */
export async function webSocketClass(given) {
  if (given) return given;
  if (typeof globalThis.WebSocket === 'function') return globalThis.WebSocket;
  loading ??= import('ws').then((m) => m.WebSocket ?? m.default);
  return loading;
}

/** `ws` (Node) can send headers on the upgrade; a standard WebSocket cannot. */
export function canSendHeaders(WS) {
  return typeof WS?.prototype?.ping === 'function' && typeof WS?.prototype?.on === 'function';
}

function closeError(code, reason, cause) {
  const why = reason ? `: ${reason}` : '';
  if (code === 4401) {
    return new AuthenticationError(`WebSocket authentication failed${why}`, { statusCode: 401 });
  }
  if (code === 4429) {
    return new RateLimitError(`WebSocket opening was rate-limited${why}`, { statusCode: 429 });
  }
  if (code === 1008) {
    return new ValidationError(`invalid client_id or session_id in the WebSocket URL${why}`, {
      statusCode: 400,
    });
  }
  const detail = cause?.message ? ` (${cause.message})` : '';
  return new ConnectionError(`WebSocket closed with code ${code}${why}${detail}`, {
    cause,
    details: { closeCode: code, closeReason: reason || undefined },
  });
}

function parse(raw) {
  try {
    const frame = JSON.parse(typeof raw === 'string' ? raw : String(raw));
    return frame !== null && typeof frame === 'object' ? frame : undefined;
  } catch {
    return undefined;
  }
}

/**
 * Open a connection (one attempt): resolves once the server's `connected` frame arrived.
 * Rejects with `AuthenticationError` (4401), `RateLimitError` (4429), `ValidationError` (1008),
 * `ConnectionError`, `TimeoutError` after `timeoutMs`, or the signal's reason.
 */
export function openConnection({ url, apiKey, WebSocket: WS, timeoutMs, signal, idleTimeoutMs }) {
  return new Promise((resolve, reject) => {
    if (signal?.aborted) {
      reject(abortReason(signal));
      return;
    }
    const headers = canSendHeaders(WS);
    const protocols = headers || !apiKey ? [SUBPROTOCOL] : [SUBPROTOCOL, `bearer.${apiKey}`];
    let ws;
    try {
      ws = headers
        ? new WS(url, protocols, { headers: apiKey ? { Authorization: `Bearer ${apiKey}` } : {} })
        : new WS(url, protocols);
    } catch (cause) {
      reject(new ConnectionError(`could not open ${url}: ${cause?.message ?? cause}`, { cause }));
      return;
    }
    let settled = false;
    let lastError;
    const onAbort = () => finish(abortReason(signal));
    const timer = setTimeout(
      () =>
        finish(
          new TimeoutError(`the WebSocket did not open within ${timeoutMs} ms`, {
            statusCode: undefined,
            details: { timeoutMs },
          }),
        ),
      timeoutMs,
    );
    signal?.addEventListener('abort', onAbort, { once: true });
    function finish(error, value) {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      signal?.removeEventListener('abort', onAbort);
      if (error) {
        ws.onmessage = null;
        ws.onclose = null;
        try {
          ws.close();
        } catch {
          // closing a socket that never opened may throw; it is gone either way
        }
        reject(error);
      } else {
        resolve(value);
      }
    }
    ws.onerror = (event) => {
      lastError = event?.error ?? lastError;
    };
    ws.onclose = (event) => finish(closeError(event.code, event.reason, lastError));
    ws.onmessage = (event) => {
      const frame = parse(event.data);
      if (frame?.type === 'control' && frame.data?.action === 'connected') {
        finish(undefined, new Connection(ws, frame.data, { idleTimeoutMs }));
      }
    };
  });
}

export class Connection {
  constructor(ws, hello, { idleTimeoutMs }) {
    this.ws = ws;
    /** The server's `connected` frame data: session_id, client_id, version. */
    this.hello = hello;
    this.closed = false;
    this.closeCode = undefined;
    this.chats = new Map();
    this.commands = [];
    this.onGone = undefined;
    this._idleTimeoutMs = idleTimeoutMs;
    this._idleTimer = undefined;
    this._lastError = undefined;
    ws.onerror = (event) => {
      this._lastError = event?.error ?? this._lastError;
    };
    ws.onmessage = (event) => this._onMessage(event.data);
    ws.onclose = (event) => this._onClose(event.code, event.reason);
    this._update();
  }

  get isOpen() {
    return !this.closed && this.ws.readyState === OPEN;
  }

  /** Send one frame; throws `ConnectionError` when the socket is not open. */
  send(type, data) {
    if (!this.isOpen) throw new ConnectionError('the WebSocket connection is closed');
    try {
      this.ws.send(JSON.stringify({ type, data, timestamp: new Date().toISOString() }));
    } catch (cause) {
      throw new ConnectionError(`sending on the WebSocket failed: ${cause?.message ?? cause}`, { cause });
    }
  }

  /**
   * Route the frames of chat `requestId` to `listener`:
   * `{onStream(data), onResult(data), onError(error), onClose(code, reason, cause, byClient)}`.
   */
  addChat(requestId, listener) {
    this.chats.set(requestId, listener);
    this._update();
  }

  removeChat(requestId) {
    this.chats.delete(requestId);
    this._update();
  }

  /** Send a command; resolves to its `result`, rejects with the error frame's error. */
  command(name, args = {}) {
    return new Promise((resolve, reject) => {
      const entry = { name, resolve, reject };
      this.commands.push(entry);
      this._update();
      try {
        this.send('command', { command: name, args });
      } catch (error) {
        this._takeCommand(entry);
        reject(error);
      }
    });
  }

  /** Close from this side: chats still on it reject with `ConnectionError` (`byClient`). */
  close(code = 1000, reason = 'client closed') {
    if (this.closed) return;
    try {
      this.ws.close(code, reason);
    } catch {
      // already closing
    }
    this._onClose(code, reason, true);
  }

  _takeCommand(entry) {
    const i = entry ? this.commands.indexOf(entry) : 0;
    const [taken] = i >= 0 ? this.commands.splice(i, 1) : [];
    this._update();
    return taken;
  }

  _onMessage(raw) {
    const frame = parse(raw);
    if (!frame) return;
    const data = frame.data ?? {};
    if (frame.type === 'stream') {
      this.chats.get(data.request_id)?.onStream(data);
    } else if (frame.type === 'chat') {
      this.chats.get(data.request_id)?.onResult(data);
    } else if (frame.type === 'command') {
      this._takeCommand()?.resolve(data.result);
    } else if (frame.type === 'control' && data.action === 'error') {
      const error = errorFromFrame(data);
      const chat = data.request_id !== undefined ? this.chats.get(data.request_id) : undefined;
      if (chat) chat.onError(error);
      else if (data.request_id === undefined) this._takeCommand()?.reject(error);
    }
  }

  _onClose(code, reason, byClient = false) {
    if (this.closed) return;
    this.closed = true;
    this.closeCode = code;
    clearTimeout(this._idleTimer);
    const cause = this._lastError;
    for (const [, chat] of [...this.chats]) chat.onClose(code, reason, cause, byClient);
    this.chats.clear();
    for (const entry of this.commands.splice(0)) entry.reject(closeError(code, reason, cause));
    this.onGone?.(this);
  }

  /** Busy (a chat or command in flight): the socket holds the process open. Idle: it does not. */
  _update() {
    if (this.closed) return;
    const socket = this.ws._socket; // `ws` only: the net.Socket under it
    clearTimeout(this._idleTimer);
    this._idleTimer = undefined;
    if (this.chats.size > 0 || this.commands.length > 0) {
      socket?.ref?.();
      return;
    }
    socket?.unref?.();
    if (this._idleTimeoutMs != null && Number.isFinite(this._idleTimeoutMs)) {
      this._idleTimer = setTimeout(() => this.close(1000, 'idle'), this._idleTimeoutMs);
      this._idleTimer.unref?.();
    }
  }
}
