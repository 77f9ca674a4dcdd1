/**
 * Stable error codes of the wire protocol. Every rejection the relay sends, over HTTP or
 * WebSocket, carries one of these in `error.code`. docs/ERRORS.md lists them all with
 * their meaning; a test fails when the two drift apart.
 */
export const ERROR_CODES = {
  BAD_REQUEST: { http: 400, retry: false },
  BODY_TOO_LARGE: { http: 413, retry: false },
  BODY_TIMEOUT: { http: 408, retry: true },
  FRAME_TOO_LARGE: { http: 413, retry: false },
  UNSUPPORTED_MEDIA_TYPE: { http: 415, retry: false },
  UNKNOWN_FRAME: { http: 400, retry: false },
  NOT_FOUND: { http: 404, retry: false },
  METHOD_NOT_ALLOWED: { http: 405, retry: false },
  UNAUTHENTICATED: { http: 401, retry: false },
  TOKEN_IN_QUERY: { http: 400, retry: false },
  TOKEN_INVALID: { http: 401, retry: false },
  TOKEN_EXPIRED: { http: 401, retry: false },
  TOKEN_WRONG_ISSUER: { http: 401, retry: false },
  TOKEN_WRONG_AUDIENCE: { http: 401, retry: false },
  CHALLENGE_FAILED: { http: 401, retry: false },
  AUTH_TIMEOUT: { http: 408, retry: true },
  ALREADY_AUTHENTICATED: { http: 400, retry: false },
  TOO_MANY_UNAUTHENTICATED: { http: 429, retry: true },
  TOO_MANY_CONNECTIONS: { http: 503, retry: true },
  FORBIDDEN: { http: 403, retry: false },
  DEVICE_NOT_FOUND: { http: 404, retry: false },
  DEVICE_EXISTS: { http: 409, retry: false },
  TOO_MANY_DEVICES: { http: 409, retry: false },
  DEVICE_NOT_AUTHORIZED: { http: 403, retry: false },
  DEVICE_LIST_CONFLICT: { http: 409, retry: true },
  DEVICE_LIST_FULL: { http: 409, retry: false },
  LAST_DEVICE: { http: 409, retry: false },
  INVALID_SIGNATURE: { http: 400, retry: false },
  INVALID_KEY: { http: 400, retry: false },
  TOO_MANY_KEYS: { http: 400, retry: false },
  KEY_ID_CONFLICT: { http: 409, retry: false },
  KEY_ID_REUSED: { http: 409, retry: false },
  NO_SIGNED_PREKEY: { http: 404, retry: true },
  RATE_LIMITED: { http: 429, retry: true },
  TOO_MANY_TARGETS: { http: 400, retry: false },
  ENVELOPE_TOO_LARGE: { http: 413, retry: false },
  ENVELOPE_ID_CONFLICT: { http: 409, retry: false },
  DEVICE_LIST_MISMATCH: { http: 409, retry: true },
  MAILBOX_FULL: { http: 507, retry: true },
  RELAY_BUSY: { http: 503, retry: true },
  ACK_BEYOND_DELIVERED: { http: 400, retry: false },
  TOO_MANY_RECEIPTS: { http: 400, retry: false },
  RECEIPT_INVALID: { http: 400, retry: false },
  RECEIPT_KEY_MISMATCH: { http: 400, retry: false },
  RECEIPT_NOT_PARTY: { http: 403, retry: false },
  RECEIPT_NOT_DELIVERED: { http: 403, retry: false },
  AUDITOR_ONLY: { http: 403, retry: false },
  TOPIC_NOT_FOUND: { http: 404, retry: false },
  TOPIC_EXISTS: { http: 409, retry: false },
  TOO_MANY_TOPICS: { http: 409, retry: false },
  PUBLISH_ID_CONFLICT: { http: 409, retry: false },
  MESSAGE_TOO_LARGE: { http: 413, retry: false },
  OFFSET_RETIRED: { http: 410, retry: false },
  OFFSET_OUT_OF_RANGE: { http: 416, retry: false },
  TOPIC_EPOCH_CHANGED: { http: 409, retry: false },
  GROUP_NOT_FOUND: { http: 404, retry: false },
  GROUP_EXISTS: { http: 409, retry: false },
  TOO_MANY_GROUPS: { http: 409, retry: false },
  NOT_LEASED: { http: 409, retry: false },
  UNAVAILABLE: { http: 503, retry: true },
  INTERNAL: { http: 500, retry: true },
} as const satisfies Record<string, { http: number; retry: boolean }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export function isErrorCode(s: string): s is ErrorCode {
  return Object.prototype.hasOwnProperty.call(ERROR_CODES, s);
}

/** A rejection with a stable code, safe to send to the peer: the message never contains
 * secrets or internal details. */
export class ProtocolError extends Error {
  override readonly name = 'ProtocolError';
  readonly code: ErrorCode;
  /** Extra machine-readable detail sent to the peer (e.g. `retryAfterMs`). */
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>) {
    super(message);
    this.code = code;
    this.details = details;
  }

  get httpStatus(): number {
    return ERROR_CODES[this.code].http;
  }

  toJSON(): { code: ErrorCode; message: string; details?: Record<string, unknown> } {
    return this.details ? { code: this.code, message: this.message, details: { ...this.details } } : { code: this.code, message: this.message };
  }
}

/** WebSocket close codes the relay uses (4000-4999 is the application range, RFC 6455 §7.4.2). */
export const CLOSE_CODES = {
  /** RFC 6455 "going away": the relay is shutting down; reconnect elsewhere or later. */
  GOING_AWAY: 1001,
  /** RFC 6455 "try again later" (IANA registry): the connection could not be
   * authenticated because the relay cannot reach its database; reconnect with backoff. */
  TRY_AGAIN_LATER: 1013,
  /** Authentication failed or timed out. */
  AUTH_FAILED: 4001,
  /** A newer connection for the same device replaced this one. */
  REPLACED: 4002,
  /** The device was revoked from its user's device list. */
  DEVICE_REVOKED: 4003,
} as const;

/** The fields of an error answer, checked: a known code, a message, optional details. */
export interface ErrorBody {
  readonly code: ErrorCode;
  readonly message: string;
  readonly id: number | undefined;
  readonly details: Readonly<Record<string, unknown>> | undefined;
}

/** Longest error message kept from a peer (the rest is cut). */
const MAX_ERROR_MESSAGE_LENGTH = 1024;

/**
 * Reads the fields of an error — the object inside `{"error": {...}}` over HTTP, or an
 * `error` frame. Undefined when it is not a well-formed error with a known code (a relay
 * of a newer revision may add codes: a client treats those as failures).
 */
export function parseErrorBody(v: unknown): ErrorBody | undefined {
  const o = typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined;
  const code = o?.code;
  const message = o?.message;
  if (typeof code !== 'string' || !isErrorCode(code) || typeof message !== 'string') return undefined;
  const details = o?.details;
  const id = o?.id;
  return {
    code,
    message: message.slice(0, MAX_ERROR_MESSAGE_LENGTH),
    id: typeof id === 'number' && Number.isSafeInteger(id) ? id : undefined,
    details: typeof details === 'object' && details !== null && !Array.isArray(details) ? { ...(details as Record<string, unknown>) } : undefined,
  };
}

/** An error answer as a ProtocolError (BAD_REQUEST when the answer is malformed). */
export function decodeErrorBody(v: unknown): ProtocolError {
  const e = parseErrorBody(v);
  if (e === undefined) return new ProtocolError('BAD_REQUEST', 'the relay answered with a malformed error');
  const details = { ...e.details, ...(e.id !== undefined ? { id: e.id } : {}) };
  return new ProtocolError(e.code, e.message, Object.keys(details).length > 0 ? details : undefined);
}
