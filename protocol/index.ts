/**
 * Public surface of hermetic/protocol: the wire contract shared by the relay and
 * clients — frame codecs, transcripts devices sign, error codes and limits.
 */
export { decodeBase64url, encodeBase64url } from './base64url.js';
export { CLOSE_CODES, ERROR_CODES, ProtocolError, isErrorCode } from './errors.js';
export type { ErrorCode } from './errors.js';
export * as limits from './limits.js';
export { decodeClientFrame, encodeClientFrame, encodeServerFrame } from './frames.js';
export type { ClientFrame, ClientFrameType, ServerFrame, ServerFrameType, StoredRecipient } from './frames.js';
export { BINARY_FRAME, decodeDeliver, decodeSend, encodeDeliver, encodeSend } from './envelopes.js';
export type { DeliverFrame, SendFrame, SendTarget } from './envelopes.js';
export { decodeDeviceEntryRequest, decodeDeviceListAnswer, decodeKeyUpload, encodeDeviceListAnswer, encodeSignedKey } from './directory.js';
export type { DeviceEntryRequest, DeviceListAnswer, KeyUploadRequest, WireSignedKey } from './directory.js';
export { deviceAuthTranscript, deviceRegistrationTranscript } from './transcripts.js';
