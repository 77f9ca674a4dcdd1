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

/**
 * Most message keys one received message may make us derive and store on one chain (how
 * far its message number, or its header's previous-chain length, may run ahead of the
 * chain). Bounds the work an unauthenticated header can cause before the AEAD check
 * (at most this many HMAC pairs) while covering any realistic burst lost in transit.
 */
export const MAX_SKIPPED_KEYS_PER_MESSAGE = 2000;

/**
 * Most skipped message keys one session keeps, over all its receiving chains. Beyond it
 * the oldest are dropped first (FIFO): the longest-missing messages are the likeliest
 * never to arrive, and the bound caps session state at ~140 KB.
 */
export const MAX_SKIPPED_KEYS_STORED = 2000;

/**
 * Receiving chains (one per peer ratchet key) kept after newer ones appear, so late
 * messages of a recent chain still decrypt. Older chains are dropped with their chain key;
 * their skipped keys stay in the store above until evicted from it.
 */
export const MAX_RECEIVER_CHAINS = 5;

/**
 * How far a group message's iteration may run ahead of the receiver's sender-key chain.
 * Group messages are signed and the signature is checked first, so only a member can
 * cause this work; the bound still caps what one message costs.
 */
export const MAX_SENDER_KEY_FORWARD_JUMP = 2000;

/** Skipped group message keys kept per sender-key generation, oldest evicted first. */
export const MAX_SENDER_KEY_SKIPPED_KEYS = 2000;

/**
 * Sender-key generations a receiver keeps per (group, sender device): the current one and
 * the one it replaced, so messages already in flight when the sender rotated (after a
 * membership change) still decrypt. Anything older is refused.
 */
export const MAX_SENDER_KEY_GENERATIONS = 2;

/** Longest group id accepted in a sender-key distribution message. */
export const MAX_GROUP_ID_BYTES = 64;
