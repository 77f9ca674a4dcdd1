/**
 * Relay-side limits, each with its reason. Wire limits shared with the SDK live in
 * protocol/limits.ts.
 */

/** One-time prekeys of each kind stored per device. Bounds storage one device can use;
 * Signal-like clients keep ~100 and top up when the count runs low. */
export const MAX_STORED_ONE_TIME_KEYS = 1000;

/** Rate-limiter entries kept in memory; the least recently used are dropped beyond this,
 * so a flood of distinct user ids cannot grow the relay's memory without bound. */
export const MAX_RATE_LIMIT_ENTRIES = 100_000;

/** HTTP requests in flight per process; beyond this new ones get UNAVAILABLE. */
export const MAX_INFLIGHT_HTTP = 1024;

/** HTTP requests in flight per user, counted from the moment the token verifies (which
 * runs alongside the body read); beyond this the user's requests get RATE_LIMITED. So
 * one user with slow bodies holds at most this many (1/16) of the MAX_INFLIGHT_HTTP
 * slots. At least BUNDLE_FETCH_BURST (60), so that a client may spend its whole
 * bundle-fetch burst at once (a group's devices). */
export const MAX_INFLIGHT_HTTP_PER_USER = 64;

/** Time for a request's whole body to arrive, from the request's start
 * (HERMETIC_HTTP_BODY_TIMEOUT_MS overrides it). A MAX_HTTP_BODY_BYTES (512 KiB) body
 * takes ~4 s at 1 Mbit/s; past this the request is BODY_TIMEOUT and its connection is
 * closed, so a slow sender cannot hold a request slot for long. */
export const HTTP_BODY_TIMEOUT_MS = 30_000;

/** Group commit of SENDs: at most this many SEND frames per transaction. Large enough to
 * amortize a commit over many envelopes, small enough to keep one batch's latency low.
 * A batch gathers the SENDs that arrived in one turn of the event loop, plus whatever
 * queued while earlier batches were being written; it never waits on a timer. */
export const SEND_BATCH_MAX = 512;
/** Send batches in flight at once. Batches in flight never share a recipient, so they
 * lock disjoint mailboxes and commit side by side, and one recipient's SENDs are still
 * written in order. */
export const SEND_BATCH_CONCURRENCY = 2;
/** A second send batch starts beside the first only when at least this many SENDs for
 * other recipients are waiting. Measured (docs/PERFORMANCE.md): under light load, two
 * small transactions at a time cost latency (more commits competing for two cores);
 * under heavy load they raise throughput. */
export const SEND_PARALLEL_MIN = 64;

/** ACKs are coalesced (highest per mailbox) and applied in batches of at most this many
 * mailboxes, waiting at most ACK_BATCH_MAX_WAIT_MS; ACK persistence is off the hot path. */
export const ACK_BATCH_MAX = 1024;
export const ACK_BATCH_MAX_WAIT_MS = 5;

/** A WebSocket that sends nothing for this long (not even the pong to the relay's
 * automatic ping) is closed: a peer that vanished without a FIN (a dead phone, a
 * dropped NAT mapping) would otherwise hold its connection and buffers forever.
 * Overridable with HERMETIC_WS_IDLE_TIMEOUT_S, e.g. to stay under a load balancer's own
 * idle timeout; uWebSockets.js accepts 8..960 s in steps of about 4 s. */
export const DEFAULT_WS_IDLE_TIMEOUT_S = 120;
export const MIN_WS_IDLE_TIMEOUT_S = 8;
export const MAX_WS_IDLE_TIMEOUT_S = 960;

/** Stop writing to a socket whose send buffer holds more than this; resume on drain. Bounds
 * relay memory per slow reader (envelopes stay in PostgreSQL until acknowledged). */
export const SOCKET_BUFFER_HIGH_WATER = 512 * 1024;

/** Envelopes read from the database per backlog query. */
export const BACKLOG_FETCH_BATCH = 128;

/** Envelopes committed by this relay and kept in memory for a connected recipient so
 * live delivery needs no read; beyond this the connection reads from the database. */
export const LIVE_CACHE_MAX = 256;
export const LIVE_CACHE_MAX_BYTES = 1024 * 1024;

/** Deadlines (each connection's token expiry) are grouped by this step, one timer for
 * all (server/ws/deadlines.ts). Token expiries are whole seconds (JWT `exp`, and the clock
 * tolerance in seconds), so a group is due exactly when its tokens expire. */
export const DEADLINE_GRANULARITY_MS = 1_000;

/** Deadline callbacks made in one turn of the event loop: tokens minted together expire
 * together, and closing 19,000 connections in one turn would hold the loop for a long
 * time; the rest wait for the next turns. */
export const DEADLINE_SLICE = 500;

/** Period of the catch-up scan: every connected device's mailbox tail is re-read, so a
 * lost NOTIFY (e.g. a dropped LISTEN connection) delays delivery at most this long. */
export const CATCHUP_INTERVAL_MS = 5_000;

/** Connected mailboxes whose tails one catch-up query reads. A scan of a relay with more
 * connections runs several such queries, one after another, so no single statement (nor
 * its parameter arrays and result) grows with the number of connections. */
export const CATCHUP_PAGE_SIZE = 1_000;

/** Reconnecting a lost LISTEN connection: the first attempt after about
 * LISTEN_RECONNECT_MIN_MS, the delay doubling per failure up to LISTEN_RECONNECT_MAX_MS
 * (jittered). Short enough that cross-relay wake-ups come back within seconds of the
 * database; the cap keeps a relay from hammering a server that is down. Meanwhile the
 * catch-up scan still delivers, and one runs as soon as the subscription is back. */
export const LISTEN_RECONNECT_MIN_MS = 100;
export const LISTEN_RECONNECT_MAX_MS = 5_000;

/** A NATS notifier (HERMETIC_NATS_URL): the relay refuses to start if no server answers
 * within NATS_CONNECT_TIMEOUT_MS; a lost connection is retried forever, every
 * NATS_RECONNECT_WAIT_MS plus up to NATS_RECONNECT_JITTER_MS (so relays that lost the
 * same server don't come back in step). As with LISTEN, the catch-up scan delivers
 * meanwhile, and one runs as soon as the connection is back. */
export const NATS_CONNECT_TIMEOUT_MS = 10_000;
export const NATS_RECONNECT_WAIT_MS = 250;
export const NATS_RECONNECT_JITTER_MS = 250;

/** /readyz waits at most this long for the database's answer before reporting not
 * ready: an orchestrator's probe must learn of a hung database, not hang with it. */
export const READY_CHECK_TIMEOUT_MS = 2_000;

/** Mailbox retirement (HERMETIC_RETIREMENT_AGE_S). Envelopes live in time partitions
 * DEFAULT_RETIREMENT_AGE_MS / PARTITIONS_PER_RETIREMENT_AGE wide; a partition whose end
 * is more than the retirement age ago is retired: its unacknowledged, unexpired entries
 * are carried forward (the drain), and it is dropped whole once the receipt window
 * (HERMETIC_RECEIPT_WINDOW_S) has passed since the drain. So acknowledged or expired
 * ciphertext is gone at most age + width + window + one tick after its acknowledgement
 * or expiry (defaults: 120 + 60 + 120 + 15 s), a receipt for an acknowledged envelope is
 * confirmed for at least the window after the acknowledgement, and the relay's
 * idempotency window is at least the age. Ticks run every width /
 * RETIREMENT_TICKS_PER_PARTITION; partitions are created PARTITIONS_AHEAD widths ahead
 * of the clock. */
export const DEFAULT_RETIREMENT_AGE_MS = 120_000;
export const MIN_RETIREMENT_AGE_MS = 1_000;
export const MAX_RETIREMENT_AGE_MS = 7 * 24 * 3600 * 1000;
export const DEFAULT_RECEIPT_WINDOW_MS = 120_000;
export const MAX_RECEIPT_WINDOW_MS = 7 * 24 * 3600 * 1000;
export const PARTITIONS_PER_RETIREMENT_AGE = 2;
export const RETIREMENT_TICKS_PER_PARTITION = 4;
export const PARTITIONS_AHEAD = 3;
/** Partition DDL (create, drop) waits at most this long for the table lock (ACCESS
 * EXCLUSIVE on `envelopes` itself, for creating a partition as for dropping one), and is
 * tried again at the next tick. While it waits, every statement on `envelopes` (SENDs,
 * ACKs, reads) queues behind it: a statement or transaction holding the table for
 * longer (a long report, a backup) stalls the relay's mailbox traffic for up to this
 * long at each attempt. Short, so such a stall stays within a latency budget; partitions
 * are made PARTITIONS_AHEAD widths ahead, so creation has many ticks to succeed in. */
export const PARTITION_LOCK_TIMEOUT_MS = 500;
/** Retirement carries a partition's unacknowledged envelopes forward in steps of at most
 * this many envelopes and this many payload bytes, each its own transaction (one
 * envelope at least): a step must stay well within the database answer limit
 * (HERMETIC_DB_TIMEOUT_MS), and holds the cursor rows, the ACKs of the partition's
 * mailboxes, while it runs. */
export const MAX_CARRIED_PER_STEP = 20_000;
export const MAX_CARRIED_BYTES_PER_STEP = 32 * 1024 * 1024;
/** A retirement pass starts no further drain step after this long; the next pass goes
 * on where it stopped, after this pass's drops. */
export const DRAIN_PASS_BUDGET_MS = 5_000;
/** A pass whose budget ran out before its drains were done is followed this soon by the
 * next (not a tick later), so that carrying a large backlog goes on nearly without pause
 * while each pass still makes its drops. */
export const RETIREMENT_CATCH_UP_DELAY_MS = 100;
/** A deferred partition drop reports at most this many of the lock holders in its way. */
export const MAX_LOCK_HOLDERS_REPORTED = 8;
/** A relay whose clock differs from the database's by more than this makes no envelope
 * partitions and retires none (ClockSkewError, logged at each retirement tick): a clock
 * far ahead would otherwise make a partition covering the whole jump, which no relay
 * could retire until the jump's end, and drain partitions still in use; one far behind
 * would make partitions in the past. Well under a partition width at the default age. */
export const MAX_CLOCK_SKEW_MS = 30_000;

/** Per-mailbox quota (HERMETIC_MAILBOX_MAX_ENVELOPES, HERMETIC_MAILBOX_MAX_BYTES): what
 * one device's mailbox may hold stored and not yet acknowledged or expired. Beyond it a
 * SEND to that device is refused with MAILBOX_FULL. Without it anyone could fill the
 * database through one offline device. 100,000 envelopes is weeks of heavy chat; 256 MiB
 * bounds a mailbox of large envelopes (1,024 of the largest). */
export const DEFAULT_MAILBOX_MAX_ENVELOPES = 100_000;
export const DEFAULT_MAILBOX_MAX_BYTES = 256 * 1024 * 1024;

/** Bytes of SEND frames accepted and not yet answered, summed over the whole process
 * (HERMETIC_MAX_PENDING_SEND_BYTES). Each device has its own budget
 * (MAX_PENDING_SEND_BYTES, protocol/limits.ts); this bounds the sum when many devices
 * use theirs at once while the database is slow. Beyond it a SEND is refused with
 * RELAY_BUSY. 256 MiB: sixteen devices' full budgets. */
export const DEFAULT_MAX_PENDING_SEND_BYTES_TOTAL = 256 * 1024 * 1024;

/** WebSockets per client address that have not yet authenticated, at once
 * (HERMETIC_MAX_UNAUTHENTICATED_PER_ADDRESS overrides it). A device needs one for the
 * few milliseconds of its handshake; an address holding more is opening sockets it
 * does not use, each of which would otherwise live for AUTH_TIMEOUT_MS. Addresses are
 * IPv4 addresses and IPv6 /64 prefixes (one host usually holds a whole /64). Behind a
 * reverse proxy every client has the proxy's address: raise it there. */
export const DEFAULT_MAX_UNAUTHENTICATED_PER_ADDRESS = 128;

/** File descriptors kept back from WebSockets, beyond the database pool
 * (HERMETIC_DB_POOL_MAX) and its one LISTEN connection: stdio, the event loop's own
 * descriptors, the listen sockets, PGlite's data files, JWKS fetches, and HTTP
 * connections. Measured: without it, a relay at its descriptor limit accepted sockets
 * until the pool's reconnect failed with EMFILE and every authentication with INTERNAL. */
export const FD_RESERVE_MARGIN = 256;

/** Database connections outside the pool: the LISTEN connection of the mailbox notifier. */
export const DB_LISTEN_CONNECTIONS = 1;

/** Open WebSockets allowed when the descriptor limit cannot be read (no /proc/self/limits). */
export const FALLBACK_MAX_CONNECTIONS = 4096;

/** Bounds of HERMETIC_AUTH_TIMEOUT_MS (default AUTH_TIMEOUT_MS, 10 s). Below a second a
 * device on a slow link could not finish its handshake; above a minute an idle
 * unauthenticated socket would hold its slot for too long. */
export const MIN_AUTH_TIMEOUT_MS = 1_000;
export const MAX_AUTH_TIMEOUT_MS = 60_000;

/** One-time prekey hand-outs per TARGET device, shared by every relay on the database
 * (a token bucket row per device; HERMETIC_PREKEY_HANDOUT_BURST and
 * HERMETIC_PREKEY_HANDOUTS_PER_HOUR override them). Beyond it bundles are still served,
 * without one-time keys: sessions begin from the signed prekey and the last-resort
 * ML-KEM key. 25 at once covers a device being added to a large group; 120 an hour
 * (one every 30 s) is far above how often people start new conversations with one
 * device. Without it, requesters on several relays drained the 1,000 + 1,000 stored keys
 * in about 100 s; with it, draining them takes about 8 hours, and the device tops them
 * up whenever fewer than the SDK's low-water mark are left. */
export const DEFAULT_ONE_TIME_PREKEY_HANDOUT_BURST = 25;
export const DEFAULT_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR = 120;
export const MAX_ONE_TIME_PREKEY_HANDOUT_BURST = 1_000_000;
export const MAX_ONE_TIME_PREKEY_HANDOUTS_PER_HOUR = 100_000_000;

/** Receipts appended to the log per transaction. Each costs two or three row inserts
 * plus ~1 node; a batch this size commits in milliseconds, and a submission holds at
 * most MAX_RECEIPTS_PER_SUBMIT of them. */
export const LOG_APPEND_BATCH_MAX = 1024;

/** How often a relay signs a checkpoint when the log grew (HERMETIC_LOG_CHECKPOINT_INTERVAL_MS). */
export const DEFAULT_LOG_CHECKPOINT_INTERVAL_MS = 1000;
export const MIN_LOG_CHECKPOINT_INTERVAL_MS = 100;
export const MAX_LOG_CHECKPOINT_INTERVAL_MS = 3_600_000;
