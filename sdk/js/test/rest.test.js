// REST against the live server (ORCHESTRA_BASE_URL, ORCHESTRA_API_KEY, ORCHESTRA_TEST_KEYS).

import assert from 'node:assert/strict';
import { describe, test } from 'node:test';

import {
  AIOrchestra,
  AuthenticationError,
  NotFoundError,
  RateLimitError,
  TimeoutError,
  ValidationError,
} from '@ai-orchestra/sdk';
import { API_KEY, BASE_URL, LIVE, UUID, testKey } from './helpers.js';

const client = () => new AIOrchestra({ apiKey: API_KEY, baseUrl: BASE_URL });

describe('REST', { skip: LIVE }, () => {
  test('chat: camelCase request and response, with the request id', async () => {
    const res = await client().chat({
      message: 'Write a function that merges intervals',
      optimizationMode: 'lite',
      swarmType: 'coding-team',
      useMemory: false,
      userContext: { language: 'python' },
    });
    assert.match(res.requestId, UUID);
    assert.ok(res.response.length > 0);
    assert.ok(res.sessionId);
    assert.match(res.executionMode, /coding-team/);
    assert.ok(res.qualityScore >= 0 && res.qualityScore <= 1);
    assert.ok(res.executionTime > 0);
    const { metadata } = res;
    assert.equal(metadata.swarmType, 'coding-team');
    assert.equal(metadata.optimizationMode, 'lite');
    assert.ok(metadata.model.startsWith('scripted/'));
    assert.ok(metadata.processingSteps.length >= 3);
    const sum = metadata.processingSteps.reduce((n, s) => n + s.promptTokens + s.completionTokens, 0);
    assert.equal(metadata.tokensUsed, sum);
    for (const step of metadata.processingSteps) {
      assert.deepEqual(Object.keys(step).sort(), [
        'agent',
        'completionTokens',
        'latencyS',
        'model',
        'promptTokens',
        'role',
        'round',
      ]);
    }
    assert.ok(!('session_id' in res) && !('request_id' in res));
  });

  test('sessions: a chat continues its session, getSession shows the turns, endSession ends it', async () => {
    const c = client();
    const sessionId = `js-rest-${Date.now()}`;
    const first = await c.chat({ message: 'first turn', sessionId, optimizationMode: 'lite', swarmType: 'research-team' });
    assert.equal(first.sessionId, sessionId);
    await c.chat({ message: 'second turn', sessionId, optimizationMode: 'lite', swarmType: 'research-team' });
    const session = await c.getSession(sessionId);
    assert.equal(session.sessionId, sessionId);
    assert.match(session.requestId, UUID);
    assert.deepEqual(
      session.turns.map((t) => t.message),
      ['first turn', 'second turn'],
    );
    assert.equal(session.turns[0].swarmType, 'research-team');
    assert.equal(session.turns[0].optimizationMode, 'lite');
    assert.ok(session.turns[0].runId && session.turns[0].createdAt);
    const ended = await c.endSession(sessionId);
    assert.equal(ended.sessionId, sessionId);
    assert.equal(ended.ended, true);
    assert.equal(ended.turns, 2);
    await assert.rejects(c.getSession(sessionId), NotFoundError);
  });

  test('another key never sees the session: NotFoundError with its request id', async () => {
    const mine = client();
    const { sessionId } = await mine.chat({ message: 'private', optimizationMode: 'lite', swarmType: 'research-team' });
    const other = new AIOrchestra({ apiKey: testKey(1), baseUrl: BASE_URL });
    const error = await other.getSession(sessionId).catch((e) => e);
    assert.ok(error instanceof NotFoundError, String(error));
    assert.equal(error.code, 'NOT_FOUND');
    assert.equal(error.statusCode, 404);
    assert.match(error.requestId, UUID);
    assert.ok((await mine.getSession(sessionId)).turns.length === 1);
  });

  test('v1: chatV1 answers {response, sessionId} with the deprecation headers', async () => {
    const res = await client().chatV1({ text: 'Hello from v1', sessionId: `js-v1-${Date.now()}` });
    assert.ok(res.response.length > 0);
    assert.match(res.sessionId, /^js-v1-/);
    assert.match(res.requestId, UUID);
    assert.equal(res.deprecation.deprecated, true);
    assert.ok(!Number.isNaN(Date.parse(res.deprecation.sunset)));
    assert.match(res.deprecation.link, /<\/chat\/v2\/chat>; rel="successor-version"/);
  });

  test('health and readiness (no key needed)', async () => {
    const anonymous = new AIOrchestra({ apiKey: '', baseUrl: BASE_URL }); // '': no key
    const health = await anonymous.health();
    assert.equal(health.status, 'healthy');
    assert.ok(Number.isInteger(health.uptime));
    assert.deepEqual(Object.keys(health.components).sort(), [
      'commandDispatcher',
      'memorySystem',
      'orchestraManager',
      'swarmIntelligence',
    ]);
    const ready = await anonymous.readiness();
    assert.deepEqual(ready, { ready: true, checks: { database: true, cache: true, externalServices: true } });
  });

  test('401: a bad key is an AuthenticationError with the request id', async () => {
    const bad = new AIOrchestra({ apiKey: 'not-a-key', baseUrl: BASE_URL });
    const error = await bad.chat({ message: 'x' }).catch((e) => e);
    assert.ok(error instanceof AuthenticationError, String(error));
    assert.equal(error.code, 'AUTHENTICATION_ERROR');
    assert.equal(error.statusCode, 401);
    assert.match(error.requestId, UUID);
    const missing = await new AIOrchestra({ apiKey: '', baseUrl: BASE_URL }).getSession('s').catch((e) => e);
    assert.ok(missing instanceof AuthenticationError);
  });

  test('400: a bad field is a ValidationError naming it, with the request id; sent once', async () => {
    let sent = 0;
    const c = new AIOrchestra({
      apiKey: API_KEY,
      baseUrl: BASE_URL,
      fetch: (...args) => {
        sent += 1;
        return fetch(...args);
      },
    });
    const error = await c.chat({ message: 'x', optimizationMode: 'turbo', requestId: '6f1c2a4e-2d7b-4c1e-9a53-0b1d2e3f4a5b' }).catch((e) => e);
    assert.ok(error instanceof ValidationError, String(error));
    assert.equal(error.code, 'VALIDATION_ERROR');
    assert.equal(error.statusCode, 400);
    assert.equal(error.requestId, '6f1c2a4e-2d7b-4c1e-9a53-0b1d2e3f4a5b'); // the X-Request-ID we sent
    assert.equal(error.details.field, 'optimization_mode');
    assert.ok(Array.isArray(error.details.errors));
    assert.equal(sent, 1);
    const unknownTeam = await c.chat({ message: 'x', swarmType: 'no-such-team' }).catch((e) => e);
    assert.ok(unknownTeam instanceof ValidationError);
    assert.equal(unknownTeam.details.field, 'swarm_type');
    assert.match(unknownTeam.requestId, UUID);
  });

  test('404: an unknown session is a NotFoundError', async () => {
    const error = await client().getSession('no-such-session').catch((e) => e);
    assert.ok(error instanceof NotFoundError, String(error));
    assert.equal(error.statusCode, 404);
    assert.match(error.requestId, UUID);
    assert.match(error.message, /no-such-session/);
  });

  test('timeoutMs: the client gives up with TimeoutError; an AbortSignal stops a chat', async () => {
    const c = new AIOrchestra({ apiKey: API_KEY, baseUrl: BASE_URL, timeoutMs: 150, maxRetries: 0 });
    const slow = { message: 'take your time', swarmType: 'long-debate', optimizationMode: 'quality' };
    const error = await c.chat(slow).catch((e) => e);
    assert.ok(error instanceof TimeoutError, String(error));
    assert.equal(error.statusCode, undefined);
    const controller = new AbortController();
    const started = Date.now();
    setTimeout(() => controller.abort(), 100);
    const aborted = await client().chat({ ...slow, signal: controller.signal }).catch((e) => e);
    assert.equal(aborted.name, 'AbortError');
    assert.ok(Date.now() - started < 1000);
  });

  test('429: a real rate limit is retried after Retry-After and then answers', async () => {
    // A key of its own (capacity 50): a drain keeps its bucket empty until the SDK's first 429.
    const key = testKey(0);
    const sessionId = `js-429-${Date.now()}`;
    const setup = new AIOrchestra({ apiKey: key, baseUrl: BASE_URL });
    await setup.chat({ message: 'a turn to read back', sessionId, optimizationMode: 'lite', swarmType: 'research-team' });

    let draining = true;
    let drained = 0;
    const drain = async () => {
      while (draining) {
        const r = await fetch(`${BASE_URL}/chat/v2/sessions/drain`, { headers: { Authorization: `Bearer ${key}` } });
        await r.arrayBuffer();
        if (r.status === 429) drained += 1;
      }
    };
    const drainers = Array.from({ length: 4 }, drain);
    try {
      while (drained < 5) await new Promise((resolve) => setTimeout(resolve, 10));

      // Without retries: the 429 itself, typed, with Retry-After and the request id. The drain keeps
      // the bucket near empty, but a refilled token may still go to our request: then ask again.
      const once = new AIOrchestra({ apiKey: key, baseUrl: BASE_URL, maxRetries: 0 });
      let limited;
      for (let i = 0; i < 20 && !(limited instanceof RateLimitError); i++) {
        limited = await once.getSession(sessionId).catch((e) => e);
      }
      assert.ok(limited instanceof RateLimitError, String(limited));
      assert.equal(limited.statusCode, 429);
      assert.equal(limited.code, 'RATE_LIMIT_ERROR');
      assert.match(limited.requestId, UUID);
      assert.ok(limited.retryAfter >= 1, `Retry-After ${limited.retryAfter}`);
      assert.ok(limited.details.retry_after > 0);

      // With retries: the first attempt gets 429 (the drain stops then), the retry waits Retry-After.
      let seen = [];
      for (let i = 0; i < 20 && seen[0]?.status !== 429; i++) {
        seen = [];
        const retrying = new AIOrchestra({
          apiKey: key,
          baseUrl: BASE_URL,
          fetch: async (url, init) => {
            const sent = Date.now();
            const r = await fetch(url, init);
            seen.push({ status: r.status, sent, retryAfter: Number(r.headers.get('retry-after')) });
            if (r.status === 429) draining = false;
            return r;
          },
        });
        const session = await retrying.getSession(sessionId);
        assert.equal(session.turns.length, 1);
      }
      assert.equal(seen.length, 2, JSON.stringify(seen));
      assert.equal(seen[0].status, 429);
      assert.equal(seen[1].status, 200);
      const waited = seen[1].sent - seen[0].sent;
      assert.ok(waited >= seen[0].retryAfter * 1000 - 20, `waited ${waited} ms for Retry-After ${seen[0].retryAfter}`);
      assert.ok(waited < seen[0].retryAfter * 1000 + 1000, `waited ${waited} ms`);
    } finally {
      draining = false;
      await Promise.all(drainers);
    }
  });
});
