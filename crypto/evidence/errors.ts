/**
 * One error type for everything the evidence code rejects — JWS receipts and signed
 * events, the Merkle log's proofs, checkpoints, signed notes and tiles, and audit export
 * files — with a stable string `code`. Codes are listed in docs/ERRORS.md; a test keeps
 * that list and this one in step. A verifier never reports rejected input as valid: it
 * throws one of these.
 */
export const EVIDENCE_ERROR_CODES = {
  INVALID_JWS: 'Not a well-formed compact JWS of the expected type: bad base64url, a header that is not the expected algorithm, type or key id, or over the size limit.',
  BAD_SIGNATURE: 'The signature does not verify with the key it names.',
  INVALID_RECEIPT: 'A receipt payload that does not match the receipt schema.',
  INVALID_EVENT: 'A signed event that does not match the event schema.',
  INVALID_NOTE: 'A signed note that is malformed, or carries no signature by the expected key.',
  INVALID_CHECKPOINT: 'A checkpoint body that is malformed or names another log.',
  INVALID_PROOF: 'An inclusion or consistency proof that is malformed or does not verify.',
  INVALID_TILE: 'A tile path or tile contents that are malformed or of the wrong size.',
  INVALID_EXPORT: 'An audit export file that is malformed.',
} as const;

export type EvidenceErrorCode = keyof typeof EVIDENCE_ERROR_CODES;

export class EvidenceError extends Error {
  override readonly name = 'EvidenceError';
  readonly code: EvidenceErrorCode;

  constructor(code: EvidenceErrorCode, message?: string, options?: { cause?: unknown }) {
    super(message ?? EVIDENCE_ERROR_CODES[code], options);
    this.code = code;
  }
}
