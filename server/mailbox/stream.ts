/**
 * One connected device's delivery stream: backlog in sequence order after its last ACK,
 * then live envelopes as they commit. At most MAX_INFLIGHT_ENVELOPES unacknowledged
 * envelopes are out at once; writing pauses while the socket's buffer is above
 * SOCKET_BUFFER_HIGH_WATER and resumes on drain. Envelopes that are not in memory are
 * read from the database, so nothing is dropped for a slow reader: it stays stored
 * until acknowledged, and memory per connection stays bounded.
 *
 * Sequences are gap-free, so a missing sequence below the mailbox tail can only have
 * expired: the stream announces such ranges (EXPIRED) rather than skipping silently.
 */
import { ProtocolError } from '../../protocol/errors.js';
import { MAX_INFLIGHT_ENVELOPES } from '../../protocol/limits.js';
import { BACKLOG_FETCH_BATCH, LIVE_CACHE_MAX, LIVE_CACHE_MAX_BYTES, SOCKET_BUFFER_HIGH_WATER } from '../limits.js';
import type { StoredEnvelope } from './store.js';

export interface StreamSink {
  deliver(env: StoredEnvelope): void;
  expired(from: number, to: number): void;
  queueEmpty(through: number): void;
  bufferedAmount(): number;
  isClosed(): boolean;
  /** Runs `fn` with writes batched into one syscall where the transport can. */
  cork(fn: () => void): void;
}

export interface StreamSource {
  fetch(afterSeq: number, limit: number): Promise<StoredEnvelope[]>;
  onError(err: unknown): void;
}

export class DeliveryStream {
  /** Highest sequence the device acknowledged. */
  private acked: number;
  /** Highest sequence delivered or announced expired. */
  private sent: number;
  /** Highest committed sequence known to exist. */
  private tail: number;
  /** Tail at connect: QUEUE_EMPTY is sent once the backlog up to here is out. */
  private readonly backlogTail: number;
  private backlogDone = false;
  /** Sequences delivered and not yet acknowledged, ascending. */
  private readonly inflight: number[] = [];
  /** Committed envelopes waiting to be written, by sequence (bounded); made when needed and
   * dropped when empty, so that an idle connection keeps no map. */
  private cache: Map<number, StoredEnvelope> | undefined;
  private cacheBytes = 0;
  private fetching = false;
  private paused = false;

  constructor(
    private readonly sink: StreamSink,
    private readonly source: StreamSource,
    position: { tail: number; acked: number },
    private readonly now: () => number = Date.now,
  ) {
    this.acked = position.acked;
    this.sent = position.acked;
    this.tail = position.tail;
    this.backlogTail = position.tail;
  }

  get ackedThrough(): number {
    return this.acked;
  }

  /** The highest committed sequence this stream knows of (the catch-up compares it). */
  get knownTail(): number {
    return this.tail;
  }

  /**
   * Committed envelopes are left to write and nothing under way will write them: a
   * backlog read failed. The periodic catch-up pumps such a stream again.
   */
  get stalled(): boolean {
    return this.sent < this.tail && !this.fetching && !this.paused && this.inflight.length < MAX_INFLIGHT_ENVELOPES && !this.sink.isClosed();
  }

  get inflightCount(): number {
    return this.inflight.length;
  }

  /** A commit (here or on another relay) reached `seq`. */
  onTail(seq: number): void {
    if (seq > this.tail) this.tail = seq;
    this.pump();
  }

  /** Envelopes this relay just committed for this device, in sequence order: written
   * together, in one corked write. */
  onCommitted(envs: readonly StoredEnvelope[]): void {
    let tail = this.tail;
    for (const env of envs) {
      if (env.seq > this.sent) this.cachePut(env);
      if (env.seq > tail) tail = env.seq;
    }
    this.onTail(tail);
  }

  onDrain(): void {
    if (this.paused && this.sink.bufferedAmount() < SOCKET_BUFFER_HIGH_WATER) {
      this.paused = false;
      this.pump();
    }
  }

  /**
   * A cumulative ACK. Returns true when it advanced the cursor (and must be persisted).
   * An ACK beyond what this connection was sent is refused.
   */
  ack(seq: number): boolean {
    if (seq > this.sent) throw new ProtocolError('ACK_BEYOND_DELIVERED', `ack ${seq} is beyond the last delivered sequence ${this.sent}`);
    if (seq <= this.acked) return false;
    this.acked = seq;
    let n = 0;
    while (n < this.inflight.length && (this.inflight[n] as number) <= seq) n++;
    this.inflight.splice(0, n);
    this.pump();
    return true;
  }

  pump(): void {
    if (this.sink.isClosed()) return;
    this.sink.cork(() => this.pumpCorked());
  }

  private pumpCorked(): void {
    while (!this.paused && this.inflight.length < MAX_INFLIGHT_ENVELOPES) {
      if (this.sent >= this.tail) {
        this.maybeQueueEmpty();
        return;
      }
      const next = this.sent + 1;
      const env = this.cacheTake(next);
      if (!env) {
        this.fetchFrom(next);
        return;
      }
      if (env.expiresAtMs <= this.now()) this.announceExpired(next, next);
      else this.write(env);
    }
  }

  private write(env: StoredEnvelope): void {
    // A fetched row may also have been cached by a live commit meanwhile: drop that copy.
    if (this.cache !== undefined) this.cacheTake(env.seq);
    this.sink.deliver(env);
    this.sent = env.seq;
    this.inflight.push(env.seq);
    if (this.sink.bufferedAmount() >= SOCKET_BUFFER_HIGH_WATER) this.paused = true;
  }

  private maybeQueueEmpty(): void {
    if (!this.backlogDone && this.sent >= this.backlogTail) {
      this.backlogDone = true;
      this.sink.queueEmpty(this.sent);
    }
  }

  private fetchFrom(next: number): void {
    if (this.fetching) return;
    this.fetching = true;
    const limit = Math.min(BACKLOG_FETCH_BATCH, MAX_INFLIGHT_ENVELOPES - this.inflight.length);
    this.source.fetch(next - 1, limit).then(
      (rows) => {
        this.fetching = false;
        if (this.sink.isClosed()) return;
        this.sink.cork(() => this.applyFetched(next, rows));
      },
      (err: unknown) => {
        this.fetching = false;
        this.source.onError(err);
      },
    );
  }

  private applyFetched(next: number, rows: readonly StoredEnvelope[]): void {
    // Something else advanced the stream meanwhile (an expiry, a live write): re-pump.
    if (this.sent !== next - 1) return this.pumpCorked();
    // Nothing left up to the known tail: it expired (sequences are gap-free).
    if (rows.length === 0 && this.tail >= next) this.announceExpired(next, this.tail);
    let caching = false;
    for (const env of rows) {
      // Once writing must stop, keep the rest in order for later (bounded by the fetch
      // size); gaps among them are checked when they are fetched again.
      caching ||= this.paused || this.inflight.length >= MAX_INFLIGHT_ENVELOPES;
      if (caching) {
        this.cachePut(env);
        continue;
      }
      if (env.seq > this.sent + 1) this.announceExpired(this.sent + 1, env.seq - 1);
      this.write(env);
    }
    this.pumpCorked();
  }

  private announceExpired(from: number, to: number): void {
    this.sink.expired(from, to);
    this.sent = to;
    if (this.cache !== undefined) for (const s of [...this.cache.keys()]) if (s <= to) this.cacheTake(s);
  }

  /** Keeps an envelope in memory if the cache has room; otherwise it is read again later. */
  private cachePut(env: StoredEnvelope): void {
    if (this.cache?.has(env.seq) || (this.cache?.size ?? 0) >= LIVE_CACHE_MAX || this.cacheBytes + env.payload.length > LIVE_CACHE_MAX_BYTES) return;
    (this.cache ??= new Map()).set(env.seq, env);
    this.cacheBytes += env.payload.length;
  }

  private cacheTake(seq: number): StoredEnvelope | undefined {
    const cache = this.cache;
    const env = cache?.get(seq);
    if (cache && env) {
      cache.delete(seq);
      this.cacheBytes -= env.payload.length;
      if (cache.size === 0) this.cache = undefined;
    }
    return env;
  }
}
