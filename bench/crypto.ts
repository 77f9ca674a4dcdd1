/**
 * Crypto benchmarks: `npm run bench -- crypto [--only <substring>] [--seconds <s>] [--browser]`.
 *
 * Results are named `<backend>_<metric>` (e.g. `native_sign_per_s`). Each backend runs
 * the same list of measurements, so adding a metric means adding one entry to
 * MEASUREMENTS; backend-independent ones go in SUITE_MEASUREMENTS. The backends are
 * native (node:crypto, ML-KEM from noble), sodium (libsodium), noble, and `default`,
 * the per-primitive choice users get (select.ts). With --browser the same suite runs in
 * headless Chromium (bench/browser/crypto-page.ts), where there is no native backend.
 */
import { InboundSenderKeys, OutboundSenderKey } from '../crypto/group/index.js';
import {
  acceptSession,
  generateKemPreKey,
  generateOneTimePreKey,
  generateSignedPreKey,
  initiateSession,
  kemPreKeyPublic,
  oneTimePreKeyPublic,
  type PreKeyBundle,
  type PreKeyStore,
  signedPreKeyPublic,
} from '../crypto/handshake/index.js';
import { IdentityKeyPair } from '../crypto/identity/index.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import {
  cryptoReady,
  defaultBackend,
  describeBackend,
  loadedSodiumBackend,
  nativeBackend,
  nativeKeyImport,
  nobleBackend,
} from '../crypto/primitives/index.js';
import { u32be } from '../crypto/primitives/bytes.js';
import type { Session } from '../crypto/ratchet/index.js';
import { inclusionProof, leafHash, MemoryNodeStore, treeHash, verifyInclusion } from '../crypto/tlog/index.js';
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
      const signer = b.ed25519PrepareKey(SEED);
      const verifier = b.ed25519PreparePublicKey(pub);
      return {
        sign_per_s: opsPerSecond(() => b.ed25519Sign(SEED, MSG_1K), seconds),
        verify_per_s: opsPerSecond(() => b.ed25519Verify(sig, MSG_1K, pub), seconds),
        // The same with the key prepared once (backend.ts): no per-call import.
        sign_prepared_per_s: opsPerSecond(() => signer.sign(MSG_1K), seconds),
        verify_prepared_per_s: opsPerSecond(() => verifier.verify(sig, MSG_1K), seconds),
      };
    },
  },
  {
    name: 'x25519',
    run(b, { seconds }) {
      const theirs = b.x25519PublicKey(KEY);
      const ours = b.x25519PrepareKey(SEED);
      const theirsPrepared = b.x25519PreparePublicKey(theirs);
      return {
        x25519_per_s: opsPerSecond(() => b.x25519(SEED, theirs), seconds),
        x25519_pubkey_per_s: opsPerSecond(() => b.x25519PublicKey(SEED), seconds),
        // Agreement with both keys prepared once: the scalar multiplication alone.
        x25519_prepared_per_s: opsPerSecond(() => ours.agree(theirsPrepared), seconds),
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

/** Like opsPerSecond, for an asynchronous operation. */
export async function asyncOpsPerSecond(op: () => Promise<unknown>, seconds: number): Promise<number> {
  const warmUntil = performance.now() + Math.min(200, seconds * 200);
  while (performance.now() < warmUntil) await op();
  let ops = 0;
  const start = performance.now();
  const end = start + seconds * 1000;
  let now = start;
  while (now < end) {
    await op();
    ops++;
    now = performance.now();
  }
  return Math.round((ops * 1000) / (now - start));
}

/**
 * A published bundle (signed prekey, one-time X25519 prekey, one-time ML-KEM prekey) and
 * a responder store that never deletes, so one bundle serves every handshake measured:
 * the full 4-DH + KEM agreement runs each time and key generation stays out of the loop.
 */
function publishedDevice(b: CryptoBackend): { identity: IdentityKeyPair; bundle: PreKeyBundle; store: PreKeyStore } {
  const identity = IdentityKeyPair.generate(undefined, b);
  const spk = generateSignedPreKey(identity, 1, { backend: b });
  const opk = generateOneTimePreKey(identity, 2, { backend: b });
  const kem = generateKemPreKey(identity, 3, false, { backend: b });
  const store: PreKeyStore = {
    loadSignedPreKey: (id) => (id === spk.id ? spk : undefined),
    loadOneTimePreKey: (id) => (id === opk.id ? opk : undefined),
    loadKemPreKey: (id) => (id === kem.id ? kem : undefined),
    removeOneTimePreKey: () => undefined,
    removeKemPreKey: () => undefined,
  };
  const bundle = {
    identityKey: identity.publicKey.bytes,
    signedPreKey: signedPreKeyPublic(spk),
    oneTimePreKey: oneTimePreKeyPublic(opk),
    kemPreKey: kemPreKeyPublic(kem),
  };
  return { identity, bundle, store };
}

/** A session pair past the handshake and the first reply (both sides on plain ratchet messages). */
async function sessionPair(b: CryptoBackend): Promise<{ alice: Session; bob: Session }> {
  const bobDevice = publishedDevice(b);
  const alice = initiateSession({ identity: IdentityKeyPair.generate(undefined, b), bundle: bobDevice.bundle, backend: b });
  const { session: bob } = await acceptSession({
    identity: bobDevice.identity,
    store: bobDevice.store,
    message: alice.encrypt(MSG_1K),
    backend: b,
  });
  alice.decrypt(bob.encrypt(MSG_1K));
  return { alice, bob };
}

/**
 * The session and group scenarios, each as one repeatable operation on a backend: the
 * rate measurements time them and `calls` counts the primitive calls they make.
 */
const SCENARIOS = {
  /**
   * Initiator agreement (bundle checks, 4 DH, ML-KEM encapsulation) and first message,
   * responder agreement (4 DH, decapsulation) and first decryption.
   */
  async setup(b: CryptoBackend): Promise<() => Promise<void>> {
    const bobDevice = publishedDevice(b);
    const aliceIdentity = IdentityKeyPair.generate(undefined, b);
    return async () => {
      const alice = initiateSession({ identity: aliceIdentity, bundle: bobDevice.bundle, backend: b });
      await acceptSession({ identity: bobDevice.identity, store: bobDevice.store, message: alice.encrypt(MSG_1K), backend: b });
    };
  },

  /** One direction: every message is on the same chain (two HMACs + one AEAD per side). */
  async burst(b: CryptoBackend): Promise<() => void> {
    const { alice, bob } = await sessionPair(b);
    return () => bob.decrypt(alice.encrypt(MSG_1K));
  },

  /** Strict alternation: every message starts a new chain (a DH ratchet step per turn). */
  async pingpong(b: CryptoBackend): Promise<() => void> {
    const { alice, bob } = await sessionPair(b);
    let turn = 0;
    return () => {
      if ((turn++ & 1) === 0) bob.decrypt(alice.encrypt(MSG_1K));
      else alice.decrypt(bob.encrypt(MSG_1K));
    };
  },

  /** Encrypt + sign, then verify + decrypt. */
  async group(b: CryptoBackend): Promise<() => void> {
    const sender = OutboundSenderKey.create(new TextEncoder().encode('bench-group'), { backend: b });
    const receiver = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend: b });
    return () => receiver.decrypt(sender.encrypt(MSG_1K));
  },
};

MEASUREMENTS.push(
  {
    name: 'session-setup',
    async run(b, { seconds }) {
      return { setup_per_s: await asyncOpsPerSecond(await SCENARIOS.setup(b), seconds) };
    },
  },
  {
    name: 'session-burst',
    async run(b, { seconds }) {
      return { burst_msgs_per_s: opsPerSecond(await SCENARIOS.burst(b), seconds) };
    },
  },
  {
    name: 'session-pingpong',
    async run(b, { seconds }) {
      return { pingpong_msgs_per_s: opsPerSecond(await SCENARIOS.pingpong(b), seconds) };
    },
  },
  {
    name: 'group',
    async run(b, { seconds }) {
      return { group_msgs_per_s: opsPerSecond(await SCENARIOS.group(b), seconds) };
    },
  },
);

/** Leaf hashes appended per batch in the transparency-log measurement (a relay flush). */
const TLOG_BATCH = 64;
/** Tree size the proof measurement works on. */
const TLOG_TREE_SIZE = 1 << 16;

MEASUREMENTS.push({
  name: 'tlog',
  async run(b, { seconds }) {
    const leaf = (i: number): Uint8Array => leafHash(u32be(i), b);
    // Appending: batches of leaf hashes into a growing in-memory tree (nodes and root).
    const growing = new MemoryNodeStore(b);
    let next = 0;
    const appendRate = await asyncOpsPerSecond(
      () => growing.append(Array.from({ length: TLOG_BATCH }, () => leaf(next++))),
      seconds,
    );
    // Proving and verifying: an inclusion proof for a varying leaf of a fixed tree.
    const tree = new MemoryNodeStore(b);
    await tree.append(Array.from({ length: TLOG_TREE_SIZE }, (_, i) => leaf(i)));
    const root = await treeHash(TLOG_TREE_SIZE, tree.read, b);
    let index = 0;
    const proveRate = await asyncOpsPerSecond(async () => {
      index = (index + 7919) % TLOG_TREE_SIZE;
      const proof = await inclusionProof(index, TLOG_TREE_SIZE, tree.read, b);
      verifyInclusion(leaf(index), index, TLOG_TREE_SIZE, proof, root, b);
    }, seconds);
    return { tlog_append_leaves_per_s: appendRate * TLOG_BATCH, tlog_prove_verify_per_s: proveRate };
  },
});

/**
 * `backend` with every call counted by method name, including the methods of the
 * prepared keys it returns ("x25519Prepared.agree"). Prepared X25519 public keys have no
 * methods and are returned as they are, so the backend still recognises its own.
 */
function countingBackend(backend: CryptoBackend, counts: Map<string, number>): CryptoBackend {
  const tick = (name: string): void => {
    counts.set(name, (counts.get(name) ?? 0) + 1);
  };
  const counted: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(backend)) {
    counted[name] =
      typeof value === 'function'
        ? (...args: unknown[]): unknown => {
            tick(name);
            return (value as (...a: unknown[]) => unknown).apply(backend, args);
          }
        : value;
  }
  const prepared: Pick<CryptoBackend, 'x25519PrepareKey' | 'ed25519PrepareKey' | 'ed25519PreparePublicKey'> = {
    x25519PrepareKey(privateKey) {
      tick('x25519PrepareKey');
      const key = backend.x25519PrepareKey(privateKey);
      return {
        publicKey: () => (tick('x25519Prepared.publicKey'), key.publicKey()),
        agree: (theirs) => (tick('x25519Prepared.agree'), key.agree(theirs)),
      };
    },
    ed25519PrepareKey(seed) {
      tick('ed25519PrepareKey');
      const key = backend.ed25519PrepareKey(seed);
      return {
        publicKey: () => (tick('ed25519Prepared.publicKey'), key.publicKey()),
        sign: (message) => (tick('ed25519Prepared.sign'), key.sign(message)),
      };
    },
    ed25519PreparePublicKey(publicKey) {
      tick('ed25519PreparePublicKey');
      const key = backend.ed25519PreparePublicKey(publicKey);
      return {
        get bytes() {
          return key.bytes;
        },
        verify: (signature, message) => (tick('ed25519PreparedPublic.verify'), key.verify(signature, message)),
      };
    },
  };
  return { ...(counted as unknown as CryptoBackend), ...prepared };
}

/** Average backend calls per operation of each scenario, after one warm-up operation. */
async function callsPerOperation(backend: CryptoBackend, operations: number): Promise<BenchResults> {
  const results: BenchResults = {};
  for (const [name, make] of Object.entries(SCENARIOS)) {
    const counts = new Map<string, number>();
    const op = await make(countingBackend(backend, counts));
    await op();
    counts.clear();
    for (let i = 0; i < operations; i++) await op();
    const perOp = [...counts]
      .sort(([a], [b]) => a.localeCompare(b))
      .map(([call, n]) => `${call} ${Math.round((n / operations) * 100) / 100}`)
      .join(', ');
    results[`calls_per_${name === 'setup' ? 'setup' : `${name}_msg`}`] = perOp;
  }
  return results;
}

/** Length of one slice in the alternating comparison. */
const ALTERNATING_SLICE_MS = 250;

/**
 * Rates of several asynchronous operations measured in alternating slices in one
 * process, so a change in the machine's load hits all of them alike: the ratio between
 * them holds on a shared machine where back-to-back measurements drift.
 */
async function alternatingRates(ops: Record<string, () => Promise<unknown>>, seconds: number): Promise<Record<string, number>> {
  const spent = new Map<string, { ops: number; ms: number }>(Object.keys(ops).map((k) => [k, { ops: 0, ms: 0 }]));
  for (const op of Object.values(ops)) await op(); // warm-up
  const end = performance.now() + seconds * 1000 * Object.keys(ops).length;
  while (performance.now() < end) {
    for (const [name, op] of Object.entries(ops)) {
      const t = spent.get(name) as { ops: number; ms: number };
      const start = performance.now();
      let now = start;
      while (now - start < ALTERNATING_SLICE_MS) {
        await op();
        t.ops++;
        now = performance.now();
      }
      t.ms += now - start;
    }
  }
  return Object.fromEntries([...spent].map(([k, t]) => [k, Math.round((t.ops * 1000) / t.ms)]));
}

/**
 * One scenario on the default backend against a reference backend, alternating, with
 * the ratio: `<scenario>_default_over_<reference>`.
 */
async function comparison(scenario: 'setup' | 'group', reference: CryptoBackend, seconds: number): Promise<BenchResults> {
  const make = SCENARIOS[scenario] as (b: CryptoBackend) => Promise<() => unknown>;
  const wrap = (op: () => unknown) => async (): Promise<void> => {
    await op();
  };
  const rates = await alternatingRates({ default: wrap(await make(defaultBackend)), reference: wrap(await make(reference)) }, seconds);
  const d = rates.default as number;
  const r = rates.reference as number;
  const unit = scenario === 'setup' ? 'setup_per_s' : 'group_msgs_per_s';
  return {
    [`alternating_default_${unit}`]: d,
    [`alternating_${reference.name}_${unit}`]: r,
    [`alternating_${scenario}_default_over_${reference.name}`]: Math.round((d / r) * 100) / 100,
  };
}

/** Measurements that are not per backend (or choose their own); metric names as-is. */
export const SUITE_MEASUREMENTS: { name: string; run(ctx: BenchContext): Promise<BenchResults> | BenchResults }[] = [
  {
    name: 'info',
    run: () => {
      const d = describeBackend();
      return {
        native_key_import: nativeKeyImport ?? 'unavailable',
        sodium: d.sodiumError === undefined ? d.sodium : `${d.sodium}: ${d.sodiumError}`,
        default_implementations: Object.entries(d.primitives).map(([p, i]) => `${p} ${i}`).join(', '),
      };
    },
  },
  // Backend-independent: both backends take the same calls (the session layer is shared).
  { name: 'calls', run: () => callsPerOperation(defaultBackend, 100) },
  {
    // The goals' ratios, load-robust: setup against native with noble's ML-KEM (the
    // default before libsodium), group messages against noble (the browser default before).
    name: 'alternating',
    run: async ({ seconds }) => {
      await cryptoReady();
      return {
        ...(nativeBackend === undefined ? {} : await comparison('setup', nativeBackend, seconds)),
        ...(await comparison('group', nobleBackend, seconds)),
      };
    },
  },
];

function option(args: readonly string[], name: string): string | undefined {
  const i = args.indexOf(name);
  return i >= 0 ? args[i + 1] : undefined;
}

/**
 * The backends measured here, headline first: the per-primitive default, then native,
 * libsodium and noble (those this runtime has). libsodium is loaded first.
 */
export async function benchBackends(): Promise<CryptoBackend[]> {
  await cryptoReady();
  const sodium = loadedSodiumBackend();
  return [defaultBackend, nativeBackend, sodium, nobleBackend].filter((b): b is CryptoBackend => b !== undefined);
}

/** The suite on `backends`, with `args` as on the command line (--only, --seconds). */
export async function runSuite(backends: readonly CryptoBackend[], args: readonly string[]): Promise<BenchResults> {
  const seconds = Number(option(args, '--seconds') ?? '1');
  const only = option(args, '--only');
  const ctx: BenchContext = { seconds: Number.isFinite(seconds) && seconds > 0 ? seconds : 1 };
  const results: BenchResults = {};
  for (const m of SUITE_MEASUREMENTS) {
    if (only !== undefined && !m.name.includes(only)) continue;
    Object.assign(results, await m.run(ctx));
  }
  for (const b of backends) {
    for (const m of MEASUREMENTS) {
      if (only !== undefined && !m.name.includes(only)) continue;
      const metrics = await m.run(b, ctx);
      for (const [k, v] of Object.entries(metrics)) results[`${b.name}_${k}`] = v;
    }
  }
  return results;
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  if (args.includes('--browser')) {
    // A computed specifier, so bundling this file for the page leaves the Node side out.
    const nodeSide = './browser/crypto.js';
    const { runInBrowser } = (await import(nodeSide)) as typeof import('./browser/crypto.js');
    return runInBrowser(args.filter((a) => a !== '--browser'));
  }
  return runSuite(await benchBackends(), args);
}
