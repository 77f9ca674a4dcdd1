/**
 * Every label Hermetic binds into what it signs or derives, in one registry. Each is
 * used as `"hermetic/v1/" + label`: followed by a NUL byte and the body for a signature
 * (domain separation: a signature made for one purpose never verifies for another, see
 * crypto/identity/signature-context.ts), or alone as an HKDF `info` string. A label must
 * be unique across both uses; a test checks that, and that no other module spells
 * "hermetic/v1/" itself. docs/CRYPTO.md lists what each one signs.
 */
const encoder = new TextEncoder();

export const LABEL_PREFIX = 'hermetic/v1/';

/** Labels of signed transcripts. */
export const SIGNATURE_LABELS = {
  /** A device's consent to join a user's device list (protocol/transcripts.ts). */
  deviceRegistration: 'device-registration',
  /** A device proving itself on a connection, revision 2: with the relay origin. */
  deviceAuth: 'device-auth/2',
  /** An entry of the signed device list (crypto/devices/entry.ts). */
  deviceListEntry: 'device-list/entry',
  /** A prekey a device publishes (crypto/published-key.ts). */
  publishedKey: 'published-key',
  /** A group message, signed by a sender key (crypto/group/wire.ts). */
  senderKeyMessage: 'sender-key/message',
  /** A topic message, signed by its generation's signing key (crypto/topic/topic-key.ts). */
  topicMessage: 'topic/message',
} as const;

/** HKDF `info` strings. */
export const KDF_LABELS = {
  /** The handshake secret from 4 DH + 1 KEM (crypto/handshake/agreement.ts). */
  pqxdh: 'pqxdh/x25519-sha256-mlkem768',
  /** The first root and chain key from the handshake secret (crypto/ratchet/labels.ts). */
  ratchetInitial: 'ratchet/initial',
  /** Each DH ratchet step (crypto/ratchet/labels.ts). */
  ratchetRoot: 'ratchet/root',
  /** A topic message's key and nonce from its generation's secret and salt (crypto/topic/topic-key.ts). */
  topicMessageKey: 'topic/message-key',
} as const;

export type SignatureLabel = (typeof SIGNATURE_LABELS)[keyof typeof SIGNATURE_LABELS];

/** `"hermetic/v1/" || label || 0x00`: the head of a signed transcript. */
export function signatureLabelBytes(label: string): Uint8Array {
  return encoder.encode(`${LABEL_PREFIX}${label}\0`);
}

/** `"hermetic/v1/" || label`: an HKDF info string. */
export function kdfLabelBytes(label: string): Uint8Array {
  return encoder.encode(`${LABEL_PREFIX}${label}`);
}
