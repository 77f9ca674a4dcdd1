/** Evidence a third party can check: JWS receipts and signed events. */
export { EVIDENCE_ERROR_CODES, EvidenceError, type EvidenceErrorCode } from './errors.js';
export { type JwsHeader, type OkpJwk, type ParsedJws, identityJwk, identityKeyFromJwk, jwkThumbprint, parseJws, signJws, verifyJws, verifyParsedJws } from './jws.js';
export {
  MAX_RECEIPT_ENTRIES,
  MAX_RECEIPT_JWS_BYTES,
  RECEIPT_FLAGS,
  RECEIPT_TYP,
  RECEIPT_VERSION,
  type ParsedReceipt,
  type Party,
  type ReceiptEntry,
  type ReceiptFlag,
  type ReceiptPayload,
  parseReceipt,
  signReceipt,
  validateReceiptPayload,
  verifyReceipt,
} from './receipt.js';
export { EVENT_TYP, MAX_EVENT_JWS_BYTES, type EventInput, type ParsedEvent, type SignedEvent, eventHash, parseEvent, signEvent, validateEvent, verifyEvent } from './event.js';
