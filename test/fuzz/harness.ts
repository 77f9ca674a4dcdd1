/**
 * The fuzzing harness shared by `npm run fuzz` (bench/fuzz.ts) and the seeded run in
 * `npm test` (test/fuzz/fuzz.test.ts).
 *
 * A target wraps one decoder reachable from untrusted bytes. For each generated input
 * its `check` runs the decoder and the properties that must hold for what it accepted
 * (canonical re-encoding, sizes within the named limits, state unchanged on a failed
 * decrypt, ...). Every outcome is one of:
 *
 *   accepted   `check` returned normally;
 *   rejected   the decoder threw the typed error of its layer (ProtocolError for
 *              protocol/ and the relay, CryptoError for crypto/) with one of the codes
 *              the target lists, or `check` returned a label (decoders that answer
 *              `undefined` for bad input);
 *   a finding  anything else: another error class (TypeError, RangeError, a plain
 *              Error), a code the target does not list, a violated property (Violation),
 *              or an input that stays slow when run again (only when `slowMs` is set).
 *
 * Inputs come from fast-check, so a finding is shrunk to a small counterexample and can
 * be replayed exactly from its seed and path.
 */
import fc from 'fast-check';
import { CryptoError, type CryptoErrorCode } from '../../crypto/errors.js';
import { type ErrorCode, ProtocolError, isErrorCode } from '../../protocol/errors.js';

/** A property of a target that did not hold: always a finding. */
export class Violation extends Error {
  override readonly name = 'Violation';
}

export function must(condition: boolean, what: string): asserts condition {
  if (!condition) throw new Violation(what);
}

export function sameBytes(a: Uint8Array, b: Uint8Array): boolean {
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
}

/**
 * Runs `decode` on a Node Buffer copy of `input` (what Node's sockets, files and the pg
 * driver hand over) and checks that the result does not alias it: overwriting the
 * buffer afterwards must not change what `fingerprint` reads from the result. (A common
 * way to get this wrong: `Buffer#slice` is a view, not a copy.)
 */
export function decodeDetached<T>(input: Uint8Array, decode: (bytes: Uint8Array) => T, fingerprint: (value: T) => Uint8Array): T {
  const buffer = Buffer.from(input);
  const value = decode(buffer);
  const before = new Uint8Array(fingerprint(value));
  buffer.fill(0x5a);
  must(sameBytes(fingerprint(value), before), 'the decoded value aliases the input buffer (overwriting the input changed it)');
  return value;
}

/**
 * Runs `fn`, which may refuse only with a CryptoError of one of `codes` (used after a
 * decoder accepted something: what it produced must be usable or refused cleanly).
 */
export function mustOnlyRefuse(what: string, codes: readonly CryptoErrorCode[], fn: () => unknown): void {
  try {
    fn();
  } catch (err) {
    if (err instanceof CryptoError && codes.includes(err.code)) return;
    throw new Violation(`${what} threw ${err instanceof Error ? `${err.name}: ${err.message}` : String(err)}`);
  }
}

/** What `check` may return: nothing (accepted) or a rejection label. */
export type CheckResult = void | { readonly rejected: string };

interface TargetSpec<I, C> {
  /** `area/decoder`, e.g. `protocol/send`. Stable: replay strings name it. */
  readonly name: string;
  /** Inputs per target in a full `npm run fuzz` run. */
  readonly runs: number;
  /** Inputs in the seeded `npm test` run (default DEFAULT_TEST_RUNS). */
  readonly testRuns?: number;
  /** Built once per process: keys, sessions, the corpus of valid encodings. Deterministic. */
  setup(): C | Promise<C>;
  inputs(ctx: C): fc.Arbitrary<I>;
  /** Runs the decoder on one input and checks what it produced. */
  check(input: I, ctx: C): CheckResult | Promise<CheckResult>;
  /** Checks on a typed rejection (e.g. that an echoed request id is the frame's). */
  onRejected?(err: ProtocolError | CryptoError, input: I, ctx: C): void;
}

/** A target of the protocol layer or the relay: typed errors are ProtocolErrors. */
interface ProtocolTargetSpec<I, C> extends TargetSpec<I, C> {
  readonly layer: 'protocol';
  /** The codes this decoder may reject with; an empty list means it never throws. */
  readonly codes: readonly ErrorCode[];
}

/** A target of crypto/: typed errors are CryptoErrors. */
interface CryptoTargetSpec<I, C> extends TargetSpec<I, C> {
  readonly layer: 'crypto';
  readonly codes: readonly CryptoErrorCode[];
}

export type FuzzTargetSpec<I, C> = ProtocolTargetSpec<I, C> | CryptoTargetSpec<I, C>;

export const DEFAULT_TEST_RUNS = 2000;

interface Prepared {
  readonly arbitrary: fc.Arbitrary<unknown>;
  check(input: unknown): CheckResult | Promise<CheckResult>;
  onRejected(err: ProtocolError | CryptoError, input: unknown): void;
}

/** A registered target with its input type erased (see defineTarget). */
export interface FuzzTarget {
  readonly name: string;
  readonly layer: 'protocol' | 'crypto';
  readonly codes: readonly string[];
  readonly runs: number;
  readonly testRuns: number;
  /** Runs setup once per process and returns the arbitrary and the checks. */
  prepare(): Promise<Prepared>;
}

export function defineTarget<I, C>(spec: FuzzTargetSpec<I, C>): FuzzTarget {
  let prepared: Promise<Prepared> | undefined;
  return {
    name: spec.name,
    layer: spec.layer,
    codes: spec.codes,
    runs: spec.runs,
    testRuns: spec.testRuns ?? DEFAULT_TEST_RUNS,
    prepare() {
      prepared ??= (async () => {
        const ctx = await spec.setup();
        return {
          arbitrary: spec.inputs(ctx) as fc.Arbitrary<unknown>,
          check: (input: unknown) => spec.check(input as I, ctx),
          onRejected: (err: ProtocolError | CryptoError, input: unknown) => spec.onRejected?.(err, input as I, ctx),
        };
      })();
      return prepared;
    },
  };
}

/** The typed rejection code of `err` for `target`, or why it is a finding. */
export function classify(target: Pick<FuzzTarget, 'layer' | 'codes'>, err: unknown): { code: string } | { finding: string } {
  if (err instanceof Violation) return { finding: err.message };
  const typed = target.layer === 'protocol' ? err instanceof ProtocolError : err instanceof CryptoError;
  if (!typed) {
    const name = err instanceof Error ? err.name : typeof err;
    const message = err instanceof Error ? err.message : String(err);
    return { finding: `untyped error ${name}: ${message}` };
  }
  const code = (err as ProtocolError | CryptoError).code;
  if (target.layer === 'protocol' && !isErrorCode(code)) return { finding: `ProtocolError with an unknown code ${code}` };
  if (!target.codes.includes(code)) return { finding: `${code} is not among this decoder's codes (${target.codes.join(', ') || 'none'})` };
  if (err instanceof ProtocolError) {
    // The relay sends every rejection to the peer as JSON: it must encode.
    try {
      JSON.stringify(err.toJSON());
    } catch (cause) {
      return { finding: `the error does not encode as JSON: ${(cause as Error).message}` };
    }
  }
  return { code };
}

export interface FuzzFailure {
  readonly message: string;
  /** The shrunk input, printable. */
  readonly counterexample: string;
  /** `target:seed:path`: pass to `npm run fuzz -- --replay` to run exactly this input. */
  readonly replay: string;
  readonly stack?: string | undefined;
}

export interface TargetReport {
  readonly name: string;
  readonly inputs: number;
  readonly accepted: number;
  readonly rejected: Record<string, number>;
  readonly failures: FuzzFailure[];
}

export interface RunOptions {
  readonly runs: number;
  readonly seed: number;
  /** Replays one counterexample (with the seed it was found with). */
  readonly path?: string | undefined;
  /** Inputs slower than this, twice in a row, are findings. Off in tests (no wall-time assertions). */
  readonly slowMs?: number | undefined;
}

class Finding extends Error {
  override readonly name = 'Finding';
  constructor(
    message: string,
    readonly original: unknown,
  ) {
    super(message);
  }
}

/** Runs `runs` inputs of `target` from `seed`; the first finding is shrunk and reported. */
export async function runTarget(target: FuzzTarget, opts: RunOptions): Promise<TargetReport> {
  const prepared = await target.prepare();
  let accepted = 0;
  const rejected: Record<string, number> = {};
  // Shrinking re-runs failing inputs: count only until the first finding.
  let counting = true;

  const settle = (input: unknown, err: unknown): void => {
    const c = classify(target, err);
    if ('code' in c) {
      try {
        prepared.onRejected(err as ProtocolError | CryptoError, input);
      } catch (cause) {
        counting = false;
        throw new Finding(cause instanceof Violation ? cause.message : `onRejected threw ${String(cause)}`, cause);
      }
      if (counting) rejected[c.code] = (rejected[c.code] ?? 0) + 1;
      return;
    }
    counting = false;
    throw new Finding(c.finding, err);
  };
  const done = (result: CheckResult): void => {
    if (!counting) return;
    if (result === undefined) accepted++;
    else rejected[result.rejected] = (rejected[result.rejected] ?? 0) + 1;
  };

  const once = async (input: unknown): Promise<void> => {
    let result: CheckResult;
    try {
      result = await prepared.check(input);
    } catch (err) {
      settle(input, err);
      return;
    }
    done(result);
  };
  const timed = async (input: unknown): Promise<void> => {
    const slowMs = opts.slowMs;
    if (slowMs === undefined) return once(input);
    const elapsed = async (): Promise<number> => {
      const start = performance.now();
      await once(input);
      return performance.now() - start;
    };
    const first = await elapsed();
    if (first <= slowMs) return;
    // Once more, uncounted, so a pause of the machine is not taken for a slow decoder.
    const wasCounting = counting;
    counting = false;
    const second = await elapsed();
    counting = wasCounting;
    if (second > slowMs) {
      counting = false;
      throw new Finding(`slow input: ${Math.round(first)} ms, then ${Math.round(second)} ms (limit ${slowMs} ms)`, undefined);
    }
  };

  const details = await fc.check(fc.asyncProperty(prepared.arbitrary, timed), {
    numRuns: opts.runs,
    seed: opts.seed,
    ...(opts.path !== undefined ? { path: opts.path, endOnFailure: true } : {}),
  });
  const failures: FuzzFailure[] = [];
  if (details.failed) {
    const err = details.errorInstance;
    const original = err instanceof Finding ? err.original : err;
    failures.push({
      message: err instanceof Error ? err.message : String(err),
      counterexample: describeInput(details.counterexample?.[0]),
      replay: `${target.name}:${details.seed}:${details.counterexamplePath ?? ''}`,
      stack: original instanceof Error ? original.stack : undefined,
    });
  }
  return { name: target.name, inputs: details.numRuns, accepted, rejected, failures };
}

/** Parses a replay string `target:seed:path` (the target name may contain no colon). */
export function parseReplay(s: string): { target: string; seed: number; path: string } {
  const m = /^([^:]+):(-?\d+):([\d:]*)$/.exec(s);
  if (!m) throw new Error(`--replay expects target:seed:path, got ${JSON.stringify(s)}`);
  return { target: m[1] as string, seed: Number(m[2]), path: m[3] as string };
}

const MAX_SHOWN = 600;

function clip(s: string): string {
  return s.length <= MAX_SHOWN ? s : `${s.slice(0, MAX_SHOWN)}… (${s.length} characters)`;
}

/** A readable form of an input: bytes in hex, strings as JSON, within a bounded length. */
export function describeInput(v: unknown): string {
  return clip(describe(v, 0));
}

function describe(v: unknown, depth: number): string {
  if (v instanceof Uint8Array) {
    const hex = Buffer.from(v.buffer, v.byteOffset, Math.min(v.byteLength, 256)).toString('hex');
    return `hex(${v.byteLength}B) ${hex}${v.byteLength > 256 ? '…' : ''}`;
  }
  if (typeof v === 'string') return clip(JSON.stringify(v));
  if (depth > 4 || v === null || typeof v !== 'object') return fc.stringify(v);
  if (Array.isArray(v)) return `[${v.map((x) => describe(x, depth + 1)).join(', ')}]`;
  return `{${Object.entries(v as Record<string, unknown>)
    .map(([k, x]) => `${k}: ${describe(x, depth + 1)}`)
    .join(', ')}}`;
}

/** Total inputs of a set of targets at their full-run counts. */
export function totalRuns(targets: readonly FuzzTarget[]): number {
  return targets.reduce((n, t) => n + t.runs, 0);
}
