/**
 * The one-timer deadline schedule of token expiries (server/ws/deadlines.ts): items are
 * called back at their deadline and never before, unscheduled ones never, far deadlines
 * beyond a Node timer's range still come, and a crowd of deadlines at once is called back
 * DEADLINE_SLICE per turn of the event loop. The clock and timers are vitest's fake ones.
 */
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DEADLINE_GRANULARITY_MS, DEADLINE_SLICE } from '../../server/limits.js';
import { Deadlines } from '../../server/ws/deadlines.js';

const DAY_MS = 86_400_000;

describe('Deadlines', () => {
  let t0: number;
  beforeEach(() => {
    vi.useFakeTimers();
    // On a step's end: deadlines on whole seconds, as token expiries are.
    t0 = Math.ceil(Date.now() / DEADLINE_GRANULARITY_MS) * DEADLINE_GRANULARITY_MS + 10 * DEADLINE_GRANULARITY_MS;
    vi.setSystemTime(t0);
  });
  afterEach(() => {
    vi.useRealTimers();
  });

  function schedule(): { deadlines: Deadlines<string>; fired: Array<[string, number]> } {
    const fired: Array<[string, number]> = [];
    const deadlines = new Deadlines<string>((item) => fired.push([item, Date.now()]), Date.now);
    return { deadlines, fired };
  }

  it('a callback that throws is reported, and the other items due are still called back, now and later', () => {
    const fired: string[] = [];
    const errors: Array<[string, string]> = [];
    const deadlines = new Deadlines<string>(
      (item) => {
        if (item === 'bad') throw new Error('callback failed');
        fired.push(item);
      },
      Date.now,
      (err, item) => errors.push([item, (err as Error).message]),
    );
    deadlines.add('a', t0 + 1_000);
    deadlines.add('bad', t0 + 1_000);
    deadlines.add('c', t0 + 1_000);
    deadlines.add('later', t0 + 2_000);
    expect(() => vi.advanceTimersByTime(1_000)).not.toThrow();
    expect(fired).toEqual(['a', 'c']);
    expect(errors).toEqual([['bad', 'callback failed']]);
    vi.advanceTimersByTime(1_000);
    expect(fired).toEqual(['a', 'c', 'later']);
    expect(deadlines.size).toBe(0);
  });

  it('calls each item back at its deadline (whole seconds: exactly then), in deadline order, and never before', () => {
    const { deadlines, fired } = schedule();
    deadlines.add('b', t0 + 3_000);
    deadlines.add('a', t0 + 1_000);
    deadlines.add('c', t0 + 3_000);
    expect(deadlines.size).toBe(3);
    vi.advanceTimersByTime(999);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(1);
    expect(fired).toEqual([['a', t0 + 1_000]]);
    vi.advanceTimersByTime(1_999);
    expect(fired).toHaveLength(1);
    vi.advanceTimersByTime(1);
    expect(fired.slice(1).sort()).toEqual([
      ['b', t0 + 3_000],
      ['c', t0 + 3_000],
    ]);
    expect(deadlines.size).toBe(0);
  });

  it('a deadline inside a step comes at the step\'s end, never before the deadline', () => {
    const { deadlines, fired } = schedule();
    deadlines.add('x', t0 + 1_500);
    vi.advanceTimersByTime(1_499);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(DEADLINE_GRANULARITY_MS);
    expect(fired).toEqual([['x', t0 + 2_000]]);
  });

  it('an unscheduled item is never called back; one rescheduled is called back at its new deadline only', () => {
    const { deadlines, fired } = schedule();
    deadlines.add('gone', t0 + 1_000);
    deadlines.add('moved', t0 + 1_000);
    deadlines.add('kept', t0 + 2_000);
    deadlines.delete('gone', t0 + 1_000);
    deadlines.delete('moved', t0 + 1_000);
    deadlines.add('moved', t0 + 5_000);
    // Deleting with a deadline it was not given changes nothing.
    deadlines.delete('kept', t0 + 9_000);
    vi.advanceTimersByTime(10_000);
    expect(fired).toEqual([
      ['kept', t0 + 2_000],
      ['moved', t0 + 5_000],
    ]);
  });

  it('a callback may schedule its item again (a deadline that moved meanwhile)', () => {
    const fired: number[] = [];
    const deadlines: Deadlines<string> = new Deadlines<string>((item) => {
      fired.push(Date.now());
      if (fired.length === 1) deadlines.add(item, t0 + 4_000);
    }, Date.now);
    deadlines.add('renewed', t0 + 1_000);
    vi.advanceTimersByTime(10_000);
    expect(fired).toEqual([t0 + 1_000, t0 + 4_000]);
  });

  it.each([
    ['loses no later group', false],
    ['loses no later group, nor an item it adds back at that deadline', true],
  ])('a callback that unschedules the last other item of its group %s', (_, addBack) => {
    const fired: string[] = [];
    const deadlines: Deadlines<string> = new Deadlines<string>((item) => {
      fired.push(item);
      // The first of the group called back unschedules the other (its group is then
      // empty and gone), and may schedule a third at the same deadline.
      if (item !== 'a' && item !== 'b') return;
      deadlines.delete(item === 'a' ? 'b' : 'a', t0 + 1_000);
      if (addBack) deadlines.add('added', t0 + 1_000);
    }, Date.now);
    deadlines.add('a', t0 + 1_000);
    deadlines.add('b', t0 + 1_000);
    deadlines.add('later', t0 + 2_000);
    vi.advanceTimersByTime(10_000);
    expect(fired.slice(1)).toEqual(addBack ? ['added', 'later'] : ['later']);
    expect(deadlines.size).toBe(0);
  });

  it('a callback may schedule an item at a deadline already past: it is called back too, and no group is lost', () => {
    const fired: string[] = [];
    const deadlines: Deadlines<string> = new Deadlines<string>((item) => {
      fired.push(item);
      if (item === 'a') deadlines.add('past', t0 - 5_000);
    }, Date.now);
    deadlines.add('a', t0 + 1_000);
    deadlines.add('later', t0 + 2_000);
    vi.advanceTimersByTime(10_000);
    expect(fired).toEqual(['a', 'past', 'later']);
    expect(deadlines.size).toBe(0);
  });

  it('a deadline beyond a Node timer\'s range (~24.8 days) still comes, and not before', () => {
    const { deadlines, fired } = schedule();
    deadlines.add('far', t0 + 30 * DAY_MS);
    vi.advanceTimersByTime(25 * DAY_MS);
    expect(fired).toEqual([]);
    vi.advanceTimersByTime(5 * DAY_MS);
    expect(fired).toEqual([['far', t0 + 30 * DAY_MS]]);
  });

  it('many items due at once are called back DEADLINE_SLICE per turn of the event loop', () => {
    const { deadlines, fired } = schedule();
    const n = 2 * DEADLINE_SLICE + 200;
    for (let i = 0; i < n; i++) deadlines.add(`c${i}`, t0 + 1_000);
    vi.advanceTimersByTime(1_000);
    // One turn: the timer's callback did one slice, the rest is left to later turns.
    expect(fired).toHaveLength(DEADLINE_SLICE);
    vi.advanceTimersToNextTimer();
    expect(fired).toHaveLength(2 * DEADLINE_SLICE);
    vi.advanceTimersToNextTimer();
    expect(fired).toHaveLength(n);
    expect(new Set(fired.map(([item]) => item)).size).toBe(n);
    expect(deadlines.size).toBe(0);
  });

  it('clear() unschedules everything', () => {
    const { deadlines, fired } = schedule();
    deadlines.add('a', t0 + 1_000);
    deadlines.clear();
    vi.advanceTimersByTime(10_000);
    expect(fired).toEqual([]);
    expect(vi.getTimerCount()).toBe(0);
  });
});
