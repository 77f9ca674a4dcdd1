/** Constants of the sender-key protocol, named once. */
import { SIGNATURE_LABELS, signatureLabelBytes } from '../../protocol/labels.js';

/** Version in the high nibble of the first byte of both sender-key messages. */
export const SENDER_KEY_VERSION = 1;
/** Types in the low nibble (after the pairwise session's 1 = ratchet, 2 = initial). */
export const SENDER_KEY_DISTRIBUTION_TYPE = 3;
export const GROUP_MESSAGE_TYPE = 4;

/**
 * Prefix of what a group message's signature covers, followed by the group id (u8
 * length + bytes) and the whole message up to the signature. Binding the group id means a
 * message cannot be replayed into another group that happens to share the sender key.
 */
export const GROUP_MESSAGE_SIGNATURE_LABEL = signatureLabelBytes(SIGNATURE_LABELS.senderKeyMessage);
