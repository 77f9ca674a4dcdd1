/**
 * SENDs that are not yet STORED. An entry is written in the same transaction as the
 * session states that produced its ciphertexts (so a message key is never used twice,
 * docs/CRYPTO.md), and only then transmitted; it stays until the relay answers STORED.
 * After a reconnect or a restart every remaining entry is sent again, in order, with
 * the same envelope id: the relay's idempotency makes that safe. Within one connection
 * each entry is sent once: an entry answered STORED (or refused for good) is settled and
 * never sent again while its deletion commits.
 *
 * A DEVICE_LIST_MISMATCH is corrected from the recipient's verified list (never from the
 * relay's word alone): ciphertexts for devices no longer listed are dropped, devices
 * newly listed get the same message encrypted for them, and the SEND goes again.
 */
import { encodeBase64url } from '../protocol/base64url.js';
import { encodeSend } from '../protocol/envelopes.js';
import { ERROR_CODES, type ProtocolError } from '../protocol/errors.js';
import type { Clock } from './clock.js';
import { SdkError } from './errors.js';
import { MAX_SENDS_IN_FLIGHT, RECONNECT_BASE_MS, RECONNECT_MAX_MS } from './limits.js';
import { NS, type StoreTx, type Transactor, decodeRecord, encodeRecord } from './stores/store.js';

export interface OutboxTarget {
  readonly deviceId: string;
  readonly payload: Uint8Array;
}

export interface OutboxEntry {
  readonly v: 1;
  readonly envelopeId: Uint8Array;
  readonly recipient: string;
  readonly ttlSeconds: number;
  targets: OutboxTarget[];
  /** The padded payload of a pairwise message, to encrypt for a device listed later. */
  readonly padded: Uint8Array | undefined;
  /** A group message: the same ciphertext for every device. */
  readonly group: boolean;
  readonly messageId: Uint8Array;
  mismatches: number;
  /** When the message was sealed (ms; absent in entries of earlier versions): an entry not
   * stored within its TTL of this is dropped (SEND_EXPIRED), not stored anew for another TTL. */
  readonly createdAt?: number | undefined;
  /** A receipt: nobody answers it with a receipt, so none is awaited. */
  readonly noReceipt?: boolean | undefined;
  /** The sender asked for the recipients' receipts to go to the relay's log. */
  readonly logReceipt?: boolean | undefined;
}

export interface SentInfo {
  readonly envelopeId: string;
  readonly messageId: string;
  readonly recipient: string;
  readonly storedAt: number;
  readonly duplicate: boolean;
}

/** How the outbox repairs an entry the relay refused for its device list. */
export type Repair = (entry: OutboxEntry) => Promise<OutboxEntry | undefined>;

/** Mismatch repairs tried per entry before it fails (the list keeps changing, or the relay keeps disagreeing). */
const MAX_MISMATCH_REPAIRS = 3;

const SEQ_KEY = 'outbox-seq';

export class Outbox {
  readonly #entries = new Map<string, OutboxEntry>();
  readonly #inflight = new Map<number, string>();
  readonly #sending = new Set<string>();
  /** Answered for good (STORED, or refused): never sent again; removed once its deletion commits. */
  readonly #settling = new Set<string>();
  readonly #waiters = new Map<string, Array<{ resolve: (s: SentInfo) => void; reject: (e: unknown) => void }>>();
  #nextId = 1;
  #online = false;
  #retryAttempt = 0;
  #retryArmed = false;
  readonly #repairing = new Set<string>();
  /** Entries refused for a passing reason, waiting for the retry timer. */
  readonly #held = new Set<string>();

  constructor(
    private readonly db: Transactor,
    private readonly clock: Clock,
    private readonly transmit: (frame: Uint8Array) => boolean,
    private readonly repair: Repair,
    private readonly onSent: (info: SentInfo) => void,
    private readonly onFailed: (entry: OutboxEntry, err: SdkError) => void,
    /** Runs in the transaction that settles a STORED entry (receipts are awaited from then on). */
    private readonly onStoredTx: (tx: StoreTx, entry: OutboxEntry, storedAt: number) => void = () => undefined,
  ) {}

  /** Loads what an earlier run left unsent. */
  async load(): Promise<void> {
    const rows = await this.db.run((tx) => tx.list(NS.outbox));
    for (const [key, raw] of rows) this.#entries.set(key, decodeRecord<OutboxEntry>(raw));
  }

  get size(): number {
    return this.#entries.size;
  }

  /** Adds an entry in the caller's transaction; call `committed` after the commit. */
  async add(tx: StoreTx, entry: OutboxEntry): Promise<string> {
    const raw = await tx.get(NS.meta, SEQ_KEY);
    const seq = raw === undefined ? 1 : Number(new TextDecoder().decode(raw)) + 1;
    tx.put(NS.meta, SEQ_KEY, new TextEncoder().encode(String(seq)));
    const key = String(seq).padStart(16, '0');
    tx.put(NS.outbox, key, encodeRecord(entry));
    return key;
  }

  /** The entry is committed: send it when possible; resolves once STORED. */
  committed(key: string, entry: OutboxEntry): Promise<SentInfo> {
    this.#entries.set(key, entry);
    const p = new Promise<SentInfo>((resolve, reject) => {
      const list = this.#waiters.get(key) ?? [];
      list.push({ resolve, reject });
      this.#waiters.set(key, list);
    });
    this.pump();
    return p;
  }

  setOnline(online: boolean): void {
    this.#online = online;
    // Whatever was in flight on the old connection is sent again on the next one.
    this.#inflight.clear();
    this.#sending.clear();
    if (online) this.pump();
  }

  /**
   * Sends entries in order, up to MAX_SENDS_IN_FLIGHT at once. Per recipient the order
   * holds: an entry waiting to be retried or repaired keeps the later ones to the same
   * user back (they would arrive before it, out of order).
   */
  pump(): void {
    if (!this.#online) return;
    const keys = [...this.#entries.keys()].sort();
    const waiting = new Set<string>();
    for (const key of keys) {
      if (this.#inflight.size >= MAX_SENDS_IN_FLIGHT) return;
      if (this.#sending.has(key) || this.#settling.has(key)) continue;
      const e = this.#entries.get(key) as OutboxEntry;
      if (this.#repairing.has(key) || this.#held.has(key)) {
        waiting.add(e.recipient);
        continue;
      }
      if (waiting.has(e.recipient)) continue;
      if (this.#expired(e)) {
        this.#dropExpired(key, e);
        continue;
      }
      const id = this.#nextId;
      // SEND ids stay below 2^31: the upper half is the topic requests' (topics.ts).
      this.#nextId = (this.#nextId % 0x7fff_ffff) + 1;
      const frame = encodeSend({ id, envelopeId: e.envelopeId, ttlSeconds: e.ttlSeconds, recipientUserId: e.recipient, targets: e.targets });
      if (!this.transmit(frame)) return;
      this.#inflight.set(id, key);
      this.#sending.add(key);
    }
  }

  async onStored(id: number, storedAt: number, duplicate: boolean): Promise<void> {
    const key = this.#inflight.get(id);
    if (key === undefined) return;
    this.#inflight.delete(id);
    this.#sending.delete(key);
    const e = this.#entries.get(key);
    if (!e || this.#settling.has(key)) return;
    await this.#remove(key, (tx) => this.onStoredTx(tx, e, storedAt));
    this.#retryAttempt = 0;
    const info: SentInfo = { envelopeId: encodeBase64url(e.envelopeId), messageId: encodeBase64url(e.messageId), recipient: e.recipient, storedAt, duplicate };
    for (const w of this.#waiters.get(key) ?? []) w.resolve(info);
    this.#waiters.delete(key);
    this.onSent(info);
    this.pump();
  }

  async onError(id: number, err: ProtocolError): Promise<void> {
    const key = this.#inflight.get(id);
    if (key === undefined) return;
    this.#inflight.delete(id);
    this.#sending.delete(key);
    const e = this.#entries.get(key);
    if (!e) return;
    if (err.code === 'DEVICE_LIST_MISMATCH' && e.mismatches < MAX_MISMATCH_REPAIRS) {
      this.#repairing.add(key);
      try {
        const fixed = await this.repair({ ...e, mismatches: e.mismatches + 1 });
        if (fixed === undefined) {
          await this.#fail(key, e, new SdkError('DEVICE_LIST_INVALID', `the relay and the verified device list of ${e.recipient} disagree`, { relayCode: err.code, details: { ...err.details } }));
        } else {
          await this.db.run((tx) => tx.put(NS.outbox, key, encodeRecord(fixed)));
          this.#entries.set(key, fixed);
        }
      } catch (cause) {
        await this.#fail(key, e, cause instanceof SdkError ? cause : new SdkError('RELAY_ERROR', (cause as Error).message, { cause }));
      } finally {
        this.#repairing.delete(key);
      }
      this.pump();
      return;
    }
    if (ERROR_CODES[err.code].retry && err.code !== 'DEVICE_LIST_MISMATCH') {
      if (this.#expired(e)) {
        this.#dropExpired(key, e, err.code);
        return;
      }
      // Retryable (rate limited, a full mailbox, the relay unavailable): later, with backoff.
      this.#held.add(key);
      this.#armRetry(typeof err.details?.retryAfterMs === 'number' ? err.details.retryAfterMs : undefined);
      return;
    }
    await this.#fail(key, e, new SdkError('RELAY_ERROR', `the relay refused the SEND to ${e.recipient}: ${err.code}: ${err.message}`, { relayCode: err.code, ...(err.details ? { details: { ...err.details } } : {}) }));
    this.pump();
  }

  /** Deletes a settled entry; until the deletion commits it is never sent again. */
  async #remove(key: string, also?: (tx: StoreTx) => void): Promise<void> {
    this.#settling.add(key);
    try {
      await this.db.run((tx) => {
        tx.delete(NS.outbox, key);
        also?.(tx);
      });
      this.#entries.delete(key);
    } finally {
      this.#settling.delete(key);
    }
  }

  #expired(e: OutboxEntry): boolean {
    return e.createdAt !== undefined && this.clock.now() - e.createdAt >= e.ttlSeconds * 1000;
  }

  /** An entry its TTL ran out on before the relay stored it: the recipient would get it
   * later than the sender allowed, so it is dropped and its sender told. */
  #dropExpired(key: string, e: OutboxEntry, lastRefusal?: string): void {
    const err = new SdkError('SEND_EXPIRED', `the message to ${e.recipient} was not stored within its TTL (${e.ttlSeconds} s)${lastRefusal ? `; last refused with ${lastRefusal}` : ''}`, lastRefusal ? { relayCode: lastRefusal } : {});
    void this.#fail(key, e, err).catch((cause: unknown) => this.onFailed(e, cause instanceof SdkError ? cause : new SdkError('STORE_CORRUPT', (cause as Error).message, { cause })));
  }

  async #fail(key: string, e: OutboxEntry, err: SdkError): Promise<void> {
    await this.#remove(key);
    for (const w of this.#waiters.get(key) ?? []) w.reject(err);
    this.#waiters.delete(key);
    this.onFailed(e, err);
  }

  #armRetry(afterMs: number | undefined): void {
    if (this.#retryArmed) return;
    this.#retryArmed = true;
    const delay = afterMs ?? Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(this.#retryAttempt++, 16));
    this.clock.setTimeout(() => {
      this.#retryArmed = false;
      this.#held.clear();
      this.pump();
    }, delay);
  }

  /** Rejects every waiter (the client is closing); the entries stay stored for the next run. */
  close(err: SdkError): void {
    for (const list of this.#waiters.values()) for (const w of list) w.reject(err);
    this.#waiters.clear();
  }
}
