// Type declarations of @ai-orchestra/sdk (hand-written; the package is plain ES modules, no build step).

export declare const VERSION: string;
export declare const DEFAULT_BASE_URL: 'http://localhost:8000';
export declare const DEFAULT_TIMEOUT_MS: number;
export declare const DEFAULT_MAX_RETRIES: number;

export type OptimizationMode = 'lite' | 'balanced' | 'quality';
export type SwarmType = 'coding-team' | 'research-team' | 'creative-team' | 'coding-debate' | (string & {});

/** Minimal WebSocket constructor shape: the global one of browsers, or `ws` in Node. */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((event: any) => void) | null;
  onmessage: ((event: { data: any }) => void) | null;
  onclose: ((event: { code: number; reason: string }) => void) | null;
  onerror: ((event: any) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[], options?: any) => WebSocketLike;

export interface ClientOptions {
  /** Default: `process.env.ORCHESTRA_API_KEY` (Node). `''` sends no key (enough for health, readiness). */
  apiKey?: string;
  /** Default: `process.env.ORCHESTRA_BASE_URL`, then `http://localhost:8000`. */
  baseUrl?: string;
  /** Per REST attempt, and per streamed chat. Default 360 000 (longer than the quality deadline, 300 s). */
  timeoutMs?: number;
  /** Retries on 429/503/504, connection errors and timeouts. Default 2. */
  maxRetries?: number;
  /** A fetch to use instead of the global one. */
  fetch?: typeof fetch;
  /** A WebSocket class to use instead of the global one (or `ws` in Node 20). */
  WebSocket?: WebSocketConstructor;
  /** The `client_id` of this client's WebSocket connections. Default `js-<random>`. */
  clientId?: string;
  /** Close a session's idle WebSocket after this many ms (it never holds a Node process open). Default 30 000. */
  wsIdleTimeoutMs?: number;
}

/** Options every call takes. */
export interface RequestOptions {
  signal?: AbortSignal;
  timeoutMs?: number;
  maxRetries?: number;
  /** Sent as `X-Request-ID`, the same on every retry; must be a UUID (the server replaces anything else). */
  requestId?: string;
}

export interface ChatParams extends RequestOptions {
  /** 1-32 000 characters. */
  message: string;
  /** 1-128 of `[A-Za-z0-9._:-]`; the server creates one when absent. */
  sessionId?: string;
  /** Default `balanced`. */
  optimizationMode?: OptimizationMode;
  /** When absent, the orchestrator picks the team from the message. */
  swarmType?: SwarmType;
  useMemory?: boolean;
  /** Given to the agents as is (at most 16 KiB); its keys are not renamed. */
  userContext?: Record<string, unknown>;
}

export interface ProcessingStep {
  agent: string;
  role: string;
  round: number;
  model: string;
  promptTokens: number;
  completionTokens: number;
  latencyS: number;
}

export interface ChatMetadata {
  tokensUsed: number;
  model: string;
  swarmType: string;
  optimizationMode: OptimizationMode;
  processingSteps: ProcessingStep[];
}

export interface ChatResponse {
  response: string;
  sessionId: string;
  executionMode: string;
  /** In [0, 1]. */
  qualityScore: number;
  /** Seconds. */
  executionTime: number;
  metadata: ChatMetadata;
  requestId: string;
}

export interface ChatV1Params extends RequestOptions {
  text: string;
  sessionId?: string;
}

export interface ChatV1Response {
  response: string;
  sessionId: string;
  requestId: string;
  /** From the `Deprecation`, `Sunset` and `Link` headers every v1 response carries. */
  deprecation: { deprecated: boolean; sunset?: string; link?: string };
}

export interface SessionTurn {
  runId: string;
  message: string;
  response: string;
  swarmType: string;
  optimizationMode: OptimizationMode;
  createdAt: string;
  [key: string]: unknown;
}

export interface Session {
  sessionId: string;
  swarmType: string | null;
  createdAt: string;
  lastActive: string;
  turns: SessionTurn[];
  requestId: string;
  [key: string]: unknown;
}

export interface EndedSession {
  sessionId: string;
  ended: boolean;
  /** How many turns the session had. */
  turns: number;
  requestId: string;
}

export type ComponentStatus = 'healthy' | 'degraded' | 'unhealthy';

export interface Health {
  status: ComponentStatus;
  version: string;
  uptime: number;
  components: {
    orchestraManager: ComponentStatus;
    commandDispatcher: ComponentStatus;
    memorySystem: ComponentStatus;
    swarmIntelligence: ComponentStatus;
  };
}

export interface Readiness {
  ready: boolean;
  checks: { database: boolean; cache: boolean; externalServices: boolean };
}

interface AgentEvent {
  requestId: string;
  agent: string;
  role: string;
  round: number;
}
export interface TurnStartEvent extends AgentEvent {
  type: 'turn_start';
}
export interface TokenEvent extends AgentEvent {
  type: 'token';
  token: string;
}
export interface TurnEndEvent extends AgentEvent {
  type: 'turn_end';
  /** The turn's entry of `metadata.processingSteps`. */
  step?: ProcessingStep;
}
export interface ResultEvent {
  type: 'result';
  result: ChatResponse;
}
export type StreamEvent = TurnStartEvent | TokenEvent | TurnEndEvent | ResultEvent;

export interface StreamChatParams extends Omit<RequestOptions, 'requestId'> {
  message: string;
  /** The conversation (and the WebSocket's path); generated (`js-<uuid>`) when absent. */
  sessionId?: string;
  optimizationMode?: OptimizationMode;
  swarmType?: SwarmType;
  useMemory?: boolean;
  /** Sent as the chat frame's `context`. */
  userContext?: Record<string, unknown>;
  /** The chat frame's `request_id`; generated (a UUID) when absent. */
  requestId?: string;
  /** Every token of every agent, as produced. */
  onToken?: (token: string, event: TokenEvent) => void;
  /** Every event: turn_start, token, turn_end, then result. */
  onEvent?: (event: StreamEvent) => void;
}

/** A streamed chat: await it (the answer), iterate it (the events), cancel it. */
export declare class ChatStream implements PromiseLike<ChatResponse>, AsyncIterable<StreamEvent> {
  private constructor();
  readonly sessionId: string;
  /** The chat's id on the wire (a retry before any event arrived gets `<id>.retry<n>`). */
  readonly requestId: string;
  /** Whether the chat has ended. */
  readonly done: boolean;
  then<T1 = ChatResponse, T2 = never>(
    onFulfilled?: ((value: ChatResponse) => T1 | PromiseLike<T1>) | null,
    onRejected?: ((reason: any) => T2 | PromiseLike<T2>) | null,
  ): Promise<T1 | T2>;
  catch<T = never>(onRejected?: ((reason: any) => T | PromiseLike<T>) | null): Promise<ChatResponse | T>;
  finally(onFinally?: (() => void) | null): Promise<ChatResponse>;
  /** Sends the `cancel` command; `true` when the server cancelled the run (the stream rejects with `CancelledError`). */
  cancel(): Promise<boolean>;
  /** Leaving the loop early (`break`) cancels the chat. A failed chat throws after its events. */
  [Symbol.asyncIterator](): AsyncIterator<StreamEvent>;
}

export declare class AIOrchestra {
  constructor(options?: ClientOptions);
  readonly baseUrl: string;
  readonly wsUrl: string;
  readonly timeoutMs: number;
  readonly maxRetries: number;
  readonly clientId: string;
  /** `POST /chat/v2/chat`. */
  chat(params: ChatParams): Promise<ChatResponse>;
  /** `POST /chat/v1/chat` (deprecated). */
  chatV1(params: ChatV1Params): Promise<ChatV1Response>;
  /** `GET /chat/v2/sessions/{sessionId}`; `NotFoundError` when it is not the caller's. */
  getSession(sessionId: string, options?: RequestOptions): Promise<Session>;
  /** `DELETE /chat/v2/sessions/{sessionId}`. */
  endSession(sessionId: string, options?: RequestOptions): Promise<EndedSession>;
  /** `GET /health` (no key needed); resolves also when unhealthy (503). */
  health(options?: RequestOptions): Promise<Health>;
  /** `GET /readiness` (no key needed); resolves also when not ready (503). */
  readiness(options?: RequestOptions): Promise<Readiness>;
  /** `WS /chat/ws/{clientId}/{sessionId}`: stream one chat. */
  streamChat(params: StreamChatParams): ChatStream;
  /** Close every WebSocket of this client now; chats still open on them reject with `ConnectionError`. */
  close(): void;
}

export interface ErrorOptions {
  code?: string;
  details?: Record<string, any>;
  statusCode?: number;
  requestId?: string;
  retryAfter?: number;
  cause?: unknown;
}

/** The base class of every SDK error. */
export declare class OrchestraError extends Error {
  constructor(message: string, options?: ErrorOptions);
  static readonly code: string;
  static readonly statusCode: number | undefined;
  /** The spec error code (`VALIDATION_ERROR`, ...). */
  readonly code: string;
  /** The server's `error.details` (`{}` when none); validation errors: `{field, reason, errors}`. */
  readonly details: Record<string, any>;
  /** The HTTP status (WebSocket errors: the one the code maps to); undefined for connection errors. */
  readonly statusCode: number | undefined;
  /** The failed request's id (`X-Request-ID` / `metadata.request_id`, or the chat's request_id). */
  readonly requestId: string | undefined;
  /** Seconds the server asked to wait (`Retry-After`, `details.retry_after`). */
  readonly retryAfter: number | undefined;
}
/** 400 `VALIDATION_ERROR`. */
export declare class ValidationError extends OrchestraError {}
/** 401 `AUTHENTICATION_ERROR` (WebSocket close 4401). */
export declare class AuthenticationError extends OrchestraError {}
/** 404 `NOT_FOUND`. */
export declare class NotFoundError extends OrchestraError {}
/** 413 `PAYLOAD_TOO_LARGE`. */
export declare class PayloadTooLargeError extends OrchestraError {}
/** 429 `RATE_LIMIT_ERROR` (WebSocket close 4429, or a dropped message). */
export declare class RateLimitError extends OrchestraError {}
/** 500 `INTERNAL_ERROR`. */
export declare class InternalError extends OrchestraError {}
/** 503 `SERVICE_UNAVAILABLE`. */
export declare class ServiceUnavailableError extends OrchestraError {}
/** 504 `TIMEOUT_ERROR`; also the client's own `timeoutMs` (then `statusCode` is undefined). */
export declare class TimeoutError extends OrchestraError {}
/** `CANCELLED`: a streamed chat was cancelled. */
export declare class CancelledError extends OrchestraError {}
/** `CONNECTION_ERROR`: the server could not be reached or the connection broke. */
export declare class ConnectionError extends OrchestraError {}
/** `STREAM_INTERRUPTED`: the WebSocket dropped mid-run; streams cannot be resumed, never retried. */
export declare class StreamInterruptedError extends ConnectionError {}

/** The error class of a spec code (`OrchestraError` for an unknown one). */
export declare function errorClassForCode(code: string): typeof OrchestraError;
/** The wait before retry `attempt` (0-based) without `Retry-After`: `min(0.5·2^n, 8)` s × 75–100 %, in ms. */
export declare function backoffMs(attempt: number, random?: () => number): number;

/** The header every webhook delivery is signed in. */
export declare const SIGNATURE_HEADER: 'X-Orchestra-Signature';
/** A webhook request whose signature is missing, malformed, wrong or too old: do not act on it. */
export declare class WebhookSignatureError extends AuthenticationError {}
/**
 * Check a received webhook (the raw body exactly as received) and resolve to its signed timestamp;
 * rejects with `WebhookSignatureError`.
 */
export declare function verifyWebhook(
  secret: string,
  headers: Record<string, string | string[] | undefined> | { get(name: string): string | null },
  body: string | Uint8Array | ArrayBuffer,
  options?: { toleranceS?: number; now?: number },
): Promise<number>;
