/**
 * Time and timers, injectable: tests drive a client with a manual clock and never sleep.
 */
export type TimerHandle = { readonly id: unknown };

export interface Clock {
  now(): number;
  setTimeout(fn: () => void, ms: number): TimerHandle;
  clearTimeout(handle: TimerHandle): void;
}

export const systemClock: Clock = {
  now: () => Date.now(),
  setTimeout: (fn, ms) => {
    const id = setTimeout(fn, ms);
    // Never keep a Node process alive for a client timer alone.
    (id as { unref?: () => void }).unref?.();
    return { id };
  },
  clearTimeout: (h) => clearTimeout(h.id as ReturnType<typeof setTimeout>),
};

/** A clock that moves only when told to: `advance(ms)` runs the timers that fall due. */
export class ManualClock implements Clock {
  #now: number;
  #timers: Array<{ at: number; fn: () => void; handle: TimerHandle; seq: number }> = [];
  #seq = 0;

  constructor(start = 1_800_000_000_000) {
    this.#now = start;
  }

  now(): number {
    return this.#now;
  }

  setTimeout(fn: () => void, ms: number): TimerHandle {
    const handle: TimerHandle = { id: ++this.#seq };
    this.#timers.push({ at: this.#now + Math.max(0, ms), fn, handle, seq: this.#seq });
    return handle;
  }

  clearTimeout(handle: TimerHandle): void {
    this.#timers = this.#timers.filter((t) => t.handle !== handle);
  }

  /** Moves time forward, running every timer due on the way, in order. */
  advance(ms: number): void {
    const target = this.#now + ms;
    for (;;) {
      const due = this.#timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (due === undefined) break;
      this.#timers = this.#timers.filter((t) => t !== due);
      this.#now = Math.max(this.#now, due.at);
      due.fn();
    }
    this.#now = target;
  }

  /** Timers waiting. */
  get pending(): number {
    return this.#timers.length;
  }
}
