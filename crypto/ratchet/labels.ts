/**
 * Every constant that enters a Double Ratchet KDF, named once. Changing any of these
 * changes the protocol: bump the message version with it.
 */
import { KDF_LABELS, kdfLabelBytes } from '../../protocol/labels.js';
import { AEAD_NONCE_BYTES } from '../primitives/sizes.js';

/** HKDF info for the root-chain step KDF_RK(rk, dh) -> (rk', ck). */
export const ROOT_KDF_INFO = kdfLabelBytes(KDF_LABELS.ratchetRoot);

/** HKDF info that turns the handshake secret SK into the first root and chain keys. */
export const INITIAL_KDF_INFO = kdfLabelBytes(KDF_LABELS.ratchetInitial);

/**
 * HMAC inputs of the symmetric chain step (as in the Signal Double Ratchet spec §5.2):
 * message key = HMAC(ck, 0x01), next chain key = HMAC(ck, 0x02). Two single-byte
 * constants make the two outputs independent PRF values of the same key.
 */
export const MESSAGE_KEY_INPUT: Uint8Array = Uint8Array.of(0x01);
export const NEXT_CHAIN_KEY_INPUT: Uint8Array = Uint8Array.of(0x02);

/**
 * The AEAD nonce for message keys. Every message key encrypts exactly one message and is
 * then discarded (the chain only moves forward, skipped keys are deleted on use), so the
 * (key, nonce) pair never repeats, which is all RFC 8439 §4 asks for; deriving a nonce
 * per message would cost a KDF call per message and add no security.
 * Shared and never written to: the backends only read it.
 */
export const MESSAGE_NONCE: Uint8Array = new Uint8Array(AEAD_NONCE_BYTES);
