/**
 * Wire limits: every size and count an untrusted peer controls, bounded before any work
 * is done. The relay and the SDK read these from here; docs/PROTOCOL.md lists them.
 */

/** Largest HTTP request body the relay reads. A prekey upload of 100 one-time ML-KEM
 * keys (1184 bytes each, base64url) plus signatures is ~230 KiB; 512 KiB leaves room. */
export const MAX_HTTP_BODY_BYTES = 512 * 1024;

/** Largest WebSocket message. An envelope payload is capped below; a frame adds JSON
 * framing and base64 expansion (4/3). */
export const MAX_FRAME_BYTES = 1024 * 1024;

/** Largest opaque envelope ciphertext, in bytes. */
export const MAX_ENVELOPE_BYTES = 256 * 1024;

/** At most this many keys (one-time X25519 + one-time ML-KEM together) per upload, so a
 * single request cannot make the relay verify an unbounded number of signatures. */
export const MAX_KEYS_PER_UPLOAD = 100;

/** Device ids are short printable tokens chosen by the client. */
export const DEVICE_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;
export const MAX_DEVICE_ID_LENGTH = 64;

/** A user id is the JWT `sub`; bounded because it is stored and used as a routing key.
 * Printable ASCII without spaces: safe in logs, paths and space-separated lists. */
export const MAX_USER_ID_LENGTH = 128;
export const USER_ID_PATTERN = /^[\x21-\x7e]+$/;

/** A user may have at most this many active devices (Signal allows a handful). */
export const MAX_DEVICES_PER_USER = 16;

/** Entries (root, adds and revocations together) after which a user's signed device
 * list takes no more devices: every client replays the list once and then only its new
 * entries, and the bound caps that first replay (two signature checks per entry) and what
 * the relay stores per user. Revocations are still accepted past it, so that a device
 * can always be revoked, even when someone holding a stolen device filled the list with
 * add/revoke pairs. */
export const MAX_DEVICE_LIST_ENTRIES = 1024;

/** The longest a device list can get: a list full at MAX_DEVICE_LIST_ENTRIES with every
 * device active, then each of them but the last revoked (a revocation needs an active
 * device other than the last, so nothing can follow). */
export const MAX_DEVICE_LIST_LENGTH = MAX_DEVICE_LIST_ENTRIES + MAX_DEVICES_PER_USER - 1;

/** Key ids are unsigned 32-bit integers. */
export const MAX_KEY_ID = 0xffff_ffff;

/** Longest relay origin (`wss://host:port`) a device signs into its auth transcript. */
export const MAX_ORIGIN_LENGTH = 256;

/** Size of the server challenge a device signs to bind a WebSocket connection. */
export const CHALLENGE_BYTES = 32;

/** A connection that has not authenticated within this time is closed, so an idle
 * unauthenticated socket cannot hold server resources. The default: a relay may be
 * configured for 1-60 s (HERMETIC_AUTH_TIMEOUT_MS). */
export const AUTH_TIMEOUT_MS = 10_000;

/** Bearer tokens longer than this are rejected before verification. */
export const MAX_TOKEN_BYTES = 8 * 1024;

/** Largest WebSocket message read before the connection is authenticated; a larger one
 * is FRAME_TOO_LARGE and the socket is closed with 4001. The largest legitimate frame
 * before auth is the auth frame: a MAX_TOKEN_BYTES token, a 64-character device id, an
 * origin of up to MAX_ORIGIN_LENGTH (256), a 64-byte signature (86 characters), at most
 * MAX_AUTH_FEATURES names of MAX_FEATURE_NAME_LENGTH (~600 bytes) and ~80 bytes of JSON,
 * ~9.3 KiB. 16 KiB leaves about twice that, while an unauthenticated
 * peer can no longer make the relay read 1 MiB frames. */
export const MAX_PREAUTH_FRAME_BYTES = 16 * 1024;

/** Bundle fetches per requesting user: a token bucket of this capacity refilled at this
 * rate. Bounds how fast one account can drain another's one-time prekeys. */
export const BUNDLE_FETCH_BURST = 60;
export const BUNDLE_FETCH_PER_SECOND = 10;

/** Key uploads per user: each verifies up to MAX_KEYS_PER_UPLOAD + 2 signatures before
 * anything is stored. A new device uploads 3 to 5 times and then tops up now and then,
 * so the burst leaves room for several devices starting together. */
export const KEY_UPLOAD_BURST = 20;
export const KEY_UPLOADS_PER_SECOND = 0.5;

/** Device list changes (link, revoke) per user: each costs signature checks and a
 * transaction over the user's whole list, and people link devices rarely. */
export const DEVICE_LIST_WRITE_BURST = 10;
export const DEVICE_LIST_WRITES_PER_SECOND = 1;

/** Envelope ids are 16 random bytes chosen by the sender (128 bits: no collisions). */
export const ENVELOPE_ID_BYTES = 16;

/** Targets of one SEND: every current device of the recipient, so bounded by the device cap. */
export const MAX_TARGETS_PER_SEND = MAX_DEVICES_PER_USER;

/** Envelope lifetime bounds. Expired envelopes are removed and their range announced. */
export const MIN_TTL_SECONDS = 1;
export const MAX_TTL_SECONDS = 30 * 24 * 3600;

/** Unacknowledged envelopes in flight per connection: bounds what a slow or stalled
 * device can make the relay hold and re-send, while keeping the pipe full. */
export const MAX_INFLIGHT_ENVELOPES = 256;

/** SENDs a connection may have awaiting their STORED answer, by count and by bytes.
 * Beyond either, further SENDs are refused with RATE_LIMITED until answers come back:
 * a client pipelining without bound cannot grow the relay's memory. A client should
 * keep its own window well inside these. */
export const MAX_PENDING_SENDS = 1024;
export const MAX_PENDING_SEND_BYTES = 16 * 1024 * 1024;

/** STORED answers in one STORED_BATCH frame (protocol/stored-batch.ts). The relay writes
 * one commit's answers for a connection in as many frames as this needs; at 256, the
 * largest possible frame (every answer with 16 recipients of 64-character device ids) is
 * about 302 KiB, inside MAX_FRAME_BYTES. A commit of the relay's send batcher takes at
 * most 512 SENDs, so a connection's answers to one commit fill at most two frames. */
export const MAX_STORED_PER_BATCH = 256;

/** Features a client may name in its `auth` frame, and the length of each name: unknown
 * names are ignored, so the bounds only keep the frame cheap to read. */
export const MAX_AUTH_FEATURES = 16;
export const MAX_FEATURE_NAME_LENGTH = 32;

/** Topic names: dot-separated segments of lower-case letters, digits, dashes and
 * underscores, building hierarchies ("bank-a.payments"); bounded because they are
 * stored, logged and matched against access patterns. */
export const TOPIC_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]*(?:\.[a-z0-9_-]+)*$/;
export const MAX_TOPIC_NAME_LENGTH = 128;

/** Largest topic message (opaque ciphertext), as for an envelope. */
export const MAX_TOPIC_MESSAGE_BYTES = MAX_ENVELOPE_BYTES;

/** A publish id (the publisher's idempotency key) and a message's ordering key. */
export const MAX_PUBLISH_ID_BYTES = 64;
export const MAX_MESSAGE_KEY_BYTES = 256;

/** Messages one publish batch may carry, and one read may return (and its bytes). */
export const MAX_PUBLISH_BATCH = 256;
export const MAX_TOPIC_READ_MESSAGES = 256;
export const MAX_TOPIC_READ_BYTES = 4 * 1024 * 1024;

/** Bounds of a topic's retention settings: age from one second to a year, size from
 * 1 MiB to 1 TiB. */
export const MIN_TOPIC_RETENTION_MS = 1000;
export const MAX_TOPIC_RETENTION_MS = 365 * 24 * 3600 * 1000;
export const MIN_TOPIC_RETENTION_BYTES = 1024 * 1024;
export const MAX_TOPIC_RETENTION_BYTES = 1024 ** 4;

/** Topics one connection may be subscribed to at once. */
export const MAX_SUBSCRIPTIONS_PER_CONNECTION = 64;

/** Consumer group names: one segment of a-z 0-9 _ -. */
export const GROUP_NAME_PATTERN = /^[a-z0-9][a-z0-9_-]*$/;
export const MAX_GROUP_NAME_LENGTH = 64;
/** Messages one lease call gives a member, and offsets one ack, nack or extend names. */
export const MAX_GROUP_LEASE = 256;
export const MAX_GROUP_SETTLE = 256;
/** A group's visibility timeout (and a lease extension), and its maximum deliveries. */
export const MIN_VISIBILITY_MS = 1000;
export const MAX_VISIBILITY_MS = 12 * 3600 * 1000;
export const MAX_MAX_DELIVERIES = 100;
