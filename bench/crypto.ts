/**
 * Crypto benchmarks: `npm run bench -- crypto [--only <substring>] [--seconds <s>]`.
 *
 * Results are named `<backend>_<metric>` (e.g. `native_sign_per_s`). Each backend runs
 * the same list of measurements, so adding a metric means adding one entry to
 * MEASUREMENTS; backend-independent ones go in SUITE_MEASUREMENTS.
 */
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { availableBackends, nativeKeyImport } from '../crypto/primitives/index.js';
import type { BenchResults, BenchValue } from './run.js';

export interface BenchContext {
  /** How long each rate measurement runs. */
  readonly seconds: number;
}

/** One named measurement on one backend, returning its metrics (unprefixed). */
export interface Measurement {
  readonly name: string;
  run(backend: CryptoBackend, ctx: BenchContext): Promise<Record<string, BenchValue>> | Record<string, BenchValue>;
}

/**
 * Calls `op` repeatedly for about `seconds` (after a short warm-up) and returns
 * operations per second. Batches of calls keep the clock out of the loop.
 */
export function opsPerSecond(op: () => unknown, seconds: number): number {
  const warmUntil = performance.now() + Math.min(200, seconds * 200);
  while (performance.now() < warmUntil) op();
  let batch = 1;
  let ops = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    for (let i = 0; i < batch; i++) op();
    ops += batch;
    now = performance.now();
    if (batch < 1024) batch *= 2;
  }
  return Math.round((ops * 1000) / (now - start));
}

const MSG_1K = new Uint8Array(1024).fill(0x61);
const SEED = new Uint8Array(32).fill(7);
const KEY = new Uint8Array(32).fill(9);
const NONCE = new Uint8Array(12);
const AAD = new Uint8Array(40).fill(1);

export const MEASUREMENTS: Measurement[] = [
  {
    name: 'ed25519',
    run(b, { seconds }) {
      const pub = b.ed25519PublicKey(SEED);
      const sig = b.ed25519Sign(SEED, MSG_1K);
      return {
        sign_per_s: opsPerSecond(() => b.ed25519Sign(SEED, MSG_1K), seconds),
        verify_per_s: opsPerSecond(() => b.ed25519Verify(sig, MSG_1K, pub), seconds),
      };
    },
  },
  {
    name: 'x25519',
    run(b, { seconds }) {
      const theirs = b.x25519PublicKey(KEY);
      return {
        x25519_per_s: opsPerSecond(() => b.x25519(SEED, theirs), seconds),
        x25519_pubkey_per_s: opsPerSecond(() => b.x25519PublicKey(SEED), seconds),
      };
    },
  },
  {
    name: 'symmetric',
    run(b, { seconds }) {
      const sealed = b.aeadSeal(KEY, NONCE, MSG_1K, AAD);
      return {
        aead_seal_1k_per_s: opsPerSecond(() => b.aeadSeal(KEY, NONCE, MSG_1K, AAD), seconds),
        aead_open_1k_per_s: opsPerSecond(() => b.aeadOpen(KEY, NONCE, sealed, AAD), seconds),
        hmac_32_per_s: opsPerSecond(() => b.hmacSha256(KEY, SEED), seconds),
        hkdf_64_per_s: opsPerSecond(() => b.hkdfSha256(KEY, SEED, AAD, 64), seconds),
      };
    },
  },
  {
    name: 'mlkem',
    run(b, { seconds }) {
      const kp = b.mlkemKeygen();
      const { cipherText } = b.mlkemEncapsulate(kp.publicKey);
      return {
        mlkem_encaps_per_s: opsPerSecond(() => b.mlkemEncapsulate(kp.publicKey), seconds),
        mlkem_decaps_per_s: opsPerSecond(() => b.mlkemDecapsulate(cipherText, kp.secretKey), seconds),
      };
    },
  },
];

/** Measurements that are not per backend (or choose their own); metric names as-is. */
export const SUITE_MEASUREMENTS: { name: string; run(ctx: BenchContext): Promise<BenchResults> | BenchResults }[] = [
  { name: 'info', run: () => ({ native_key_import: nativeKeyImport ?? 'unavailable' }) },
];

function option(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const seconds = Number(option(args, '--seconds') ?? '1');
  const only = option(args, '--only');
  const ctx: BenchContext = { seconds: Number.isFinite(seconds) && seconds > 0 ? seconds : 1 };
  const results: BenchResults = {};
  for (const m of SUITE_MEASUREMENTS) {
    if (only !== undefined && !m.name.includes(only)) continue;
    Object.assign(results, await m.run(ctx));
  }
  // Native first: it is the default backend, so its numbers are the headline.
  const backends = [...availableBackends].sort((a, b) => (a.name === 'native' ? -1 : b.name === 'native' ? 1 : 0));
  for (const b of backends) {
    for (const m of MEASUREMENTS) {
      if (only !== undefined && !m.name.includes(only)) continue;
      const metrics = await m.run(b, ctx);
      for (const [k, v] of Object.entries(metrics)) results[`${b.name}_${k}`] = v;
    }
  }
  return results;
}
