/**
 * Deadlines of many items (each connection's token expiry) on one timer. A Node timer per
 * connection cost each connection a Timeout and its closure, and made every metrics scrape
 * work in proportion to the connections: prom-client's `nodejs_active_resources` lists one
 * "Timeout" per timer (2.5–8 ms of the event loop per scrape with 19,000 connections,
 * docs/PERFORMANCE.md "Idle sockets"). Here deadlines are grouped by the
 * DEADLINE_GRANULARITY_MS step they fall in (token expiries are whole seconds, so a group
 * is due exactly when they are), one timer waits for the earliest group, and the work a
 * group's deadline brings is done DEADLINE_SLICE items per turn of the event loop.
 */
import { DEADLINE_GRANULARITY_MS, DEADLINE_SLICE } from '../limits.js';

/** The longest delay a Node timer takes. */
const MAX_TIMER_MS = 0x7fff_ffff;

export class Deadlines<T> {
  /** Items by the end of the step their deadline falls in. */
  private readonly groups = new Map<number, Set<T>>();
  /** The keys of `groups`, ascending. */
  private readonly due: number[] = [];
  private timer: NodeJS.Timeout | undefined;
  private timerAt = Number.POSITIVE_INFINITY;
  private firing = false;

  /**
   * `onDue(item)` is called at or after the item's deadline, by `now`; an item it adds
   * again (its deadline moved) is kept. Callbacks of one group may be spread over several
   * turns of the event loop. A callback that throws is reported to `onError` and the
   * others still run: thrown from the timer, it would end the process.
   */
  constructor(
    private readonly onDue: (item: T) => void,
    private readonly now: () => number,
    private readonly onError: (err: unknown, item: T) => void = () => undefined,
  ) {}

  get size(): number {
    let n = 0;
    for (const g of this.groups.values()) n += g.size;
    return n;
  }

  /** Schedules `item` at `deadlineMs`; an item is given one deadline at a time (delete the old one first). */
  add(item: T, deadlineMs: number): void {
    const key = groupKey(deadlineMs);
    let group = this.groups.get(key);
    if (!group) {
      group = new Set();
      this.groups.set(key, group);
      this.due.splice(insertionIndex(this.due, key), 0, key);
    }
    group.add(item);
    if (key < this.timerAt) this.arm();
  }

  /** Unschedules `item`, given the deadline it was added with. */
  delete(item: T, deadlineMs: number): void {
    const key = groupKey(deadlineMs);
    const group = this.groups.get(key);
    if (!group?.delete(item) || group.size > 0) return;
    this.groups.delete(key);
    this.due.splice(insertionIndex(this.due, key), 1);
  }

  /** Unschedules everything (shutdown). */
  clear(): void {
    this.groups.clear();
    this.due.length = 0;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
  }

  /** One timer, for the earliest group (none while groups are being fired). */
  private arm(): void {
    if (this.firing) return;
    clearTimeout(this.timer);
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    const first = this.due[0];
    if (first === undefined) return;
    // Timers hold at most 2^31 - 1 ms (~24.8 days): a later group is looked at again then.
    const delay = Math.min(Math.max(first - this.now(), 0), MAX_TIMER_MS);
    this.timerAt = first;
    this.timer = setTimeout(() => this.fire(), delay).unref();
  }

  /** Calls back the items of every group now due, DEADLINE_SLICE per turn. */
  private fire(): void {
    this.timer = undefined;
    this.timerAt = Number.POSITIVE_INFINITY;
    this.firing = true;
    let more = false;
    try {
      more = this.fireSlice();
    } finally {
      // Once everything due is done, the timer waits for the next group.
      if (!more) {
        this.firing = false;
        this.arm();
      }
    }
  }

  /** Up to DEADLINE_SLICE callbacks; true when more are due, to be made in a later turn. */
  private fireSlice(): boolean {
    const now = this.now();
    let n = 0;
    for (let key = this.due[0]; key !== undefined && key <= now; key = this.due[0]) {
      const group = this.groups.get(key)!;
      for (const item of group) {
        if (n === DEADLINE_SLICE) {
          setImmediate(() => this.fire()).unref();
          return true;
        }
        n++;
        group.delete(item);
        try {
          this.onDue(item);
        } catch (err) {
          this.onError(err, item);
        }
      }
      // Every item was called back (iterating a Set visits what is added meanwhile). The
      // key is removed where it is, not as the first: a callback may have scheduled an
      // item in an earlier group (a deadline already past), or unscheduled the group's
      // last other item, which removed the group and its key already (and may have made
      // a new group for the key since, which must stay).
      if (this.groups.get(key) === group) {
        this.groups.delete(key);
        this.due.splice(insertionIndex(this.due, key), 1);
      }
    }
    return false;
  }
}

/** The end of the DEADLINE_GRANULARITY_MS step a deadline falls in (a deadline on a step's end is its own key). */
function groupKey(deadlineMs: number): number {
  return Math.ceil(deadlineMs / DEADLINE_GRANULARITY_MS) * DEADLINE_GRANULARITY_MS;
}

/** Where `key` is, or would go, in the ascending `keys`. */
function insertionIndex(keys: readonly number[], key: number): number {
  let lo = 0;
  let hi = keys.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (keys[mid]! < key) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}
