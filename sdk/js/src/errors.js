// The error classes of the SDK: one per spec error code (api.md §4), under one base class.
//
// Every error carries `code`, `message`, `details`, `statusCode` and `requestId`. Errors from HTTP carry
// the response's status; errors from a WebSocket error frame carry the HTTP status their code maps to.

/** The base class of every error the SDK throws (except an `AbortSignal`'s own reason). */
export class OrchestraError extends Error {
  /** The spec code of errors of this class (subclasses override it). */
  static code = 'ORCHESTRA_ERROR';
  /** The HTTP status of errors of this class, when the code has one. */
  static statusCode = undefined;

  constructor(message, options = {}) {
    super(message, options.cause !== undefined ? { cause: options.cause } : undefined);
    this.name = new.target.name;
    /** The spec error code, e.g. `VALIDATION_ERROR`. */
    this.code = options.code ?? new.target.code;
    /** The `details` object of the server's error (`{}` when it sent none). */
    this.details = options.details ?? {};
    /** The HTTP status (for WebSocket errors: the status the code maps to); `undefined` when none. */
    this.statusCode = 'statusCode' in options ? options.statusCode : new.target.statusCode;
    /** The request id of the failed request or chat, when known. */
    this.requestId = options.requestId ?? undefined;
    /** Seconds the server asked to wait before retrying (`Retry-After`), when it said. */
    this.retryAfter = options.retryAfter ?? undefined;
  }
}

/** 400: bad JSON, a missing, extra or out-of-range field, an unknown team or mode. */
export class ValidationError extends OrchestraError {
  static code = 'VALIDATION_ERROR';
  static statusCode = 400;
}

/** 401: missing, malformed, unknown or revoked API key (WebSocket close code 4401). */
export class AuthenticationError extends OrchestraError {
  static code = 'AUTHENTICATION_ERROR';
  static statusCode = 401;
}

/** 404: unknown route, or a session that is not the caller's. */
export class NotFoundError extends OrchestraError {
  static code = 'NOT_FOUND';
  static statusCode = 404;
}

/** 413: the body is over 256 KiB (a WebSocket frame over 64 KiB). */
export class PayloadTooLargeError extends OrchestraError {
  static code = 'PAYLOAD_TOO_LARGE';
  static statusCode = 413;
}

/** 429: the key's rate limit (WebSocket: the connection's message limit, or close code 4429). */
export class RateLimitError extends OrchestraError {
  static code = 'RATE_LIMIT_ERROR';
  static statusCode = 429;
}

/** 500: an unexpected failure on the server (logged there with the request id). */
export class InternalError extends OrchestraError {
  static code = 'INTERNAL_ERROR';
  static statusCode = 500;
}

/** 503: overloaded, the LLM provider or a required backend is down. */
export class ServiceUnavailableError extends OrchestraError {
  static code = 'SERVICE_UNAVAILABLE';
  static statusCode = 503;
}

/**
 * 504: the swarm run exceeded its mode's deadline. Also thrown, with `statusCode` undefined and
 * `details.timeoutMs`, when the client's own `timeoutMs` passed first.
 */
export class TimeoutError extends OrchestraError {
  static code = 'TIMEOUT_ERROR';
  static statusCode = 504;
}

/** A streamed chat was cancelled (`cancel()`), server error code `CANCELLED`. */
export class CancelledError extends OrchestraError {
  static code = 'CANCELLED';
}

/** The server could not be reached, or the connection broke before an answer. */
export class ConnectionError extends OrchestraError {
  static code = 'CONNECTION_ERROR';
}

/**
 * The WebSocket connection dropped while a streamed chat was running. The server cannot resume a
 * stream mid-run (it stops the run when the connection goes), so this is never retried automatically:
 * send the message again.
 */
export class StreamInterruptedError extends ConnectionError {
  static code = 'STREAM_INTERRUPTED';
}

const BY_CODE = new Map(
  [
    ValidationError,
    AuthenticationError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    InternalError,
    ServiceUnavailableError,
    TimeoutError,
    CancelledError,
  ].map((cls) => [cls.code, cls]),
);

const BY_STATUS = new Map(
  [
    ValidationError,
    AuthenticationError,
    NotFoundError,
    PayloadTooLargeError,
    RateLimitError,
    InternalError,
    ServiceUnavailableError,
    TimeoutError,
  ].map((cls) => [cls.statusCode, cls]),
);

/** The class for a spec code (`OrchestraError` for a code this SDK does not know). */
export function errorClassForCode(code) {
  return BY_CODE.get(code) ?? OrchestraError;
}

function isObject(value) {
  return value !== null && typeof value === 'object' && !Array.isArray(value);
}

/**
 * The error of a non-2xx HTTP response. `body` is the parsed JSON (or undefined when it was not JSON).
 * The envelope's `error.code` picks the class; without an envelope, the status does.
 */
export function errorFromResponse({ status, body, requestId, retryAfter }) {
  const error = isObject(body) && isObject(body.error) ? body.error : undefined;
  const rid = (isObject(body) && isObject(body.metadata) && body.metadata.request_id) || requestId;
  let cls;
  let code;
  if (error && typeof error.code === 'string') {
    code = error.code;
    cls = errorClassForCode(code);
  } else {
    cls = BY_STATUS.get(status) ?? (status >= 500 ? InternalError : OrchestraError);
    code = cls === OrchestraError ? `HTTP_${status}` : cls.code;
  }
  const details = error && isObject(error.details) ? error.details : {};
  const message =
    (error && typeof error.message === 'string' && error.message) || `HTTP ${status} from the server`;
  const wait = retryAfter ?? (typeof details.retry_after === 'number' ? details.retry_after : undefined);
  return new cls(message, { code, details, statusCode: status, requestId: rid || undefined, retryAfter: wait });
}

/** The error of a WebSocket error frame's `data` (`{action: "error", request_id?, error}`). */
export function errorFromFrame(data) {
  const error = isObject(data?.error) ? data.error : {};
  const code = typeof error.code === 'string' ? error.code : InternalError.code;
  const cls = errorClassForCode(code);
  const details = isObject(error.details) ? error.details : {};
  return new cls(typeof error.message === 'string' && error.message ? error.message : code, {
    code,
    details,
    requestId: typeof data?.request_id === 'string' ? data.request_id : undefined,
    retryAfter: typeof details.retry_after === 'number' ? details.retry_after : undefined,
  });
}

/** Whether the retry rules (429/503/504, connection errors, timeouts) allow another attempt. */
export function isRetryable(error) {
  if (error instanceof StreamInterruptedError) return false;
  return (
    error instanceof ConnectionError ||
    error instanceof RateLimitError ||
    error instanceof ServiceUnavailableError ||
    error instanceof TimeoutError
  );
}
