/**
 * Group commit for SENDs, with up to `concurrency` batches in flight whose keys (the
 * recipient users) never overlap. Two batches with no recipient in common lock disjoint
 * mailbox rows, so they commit side by side; and since a key is never in two batches at
 * once and each batch takes a key's queued items from the front, the items of one key
 * are written strictly in the order they were submitted.
 *
 * When nothing is in flight, a batch takes whatever is queued (up to `maxBatch`): under
 * light load every SEND goes in the next single transaction, which is what keeps
 * latency low. A second batch starts only when at least `parallelMin` items wait whose
 * keys are not in flight: then there is enough work to be worth a second transaction.
 * Under sustained load the queue holds every key, and a batch taking everything would
 * leave the next nothing to do in parallel; so a batch started with a long queue takes
 * only the keys of one hash half (the other half's, if that one has nothing), and the
 * next batch takes the rest.
 */
import { type Flushed, settle } from './batcher.js';

export interface KeyedBatcherOptions {
  readonly maxBatch: number;
  readonly concurrency: number;
  /** Items with keys not in flight needed to start a batch beside another. */
  readonly parallelMin: number;
  /** Told of an error thrown by a flush's `after` (the callers are answered anyway). */
  readonly onError?: (err: unknown) => void;
}

interface Pending<T, R> {
  readonly item: T;
  readonly key: string;
  readonly half: number;
  readonly resolve: (r: R) => void;
  readonly reject: (e: unknown) => void;
}

/** A stable split of keys into two halves. */
function halfOf(key: string): number {
  let h = 0;
  for (let i = 0; i < key.length; i++) h = (h * 31 + key.charCodeAt(i)) | 0;
  return h & 1;
}

export class KeyedBatcher<T, R> {
  private queue: Pending<T, R>[] = [];
  private running = 0;
  /** Keys in a batch in flight. */
  private readonly busy = new Set<string>();
  private scheduled = false;
  private readonly idle: Array<() => void> = [];

  constructor(
    private readonly opts: KeyedBatcherOptions,
    private readonly keyOf: (item: T) => string,
    private readonly flush: (items: readonly T[]) => Promise<Flushed<R>>,
  ) {}

  get pending(): number {
    return this.queue.length + this.running;
  }

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      const key = this.keyOf(item);
      this.queue.push({ item, key, half: halfOf(key), resolve, reject });
      if (!this.scheduled) {
        // Gather everything that arrives in this turn of the event loop first.
        this.scheduled = true;
        setImmediate(() => {
          this.scheduled = false;
          this.startAll();
        });
      }
    });
  }

  /** Resolves when nothing is queued or being flushed (used by shutdown). */
  drained(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private startAll(): void {
    while (this.running < this.opts.concurrency && this.startOne()) {
      /* keep starting while a batch can be formed */
    }
  }

  /** Forms and starts one batch; false when none should start now. */
  private startOne(): boolean {
    if (this.queue.length === 0) return false;
    const free = (p: Pending<T, R>): boolean => !this.busy.has(p.key);
    let take: (p: Pending<T, R>) => boolean = free;
    if (this.running > 0) {
      let eligible = 0;
      for (const p of this.queue) if (free(p) && ++eligible >= this.opts.parallelMin) break;
      if (eligible < this.opts.parallelMin) return false;
    } else if (this.opts.concurrency > 1 && this.queue.length >= this.opts.parallelMin * 2) {
      // A long queue with nothing in flight: leave half of the keys for a parallel batch.
      const half = this.queue[0]!.half;
      take = (p) => p.half === half;
    }
    const batch: Pending<T, R>[] = [];
    const rest: Pending<T, R>[] = [];
    for (const p of this.queue) {
      if (batch.length < this.opts.maxBatch && take(p)) batch.push(p);
      else rest.push(p);
    }
    if (batch.length === 0) return false;
    this.queue = rest;
    const keys = new Set(batch.map((p) => p.key));
    for (const k of keys) this.busy.add(k);
    this.running++;
    this.flush(batch.map((p) => p.item)).then(
      (flushed) => {
        this.finished(keys);
        settle(batch, flushed, this.opts.onError);
        this.checkIdle();
      },
      (err: unknown) => {
        this.finished(keys);
        for (const p of batch) p.reject(err);
        this.checkIdle();
      },
    );
    return true;
  }

  /** A batch ended: its keys are free, and what waited is started before its callers
   * hear back, so the store is not left idle while they are answered. */
  private finished(keys: ReadonlySet<string>): void {
    this.running--;
    for (const k of keys) this.busy.delete(k);
    this.startAll();
  }

  /** Wakes drained() waiters, after the callers of the last batch have been answered. */
  private checkIdle(): void {
    if (this.pending === 0) for (const r of this.idle.splice(0)) r();
  }
}
