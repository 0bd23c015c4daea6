// streamChat against the live server: the handle (await, iterate, callbacks, cancel, abort), errors
// from the WebSocket, reconnects after the server drops a socket, the browser's subprotocol auth.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import { WebSocket as NodeWebSocket } from 'ws';

import {
  AIOrchestra,
  AuthenticationError,
  CancelledError,
  ChatStream,
  ConnectionError,
  StreamInterruptedError,
  TimeoutError,
  ValidationError,
} from '@ai-orchestra/sdk';
import { API_KEY, BASE_URL, LIVE, UUID, sleep, startProxy, testKey } from './helpers.js';

const LONG = { swarmType: 'long-debate', optimizationMode: 'quality' }; // about a second of work
const QUICK = { swarmType: 'research-team', optimizationMode: 'lite' };

/** The first token event (read without leaving a loop early, which would cancel the chat). */
async function firstToken(stream) {
  const events = stream[Symbol.asyncIterator]();
  for (;;) {
    const { value, done } = await events.next();
    if (done) throw new Error('the stream ended without a token');
    if (value.type === 'token') return value;
  }
}

describe('streamChat', { skip: LIVE }, () => {
  const clients = [];
  const proxies = [];
  const client = (options = {}) => {
    const c = new AIOrchestra({ apiKey: testKey(2), baseUrl: BASE_URL, ...options });
    clients.push(c);
    return c;
  };
  after(async () => {
    for (const c of clients) c.close();
    for (const p of proxies) await p.close();
  });

  test('await: the final answer, attributed tokens through onToken and onEvent', async () => {
    const tokens = [];
    const events = [];
    const stream = client().streamChat({
      message: 'Write merge intervals',
      swarmType: 'coding-debate',
      optimizationMode: 'lite',
      onToken: (token, event) => tokens.push([token, event]),
      onEvent: (event) => events.push(event),
    });
    assert.ok(stream instanceof ChatStream);
    assert.match(stream.requestId, UUID);
    assert.match(stream.sessionId, /^js-/);
    assert.equal(stream.done, false);
    const result = await stream;
    assert.equal(stream.done, true);
    assert.equal(result.requestId, stream.requestId);
    assert.equal(result.sessionId, stream.sessionId);
    assert.equal(result.metadata.swarmType, 'coding-debate');
    assert.ok(result.response.length > 0);
    assert.ok(tokens.length > 0);
    // every agent's tokens arrive attributed to it; joined per (agent, round) they are its turn
    const texts = new Map();
    for (const [token, event] of tokens) {
      assert.equal(event.type, 'token');
      assert.equal(event.token, token);
      assert.equal(event.requestId, stream.requestId);
      const key = `${event.agent}/${event.round}`;
      texts.set(key, (texts.get(key) ?? '') + token);
    }
    const steps = result.metadata.processingSteps;
    assert.deepEqual([...texts.keys()].sort(), steps.map((s) => `${s.agent}/${s.round}`).sort());
    const judge = steps.find((s) => s.role === 'judge');
    assert.equal(texts.get(`${judge.agent}/${judge.round}`), result.response);
    assert.deepEqual(new Set(events.map((e) => e.type)), new Set(['turn_start', 'token', 'turn_end', 'result']));
    assert.equal(events.at(-1).type, 'result');
    assert.deepEqual(events.at(-1).result, result);
    const end = events.find((e) => e.type === 'turn_end');
    assert.ok(end.agent && end.role && Number.isInteger(end.round));
    assert.equal(typeof end.step.latencyS, 'number');
  });

  test('async iteration: turn_start / token / turn_end with agent, role, round, then the result', async () => {
    const stream = client().streamChat({ message: 'Research actors', ...QUICK });
    const seen = [];
    for await (const event of stream) seen.push(event);
    const last = seen.pop();
    assert.equal(last.type, 'result');
    assert.equal(last.result.requestId, stream.requestId);
    for (const event of seen) {
      assert.ok(['turn_start', 'token', 'turn_end'].includes(event.type), event.type);
      assert.equal(typeof event.agent, 'string');
      assert.equal(typeof event.role, 'string');
      assert.ok(Number.isInteger(event.round));
    }
    const roles = new Set(seen.map((e) => e.role));
    assert.ok(roles.has('synthesizer'), [...roles].join());
    // a second iteration (and await) after the end replays the same events
    const again = [];
    for await (const event of stream) again.push(event);
    assert.equal(again.length, seen.length + 1);
    assert.deepEqual(await stream, last.result);
  });

  test('a session over several streamed chats on one connection, visible over REST', async () => {
    const c = client();
    const sessionId = `js-stream-session-${Date.now()}`;
    const a = await c.streamChat({ message: 'first', sessionId, ...QUICK });
    const b = await c.streamChat({ message: 'second', sessionId, ...QUICK });
    assert.equal(a.sessionId, sessionId);
    assert.equal(b.sessionId, sessionId);
    const session = await c.getSession(sessionId);
    assert.deepEqual(
      session.turns.map((t) => t.message),
      ['first', 'second'],
    );
    // two chats at once on the same session: the server runs them in order
    const [x, y] = await Promise.all([
      c.streamChat({ message: 'third', sessionId, ...QUICK }),
      c.streamChat({ message: 'fourth', sessionId, ...QUICK }),
    ]);
    assert.notEqual(x.requestId, y.requestId);
    assert.equal((await c.getSession(sessionId)).turns.length, 4);
  });

  test('cancel(): sends cancel for the running chat; the handle rejects with CancelledError', async () => {
    const c = client();
    const stream = c.streamChat({ message: 'a long debate', ...LONG });
    const token = await firstToken(stream);
    assert.equal(token.requestId, stream.requestId);
    const started = Date.now();
    assert.equal(await stream.cancel(), true);
    const error = await stream.then(
      () => assert.fail('a cancelled stream must not resolve'),
      (e) => e,
    );
    assert.ok(error instanceof CancelledError, String(error));
    assert.equal(error.code, 'CANCELLED');
    assert.equal(error.requestId, stream.requestId);
    assert.ok(Date.now() - started < 3000);
    // iteration replays the events, then throws the same error; no result event
    const events = [];
    await assert.rejects(async () => {
      for await (const event of stream) events.push(event);
    }, CancelledError);
    assert.ok(events.length > 0 && !events.some((e) => e.type === 'result'));
    assert.equal(await stream.cancel(), false); // already over
    // the session goes on: the next chat on it answers
    const next = await c.streamChat({ message: 'after the cancel', sessionId: stream.sessionId, ...QUICK });
    assert.equal(next.sessionId, stream.sessionId);
    const turns = (await c.getSession(stream.sessionId)).turns.map((t) => t.message);
    assert.deepEqual(turns, ['after the cancel']);
  });

  test('break out of the iteration cancels the chat; an AbortSignal stops it', async () => {
    const c = client();
    const stream = c.streamChat({ message: 'a long debate', ...LONG });
    for await (const event of stream) if (event.type === 'token') break;
    await assert.rejects(stream, CancelledError);

    const controller = new AbortController();
    const aborted = c.streamChat({
      message: 'a long debate',
      ...LONG,
      signal: controller.signal,
      onToken: () => controller.abort(),
    });
    const error = await aborted.catch((e) => e);
    assert.equal(error.name, 'AbortError');
    assert.equal(aborted.done, true);
    // the server was told: the aborted run stored no turn, the next chat on the session answers
    const next = await c.streamChat({ message: 'next', sessionId: aborted.sessionId, ...QUICK });
    assert.ok(next.response);
    const turns = (await c.getSession(aborted.sessionId)).turns.map((t) => t.message);
    assert.deepEqual(turns, ['next']);
  });

  test('cancel() before the chat is sent, and a timeout, end the handle', async () => {
    const stream = client().streamChat({ message: 'never sent', ...QUICK });
    assert.equal(await stream.cancel(), true);
    await assert.rejects(stream, CancelledError);
    const slow = client({ timeoutMs: 300, maxRetries: 0 }).streamChat({ message: 'too slow', ...LONG });
    const error = await slow.catch((e) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.equal(error.statusCode, undefined);
    assert.equal(error.requestId, slow.requestId);
  });

  test('errors over the WebSocket map to the same classes, with the request id', async () => {
    const bad = new AIOrchestra({ apiKey: 'not-a-key', baseUrl: BASE_URL });
    const auth = await bad.streamChat({ message: 'x' }).catch((e) => e);
    assert.ok(auth instanceof AuthenticationError, String(auth));
    assert.equal(auth.statusCode, 401);
    const stream = client().streamChat({ message: 'x', optimizationMode: 'turbo' });
    const invalid = await stream.catch((e) => e);
    assert.ok(invalid instanceof ValidationError, String(invalid));
    assert.equal(invalid.code, 'VALIDATION_ERROR');
    assert.equal(invalid.statusCode, 400);
    assert.equal(invalid.requestId, stream.requestId);
    assert.match(invalid.details.field, /optimization_mode/);
    const team = await client().streamChat({ message: 'x', swarmType: 'no-such-team' }).catch((e) => e);
    assert.ok(team instanceof ValidationError, String(team));
    // a callback that throws fails the chat with its error (and stops the run)
    const oops = new Error('my callback broke');
    const thrown = await client()
      .streamChat({ message: 'x', ...QUICK, onToken: () => { throw oops; } })
      .catch((e) => e);
    assert.equal(thrown, oops);
  });

  test('reconnects after the server drops the socket between chats (same session, new connection)', async () => {
    const proxy = await startProxy(BASE_URL);
    proxies.push(proxy);
    const c = client({ apiKey: testKey(3), baseUrl: proxy.url });
    const sessionId = `js-reconnect-${Date.now()}`;
    await c.streamChat({ message: 'before the drop', sessionId, ...QUICK });
    assert.equal(proxy.state.wsConnections, 1);

    assert.equal(proxy.dropWebSockets(), 1); // abrupt: no close frame (1006)
    const second = await c.streamChat({ message: 'right after the drop', sessionId, ...QUICK });
    assert.equal(second.sessionId, sessionId);
    assert.equal(proxy.state.wsConnections, 2);

    await sleep(100);
    proxy.goingAway(); // a close frame 1001, as the server sends when it drops a client
    await sleep(100);
    await c.streamChat({ message: 'after going away', sessionId, ...QUICK });
    assert.equal(proxy.state.wsConnections, 3);

    // the next openings fail twice: the SDK retries them with backoff
    proxy.dropWebSockets();
    await sleep(100); // the client has seen the drop: its next chat opens a connection
    proxy.refuse(2);
    const before = proxy.state.wsAttempts;
    await c.streamChat({ message: 'after two refused connects', sessionId, ...QUICK });
    const times = proxy.state.attemptTimes.slice(before);
    assert.equal(times.length, 3);
    assert.ok(times[1] - times[0] >= 370, `first retry after ${times[1] - times[0]} ms`);
    assert.ok(times[2] - times[1] >= 740, `second retry after ${times[2] - times[1]} ms`);

    const turns = (await c.getSession(sessionId)).turns.map((t) => t.message);
    assert.deepEqual(turns, ['before the drop', 'right after the drop', 'after going away', 'after two refused connects']);

    // out of retries: a ConnectionError
    proxy.dropWebSockets();
    await sleep(100);
    proxy.refuse(10);
    const gone = await client({ apiKey: testKey(3), baseUrl: proxy.url, maxRetries: 1 })
      .streamChat({ message: 'x', ...QUICK })
      .catch((e) => e);
    assert.ok(gone instanceof ConnectionError && !(gone instanceof StreamInterruptedError), String(gone));
    proxy.refuse(0);
  });

  test('a drop mid-run rejects with StreamInterruptedError and is not retried', async () => {
    const proxy = await startProxy(BASE_URL);
    proxies.push(proxy);
    const c = client({ apiKey: testKey(3), baseUrl: proxy.url });
    const stream = c.streamChat({ message: 'a long debate', ...LONG });
    await firstToken(stream);
    proxy.dropWebSockets();
    const error = await stream.catch((e) => e);
    assert.ok(error instanceof StreamInterruptedError, String(error));
    assert.ok(error instanceof ConnectionError);
    assert.equal(error.code, 'STREAM_INTERRUPTED');
    assert.equal(error.requestId, stream.requestId);
    assert.match(error.message, /cannot resume a stream mid-run/);
    assert.equal(proxy.state.wsConnections, 1); // not sent again
    // the session is usable again right away
    const next = await c.streamChat({ message: 'again', sessionId: stream.sessionId, ...QUICK });
    assert.ok(next.response);
  });

  test('cancel() while reconnecting ends the chat at once; client.close() ends open chats, not retried', async () => {
    const proxy = await startProxy(BASE_URL);
    proxies.push(proxy);
    const c = client({ apiKey: testKey(3), baseUrl: proxy.url });
    proxy.refuse(100);
    const waiting = c.streamChat({ message: 'never connects', ...QUICK });
    await sleep(150); // the first opening failed: the chat waits out its backoff
    const attempts = proxy.state.wsAttempts;
    assert.equal(await waiting.cancel(), true);
    await assert.rejects(waiting, CancelledError);
    await sleep(1200);
    assert.equal(proxy.state.wsAttempts, attempts, 'no opening after the cancel');
    proxy.refuse(0);

    const running = c.streamChat({ message: 'a long debate', ...LONG });
    await firstToken(running);
    const opened = proxy.state.wsConnections;
    c.close();
    const error = await running.catch((e) => e);
    assert.ok(error instanceof ConnectionError && !(error instanceof StreamInterruptedError), String(error));
    assert.match(error.message, /client closed/);
    await sleep(600);
    assert.equal(proxy.state.wsConnections, opened, 'not sent again');
    const after = await c.streamChat({ message: 'after close()', sessionId: running.sessionId, ...QUICK });
    assert.ok(after.response); // a new connection
    assert.equal(proxy.state.wsConnections, opened + 1);
  });

  test('browsers: a standard WebSocket gets the key in the bearer.<key> subprotocol', async () => {
    const offered = [];
    const selected = [];
    // What a browser has: new WebSocket(url, protocols) and no way to set headers.
    class BrowserWebSocket {
      constructor(url, protocols) {
        assert.equal(arguments.length, 2);
        offered.push(protocols);
        this._ws = new NodeWebSocket(url, protocols);
        this._ws.onopen = (e) => {
          selected.push(this._ws.protocol);
          this.onopen?.(e);
        };
        this._ws.onmessage = (e) => this.onmessage?.({ data: e.data });
        this._ws.onclose = (e) => this.onclose?.({ code: e.code, reason: e.reason });
        this._ws.onerror = (e) => this.onerror?.(e);
      }
      get readyState() {
        return this._ws.readyState;
      }
      send(data) {
        this._ws.send(data);
      }
      close(code, reason) {
        this._ws.close(code, reason);
      }
    }
    const key = testKey(4);
    const viaOption = await client({ apiKey: key, WebSocket: BrowserWebSocket }).streamChat({ message: 'hi', ...QUICK });
    assert.ok(viaOption.response);
    assert.deepEqual(offered[0], ['orchestra.v2', `bearer.${key}`]);
    assert.equal(selected[0], 'orchestra.v2');

    // with a global WebSocket (browsers, Node >= 22) the SDK uses it, and does not load `ws`
    const saved = globalThis.WebSocket;
    globalThis.WebSocket = BrowserWebSocket;
    try {
      const viaGlobal = await client({ apiKey: key }).streamChat({ message: 'hi again', ...QUICK });
      assert.ok(viaGlobal.response);
      assert.equal(offered.length, 2);
    } finally {
      if (saved === undefined) delete globalThis.WebSocket;
      else globalThis.WebSocket = saved;
    }
    const wrong = await client({ apiKey: 'wrong', WebSocket: BrowserWebSocket }).streamChat({ message: 'x' }).catch((e) => e);
    assert.ok(wrong instanceof AuthenticationError, String(wrong));
  });

  test('Node: the key goes in the Authorization header, not in the subprotocol', async () => {
    const seen = [];
    class Spy extends NodeWebSocket {
      constructor(url, protocols, options) {
        super(url, protocols, options);
        seen.push({ protocols, options });
      }
    }
    await client({ apiKey: API_KEY, WebSocket: Spy }).streamChat({ message: 'hi', ...QUICK });
    assert.deepEqual(seen[0].protocols, ['orchestra.v2']);
    assert.equal(seen[0].options.headers.Authorization, `Bearer ${API_KEY}`);
  });
});
