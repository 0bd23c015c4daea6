// Without the live server: error mapping, retry rules and timing, options, against scripted servers.

import assert from 'node:assert/strict';
import { after, describe, test } from 'node:test';

import {
  AIOrchestra,
  AuthenticationError,
  CancelledError,
  ConnectionError,
  InternalError,
  NotFoundError,
  OrchestraError,
  PayloadTooLargeError,
  RateLimitError,
  ServiceUnavailableError,
  StreamInterruptedError,
  TimeoutError,
  ValidationError,
  backoffMs,
  errorClassForCode,
} from '@ai-orchestra/sdk';
import { camelize, snakeBody } from '../src/case.js';
import { errorFromFrame, errorFromResponse, isRetryable } from '../src/errors.js';
import { parseRetryAfter, retryDelayMs } from '../src/retry.js';
import { envelope, errorEnvelope, startScripted } from './helpers.js';

const CLASSES = {
  VALIDATION_ERROR: [ValidationError, 400],
  AUTHENTICATION_ERROR: [AuthenticationError, 401],
  NOT_FOUND: [NotFoundError, 404],
  PAYLOAD_TOO_LARGE: [PayloadTooLargeError, 413],
  RATE_LIMIT_ERROR: [RateLimitError, 429],
  INTERNAL_ERROR: [InternalError, 500],
  SERVICE_UNAVAILABLE: [ServiceUnavailableError, 503],
  TIMEOUT_ERROR: [TimeoutError, 504],
};

describe('errors', () => {
  test('one class per spec code, all under OrchestraError', () => {
    for (const [code, [cls, status]] of Object.entries(CLASSES)) {
      assert.equal(errorClassForCode(code), cls);
      assert.equal(cls.code, code);
      assert.equal(cls.statusCode, status);
      const error = new cls('boom', { requestId: 'r-1' });
      assert.ok(error instanceof OrchestraError && error instanceof Error);
      assert.equal(error.name, cls.name);
      assert.equal(error.code, code);
      assert.equal(error.statusCode, status);
      assert.equal(error.requestId, 'r-1');
      assert.deepEqual(error.details, {});
    }
    assert.equal(errorClassForCode('CANCELLED'), CancelledError);
    assert.equal(errorClassForCode('SOMETHING_NEW'), OrchestraError);
    assert.ok(new StreamInterruptedError('x') instanceof ConnectionError);
    assert.equal(new ConnectionError('x').statusCode, undefined);
  });

  test('an HTTP error envelope maps to its class with code, message, details, status, request id', () => {
    const details = { field: 'optimization_mode', reason: 'bad', errors: [] };
    const error = errorFromResponse({
      status: 400,
      body: errorEnvelope('VALIDATION_ERROR', 'invalid request', details, 'rid-400'),
      requestId: 'from-header',
    });
    assert.ok(error instanceof ValidationError);
    assert.equal(error.message, 'invalid request');
    assert.deepEqual(error.details, details);
    assert.equal(error.statusCode, 400);
    assert.equal(error.requestId, 'rid-400');
    const bare = errorFromResponse({ status: 502, body: undefined, requestId: 'h' });
    assert.ok(bare instanceof InternalError);
    assert.equal(bare.statusCode, 502);
    assert.equal(bare.requestId, 'h');
    const limited = errorFromResponse({ status: 429, body: undefined, retryAfter: 3 });
    assert.ok(limited instanceof RateLimitError);
    assert.equal(limited.retryAfter, 3);
    const teapot = errorFromResponse({ status: 418, body: 'no' });
    assert.equal(teapot.constructor, OrchestraError);
    assert.equal(teapot.code, 'HTTP_418');
  });

  test('a WebSocket error frame maps to the same classes', () => {
    const error = errorFromFrame({
      action: 'error',
      request_id: 'req-9',
      error: { code: 'RATE_LIMIT_ERROR', message: 'slow down', details: { retry_after: 0.6 } },
    });
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.requestId, 'req-9');
    assert.equal(error.statusCode, 429);
    assert.equal(error.retryAfter, 0.6);
    const cancelled = errorFromFrame({ action: 'error', request_id: 'r', error: { code: 'CANCELLED', message: 'c' } });
    assert.ok(cancelled instanceof CancelledError);
    assert.equal(cancelled.code, 'CANCELLED');
  });

  test('retryable: 429, 503, 504, connection errors, timeouts; never other 4xx nor a broken stream', () => {
    for (const cls of [RateLimitError, ServiceUnavailableError, TimeoutError, ConnectionError]) {
      assert.ok(isRetryable(new cls('x')), cls.name);
    }
    for (const cls of [ValidationError, AuthenticationError, NotFoundError, PayloadTooLargeError, InternalError]) {
      assert.ok(!isRetryable(new cls('x')), cls.name);
    }
    assert.ok(!isRetryable(new StreamInterruptedError('x')));
    assert.ok(!isRetryable(new CancelledError('x')));
  });
});

describe('retry timing', () => {
  test('backoff is min(0.5 * 2^n, 8) s scaled by 75-100 %', () => {
    const expected = [500, 1000, 2000, 4000, 8000, 8000, 8000];
    expected.forEach((full, n) => {
      assert.equal(backoffMs(n, () => 1 - Number.EPSILON) <= full, true);
      assert.equal(backoffMs(n, () => 0), full * 0.75);
      for (let i = 0; i < 50; i++) {
        const ms = backoffMs(n);
        assert.ok(ms >= full * 0.75 && ms <= full, `${n}: ${ms}`);
      }
    });
  });

  test('Retry-After is honoured exactly; over 60 s it is not waited out; maxRetries bounds it', () => {
    assert.equal(retryDelayMs(new RateLimitError('x', { retryAfter: 2 }), 0, 2), 2000);
    assert.equal(retryDelayMs(new RateLimitError('x', { retryAfter: 61 }), 0, 2), undefined);
    assert.equal(retryDelayMs(new RateLimitError('x'), 2, 2), undefined);
    assert.equal(retryDelayMs(new ValidationError('x'), 0, 2), undefined);
    const ms = retryDelayMs(new ServiceUnavailableError('x'), 1, 2);
    assert.ok(ms >= 750 && ms <= 1000);
    assert.equal(parseRetryAfter('3'), 3);
    assert.equal(parseRetryAfter(null), undefined);
    assert.equal(parseRetryAfter(new Date(Date.now() + 5000).toUTCString(), Date.now()) > 3, true);
  });
});

describe('case mapping', () => {
  test('responses become camelCase at any depth; request fields become snake_case at the top', () => {
    assert.deepEqual(camelize({ session_id: 's', metadata: { processing_steps: [{ latency_s: 1 }] } }), {
      sessionId: 's',
      metadata: { processingSteps: [{ latencyS: 1 }] },
    });
    assert.deepEqual(
      snakeBody({ message: 'm', optimizationMode: 'lite', userContext: { keepMe: 1 }, swarmType: undefined }),
      { message: 'm', optimization_mode: 'lite', user_context: { keepMe: 1 } },
    );
  });
});

describe('client over a scripted server', () => {
  const servers = [];
  after(async () => {
    for (const s of servers) await s.close();
  });
  async function scripted(respond) {
    const s = await startScripted(respond);
    servers.push(s);
    return s;
  }

  test('chat sends snake_case with the bearer key and answers camelCase with requestId', async () => {
    const server = await scripted(() => ({
      headers: { 'X-Request-ID': 'rid-1' },
      body: envelope(
        {
          response: 'hi',
          session_id: 's1',
          execution_mode: 'coding-team',
          quality_score: 0.8,
          execution_time: 0.1,
          metadata: {
            tokens_used: 3,
            model: 'scripted/fast',
            swarm_type: 'coding-team',
            optimization_mode: 'lite',
            processing_steps: [
              { agent: 'a', role: 'r', round: 1, model: 'm', prompt_tokens: 1, completion_tokens: 2, latency_s: 0 },
            ],
          },
        },
        'rid-1',
      ),
    }));
    const client = new AIOrchestra({ apiKey: 'k1', baseUrl: `${server.url}/` });
    const res = await client.chat({
      message: 'hello',
      optimizationMode: 'lite',
      sessionId: 's1',
      swarmType: 'coding-team',
      useMemory: true,
      userContext: { user_name: 'x' },
    });
    const [req] = server.requests;
    assert.equal(req.method, 'POST');
    assert.equal(req.url, '/chat/v2/chat');
    assert.equal(req.headers.authorization, 'Bearer k1');
    assert.deepEqual(JSON.parse(req.body), {
      message: 'hello',
      optimization_mode: 'lite',
      session_id: 's1',
      swarm_type: 'coding-team',
      use_memory: true,
      user_context: { user_name: 'x' },
    });
    assert.equal(res.requestId, 'rid-1');
    assert.equal(res.sessionId, 's1');
    assert.equal(res.metadata.processingSteps[0].completionTokens, 2);
    assert.equal(res.qualityScore, 0.8);
  });

  test('503 then 504 are retried (Retry-After waited out, then backoff), then it answers', async () => {
    const server = await scripted((req, body, n) =>
      n === 0
        ? { status: 503, headers: { 'Retry-After': '1' }, body: errorEnvelope('SERVICE_UNAVAILABLE', 'busy') }
        : n === 1
          ? { status: 504, body: errorEnvelope('TIMEOUT_ERROR', 'deadline') }
          : { body: envelope({ session_id: 's', swarm_type: null, created_at: 'c', last_active: 'l', turns: [] }) },
    );
    const client = new AIOrchestra({ apiKey: 'k', baseUrl: server.url });
    const session = await client.getSession('s');
    assert.equal(session.sessionId, 's');
    const [a, b, c] = server.requests.map((r) => r.at);
    assert.equal(server.requests.length, 3);
    assert.ok(b - a >= 990, `Retry-After 1 s honoured (${b - a} ms)`);
    assert.ok(c - b >= 700 && c - b < 1500, `second retry after ~0.75-1 s backoff (${c - b} ms)`);
  });

  test('429 is retried maxRetries times, then thrown with its request id and retryAfter', async () => {
    const server = await scripted(() => ({
      status: 429,
      headers: { 'Retry-After': '0.05', 'X-Request-ID': 'rid-429' },
      body: errorEnvelope('RATE_LIMIT_ERROR', 'slow down', { retry_after: 0.05 }, 'rid-429'),
    }));
    const client = new AIOrchestra({ apiKey: 'k', baseUrl: server.url, maxRetries: 3 });
    const error = await client.chat({ message: 'x' }).catch((e) => e);
    assert.ok(error instanceof RateLimitError);
    assert.equal(error.statusCode, 429);
    assert.equal(error.requestId, 'rid-429');
    assert.equal(error.retryAfter, 0.05);
    assert.equal(server.requests.length, 4);
  });

  test('other 4xx and 500 are never retried', async () => {
    for (const [code, [cls, status]] of Object.entries(CLASSES)) {
      if ([429, 503, 504].includes(status)) continue;
      const server = await scripted(() => ({ status, body: errorEnvelope(code, 'no', {}, `rid-${status}`) }));
      const client = new AIOrchestra({ apiKey: 'k', baseUrl: server.url });
      const error = await client.chat({ message: 'x' }).catch((e) => e);
      assert.ok(error instanceof cls, `${status}: ${error}`);
      assert.equal(error.requestId, `rid-${status}`);
      assert.equal(server.requests.length, 1, `${status} sent once`);
    }
  });

  test('connection errors are retried with backoff, then ConnectionError', async () => {
    const server = await scripted(() => 'reset');
    const client = new AIOrchestra({ apiKey: 'k', baseUrl: server.url, maxRetries: 1 });
    const started = Date.now();
    const error = await client.chat({ message: 'x' }).catch((e) => e);
    assert.ok(error instanceof ConnectionError, String(error));
    assert.equal(server.requests.length, 2);
    assert.ok(Date.now() - started >= 375);
    const closed = await scripted(() => 'reset');
    await closed.close(); // nothing listens on its port any more
    const refused = new AIOrchestra({ apiKey: 'k', baseUrl: closed.url, maxRetries: 0 });
    const error2 = await refused.health().catch((e) => e);
    assert.ok(error2 instanceof ConnectionError);
    assert.match(error2.message, /ECONNREFUSED/);
  });

  test('timeoutMs: TimeoutError without a status, retried like a 504', async () => {
    const server = await scripted(() => 'hang');
    const client = new AIOrchestra({ apiKey: 'k', baseUrl: server.url, timeoutMs: 100, maxRetries: 1 });
    const error = await client.chat({ message: 'x' }).catch((e) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.equal(error.statusCode, undefined);
    assert.equal(error.details.timeoutMs, 100);
    assert.equal(server.requests.length, 2);
  });

  test('an AbortSignal stops the call at once, also during a backoff wait', async () => {
    const hang = await scripted(() => 'hang');
    const client = new AIOrchestra({ apiKey: 'k', baseUrl: hang.url });
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);
    const error = await client.chat({ message: 'x', signal: controller.signal }).catch((e) => e);
    assert.equal(error.name, 'AbortError');
    const busy = await scripted(() => ({ status: 503, headers: { 'Retry-After': '30' }, body: errorEnvelope('SERVICE_UNAVAILABLE', 'x') }));
    const c2 = new AIOrchestra({ apiKey: 'k', baseUrl: busy.url });
    const started = Date.now();
    const reason = new Error('stop');
    const error2 = await c2.getSession('s', { signal: AbortSignal.timeout(200) }).catch((e) => e);
    assert.equal(error2.name, 'TimeoutError'); // AbortSignal.timeout's own DOMException
    assert.ok(!(error2 instanceof OrchestraError));
    assert.ok(Date.now() - started < 2000);
    const already = await c2.health({ signal: AbortSignal.abort(reason) }).catch((e) => e);
    assert.equal(already, reason);
    assert.equal(busy.requests.length, 1);
  });

  test('health and readiness answer also with 503; unknown options are refused before sending', async () => {
    const server = await scripted((req) =>
      req.url === '/health'
        ? { status: 503, body: { status: 'unhealthy', version: '0.1.0', uptime: 1, components: { orchestra_manager: 'unhealthy' } } }
        : { status: 503, body: { ready: false, checks: { database: true, cache: true, external_services: false } } },
    );
    const client = new AIOrchestra({ apiKey: '', baseUrl: server.url }); // '': no key
    const health = await client.health();
    assert.equal(health.status, 'unhealthy');
    assert.equal(health.components.orchestraManager, 'unhealthy');
    const ready = await client.readiness();
    assert.deepEqual(ready, { ready: false, checks: { database: true, cache: true, externalServices: false } });
    assert.equal(server.requests[0].headers.authorization, undefined);
    await assert.rejects(client.chat({ message: 'x', optimisationMode: 'lite' }), (e) => {
      assert.ok(e instanceof ValidationError);
      assert.equal(e.details.field, 'optimisationMode');
      return true;
    });
    await assert.rejects(client.streamChat({ message: 'x', onTokens: () => {} }), ValidationError);
    assert.equal(server.requests.length, 2);
  });

  test('apiKey and baseUrl fall back to ORCHESTRA_API_KEY and ORCHESTRA_BASE_URL, then localhost:8000', () => {
    const saved = { key: process.env.ORCHESTRA_API_KEY, url: process.env.ORCHESTRA_BASE_URL };
    try {
      process.env.ORCHESTRA_API_KEY = 'env-key';
      process.env.ORCHESTRA_BASE_URL = 'https://example.test/';
      const client = new AIOrchestra();
      assert.equal(client.apiKey, 'env-key');
      assert.equal(client.baseUrl, 'https://example.test');
      assert.equal(client.wsUrl, 'wss://example.test');
      assert.ok(!JSON.stringify(client).includes('env-key'), 'the key is not enumerable');
      delete process.env.ORCHESTRA_BASE_URL;
      assert.equal(new AIOrchestra().baseUrl, 'http://localhost:8000');
      assert.equal(new AIOrchestra({ baseUrl: 'http://h:1' }).wsUrl, 'ws://h:1');
      assert.equal(new AIOrchestra().maxRetries, 2);
    } finally {
      for (const [name, value] of [['ORCHESTRA_API_KEY', saved.key], ['ORCHESTRA_BASE_URL', saved.url]]) {
        if (value === undefined) delete process.env[name];
        else process.env[name] = value;
      }
    }
  });
});
