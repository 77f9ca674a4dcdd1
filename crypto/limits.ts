/**
 * Every tunable bound crypto/ enforces, in one place, each with the reason beside it.
 * Fixed algorithm sizes (key and tag lengths) are in crypto/primitives/sizes.ts.
 */

// ---------------------------------------------------------------------------------------
// Primitives, identity, padding
// ---------------------------------------------------------------------------------------

/**
 * Smallest padded plaintext. Everything shorter (typing notifications, receipts, short
 * texts) looks the same on the wire, which is most of the traffic.
 */
export const PADDING_MIN_BUCKET_BYTES = 256;

/**
 * Up to here buckets are powers of two, so padding costs at most ~50% and the length of
 * a message leaks only its order of magnitude.
 */
export const PADDING_POWER_OF_TWO_MAX_BYTES = 64 * 1024;

/**
 * Above PADDING_POWER_OF_TWO_MAX_BYTES buckets are multiples of this step: doubling a
 * large message would waste bandwidth, and a fixed step still hides the exact length.
 */
export const PADDING_LARGE_STEP_BYTES = 64 * 1024;

/**
 * Largest padded plaintext one envelope may carry. Bounds the memory one decryption can
 * demand; bulk data (attachments) travels as separate encrypted blobs referenced from a
 * message. Must be a bucket boundary (a multiple of PADDING_LARGE_STEP_BYTES).
 */
export const MAX_PADDED_PLAINTEXT_BYTES = 1024 * 1024;

/**
 * Longest stable identifier (user id) that goes into a safety number. Ids are short
 * application identifiers; the bound stops a hostile directory from making each of the
 * 5200 hash iterations' input large.
 */
export const MAX_SAFETY_NUMBER_ID_BYTES = 256;

/**
 * Longest context label for domain-separated signatures. Labels are constants in our own
 * code ("published-key/x25519-signed-prekey"); anything longer is a bug.
 */
export const MAX_SIGNATURE_CONTEXT_LABEL_BYTES = 64;

// ---------------------------------------------------------------------------------------
// Handshake, double ratchet, sender keys
// ---------------------------------------------------------------------------------------
