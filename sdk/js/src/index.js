// @ai-orchestra/sdk: the JavaScript client of AI Orchestra (Node >= 20 and browsers).

export { AIOrchestra, DEFAULT_BASE_URL, DEFAULT_MAX_RETRIES, DEFAULT_TIMEOUT_MS, VERSION } from './client.js';
export { ChatStream } from './stream.js';
export {
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
  errorClassForCode,
} from './errors.js';
export { backoffMs } from './retry.js';
export { SIGNATURE_HEADER, WebhookSignatureError, verifyWebhook } from './webhooks.js';
