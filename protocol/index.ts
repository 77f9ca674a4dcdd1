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
