// Shared by the tests: the live server's URL and keys (from the environment), a TCP proxy that can
// drop connections, a scripted HTTP server.

import http from 'node:http';
import net from 'node:net';

/** The live server, or undefined: live tests are skipped without ORCHESTRA_BASE_URL. */
export const BASE_URL = process.env.ORCHESTRA_BASE_URL || undefined;
export const API_KEY = process.env.ORCHESTRA_API_KEY || undefined;
/** Extra keys, each with a fresh rate-limit bucket: `ORCHESTRA_TEST_KEYS` (comma-separated). */
export const TEST_KEYS = (process.env.ORCHESTRA_TEST_KEYS || '').split(',').filter(Boolean);
export const LIVE = BASE_URL && API_KEY ? false : 'set ORCHESTRA_BASE_URL and ORCHESTRA_API_KEY for the live tests';

/** Extra key `i`; fails the test when the environment has too few. */
export function testKey(i) {
  const key = TEST_KEYS[i];
  if (!key) throw new Error(`ORCHESTRA_TEST_KEYS needs at least ${i + 1} keys`);
  return key;
}

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;

/**
 * A TCP proxy in front of `target` (a base URL): the client sees the server drop its connections when
 * the test says so. `dropAll()` destroys every connection; `refuse(n)` destroys the next `n` WebSocket
 * upgrades on arrival; `wsConnections` counts the WebSocket upgrades that reached the server.
 */
export async function startProxy(target) {
  const { hostname, port } = new URL(target);
  const pairs = new Set();
  const state = { refuse: 0, wsConnections: 0, wsAttempts: 0, attemptTimes: [] };
  const server = net.createServer((client) => {
    const pair = { client, upstream: undefined, ws: false };
    pairs.add(pair);
    const gone = () => {
      pairs.delete(pair);
      client.destroy();
      pair.upstream?.destroy();
    };
    client.on('error', gone);
    client.on('close', gone);
    client.once('data', (first) => {
      const head = first.toString('latin1');
      pair.ws = /^upgrade:\s*websocket/im.test(head);
      if (pair.ws) {
        state.wsAttempts += 1;
        state.attemptTimes.push(Date.now());
        if (state.refuse > 0) {
          state.refuse -= 1;
          gone();
          return;
        }
        state.wsConnections += 1;
      }
      const upstream = net.connect(Number(port), hostname === 'localhost' ? '127.0.0.1' : hostname);
      pair.upstream = upstream;
      upstream.on('error', gone);
      upstream.on('close', gone);
      upstream.write(first);
      client.pipe(upstream);
      upstream.pipe(client);
    });
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    state,
    refuse(n) {
      state.refuse = n;
    },
    /** Destroy every open WebSocket connection (both sides), as a server or network failure would. */
    dropWebSockets() {
      let n = 0;
      for (const pair of [...pairs]) {
        if (!pair.ws) continue;
        n += 1;
        pair.client.destroy();
        pair.upstream?.destroy();
        pairs.delete(pair);
      }
      return n;
    },
    /** Send the client a WebSocket close frame (code 1001, going away) and drop the connection. */
    goingAway() {
      for (const pair of [...pairs]) {
        if (!pair.ws) continue;
        pair.upstream?.unpipe(pair.client);
        pair.client.end(Buffer.from([0x88, 0x02, 0x03, 0xe9]));
        pair.upstream?.destroy();
        pairs.delete(pair);
      }
    },
    async close() {
      for (const pair of pairs) {
        pair.client.destroy();
        pair.upstream?.destroy();
      }
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/**
 * An HTTP server answering from a script: `respond(req, body, n)` returns `{status, headers, body}` or
 * `'hang'` (never answer) or `'reset'` (destroy the socket). `requests` records every request.
 */
export async function startScripted(respond) {
  const requests = [];
  const server = http.createServer(async (req, res) => {
    const chunks = [];
    for await (const chunk of req) chunks.push(chunk);
    const text = Buffer.concat(chunks).toString();
    const entry = { method: req.method, url: req.url, headers: req.headers, body: text, at: Date.now() };
    requests.push(entry);
    const answer = await respond(req, text ? JSON.parse(text) : undefined, requests.length - 1);
    if (answer === 'hang') return;
    if (answer === 'reset') {
      req.socket.destroy();
      return;
    }
    const body = typeof answer.body === 'string' ? answer.body : JSON.stringify(answer.body);
    res.writeHead(answer.status ?? 200, { 'Content-Type': 'application/json', ...answer.headers });
    res.end(body);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${server.address().port}`,
    requests,
    async close() {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    },
  };
}

/** The spec envelope of an error. */
export function errorEnvelope(code, message, details = {}, requestId = '00000000-0000-4000-8000-000000000000') {
  return {
    success: false,
    data: null,
    metadata: { request_id: requestId, timestamp: new Date().toISOString(), version: 'v2' },
    error: { code, message, details },
  };
}

/** The spec envelope of `data`. */
export function envelope(data, requestId = '11111111-1111-4111-8111-111111111111') {
  return {
    success: true,
    data,
    metadata: { request_id: requestId, timestamp: new Date().toISOString(), version: 'v2' },
    error: null,
  };
}
