/**
 * The fuzzing harness itself: it must be able to fail. A decoder that throws an untyped
 * error, a code it does not list, or breaks a property is a finding with a replayable
 * counterexample; typed rejections are counted by code; the mutators are deterministic;
 * `npm run fuzz` runs the registry in worker processes and reports totals.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { CryptoError } from '../../crypto/errors.js';
import { ProtocolError } from '../../protocol/errors.js';
import { decodeDetached, defineTarget, must, parseReplay, runTarget, totalRuns, Violation } from './harness.js';
import { applyByteMutation, applyJsonMutation, bytesFrom, jsonTextFrom, type Json } from './mutate.js';
import { FUZZ_TARGETS, MIN_FULL_RUN_INPUTS } from './targets/index.js';

const corpus = [Uint8Array.of(1, 2, 3, 4, 5, 6, 7, 8), Uint8Array.of(9, 9, 9)];

/** A byte decoder with a bug on inputs starting 0x01 0x02 0x03 (any other result is typed). */
function target(bug: () => never) {
  return defineTarget({
    name: 'test/buggy',
    layer: 'protocol',
    codes: ['BAD_REQUEST'],
    runs: 1,
    setup: () => ({}),
    inputs: () => bytesFrom(corpus),
    check(input: Uint8Array) {
      if (input[0] === 1 && input[1] === 2 && input[2] === 3) bug();
      if (input.length % 2 === 1) throw new ProtocolError('BAD_REQUEST', 'odd');
      if (input.length === 0) return { rejected: 'empty' };
      return undefined;
    },
  });
}

describe('runTarget', () => {
  it.each([
    ['an untyped error', () => { throw new TypeError('boom'); }, /untyped error TypeError: boom/],
    ['a code the decoder does not list', () => { throw new ProtocolError('INTERNAL', 'x'); }, /INTERNAL is not among this decoder's codes/],
    ['a violated property', () => { throw new Violation('does not re-encode'); }, /does not re-encode/],
    ['a CryptoError from a protocol decoder', () => { throw new CryptoError('INVALID_MESSAGE', 'x'); }, /untyped error CryptoError/],
  ] as const)('reports %s as a finding, shrunk and replayable', async (_what, bug, message) => {
    const t = target(bug as () => never);
    const report = await runTarget(t, { runs: 2000, seed: 7 });
    expect(report.failures).toHaveLength(1);
    const [failure] = report.failures;
    expect(failure?.message).toMatch(message);
    expect(failure?.counterexample).toMatch(/^hex\(\d+B\) 010203/);
    const { target: name, seed, path } = parseReplay(failure?.replay ?? '');
    expect(name).toBe('test/buggy');
    const again = await runTarget(t, { runs: 1, seed, path });
    expect(again.failures[0]?.message).toBe(failure?.message);
    expect(again.failures[0]?.counterexample).toBe(failure?.counterexample);
  });

  it('counts only what the target lists: without findings, every input is accepted or rejected', async () => {
    const t = defineTarget({
      name: 'test/clean',
      layer: 'crypto',
      codes: ['INVALID_MESSAGE'],
      runs: 1,
      setup: () => ({}),
      inputs: () => bytesFrom(corpus),
      check(input: Uint8Array) {
        if (input.length === 0) return { rejected: 'empty' };
        if (input[0] !== 1) throw new CryptoError('INVALID_MESSAGE', 'x');
        return undefined;
      },
    });
    const report = await runTarget(t, { runs: 500, seed: 3 });
    expect(report.failures).toEqual([]);
    const rejected = Object.values(report.rejected).reduce((a, b) => a + b, 0);
    expect(report.accepted + rejected).toBe(500);
    expect(report.accepted).toBeGreaterThan(0);
    expect(report.rejected.INVALID_MESSAGE).toBeGreaterThan(0);
  });

  it('reports an input that stays slower than the limit (30 ms of work against a 1 ms limit)', async () => {
    const t = defineTarget({
      name: 'test/slow',
      layer: 'protocol',
      codes: [],
      runs: 1,
      setup: () => ({}),
      inputs: () => fc.constant(1),
      check() {
        const end = performance.now() + 30;
        while (performance.now() < end) {
          /* busy */
        }
      },
    });
    const report = await runTarget(t, { runs: 3, seed: 1, slowMs: 1 });
    expect(report.failures[0]?.message).toMatch(/slow input/);
  });
});

describe('decodeDetached', () => {
  it('catches a decoder that returns a view of its input, and passes one that copies', () => {
    const input = Uint8Array.of(1, 2, 3);
    expect(() => decodeDetached(input, (b) => b.subarray(1), (v) => v)).toThrow(Violation);
    expect(() => decodeDetached(input, (b) => b.slice(1), (v) => v)).toThrow(/aliases the input/);
    expect(decodeDetached(input, (b) => new Uint8Array(b.subarray(1)), (v) => v)).toEqual(Uint8Array.of(2, 3));
    // The caller's bytes are never touched.
    expect(input).toEqual(Uint8Array.of(1, 2, 3));
  });

  it('must() throws a Violation', () => {
    expect(() => must(false, 'why')).toThrow(new Violation('why'));
  });
});

describe('mutators', () => {
  it('apply to a copy: the corpus never changes', () => {
    const before = corpus.map((c) => Array.from(c));
    for (const m of [
      { op: 'flip', at: 0, bit: 0 },
      { op: 'set', at: 3, value: 0 },
      { op: 'int', at: 1, width: 4, pick: 19 },
      { op: 'nudge', at: 0, width: 2, delta: -1 },
    ] as const) {
      expect(applyByteMutation(corpus[0] as Uint8Array, m, corpus)).not.toEqual(corpus[0]);
    }
    expect(corpus.map((c) => Array.from(c))).toEqual(before);
  });

  it('write length fields big-endian and cut, grow and splice where asked', () => {
    const b = Uint8Array.of(0, 0, 0, 0, 0);
    expect(Array.from(applyByteMutation(b, { op: 'int', at: 1, width: 2, pick: 8 }, []))).toEqual([0, 0x80, 0x00, 0, 0]);
    expect(Array.from(applyByteMutation(Uint8Array.of(0, 1, 0xff), { op: 'nudge', at: 1, width: 2, delta: 1 }, []))).toEqual([0, 2, 0]);
    expect(Array.from(applyByteMutation(b, { op: 'truncate', at: 2 }, []))).toEqual([0, 0]);
    expect(Array.from(applyByteMutation(Uint8Array.of(1, 2, 3), { op: 'repeat', at: 1, length: 1, times: 2 }, []))).toEqual([1, 2, 2, 2, 3]);
    expect(Array.from(applyByteMutation(Uint8Array.of(1, 2, 3), { op: 'splice', at: 1, donor: 0, from: 1 }, [Uint8Array.of(7, 8, 9)]))).toEqual([1, 8, 9]);
  });

  it('JSON mutations place copies of generated values (no shared or circular structure)', () => {
    const shared: Json = [1];
    let root: Json = { a: 1, b: [1] };
    root = applyJsonMutation(root, { op: 'replace', at: 1, value: shared });
    root = applyJsonMutation(root, { op: 'replace', at: 2, value: shared });
    root = applyJsonMutation(root, { op: 'grow', at: 0, times: 3 });
    expect(shared).toEqual([1]);
    expect(() => JSON.stringify(root)).not.toThrow();
  });

  it('are deterministic for a seed', () => {
    const arb = jsonTextFrom([{ type: 'ping', id: 1 }]);
    expect(fc.sample(arb, { numRuns: 50, seed: 11 })).toEqual(fc.sample(arb, { numRuns: 50, seed: 11 }));
  });
});

describe('the registry', () => {
  it(`adds up to at least ${MIN_FULL_RUN_INPUTS.toLocaleString('en-US')} inputs in a full run, under unique names`, () => {
    expect(totalRuns(FUZZ_TARGETS)).toBeGreaterThanOrEqual(MIN_FULL_RUN_INPUTS);
    expect(new Set(FUZZ_TARGETS.map((t) => t.name)).size).toBe(FUZZ_TARGETS.length);
    for (const t of FUZZ_TARGETS) expect(t.name).toMatch(/^(protocol|server|crypto|client)\/[a-z0-9-]+$/);
  });
});

describe('npm run fuzz', () => {
  it('runs targets in worker processes and prints a final JSON line with the totals', async () => {
    const run = promisify(execFile);
    const { stdout } = await run(
      process.execPath,
      ['--import', 'tsx', 'bench/fuzz.ts', '--target', 'protocol/base64url,server/bearer-token', '--runs', '300', '--workers', '2', '--seed', '5', '--json'],
      { cwd: new URL('../..', import.meta.url), timeout: 120_000 },
    );
    const last = JSON.parse(stdout.trim().split('\n').at(-1) as string) as {
      seed: number;
      total: { inputs: number; failures: number };
      targets: { name: string; inputs: number; accepted: number; rejected: Record<string, number> }[];
    };
    expect(last.seed).toBe(5);
    expect(last.total).toMatchObject({ inputs: 600, failures: 0 });
    expect(last.targets.map((t) => t.name)).toEqual(['protocol/base64url', 'server/bearer-token']);
    for (const t of last.targets) expect(t.accepted + Object.values(t.rejected).reduce((a, b) => a + b, 0)).toBe(300);
    expect(stdout).toMatch(/^target\s+inputs\s+accepted\s+failures\s+rejected \(by code\)$/m);
  });
});
