// Compiled (never run) by types.test.js: the hand-written declarations describe the API as used.
import {
  AIOrchestra,
  AuthenticationError,
  CancelledError,
  ChatStream,
  ConnectionError,
  NotFoundError,
  OrchestraError,
  RateLimitError,
  StreamInterruptedError,
  TimeoutError,
  ValidationError,
  backoffMs,
  type ChatResponse,
  type StreamEvent,
} from '@ai-orchestra/sdk';

export async function usage(): Promise<void> {
  const client = new AIOrchestra({ apiKey: 'k', baseUrl: 'http://localhost:8000', timeoutMs: 1000, maxRetries: 2 });
  const response: ChatResponse = await client.chat({
    message: 'Explain React hooks',
    optimizationMode: 'quality',
    sessionId: 's',
    swarmType: 'coding-team',
    useMemory: false,
    userContext: { any: ['thing'] },
    signal: AbortSignal.timeout(10),
  });
  const steps: number = response.metadata.processingSteps.reduce((n, s) => n + s.completionTokens, 0);
  const id: string = response.requestId;
  const stream: ChatStream = client.streamChat({
    message: 'Generate a React component',
    sessionId: response.sessionId,
    onToken: (token: string) => console.log(token),
    onEvent: (event: StreamEvent) => {
      if (event.type === 'token') console.log(event.agent, event.role, event.round, event.token);
      else if (event.type === 'result') console.log(event.result.response);
    },
  });
  for await (const event of stream) {
    if (event.type === 'turn_end') console.log(event.step?.latencyS);
  }
  const final: ChatResponse = await stream;
  const cancelled: boolean = await stream.cancel();
  const v1 = await client.chatV1({ text: 'hi', sessionId: 's' });
  const sunset: string | undefined = v1.deprecation.sunset;
  const session = await client.getSession('s', { signal: new AbortController().signal });
  const turns: number = session.turns.length + (await client.endSession('s')).turns;
  const healthy: boolean = (await client.health()).components.memorySystem === 'healthy';
  const ready: boolean = (await client.readiness()).checks.externalServices;
  try {
    await client.chat({ message: 'x' });
  } catch (error) {
    if (error instanceof RateLimitError) console.log(error.retryAfter, error.statusCode, error.requestId);
    if (error instanceof OrchestraError) console.log(error.code, error.details);
    const classes = [ValidationError, AuthenticationError, NotFoundError, TimeoutError, CancelledError];
    console.log(classes, error instanceof StreamInterruptedError && error instanceof ConnectionError);
  }
  console.log(steps, id, final, cancelled, sunset, turns, healthy, ready, backoffMs(1));
  client.close();
}

// @ts-expect-error message is required
new AIOrchestra().chat({ optimizationMode: 'lite' });
// @ts-expect-error not a mode
new AIOrchestra().chat({ message: 'x', optimizationMode: 'turbo' });
