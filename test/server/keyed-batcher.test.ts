/**
 * The SEND scheduler: under light load everything waiting goes in one batch at a time;
 * with enough waiting for other recipients a second batch runs beside the first; batches
 * in flight never share a key; and whatever the arrival and completion order, each key's
 * items are flushed in the order they were submitted, each exactly once.
 */
import { fc, test } from '@fast-check/vitest';
import { describe, expect, it } from 'vitest';
import type { Flushed } from '../../server/batching/batcher.js';
import { KeyedBatcher } from '../../server/batching/keyed-batcher.js';

interface Item {
  readonly key: string;
  readonly n: number;
}

function harness(opts = { maxBatch: 8, concurrency: 2, parallelMin: 4 }) {
  const inFlight: Array<{ items: Item[]; finish: () => void; fail: (e: unknown) => void }> = [];
  const flushed: Item[][] = [];
  let overlap = false;
  const b = new KeyedBatcher<Item, string>(opts, (it) => it.key, (items) => {
    const keys = new Set(items.map((i) => i.key));
    if (inFlight.some((f) => f.items.some((i) => keys.has(i.key)))) overlap = true;
    flushed.push([...items]);
    return new Promise<Flushed<string>>((resolve, reject) => {
      const entry = {
        items: [...items],
        finish: () => {
          inFlight.splice(inFlight.indexOf(entry), 1);
          resolve({ results: items.map((i) => `${i.key}#${i.n}`) });
        },
        fail: (e: unknown) => {
          inFlight.splice(inFlight.indexOf(entry), 1);
          reject(e);
        },
      };
      inFlight.push(entry);
    });
  });
  return { b, inFlight, flushed, overlapped: () => overlap };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('KeyedBatcher', () => {
  it('under light load flushes one batch at a time, with everything that waited', async () => {
    const { b, inFlight, flushed } = harness();
    const first = [b.submit({ key: 'a', n: 1 }), b.submit({ key: 'b', n: 1 })];
    await tick();
    expect(flushed).toEqual([[{ key: 'a', n: 1 }, { key: 'b', n: 1 }]]);
    // Three SENDs for other keys wait: fewer than parallelMin, so no second batch.
    const later = ['c', 'd', 'e'].map((key) => b.submit({ key, n: 1 }));
    await tick();
    expect(inFlight.length).toBe(1);
    inFlight[0]!.finish();
    expect(await Promise.all(first)).toEqual(['a#1', 'b#1']);
    expect(flushed.at(-1)!.map((i) => i.key)).toEqual(['c', 'd', 'e']);
    inFlight[0]!.finish();
    expect(await Promise.all(later)).toEqual(['c#1', 'd#1', 'e#1']);
  });

  it('starts a second batch for other keys once enough wait, never for a key in flight', async () => {
    const { b, inFlight, flushed, overlapped } = harness();
    void b.submit({ key: 'a', n: 1 });
    await tick();
    // Four more for 'a' (in flight) and four for others: only the others may go now.
    for (let n = 2; n <= 5; n++) void b.submit({ key: 'a', n });
    for (const key of ['w', 'x', 'y', 'z']) void b.submit({ key, n: 1 });
    await tick();
    expect(inFlight.length).toBe(2);
    expect(flushed[1]!.map((i) => i.key)).toEqual(['w', 'x', 'y', 'z']);
    inFlight[0]!.finish();
    await tick();
    expect(flushed[2]!.map((i) => `${i.key}${i.n}`)).toEqual(['a2', 'a3', 'a4', 'a5']);
    expect(overlapped()).toBe(false);
  });

  it('splits a long queue by key halves when nothing is in flight, so two batches run', async () => {
    const { b, inFlight, flushed, overlapped } = harness({ maxBatch: 100, concurrency: 2, parallelMin: 4 });
    const keys = Array.from({ length: 16 }, (_, i) => `user-${i}`);
    for (const key of keys) void b.submit({ key, n: 1 });
    await tick();
    expect(inFlight.length).toBe(2);
    expect(flushed[0]!.length + flushed[1]!.length).toBe(16);
    expect(flushed[0]!.length).toBeGreaterThan(0);
    expect(flushed[1]!.length).toBeGreaterThan(0);
    expect(overlapped()).toBe(false);
  });

  it('an error from `after` is reported and the callers are still answered; drained() waits for them', async () => {
    const reported: unknown[] = [];
    let finish!: () => void;
    const b = new KeyedBatcher<Item, string>(
      { maxBatch: 8, concurrency: 2, parallelMin: 4, onError: (e) => reported.push(e) },
      (it) => it.key,
      (items) =>
        new Promise<Flushed<string>>((resolve) => {
          finish = () =>
            resolve({
              results: items.map((i) => `${i.key}#${i.n}`),
              after: () => {
                throw new Error('wake failed');
              },
            });
        }),
    );
    const answered: string[] = [];
    const one = b.submit({ key: 'a', n: 1 }).then((r) => answered.push(r));
    await tick();
    const drained = b.drained().then(() => answered.slice());
    finish();
    await one;
    expect(reported.map((e) => (e as Error).message)).toEqual(['wake failed']);
    expect(await drained).toEqual(['a#1']);
  });

  it('a failed batch rejects its own items only', async () => {
    const { b, inFlight } = harness();
    const doomed = b.submit({ key: 'a', n: 1 });
    await tick();
    const fine = b.submit({ key: 'a', n: 2 });
    inFlight[0]!.fail(new Error('database down'));
    await expect(doomed).rejects.toThrow('database down');
    await tick();
    inFlight[0]!.finish();
    expect(await fine).toBe('a#2');
    await b.drained();
  });

  // Any interleaving of submissions and completions: per-key order, each item once, and
  // no two batches in flight sharing a key.
  test.prop(
    [
      fc.array(fc.oneof(fc.record({ submit: fc.constantFrom('a', 'b', 'c', 'd', 'e', 'f', 'g', 'h') }), fc.record({ finish: fc.nat(3) })), { minLength: 1, maxLength: 200 }),
      fc.integer({ min: 1, max: 6 }),
      fc.integer({ min: 1, max: 5 }),
    ],
    { numRuns: 60 },
  )('keeps each key in order, once, and never in two batches at a time', async (steps, maxBatch, parallelMin) => {
    const { b, inFlight, flushed, overlapped } = harness({ maxBatch, concurrency: 2, parallelMin });
    const counters = new Map<string, number>();
    const answers: Array<Promise<string>> = [];
    for (const step of steps) {
      if ('submit' in step) {
        const n = (counters.get(step.submit) ?? 0) + 1;
        counters.set(step.submit, n);
        answers.push(b.submit({ key: step.submit, n }));
      } else {
        await tick();
        inFlight[step.finish % Math.max(1, inFlight.length)]?.finish();
      }
    }
    // Let everything drain.
    for (let guard = 0; guard < 10_000 && (inFlight.length > 0 || b.pending > 0); guard++) {
      await tick();
      inFlight[0]?.finish();
    }
    await b.drained();
    expect(overlapped()).toBe(false);
    const order = new Map<string, number[]>();
    for (const batch of flushed) {
      expect(batch.length).toBeLessThanOrEqual(maxBatch);
      for (const it of batch) order.set(it.key, [...(order.get(it.key) ?? []), it.n]);
    }
    for (const [key, total] of counters) expect(order.get(key)).toEqual(Array.from({ length: total }, (_, i) => i + 1));
    expect((await Promise.all(answers)).length).toBe(steps.filter((s) => 'submit' in s).length);
  });
});
