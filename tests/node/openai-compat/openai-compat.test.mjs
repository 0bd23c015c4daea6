// The official openai npm package against AI Orchestra's OpenAI-compatible API.
// Run by tests/integration/test_openai_compat.py against the test session's live server:
//   ORCHESTRA_BASE_URL        the server, e.g. http://127.0.0.1:8000
//   ORCHESTRA_API_KEY         a chat key
//   ORCHESTRA_RATE_LIMIT_KEY  a chat key of its own, whose bucket this test exhausts
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';

const baseURL = `${process.env.ORCHESTRA_BASE_URL}/v1`;
const apiKey = process.env.ORCHESTRA_API_KEY;
const rateLimitKey = process.env.ORCHESTRA_RATE_LIMIT_KEY;
assert.ok(process.env.ORCHESTRA_BASE_URL && apiKey && rateLimitKey, 'set ORCHESTRA_BASE_URL, ORCHESTRA_API_KEY, ORCHESTRA_RATE_LIMIT_KEY');

const client = new OpenAI({ baseURL, apiKey, maxRetries: 0, timeout: 60_000 });
const MODEL = 'orchestra/coding-debate:lite';
const TASK = [
  { role: 'system', content: 'Answer in JavaScript.' },
  { role: 'user', content: 'Write a function that merges overlapping intervals' },
];

test('models.list has every team and mode, and auto', async () => {
  const ids = [];
  for await (const model of client.models.list()) {
    assert.equal(model.object, 'model');
    ids.push(model.id);
  }
  for (const id of ['orchestra/auto', 'orchestra/coding-debate', MODEL, 'orchestra/coding-team:quality']) {
    assert.ok(ids.includes(id), `${id} missing from ${ids.join(', ')}`);
  }
});

test('a completion is the swarm answer, with usage and the orchestra extension', async () => {
  const completion = await client.chat.completions.create({ model: MODEL, messages: TASK, temperature: 0.2 });
  assert.equal(completion.object, 'chat.completion');
  assert.equal(completion.model, MODEL);
  const [choice] = completion.choices;
  assert.equal(choice.message.role, 'assistant');
  assert.ok(choice.message.content.length > 0);
  assert.equal(choice.finish_reason, 'stop');
  const info = completion.orchestra;
  assert.equal(info.metadata.swarm_type, 'coding-debate');
  assert.equal(info.metadata.optimization_mode, 'lite');
  assert.ok(info.quality_score >= 0 && info.quality_score <= 1);
  assert.ok(info.metadata.processing_steps.length >= 3); // two debaters and the judge
  assert.equal(completion.usage.total_tokens, info.metadata.tokens_used);
  assert.equal(completion.usage.total_tokens, completion.usage.prompt_tokens + completion.usage.completion_tokens);
});

test('a stream reassembles the answer, ends with usage and carries every agent turn', async () => {
  const stream = await client.chat.completions.create({
    model: MODEL,
    messages: TASK,
    stream: true,
    stream_options: { include_usage: true },
  });
  let answer = '';
  let usage = null;
  let completed = null;
  const agentEvents = [];
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    if (chunk.usage) usage = chunk.usage;
    const delta = chunk.choices[0]?.delta;
    if (delta?.content) answer += delta.content;
    if (chunk.orchestra?.event === 'completed') completed = chunk.orchestra;
    else if (chunk.orchestra) agentEvents.push(chunk.orchestra);
  }
  assert.ok(completed, 'no completed event');
  assert.ok(answer.length > 0);
  assert.equal(usage.total_tokens, completed.metadata.tokens_used);
  const kinds = new Set(agentEvents.map((e) => e.event));
  assert.deepEqual([...kinds].sort(), ['token', 'turn_end', 'turn_start']);
  const roles = new Set(agentEvents.map((e) => e.role));
  assert.ok(roles.has('debater') && roles.has('judge'), [...roles].join(', '));
  // the judge's turn is the answer in a debate: its tokens are the answer's
  const judge = agentEvents.filter((e) => e.role === 'judge' && e.event === 'token').map((e) => e.token).join('');
  assert.equal(answer, judge);
});

test('a bad key is an AuthenticationError', async () => {
  const stranger = new OpenAI({ baseURL, apiKey: 'not-a-key', maxRetries: 0 });
  await assert.rejects(stranger.models.list(), (err) => {
    assert.ok(err instanceof OpenAI.AuthenticationError, String(err));
    assert.equal(err.status, 401);
    assert.equal(err.code, 'invalid_api_key');
    return true;
  });
});

test('a bad request is a BadRequestError naming the parameter', async () => {
  await assert.rejects(client.chat.completions.create({ model: MODEL, messages: TASK, n: 3 }), (err) => {
    assert.ok(err instanceof OpenAI.BadRequestError, String(err));
    assert.equal(err.param, 'n');
    assert.equal(err.code, 'unsupported_value');
    assert.equal(err.type, 'invalid_request_error');
    return true;
  });
});

test('an unknown model is a NotFoundError', async () => {
  await assert.rejects(client.chat.completions.create({ model: 'gpt-4o', messages: TASK }), (err) => {
    assert.ok(err instanceof OpenAI.NotFoundError, String(err));
    assert.equal(err.code, 'model_not_found');
    return true;
  });
});

test('an exhausted bucket is a RateLimitError with Retry-After', async () => {
  const limited = new OpenAI({ baseURL, apiKey: rateLimitKey, maxRetries: 0 });
  let error = null;
  for (let i = 0; i < 400 && error === null; i += 1) {
    // 10 at a time: far above the refill of 1000 per minute, so the burst of 50 runs out
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => limited.models.list()));
    error = results.find((r) => r.status === 'rejected')?.reason ?? null;
  }
  assert.ok(error instanceof OpenAI.RateLimitError, String(error));
  assert.equal(error.status, 429);
  assert.equal(error.code, 'rate_limit_exceeded');
  assert.ok(Number(error.headers.get('retry-after')) >= 1);
});
