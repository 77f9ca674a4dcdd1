/**
 * Every bound and schedule the SDK applies, in one place, each with its reason. Wire
 * limits shared with the relay are in protocol/limits.ts.
 */
import { MAX_ENVELOPE_BYTES } from '../protocol/limits.js';

/** One-time prekeys of each kind: refilled to the high-water mark whenever the relay
 * holds fewer than the low-water mark (checked after connecting and after each session
 * another device starts with us, which consumes one of each). */
export const PREKEY_HIGH_WATER = 100;
export const PREKEY_LOW_WATER = 25;
/** After sessions were started with us, the count is checked this much later (once for a burst). */
export const PREKEY_TOPUP_DELAY_MS = 5_000;

/** When the relay answers KEY_ID_REUSED (this store is behind what the device already
 * published: restored from a backup, say), the key id counters jump past the highest id
 * the relay names, but by at most this much: a lying relay could otherwise push them to
 * the end of the 32-bit id space. A device publishes a few hundred ids a week. */
export const MAX_KEY_ID_CATCH_UP = 1_000_000;

/** How long a signed prekey or last-resort ML-KEM key is used before a new one replaces it
 * (a compromised prekey stops mattering after this), and how long a replaced one is kept
 * so that sessions started from it while it was current still begin. */
export const SIGNED_PREKEY_ROTATION_MS = 7 * 24 * 3600_000;
export const REPLACED_PREKEY_RETENTION_MS = 14 * 24 * 3600_000;

/** Reconnection: jittered exponential backoff from the base to the cap ("full jitter":
 * a random delay up to the current bound, so many clients don't return at once). */
export const RECONNECT_BASE_MS = 500;
export const RECONNECT_MAX_MS = 30_000;

/** Heartbeat: a ping after this long without any frame, and the connection is declared
 * dead (closed, then reconnected) when nothing at all arrives for HEARTBEAT_TIMEOUT_MS. */
export const HEARTBEAT_INTERVAL_MS = 20_000;
export const HEARTBEAT_TIMEOUT_MS = 45_000;

/** A token is renewed on an open connection this long before it expires. */
export const TOKEN_RENEW_MARGIN_MS = 60_000;

/** While a new device waits to be linked, it looks for itself in its user's list this
 * often (after the first look). */
export const LINK_POLL_MS = 2_000;

/**
 * How long createClient waits for libsodium's WebAssembly to load (crypto/primitives/
 * select.ts) before starting on the fallback implementations; it switches when the load
 * completes either way.
 */
export const CRYPTO_READY_WAIT_MS = 5_000;

/** SENDs in flight on the connection: well inside the relay's per-device budget
 * (MAX_PENDING_SENDS), so a busy client is never refused for pipelining. */
export const MAX_SENDS_IN_FLIGHT = 256;

/** Largest HTTP answer body read from the relay: a whole device list (at most
 * MAX_DEVICE_LIST_LENGTH entries of at most 512 bytes, base64url) fits with room to spare.
 * A declared Content-Length beyond it is refused before reading, and the body is read as
 * a stream and abandoned at the first byte past it, so a hostile relay can't make a
 * client buffer more. */
export const MAX_ANSWER_BYTES = 2 * 1024 * 1024;

/** One HTTP call to the relay, from sending the request to the answer's last byte: past
 * this it is aborted (NETWORK_ERROR), so a relay that stalls can't hang a call forever. */
export const HTTP_REQUEST_TIMEOUT_MS = 30_000;

/** Envelope lifetime the SDK asks for (the relay's maximum is 30 days). */
export const DEFAULT_TTL_SECONDS = 7 * 24 * 3600;

/**
 * The largest message body. A body is framed (PAYLOAD_HEADER_MAX_BYTES), padded to a
 * bucket (crypto/padding.ts) and encrypted; the envelope must fit MAX_ENVELOPE_BYTES even
 * as an initial message. 192 KiB is the largest padding bucket that does; a test checks
 * the arithmetic.
 */
export const MAX_PADDED_PAYLOAD_BYTES = 192 * 1024;
export const PAYLOAD_HEADER_MAX_BYTES = 1 + 1 + 8 + 16 + 4 + 1 + 128 + 1 + 64 + 1;
export const MAX_BODY_BYTES = MAX_PADDED_PAYLOAD_BYTES - 1 - PAYLOAD_HEADER_MAX_BYTES;
/** What an envelope adds to a padded payload at most: an initial message's handshake
 * part (1166 bytes), the ratchet header (41) and the AEAD tag (16). */
export const ENVELOPE_OVERHEAD_BYTES = 1166 + 41 + 16;
export const MAX_ENVELOPE = MAX_ENVELOPE_BYTES;

/** Sessions kept per remote device besides the current one, so messages sent on a
 * session just replaced (both sides started one at once, or healing) still decrypt. */
export const MAX_ARCHIVED_SESSIONS = 3;

/** Remote devices whose current session is kept decoded in memory between messages (the
 * least recently used is forgotten first); a session not kept is decoded from the store. */
export const MAX_CACHED_SESSIONS = 1024;

/** Received envelope ids remembered to drop duplicates (the relay delivers at least
 * once): as long as an envelope can live, and at most this many. */
export const DEDUPE_RETENTION_MS = 30 * 24 * 3600_000;
export const MAX_DEDUPE_ENTRIES = 100_000;

/** DELIVERs decrypted and committed together in one store transaction. */
export const INBOX_BATCH_MAX = 64;

/** A batch of received envelopes that could not be handled (the sender's device list
 * unreachable, a store write failing) is not acknowledged; the client reconnects after
 * INBOX_RETRY_BASE_MS, doubling per failure in a row up to INBOX_RETRY_MAX_MS, and the
 * relay delivers it again. */
export const INBOX_RETRY_BASE_MS = 1_000;
export const INBOX_RETRY_MAX_MS = 60_000;

/** How often remembered envelope ids are pruned (DEDUPE_RETENTION_MS, MAX_DEDUPE_ENTRIES). */
export const DEDUPE_PRUNE_INTERVAL_MS = 3600_000;

/** A device whose messages we cannot decrypt is asked to start a new session at most
 * this often: a broken session heals, a hostile sender can't make us loop. */
export const HEALING_MIN_INTERVAL_MS = 60_000;

/** Verified device lists of other users are re-read at most this often when sending
 * (a DEVICE_LIST_MISMATCH re-reads at once). */
export const DEVICE_LIST_REFRESH_MS = 5 * 60_000;

/** scrypt cost for a store passphrase (N, r, p): ~0.3 s on a laptop core in JavaScript. */
export const STORE_KDF_N = 2 ** 16;
export const STORE_KDF_R = 8;
export const STORE_KDF_P = 1;

/** Group ids are application strings; bounded by the sender-key format. */
export const MAX_GROUP_ID_LENGTH = 64;
export const MAX_GROUP_MEMBERS = 256;

/** Pending receipt entries that could not be sent (the relay unreachable) are tried again after this. */
export const RECEIPT_RETRY_MS = 5_000;
/** The sweep for MISSING_RECEIPT and GAP runs at least this often, and at most this often. */
export const RECEIPT_SWEEP_MAX_MS = 60_000;
export const RECEIPT_SWEEP_MIN_MS = 1_000;
/** Receipts submitted to the relay's log per request (the relay's MAX_RECEIPTS_PER_SUBMIT). */
export const LOG_SUBMIT_BATCH = 64;
/** A log submission that failed for a passing reason is tried again after this. */
export const LOG_RETRY_MS = 10_000;

/**
 * Topics (client-sdk/topics.ts). A publisher device's topic key generation is replaced
 * after this many messages or this long (whichever comes first), bounding what one
 * leaked generation reads; and at once when a device that held it stops being a reader.
 */
export const TOPIC_KEY_ROTATE_MESSAGES = 10_000;
export const TOPIC_KEY_MAX_AGE_MS = 24 * 3600_000;
/** Generations kept per (publisher device, topic) on a reader: older ones are forgotten,
 * so a replay reaching further back than this many rotations cannot be read. */
export const MAX_TOPIC_KEYS_PER_SENDER = 64;
/** Topics a reader keeps generations for per publisher device: a peer with a session
 * cannot fill the store with keys for made-up topics. Past it, a new topic's key is refused. */
export const MAX_TOPICS_PER_SENDER = 1_024;
/** A generation received this long ago can open no stored message (a topic keeps messages
 * a year at most, a generation seals for a day): it is forgotten. */
export const TOPIC_KEY_RETENTION_MS = 366 * 24 * 3600_000 + TOPIC_KEY_MAX_AGE_MS;
/** A topic message whose generation has not arrived (it travels by mailbox, the message by
 * topic) is held this long for it by default, then reported as TOPIC_KEY_MISSING. */
export const TOPIC_KEY_WAIT_MS = 30_000;
/** The longest `keyWaitMs`: the longest a timer holds (2^31 - 1 ms, about 24.8 days). */
export const MAX_TOPIC_KEY_WAIT_MS = 0x7fff_ffff;
/** Users a publisher hands its topic key to. */
export const MAX_TOPIC_READERS = MAX_GROUP_MEMBERS;
/** A topic message's framing before the body: version, kind, sentAt, publish id (length
 * and up to 64 bytes), ordering key (length and up to 256 bytes). */
export const TOPIC_PAYLOAD_HEADER_MAX_BYTES = 1 + 1 + 8 + 1 + 64 + 2 + 256;
/** The largest topic message body: padded to at most MAX_PADDED_PAYLOAD_BYTES, it fits the
 * relay's MAX_TOPIC_MESSAGE_BYTES with the topic key's 129 bytes of header, tag and signature. */
export const MAX_TOPIC_BODY_BYTES = MAX_PADDED_PAYLOAD_BYTES - 1 - TOPIC_PAYLOAD_HEADER_MAX_BYTES;
/** Messages a subscription holds for a slow handler before it leaves the live stream;
 * it subscribes again from where the handler is once they are handled. */
export const MAX_SUBSCRIPTION_BUFFER = 256;
/** A consumer's default prefetch (messages leased to it at once). */
export const DEFAULT_CONSUMER_PREFETCH = 16;
/** A failed handler's message is leased again after base × 2^(deliveries-1), at most max. */
export const CONSUMER_NACK_BASE_MS = 1_000;
export const CONSUMER_NACK_MAX_MS = 60_000;
/** Publish ids remembered per device, for DEDUPE_RETENTION_MS: publishing an id again from
 * this device answers with the first publish rather than sealing the body anew. */
export const MAX_PUBLISHED_IDS = 100_000;
