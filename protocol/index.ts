/**
 * Public surface of hermetic/protocol: the wire contract shared by the relay and
 * clients — frame codecs, transcripts devices sign, error codes and limits.
 */
export { decodeBase64url, encodeBase64url } from './base64url.js';
export { CLOSE_CODES, ERROR_CODES, ProtocolError, decodeErrorBody, isErrorCode, parseErrorBody } from './errors.js';
export type { ErrorBody, ErrorCode } from './errors.js';
export * as limits from './limits.js';
export { decodeClientFrame, decodeServerFrame, encodeClientFrame, encodeServerFrame } from './frames.js';
export type { ClientFrame, ClientFrameType, ServerFrame, ServerFrameType, StoredRecipient } from './frames.js';
export { BINARY_FRAME, decodeDeliver, decodeSend, encodeDeliver, encodeSend } from './envelopes.js';
export type { DeliverFrame, SendFrame, SendTarget } from './envelopes.js';
export {
  decodeBundleAnswer,
  decodeDeviceEntryAnswer,
  decodeDeviceEntryRequest,
  decodeDeviceListAnswer,
  decodeKeyCountsAnswer,
  decodeKeyUpload,
  encodeBundleAnswer,
  encodeDeviceListAnswer,
  encodeKeyCountsAnswer,
  encodeSignedKey,
} from './directory.js';
export type { BundleAnswer, DeviceEntryAnswer, DeviceEntryRequest, DeviceListAnswer, KeyCountsAnswer, KeyUploadRequest, WireSignedKey } from './directory.js';
export { SIGNATURE_LABELS, KDF_LABELS, LABEL_PREFIX } from './labels.js';
export { relayOrigin } from './origin.js';
export { deviceAuthTranscript, deviceRegistrationTranscript } from './transcripts.js';
export { peekSendId, sendContent } from './envelopes.js';
export { FEATURE_STORED_BATCH, STORED_BATCH_VERSION, decodeStoredBatch, encodeStoredBatch } from './stored-batch.js';
export type { StoredAnswer, StoredBatchFrame, StoredFrame } from './stored-batch.js';
export {
  DEFAULT_LOG_CHECKPOINTS_PAGE,
  DEFAULT_LOG_RECEIPTS_PAGE,
  LOG_HASH_PATTERN,
  MAX_LOG_CHECKPOINTS_PAGE,
  MAX_LOG_ENTRY_BYTES,
  MAX_LOG_RECEIPTS_PAGE,
  MAX_RECEIPTS_PER_SUBMIT,
  decodeCheckpointsAnswer,
  decodeConsistencyProofAnswer,
  decodeInclusionProofAnswer,
  decodeLogKeyAnswer,
  decodeReceiptsAnswer,
  decodeSubmitReceiptsAnswer,
  decodeSubmitReceiptsRequest,
} from './log.js';
export type {
  CheckpointRecord,
  CheckpointsAnswer,
  ConsistencyProofAnswer,
  InclusionProofAnswer,
  LogKeyAnswer,
  LoggedReceipt,
  ReceiptRecord,
  ReceiptsAnswer,
  SubmitReceiptsAnswer,
  SubmitReceiptsRequest,
} from './log.js';
