/**
 * Receipts and the transparency log: `npm run bench -- audit [--json] [options]`.
 *
 * 1. `receipts_signed_per_s` — one-entry receipts signed (schema check, JSON, JWS, Ed25519)
 *    on the native backend; `receipt_entries_signed_per_s` with full batches
 *    (MAX_RECEIPT_ENTRIES entries per signature, as the SDK signs them under load).
 * 2. `receipts_verified_per_s` — what an auditor does per receipt: parse and verify the JWS
 *    with the device's key, hash the leaf, and verify its inclusion proof against the root
 *    of a signed checkpoint (whose signature is checked once). The log (`--log-size`
 *    receipts) is built in memory first; proofs are produced beforehand, since an auditor
 *    reads them (or tiles) from the log. Native backend; `noble_receipts_verified_per_s`
 *    for the pure-JS one.
 * 3. `log_append_per_s` — receipts appended durably to the relay's log by its sequencer
 *    on PostgreSQL, in batches (see the phase for what is and is not included).
 * 4. `e2e_ratio_receipts_on_off` — the SDK's end-to-end throughput (bench/sdk.ts's memory
 *    phase: sender/recipient pairs, windows of sends) with receipts signed, sent back,
 *    verified and every receipt submitted to the relay's log, divided by the same with
 *    receipts off; rounds alternate off/on in one run (the ratio of the sums).
 *
 * Goals (docs/PERFORMANCE.md): receipts_verified_per_s ≥ 5,000; e2e ratio ≥ 0.85.
 *
 * Options:
 *   --duration <s>   seconds per measurement (default 5; --quick: 1)
 *   --quick          short runs: a smoke check
 *   --only <phases>  comma list of sign, verify, append, e2e
 *   --rounds <n>     off/on rounds in the e2e phase (default 2; --quick: 1)
 *   --pairs <n>, --workers <n>, --window <n>   as in the sdk suite
 *   --log-size <n>   receipts in the verify phase's log (default 65,536)
 */
import os from 'node:os';
import { type ReceiptPayload, signReceipt, verifyReceipt } from '../crypto/evidence/receipt.js';
import { IdentityKeyPair } from '../crypto/identity/identity-key.js';
import { type CryptoBackend, nativeBackend, nobleBackend } from '../crypto/primitives/index.js';
import { MemoryNodeStore, NoteSigner, inclusionProof, leafHash, openCheckpoint, signCheckpoint, verifyInclusion } from '../crypto/tlog/index.js';
import { encodeBase64url } from '../protocol/base64url.js';
import { readOptions } from './lib/options.js';
import type { BenchResults } from './run.js';

const PHASES = ['sign', 'verify', 'append', 'e2e'] as const;
type Phase = (typeof PHASES)[number];
/** The goals of the audit benchmark. */
const GOAL_VERIFIED_PER_S = 5_000;
const GOAL_E2E_RATIO = 0.85;

interface Options {
  readonly duration: number;
  readonly quick: boolean;
  readonly phases: ReadonlySet<Phase>;
  readonly rounds: number;
  readonly logSize: number;
  readonly args: readonly string[];
}

function parseOptions(args: readonly string[]): Options {
  const { num, phases } = readOptions(args, ['--duration', '--quick', '--only', '--rounds', '--log-size', '--pairs', '--workers', '--window']);
  const quick = args.includes('--quick');
  return {
    duration: num('--duration', quick ? 1 : 5, 0.2, 600),
    quick,
    phases: phases(PHASES),
    rounds: num('--rounds', quick ? 1 : 2, 1, 20),
    logSize: num('--log-size', quick ? 4096 : 65_536, 16, 4_000_000),
    args,
  };
}

function log(msg: string): void {
  console.error(`[audit bench] ${msg}`);
}

const enc = new TextEncoder();

/** One receipt entry as the SDK writes it, for envelope `i` of a sender. */
function entry(i: number) {
  const id = new Uint8Array(16);
  new DataView(id.buffer).setUint32(12, i);
  return {
    envelopeId: encodeBase64url(id),
    sha256: encodeBase64url(new Uint8Array(32).fill(i & 0xff)),
    seq: i + 1,
    sender: { user: 'bench-sender', device: 'dSenderDevice01' },
    messageNumber: i + 1,
    sentAt: 1_800_000_000_000 + i,
    storedAt: 1_800_000_000_010 + i,
    receivedAt: 1_800_000_000_020 + i,
    disposition: 'processed' as const,
    flags: [],
  };
}

function payload(from: number, n: number): ReceiptPayload {
  return { v: 1, recipient: { user: 'bench-recipient', device: 'dRecipientDev01' }, issuedAt: 1_800_000_001_000, entries: Array.from({ length: n }, (_, k) => entry(from + k)) };
}

/** Runs `op` for `seconds` (after a short warm-up); returns operations per second. */
function rate(seconds: number, op: (i: number) => void): number {
  const warm = performance.now() + Math.min(500, seconds * 200);
  let i = 0;
  while (performance.now() < warm) op(i++);
  const t0 = performance.now();
  const until = t0 + seconds * 1000;
  let n = 0;
  while (performance.now() < until) {
    for (let k = 0; k < 16; k++) op(i + n++);
  }
  return (n * 1000) / (performance.now() - t0);
}

function signPhase(opts: Options): BenchResults {
  const backend = nativeBackend ?? nobleBackend;
  const pair = IdentityKeyPair.generate(undefined, backend);
  const single = rate(opts.duration, (i) => signReceipt(pair, payload(i, 1), backend));
  const batch = rate(opts.duration, (i) => signReceipt(pair, payload(i * 128, 128), backend)) * 128;
  log(`signed: ${Math.round(single)} one-entry receipts/s, ${Math.round(batch)} entries/s in 128-entry receipts`);
  return { receipts_signed_per_s: Math.round(single), receipt_entries_signed_per_s: Math.round(batch), sign_backend: backend.name };
}

async function verifyPhase(opts: Options, backend: CryptoBackend, prefix: string): Promise<BenchResults> {
  const pair = IdentityKeyPair.generate(undefined, backend);
  const signer = NoteSigner.generate('bench.example/log');
  const origin = 'bench.example/log';
  // The log: one-entry receipts (the worst case for an auditor: a signature per envelope).
  const t0 = performance.now();
  const receipts: string[] = [];
  for (let i = 0; i < opts.logSize; i++) receipts.push(signReceipt(pair, payload(i, 1), backend));
  const store = new MemoryNodeStore(backend);
  const root = await store.append(receipts.map((r) => leafHash(enc.encode(r), backend)));
  const note = signCheckpoint({ origin, size: store.size, rootHash: root, extensions: [] }, [signer]);
  const sample = Math.min(opts.logSize, 4096);
  const proofs: Uint8Array[][] = [];
  for (let i = 0; i < sample; i++) proofs.push(await inclusionProof(i, store.size, store.read));
  log(`${prefix}log of ${opts.logSize} receipts built in ${Math.round(performance.now() - t0)} ms`);
  // The auditor: the checkpoint once, then each receipt's signature and inclusion.
  const cp = openCheckpoint(note, origin, [signer.verifier]).checkpoint;
  const key = pair.publicKey;
  const perSecond = rate(opts.duration, (i) => {
    const k = i % sample;
    const jws = receipts[k] as string;
    verifyReceipt(jws, key, backend);
    verifyInclusion(leafHash(enc.encode(jws), backend), k, cp.size, proofs[k] as Uint8Array[], cp.rootHash);
  });
  log(`${prefix}verified: ${Math.round(perSecond)} receipts/s (signature and inclusion proof in a tree of ${opts.logSize})`);
  return { [`${prefix}receipts_verified_per_s`]: Math.round(perSecond) };
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const opts = parseOptions(args);
  const load = os.loadavg().map((l) => l.toFixed(2)).join(' ');
  log(`load average before: ${load}`);
  const out: BenchResults = {};
  if (opts.phases.has('sign')) Object.assign(out, signPhase(opts));
  if (opts.phases.has('verify')) {
    if (nativeBackend) Object.assign(out, await verifyPhase(opts, nativeBackend, ''));
    Object.assign(out, await verifyPhase(opts, nobleBackend, 'noble_'));
    if (!nativeBackend) out.receipts_verified_per_s = out.noble_receipts_verified_per_s as number;
  }
  if (opts.phases.has('append')) {
    const { appendPhase } = await import('./lib/log-append.js');
    Object.assign(out, await appendPhase(opts));
  }
  if (opts.phases.has('e2e')) {
    const { receiptsOnOff } = await import('./sdk.js');
    // The sdk suite's options that shape its memory phase, passed on as given.
    const passOn: string[] = opts.quick ? ['--quick'] : [];
    for (const name of ['--pairs', '--workers', '--window', '--duration']) {
      const i = opts.args.indexOf(name);
      if (i >= 0) passOn.push(name, opts.args[i + 1] as string);
    }
    Object.assign(out, await receiptsOnOff(passOn, opts.rounds));
  }
  const head: BenchResults = {};
  if (typeof out.receipts_verified_per_s === 'number') head.goal_verified_met = out.receipts_verified_per_s >= GOAL_VERIFIED_PER_S;
  if (typeof out.e2e_ratio_receipts_on_off === 'number') head.goal_e2e_ratio_met = out.e2e_ratio_receipts_on_off >= GOAL_E2E_RATIO;
  return { ...out, ...head, duration_s: opts.duration, log_size: opts.logSize, load_avg_before: load, load_avg_after: os.loadavg().map((l) => l.toFixed(2)).join(' ') };
}
