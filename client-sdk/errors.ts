/**
 * The SDK's errors: one class with a stable string `code` (listed in docs/ERRORS.md; a
 * test keeps the two in step). A relay refusal keeps the relay's code in `relayCode`;
 * a cryptographic failure keeps the crypto code in `cause`.
 */
import { ERROR_CODES } from '../protocol/errors.js';

export const SDK_ERROR_CODES = {
  /** The client was closed: no further calls. */
  CLIENT_CLOSED: 'The client was closed.',
  /** An argument is of the wrong type or out of range. */
  INVALID_ARGUMENT: 'An argument is of the wrong type or out of range.',
  /** A signed event or receipt that is malformed or does not verify (details.evidenceCode). */
  EVIDENCE_INVALID: 'The signed event or receipt is malformed or does not verify.',
  /** A device that is not in its user's verified device list. */
  UNKNOWN_DEVICE: 'The device is not in its user\'s verified device list.',
  /** A message body over MAX_BODY_BYTES. */
  BODY_TOO_LARGE: 'The message body is larger than MAX_BODY_BYTES.',
  /** The user has no verified devices (no device list, or an empty one). */
  UNKNOWN_USER: 'The user has no devices to send to.',
  /** The user's identity changed and the trust policy blocks sending until accepted. */
  IDENTITY_BLOCKED: 'The recipient\'s identity changed; accept it before sending.',
  /** The relay served a device list that does not verify. */
  DEVICE_LIST_INVALID: 'The relay served a device list that does not verify.',
  /** This device is not (or no longer) in its user's device list. */
  NOT_LINKED: 'This device is not in its user\'s device list.',
  /** This device was revoked. */
  DEVICE_REVOKED: 'This device was revoked from its user\'s device list.',
  /** A link code that is malformed, for another user, or whose consent does not verify. */
  INVALID_LINK_CODE: 'The link code is not valid for this user.',
  /** The store's key or passphrase is wrong. */
  STORE_KEY_INVALID: 'The store key or passphrase is wrong.',
  /** The store holds data this version cannot read. */
  STORE_CORRUPT: 'The store holds data that cannot be read.',
  /** The relay refused a request (see `relayCode`). */
  RELAY_ERROR: 'The relay refused the request.',
  /** The relay answered with something malformed. */
  RELAY_PROTOCOL_ERROR: 'The relay answered with something malformed.',
  /** A message was not stored by the relay within its TTL (offline, or refused with a
   * retryable code, all that time): it was dropped from the outbox. */
  SEND_EXPIRED: 'The message was not stored within its TTL and was dropped.',
  /** The relay could not be reached. */
  NETWORK_ERROR: 'The relay could not be reached.',
  /** A topic message whose publisher never gave this device its key generation (in time). */
  TOPIC_KEY_MISSING: 'This device does not hold the key the topic message was sealed with.',
  /** A topic message that does not verify or decrypt, or whose metadata the relay altered. */
  TOPIC_MESSAGE_INVALID: 'The topic message does not verify, decrypt or match its metadata.',
  /** This device published the publish id before with another body or key. */
  PUBLISH_ID_CONFLICT: 'The publish id was used before with another body or key.',
} as const;

export type SdkErrorCode = keyof typeof SDK_ERROR_CODES;

export class SdkError extends Error {
  override readonly name = 'SdkError';
  readonly code: SdkErrorCode;
  /** The relay's error code, for RELAY_ERROR. */
  readonly relayCode: string | undefined;
  readonly details: Readonly<Record<string, unknown>> | undefined;

  constructor(code: SdkErrorCode, message?: string, opts: { cause?: unknown; relayCode?: string; details?: Record<string, unknown> } = {}) {
    super(message ?? SDK_ERROR_CODES[code], opts.cause === undefined ? undefined : { cause: opts.cause });
    this.code = code;
    this.relayCode = opts.relayCode;
    this.details = opts.details;
  }
}

/** A failure that may pass: the relay unreachable, or a refusal its code says to retry. */
export function passing(err: unknown): boolean {
  if (!(err instanceof SdkError)) return false;
  if (err.code === 'NETWORK_ERROR') return true;
  if (err.code !== 'RELAY_ERROR') return false;
  return err.relayCode === undefined || (ERROR_CODES as Record<string, { retry: boolean } | undefined>)[err.relayCode]?.retry === true;
}
