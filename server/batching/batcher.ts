/**
 * Group commit. Items submitted while a flush is running are collected and written
 * together by the next flush, so under load one transaction carries many items and one
 * commit (one fsync) acknowledges them all; when idle an item is flushed at once.
 *
 * - at most `maxBatch` items per flush;
 * - at most `concurrency` flushes in flight;
 * - an item waits at most `maxWaitMs` for batch-mates before a flush starts (when a
 *   flush slot is free).
 */
export interface BatcherOptions {
  readonly maxBatch: number;
  readonly maxWaitMs: number;
  readonly concurrency: number;
  /** Told of an error thrown by a flush's `after` (the callers are answered anyway). */
  readonly onError?: (err: unknown) => void;
}

/** What a flush resolves to: one result per item, in order, and optionally work to run
 * once the next flush has been started (so that it does not delay the next batch). */
export interface Flushed<R> {
  readonly results: readonly R[];
  readonly after?: () => void;
}

/**
 * Answers a finished flush's callers: runs `after` first, then resolves each caller with
 * its result. An error from `after` goes to `onError`; it must not escape, as nothing
 * awaits the promise chain this runs in.
 */
export function settle<R>(callers: ReadonlyArray<{ resolve: (r: R) => void }>, { results, after }: Flushed<R>, onError?: (err: unknown) => void): void {
  try {
    after?.();
  } catch (err) {
    onError?.(err);
  }
  callers.forEach((p, i) => p.resolve(results[i] as R));
}

interface Pending<T, R> {
  readonly item: T;
  readonly resolve: (r: R) => void;
  readonly reject: (e: unknown) => void;
}

export class Batcher<T, R> {
  private queue: Pending<T, R>[] = [];
  private running = 0;
  private cancelTimer: (() => void) | undefined;
  private readonly idle: Array<() => void> = [];

  constructor(
    private readonly opts: BatcherOptions,
    private readonly flush: (items: readonly T[]) => Promise<Flushed<R>>,
  ) {}

  get pending(): number {
    return this.queue.length + this.running;
  }

  submit(item: T): Promise<R> {
    return new Promise<R>((resolve, reject) => {
      this.queue.push({ item, resolve, reject });
      this.schedule();
    });
  }

  /** Resolves when nothing is queued or being flushed (used by shutdown). */
  drained(): Promise<void> {
    if (this.pending === 0) return Promise.resolve();
    return new Promise((r) => this.idle.push(r));
  }

  private schedule(): void {
    if (this.running >= this.opts.concurrency) return; // a finishing flush starts the next
    if (this.queue.length >= this.opts.maxBatch) {
      this.start();
      return;
    }
    if (this.cancelTimer) return;
    if (this.opts.maxWaitMs > 0) {
      const t = setTimeout(() => this.start(), this.opts.maxWaitMs);
      this.cancelTimer = () => clearTimeout(t);
    } else {
      // Still gather everything that arrives in this turn of the event loop.
      const t = setImmediate(() => this.start());
      this.cancelTimer = () => clearImmediate(t);
    }
  }

  private start(): void {
    this.cancelTimer?.();
    this.cancelTimer = undefined;
    if (this.queue.length === 0 || this.running >= this.opts.concurrency) return;
    const batch = this.queue.splice(0, this.opts.maxBatch);
    this.running++;
    this.flush(batch.map((p) => p.item)).then(
      (flushed) => {
        this.finished();
        settle(batch, flushed, this.opts.onError);
        this.checkIdle();
      },
      (err: unknown) => {
        this.finished();
        for (const p of batch) p.reject(err);
        this.checkIdle();
      },
    );
  }

  /** A flush ended. Items queued meanwhile have waited long enough: the next flush is
   * started before this one's callers hear back, so the store is never left idle while
   * they are answered. */
  private finished(): void {
    this.running--;
    if (this.queue.length > 0) this.start();
  }

  /** Wakes drained() waiters, after the callers of the last flush have been answered. */
  private checkIdle(): void {
    if (this.pending === 0) for (const r of this.idle.splice(0)) r();
  }
}
