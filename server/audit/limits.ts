/**
 * Every bound the auditor puts on what it reads (export files, relay answers, its state
 * file) and on what it keeps in memory, with the reason beside it. Checked before the
 * input is parsed or kept.
 */
import { MAX_LOG_ENTRY_BYTES, MAX_LOG_NOTE_BYTES, MAX_LOG_PROOF_HASHES } from '../../protocol/log.js';

/**
 * Longest line of an export file. The longest is a receipt line: the receipt (at most
 * MAX_LOG_ENTRY_BYTES), its leaf hash and an inclusion proof of at most
 * MAX_LOG_PROOF_HASHES base64 hashes, with the JSON around them.
 */
export const MAX_EXPORT_LINE_BYTES = MAX_LOG_ENTRY_BYTES + MAX_LOG_PROOF_HASHES * 48 + 1024;

/** Largest manifest.json: a few counts, hashes and the list of devices without a key. */
export const MAX_MANIFEST_BYTES = 256 * 1024;

/** Largest key.json: an origin line (256) and a verifier key string (512). */
export const MAX_KEY_FILE_BYTES = 4 * 1024;

/** Devices whose keys the manifest lists as missing (more are counted, not listed). */
export const MAX_MISSING_DEVICES_LISTED = 1024;

/**
 * Device keys held in memory while verifying (one entry per recipient device seen). A log
 * with more distinct recipient devices is refused rather than exhausting memory.
 */
export const MAX_AUDIT_DEVICES = 100_000;

/**
 * Receipts asked for per page of GET /v1/log/receipts. Each may be MAX_LOG_ENTRY_BYTES
 * long; 64 of them keep one answer under MAX_RELAY_ANSWER_BYTES.
 */
export const AUDIT_RECEIPTS_PAGE = 64;

/** Checkpoints asked for per page of GET /v1/log/checkpoints (each note is small). */
export const AUDIT_CHECKPOINTS_PAGE = 256;

/** Largest relay answer read: a full receipts page with its JSON. */
export const MAX_RELAY_ANSWER_BYTES = AUDIT_RECEIPTS_PAGE * (MAX_LOG_ENTRY_BYTES + 256) + 4096;

/** Largest checkpoint note read from GET /v1/log/checkpoint. */
export const MAX_RELAY_NOTE_BYTES = MAX_LOG_NOTE_BYTES;

/** Time allowed for one relay request, answer included. */
export const RELAY_REQUEST_TIMEOUT_MS = 30_000;

/** Proof or key requests to the relay in flight at once. */
export const RELAY_CONCURRENCY = 8;

/** Checkpoints a state file remembers (the newest ones). */
export const MAX_STATE_CHECKPOINTS = 16;

/** Largest state file read: MAX_STATE_CHECKPOINTS notes and their JSON. */
export const MAX_STATE_FILE_BYTES = MAX_STATE_CHECKPOINTS * (MAX_LOG_NOTE_BYTES + 256) + 4096;

/** Failures listed one by one in the report (all are counted by kind). */
export const MAX_REPORT_FAILURES = 1000;

/** Warnings listed in the report. */
export const MAX_REPORT_WARNINGS = 100;

/** Largest token file read for `--token @file`. */
export const MAX_TOKEN_FILE_BYTES = 16 * 1024;
