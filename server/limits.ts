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
