/**
 * One error type for everything crypto/ rejects, with a stable string `code`.
 *
 * Every authentication failure (bad AEAD tag, bad MAC, wrong key, tampered header)
 * surfaces as the same DECRYPT_FAILED so that a caller, and an attacker watching the
 * caller, cannot tell which check failed. Codes are listed in docs/ERRORS.md; a test
 * keeps that list and this union in step.
 */
export type CryptoErrorCode =
  | 'DECRYPT_FAILED'
  | 'INVALID_KEY'
  | 'INVALID_SIGNATURE'
  | 'INVALID_ARGUMENT'
  | 'INVALID_MESSAGE'
  | 'REPLAYED_MESSAGE'
  | 'TOO_MANY_SKIPPED'
  | 'UNSUPPORTED_VERSION'
  | 'INVALID_STATE';

export const CRYPTO_ERROR_CODES: readonly CryptoErrorCode[] = [
  'DECRYPT_FAILED',
  'INVALID_KEY',
  'INVALID_SIGNATURE',
  'INVALID_ARGUMENT',
  'INVALID_MESSAGE',
  'REPLAYED_MESSAGE',
  'TOO_MANY_SKIPPED',
  'UNSUPPORTED_VERSION',
  'INVALID_STATE',
];

export class CryptoError extends Error {
  override readonly name = 'CryptoError';
  readonly code: CryptoErrorCode;

  constructor(code: CryptoErrorCode, message: string, options?: { cause?: unknown }) {
    super(message, options);
    this.code = code;
  }
}
