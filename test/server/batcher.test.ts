/**
 * Group commit's queue: items arriving together share a flush, flushes never exceed
 * their size or concurrency, results reach each caller in order, a failed flush rejects
 * exactly its own items, and the next flush starts before a finished one's callers are
 * answered.
 */
import { describe, expect, it } from 'vitest';
import { Batcher, type Flushed } from '../../server/batching/batcher.js';

/** A flush whose completion the test controls. */
function controlledFlush() {
  const calls: Array<{ items: number[]; finish: (f?: Partial<Flushed<string>>) => void; fail: (e: unknown) => void }> = [];
  const flush = (items: readonly number[]) =>
    new Promise<Flushed<string>>((resolve, reject) => {
      calls.push({
        items: [...items],
        finish: (f) => resolve({ results: items.map((i) => `r${i}`), ...f }),
        fail: reject,
      });
    });
  return { calls, flush };
}

const tick = () => new Promise((r) => setImmediate(r));

describe('Batcher', () => {
  it('flushes what arrives in one turn together, then what queued meanwhile, at most maxBatch at a time', async () => {
    const { calls, flush } = controlledFlush();
    const b = new Batcher<number, string>({ maxBatch: 3, maxWaitMs: 0, concurrency: 1 }, flush);
    const first = [1, 2].map((i) => b.submit(i));
    await tick();
    expect(calls.map((c) => c.items)).toEqual([[1, 2]]);
    const later = [3, 4, 5, 6, 7].map((i) => b.submit(i));
    await tick();
    expect(calls.length).toBe(1); // one flush in flight at a time
    calls[0]!.finish();
    expect(await Promise.all(first)).toEqual(['r1', 'r2']);
    expect(calls.map((c) => c.items)).toEqual([[1, 2], [3, 4, 5]]);
    calls[1]!.finish();
    await tick();
    expect(calls[2]!.items).toEqual([6, 7]);
    calls[2]!.finish();
    expect(await Promise.all(later)).toEqual(['r3', 'r4', 'r5', 'r6', 'r7']);
    expect(b.pending).toBe(0);
  });

  it('starts the next flush, then runs `after`, then answers the finished flush\'s callers', async () => {
    const { calls, flush } = controlledFlush();
    const b = new Batcher<number, string>({ maxBatch: 10, maxWaitMs: 0, concurrency: 1 }, flush);
    const events: string[] = [];
    const a = b.submit(1).then(() => events.push(`answered 1 (flushes started: ${calls.length})`));
    await tick();
    void b.submit(2);
    calls[0]!.finish({ after: () => events.push(`after (flushes started: ${calls.length})`) });
    await a;
    expect(events).toEqual(['after (flushes started: 2)', 'answered 1 (flushes started: 2)']);
  });

  it('an error from `after` is reported and the callers are still answered; drained() waits for them', async () => {
    const { calls, flush } = controlledFlush();
    const reported: unknown[] = [];
    const b = new Batcher<number, string>({ maxBatch: 10, maxWaitMs: 0, concurrency: 1, onError: (e) => reported.push(e) }, flush);
    const answered: string[] = [];
    const one = b.submit(1).then((r) => answered.push(r));
    await tick();
    const drained = b.drained().then(() => answered.slice());
    calls[0]!.finish({
      after: () => {
        throw new Error('wake failed');
      },
    });
    await one;
    expect(reported.map((e) => (e as Error).message)).toEqual(['wake failed']);
    expect(await drained).toEqual(['r1']);
  });

  it('a failed flush rejects its own items only; the queue goes on', async () => {
    const { calls, flush } = controlledFlush();
    const b = new Batcher<number, string>({ maxBatch: 10, maxWaitMs: 0, concurrency: 1 }, flush);
    const doomed = [b.submit(1), b.submit(2)];
    await tick();
    const fine = b.submit(3);
    calls[0]!.fail(new Error('database down'));
    for (const d of doomed) await expect(d).rejects.toThrow('database down');
    await tick();
    calls[1]!.finish();
    expect(await fine).toBe('r3');
  });

  it('runs up to `concurrency` flushes at once, and drained() waits for all of them', async () => {
    const { calls, flush } = controlledFlush();
    const b = new Batcher<number, string>({ maxBatch: 2, maxWaitMs: 0, concurrency: 2 }, flush);
    const all = [1, 2, 3, 4, 5].map((i) => b.submit(i));
    await tick();
    expect(calls.map((c) => c.items)).toEqual([[1, 2], [3, 4]]);
    let drained = false;
    void b.drained().then(() => (drained = true));
    calls[1]!.finish();
    await tick();
    expect(calls.map((c) => c.items)).toEqual([[1, 2], [3, 4], [5]]);
    calls[0]!.finish();
    calls[2]!.finish();
    expect(await Promise.all(all)).toEqual(['r1', 'r2', 'r3', 'r4', 'r5']);
    await tick();
    expect(drained).toBe(true);
  });
});
