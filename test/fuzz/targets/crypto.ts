/**
 * Fuzz targets of the pairwise session layer: the handshake's initial message, ratchet
 * messages, serialized sessions, decryption and acceptance on arbitrary bytes, padding
 * and prekey bundles of arbitrary shape.
 *
 * Everything is built from a fixed seed (test/crypto/session-fixtures.ts), so every
 * process fuzzes the same sessions and a replayed input behaves as it did.
 */
import fc from 'fast-check';
import {
  type AcceptedSession,
  acceptSession,
  decodeInitialMessage,
  INITIAL_HANDSHAKE_BYTES,
  initiateSession,
  type PreKeyBundle,
  verifyPreKeyBundle,
} from '../../../crypto/handshake/index.js';
import { encodeInitialHandshake } from '../../../crypto/handshake/initial-message.js';
import { MAX_PADDED_PLAINTEXT_BYTES } from '../../../crypto/limits.js';
import { MAX_UNPADDED_PLAINTEXT_BYTES, pad, unpad } from '../../../crypto/padding.js';
import type { CryptoBackend } from '../../../crypto/primitives/backend.js';
import { loadSodiumBackend, nativeBackend, nobleBackend } from '../../../crypto/primitives/index.js';
import { decodeRatchetMessage, RATCHET_HEADER_BYTES, writeRatchetHeader } from '../../../crypto/ratchet/message.js';
import { Session } from '../../../crypto/ratchet/session.js';
import {
  bundleOf,
  makeIdentity,
  makeResponder,
  MemoryPreKeyStore,
  type Responder,
  seededRandom,
} from '../../crypto/session-fixtures.js';
import { type FuzzTarget, decodeDetached, defineTarget, must, mustOnlyRefuse, sameBytes, Violation } from '../harness.js';
import { type ByteMutation, applyByteMutation, byteMutation, bytesFrom } from '../mutate.js';

export const native = nativeBackend as CryptoBackend;
export const utf8 = (s: string) => new TextEncoder().encode(s);
export const hex = (b: Uint8Array) => Buffer.from(b.buffer, b.byteOffset, b.byteLength).toString('hex');

const BACKENDS = { native, noble: nobleBackend, sodium: await loadSodiumBackend() } as const;
export type BackendName = keyof typeof BACKENDS;

/** Mostly the native backend; now and then noble or libsodium, whose errors come from other code. */
export const backendArb: fc.Arbitrary<BackendName> = fc.oneof(
  { weight: 6, arbitrary: fc.constant('native' as const) },
  { weight: 1, arbitrary: fc.constant('noble' as const) },
  { weight: 1, arbitrary: fc.constant('sodium' as const) },
);

export function backendOf(name: BackendName): CryptoBackend {
  return BACKENDS[name];
}

/** Messages someone may legitimately have decrypted: hex of the bytes -> plaintext. */
type Genuine = Map<string, Uint8Array>;

/** A decryption succeeded: the input must be a message the peer produced, and decrypt to it. */
function mustBeGenuine(genuine: Genuine, input: Uint8Array, plaintext: Uint8Array): void {
  const expected = genuine.get(hex(input));
  must(expected !== undefined, 'a message the peer never sent was accepted');
  must(sameBytes(plaintext, expected), 'a genuine message decrypted to the wrong plaintext');
}

// ---------------------------------------------------------------------------------------
// One conversation, built once, that leaves both sides with skipped keys, several
// receiving chains and messages in every state (delivered, skipped, ahead, new chain).
// ---------------------------------------------------------------------------------------

interface Side {
  readonly name: string;
  /** Serialized state that each input starts from. */
  readonly state: Uint8Array;
  /** What this side would decrypt successfully from that state. */
  readonly genuine: Genuine;
}

interface Conversation {
  readonly responder: Responder;
  readonly sides: readonly Side[];
  /** Every message of the conversation (either direction): the corpus. */
  readonly messages: readonly Uint8Array[];
  /** Initial messages to the responder, with the plaintext each carries. */
  readonly initials: Genuine;
  /** Serialized sessions at several points. */
  readonly states: readonly Uint8Array[];
}

let conversation: Promise<Conversation> | undefined;

export function theConversation(): Promise<Conversation> {
  conversation ??= buildConversation();
  return conversation;
}

async function buildConversation(): Promise<Conversation> {
  const backend = native;
  const random = seededRandom('fuzz/conversation');
  const responder = makeResponder(backend, random);
  const messages: Uint8Array[] = [];
  const states: Uint8Array[] = [];
  const initials: Genuine = new Map();
  const forBob: Genuine = new Map();
  const forAlice: Genuine = new Map();
  const forPendingAlice: Genuine = new Map();
  const send = (from: Session, text: string, to: Genuine[]): Uint8Array => {
    const m = from.encrypt(utf8(text));
    messages.push(m);
    for (const g of to) g.set(hex(m), utf8(text));
    return m;
  };

  const alice = initiateSession({ identity: makeIdentity(backend, random), bundle: bundleOf(responder), backend, random });
  const i1 = send(alice, 'i1', []);
  const i2 = send(alice, 'i2', [forBob]);
  initials.set(hex(i1), utf8('i1')).set(hex(i2), utf8('i2'));
  const alicePending = alice.serialize();
  states.push(alicePending);
  const { session: bob } = await acceptSession({ identity: responder.identity, store: responder.store, message: i1, backend, random });
  states.push(bob.serialize());
  // Other handshakes with the same responder: no one-time prekey and the last-resort
  // KEM key; a one-time prekey with the last-resort KEM key.
  for (const [name, opts] of [
    ['j1', { oneTime: false, lastResort: true }],
    ['k1', { lastResort: true }],
  ] as const) {
    const other = initiateSession({ identity: makeIdentity(backend, random), bundle: bundleOf(responder, opts), backend, random });
    initials.set(hex(send(other, name, [])), utf8(name));
  }

  const b1 = send(bob, 'b1', [forAlice, forPendingAlice]);
  void b1;
  alice.decrypt(send(bob, 'b2', [forPendingAlice]));
  const a = [1, 2, 3, 4].map((i) => send(alice, `a${i}`, [forBob]));
  bob.decrypt(a[0] as Uint8Array);
  bob.decrypt(a[2] as Uint8Array);
  forBob.delete(hex(a[0] as Uint8Array));
  forBob.delete(hex(a[2] as Uint8Array));
  alice.decrypt(send(bob, 'b3', []));
  send(alice, 'a5', [forBob]); // a new chain, whose header says the last one had 4
  send(bob, 'b4', [forAlice]);
  states.push(alice.serialize(), bob.serialize());
  const sides: Side[] = [
    { name: 'alice', state: alice.serialize(), genuine: forAlice },
    { name: 'alice before any reply', state: alicePending, genuine: forPendingAlice },
    { name: 'bob', state: bob.serialize(), genuine: forBob },
  ];
  // A few more round trips for states with the full set of receiving chains. Their
  // messages stay out of the corpus: the sides above could decrypt some of them.
  for (let round = 0; round < 6; round++) {
    bob.decrypt(alice.encrypt(utf8(`ping ${round}`)));
    alice.encrypt(utf8(`lost ${round}`));
    alice.decrypt(bob.encrypt(utf8(`pong ${round}`)));
  }
  states.push(alice.serialize(), bob.serialize());
  return { responder, sides, messages, initials, states };
}

function freshRandom(): (n: number) => Uint8Array {
  return seededRandom('fuzz/per-input');
}

// ---------------------------------------------------------------------------------------
// Decoders
// ---------------------------------------------------------------------------------------

/** RFC 7748 §5: u-coordinates are 255 bits and below p = 2^255 - 19; X25519 public keys we make always are. */
function isCanonicalX25519(u: Uint8Array): boolean {
  if (((u[31] as number) & 0x80) !== 0) return false;
  let x = 0n;
  for (let i = 31; i >= 0; i--) x = (x << 8n) | BigInt(u[i] as number);
  return x < 2n ** 255n - 19n;
}

const initialMessage = defineTarget({
  name: 'crypto/initial-message',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  async setup() {
    return { corpus: [...(await theConversation()).initials.keys()].map((h) => Buffer.from(h, 'hex') as Uint8Array) };
  },
  inputs: ({ corpus }) => bytesFrom(corpus, { maxRandomLength: 1400 }),
  check(input) {
    const m = decodeInitialMessage(input);
    // Fields are copies (the two parts are documented views).
    decodeDetached(input, decodeInitialMessage, (x) => Buffer.concat([x.identityKey, x.baseKey, x.kemCipherText]));
    must(m.handshake.length === INITIAL_HANDSHAKE_BYTES && m.ratchetMessage.length >= 1, 'part sizes');
    must(m.identityKey.length === 32 && m.baseKey.length === 32 && m.kemCipherText.length === 1088, 'field sizes');
    must(sameBytes(Buffer.concat([m.handshake, m.ratchetMessage]), input), 'the parts are not the message');
    must(sameBytes(encodeInitialHandshake(m), m.handshake), 'the handshake does not re-encode to the same bytes');
    must(isCanonicalX25519(m.baseKey), 'a non-canonical base key was accepted (another encoding of the same key)');
  },
});

const ratchetMessage = defineTarget({
  name: 'crypto/ratchet-message',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  async setup() {
    const c = await theConversation();
    return { corpus: c.messages.map((m) => (m.length > INITIAL_HANDSHAKE_BYTES && m[0] === 0x12 ? m.subarray(INITIAL_HANDSHAKE_BYTES) : m)) };
  },
  inputs: ({ corpus }) => bytesFrom(corpus, { maxRandomLength: 400 }),
  check(input) {
    const m = decodeRatchetMessage(input);
    must(m.header.length === RATCHET_HEADER_BYTES && m.sealed.length >= 16, 'part sizes');
    must(sameBytes(Buffer.concat([m.header, m.sealed]), input), 'the parts are not the message');
    const header = new Uint8Array(RATCHET_HEADER_BYTES);
    writeRatchetHeader(header, 0, m.ratchetKey, m.previousChainLength, m.index);
    must(sameBytes(header, m.header), 'the header does not re-encode to the same bytes');
  },
});

const sessionState = defineTarget({
  name: 'crypto/session-state',
  layer: 'crypto',
  codes: ['INVALID_STATE', 'UNSUPPORTED_VERSION'],
  runs: 60_000,
  async setup() {
    return { corpus: (await theConversation()).states };
  },
  inputs: ({ corpus }) => bytesFrom(corpus, { maxRandomLength: 1600 }),
  check(input) {
    const s = decodeDetached(input, (b) => Session.deserialize(b, { random: freshRandom() }), (x) => x.serialize());
    must(sameBytes(s.serialize(), input), 'a session state does not re-encode to the same bytes');
    // A restored state must be usable or refuse with a typed error.
    mustOnlyRefuse('encrypt on a restored session', ['INVALID_KEY', 'INVALID_STATE'], () => s.encrypt(utf8('x')));
  },
});

// ---------------------------------------------------------------------------------------
// Decryption and acceptance on arbitrary bytes
// ---------------------------------------------------------------------------------------

const sessionDecrypt = defineTarget({
  name: 'crypto/session-decrypt',
  layer: 'crypto',
  codes: ['DECRYPT_FAILED', 'REPLAYED_MESSAGE', 'TOO_MANY_SKIPPED', 'INVALID_MESSAGE', 'UNSUPPORTED_VERSION', 'INVALID_STATE'],
  runs: 60_000,
  testRuns: 1200,
  setup: theConversation,
  inputs: (c) => fc.tuple(fc.nat({ max: c.sides.length - 1 }), backendArb, bytesFrom(c.messages, { maxRandomLength: 1400 })),
  check([sideIndex, backend, input], c) {
    const side = c.sides[sideIndex] as Side;
    const session = Session.deserialize(side.state, { backend: backendOf(backend), random: freshRandom() });
    let plaintext: Uint8Array | undefined;
    try {
      // What the session keeps from a message must not alias the message's buffer.
      decodeDetached(input, (b) => (plaintext = session.decrypt(b)), () => session.serialize());
    } catch (err) {
      if (err instanceof Violation) throw err;
      must(sameBytes(session.serialize(), side.state), `${side.name}: a failed decrypt changed the session`);
      throw err;
    }
    mustBeGenuine(side.genuine, input, plaintext as Uint8Array);
  },
});

const acceptSessionTarget = defineTarget({
  name: 'crypto/accept-session',
  layer: 'crypto',
  codes: ['DECRYPT_FAILED', 'TOO_MANY_SKIPPED', 'INVALID_MESSAGE', 'UNSUPPORTED_VERSION'],
  runs: 20_000,
  testRuns: 300,
  async setup() {
    const c = await theConversation();
    return { c, corpus: [...c.initials.keys()].map((h) => Buffer.from(h, 'hex') as Uint8Array) };
  },
  inputs: ({ corpus }) => fc.tuple(backendArb, bytesFrom(corpus, { maxRandomLength: 1400 })),
  async check([backend, input], { c }) {
    const r = c.responder;
    // A fresh store each time: a successful accept removes one-time keys.
    const store = new MemoryPreKeyStore();
    for (const [id, k] of r.store.signed) store.signed.set(id, k);
    store.oneTime.set(r.oneTimePreKey.id, r.oneTimePreKey);
    store.kem.set(r.oneTimeKemPreKey.id, r.oneTimeKemPreKey).set(r.lastResortKemPreKey.id, r.lastResortKemPreKey);
    const before = store.snapshot();
    const message = Buffer.from(input);
    let accepted: AcceptedSession;
    try {
      accepted = await acceptSession({ identity: r.identity, store, message, backend: backendOf(backend), random: freshRandom() });
    } catch (err) {
      must(store.snapshot() === before, 'a failed accept consumed prekeys');
      throw err;
    }
    mustBeGenuine(c.initials, input, accepted.plaintext);
    // The new session keeps nothing that aliases the message's buffer.
    const state = accepted.session.serialize();
    message.fill(0x5a);
    must(sameBytes(accepted.session.serialize(), state), 'the accepted session aliases the message buffer');
  },
});

// ---------------------------------------------------------------------------------------
// Padding
// ---------------------------------------------------------------------------------------

const unpadTarget = defineTarget({
  name: 'crypto/unpad',
  layer: 'crypto',
  codes: ['INVALID_MESSAGE'],
  runs: 40_000,
  setup() {
    const random = seededRandom('fuzz/padding');
    const small = [0, 1, 100, 254, 255, 256, 511, 1000, 4095].map((n) => pad(random(n)));
    const large = [65_534, 65_535, 70_000, MAX_UNPADDED_PLAINTEXT_BYTES].map((n) => pad(random(n)));
    return { small, large };
  },
  inputs: ({ small, large }) =>
    fc.oneof({ weight: 8, arbitrary: bytesFrom(small, { maxRandomLength: 1024 }) }, { weight: 1, arbitrary: bytesFrom(large, { maxRandomLength: 1024 }) }),
  check(input) {
    const plaintext = decodeDetached(input, unpad, (x) => x);
    must(input.length <= MAX_PADDED_PLAINTEXT_BYTES, 'an oversized padded plaintext was accepted');
    must(sameBytes(pad(plaintext), input), 'pad(unpad(x)) differs from x');
  },
});

// ---------------------------------------------------------------------------------------
// Prekey bundles of any shape (they come from an untrusted directory)
// ---------------------------------------------------------------------------------------

type Shape = unknown;

export type BundleMutation =
  | { readonly op: 'replace'; readonly at: number; readonly value: Shape }
  | { readonly op: 'remove'; readonly at: number }
  | { readonly op: 'bytes'; readonly at: number; readonly mutation: ByteMutation }
  | { readonly op: 'swap'; readonly at: number; readonly with: number };

const pos = fc.nat({ max: 0xffff });

const wireValue: fc.Arbitrary<Shape> = fc.oneof(
  fc.constantFrom(undefined, null, true, 0, -1, 1.5, 0xffff_ffff, 0x1_0000_0000, Number.NaN, '', 'key', [], {}),
  fc.uint8Array({ maxLength: 70 }),
  fc.integer({ min: 1183, max: 1185 }).map((n) => new Uint8Array(n)),
  fc.constant(new Uint8Array(32)),
);

const bundleMutation: fc.Arbitrary<BundleMutation> = fc.oneof(
  { weight: 2, arbitrary: fc.record({ op: fc.constant('replace' as const), at: pos, value: wireValue }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('remove' as const), at: pos }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('bytes' as const), at: pos, mutation: byteMutation }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('swap' as const), at: pos, with: pos }) },
);

interface BundleSlot {
  readonly parent: Record<string, Shape>;
  readonly key: string;
}

function bundleSlots(root: Record<string, Shape>): BundleSlot[] {
  const out: BundleSlot[] = [];
  const walk = (o: Record<string, Shape>) => {
    for (const [key, v] of Object.entries(o)) {
      out.push({ parent: o, key });
      if (v !== null && typeof v === 'object' && !(v instanceof Uint8Array) && !Array.isArray(v)) walk(v as Record<string, Shape>);
    }
  };
  walk(root);
  return out;
}

function deepCopy(v: Shape): Shape {
  if (v instanceof Uint8Array) return new Uint8Array(v);
  if (Array.isArray(v)) return v.map(deepCopy);
  if (v !== null && typeof v === 'object') return Object.fromEntries(Object.entries(v).map(([k, x]) => [k, deepCopy(x)]));
  return v;
}

export function mutateBundle(base: PreKeyBundle, ms: readonly BundleMutation[]): Record<string, Shape> {
  const root = deepCopy(base) as Record<string, Shape>;
  for (const m of ms) {
    const slots = bundleSlots(root);
    if (slots.length === 0) break;
    const s = slots[m.at % slots.length] as BundleSlot;
    const v = s.parent[s.key];
    if (m.op === 'replace') s.parent[s.key] = m.value;
    else if (m.op === 'remove') delete s.parent[s.key];
    else if (m.op === 'bytes') {
      if (v instanceof Uint8Array) s.parent[s.key] = applyByteMutation(v, m.mutation, [v]);
    } else {
      // Put another part of the bundle here (a one-time key where the signed one goes, ...).
      const other = slots[m.with % slots.length] as BundleSlot;
      s.parent[s.key] = deepCopy(other.parent[other.key]);
    }
  }
  return root;
}

function sameKey(k: unknown, genuine: { id: number; publicKey: Uint8Array; signature: Uint8Array }): boolean {
  const o = k as { id: unknown; publicKey: unknown; signature: unknown };
  return (
    o.id === genuine.id &&
    o.publicKey instanceof Uint8Array &&
    sameBytes(o.publicKey, genuine.publicKey) &&
    o.signature instanceof Uint8Array &&
    sameBytes(o.signature, genuine.signature)
  );
}

const prekeyBundle = defineTarget({
  name: 'crypto/prekey-bundle',
  layer: 'crypto',
  codes: ['INVALID_KEY', 'INVALID_ARGUMENT', 'INVALID_SIGNATURE'],
  runs: 30_000,
  testRuns: 500,
  async setup() {
    const c = await theConversation();
    const r = c.responder;
    return { r, bases: [bundleOf(r), bundleOf(r, { oneTime: false, lastResort: true })] };
  },
  inputs: ({ bases }) =>
    fc.tuple(
      backendArb,
      fc.nat({ max: bases.length - 1 }),
      fc.array(bundleMutation, { maxLength: 3 }),
    ).map(([backend, i, ms]) => [backend, mutateBundle(bases[i] as PreKeyBundle, ms)] as const),
  check([backend, bundle], { r }) {
    verifyPreKeyBundle(backendOf(backend), bundle as unknown as PreKeyBundle);
    // Accepted: every key in it is the responder's own, in its own role.
    const b = bundle as unknown as PreKeyBundle;
    must(b.identityKey instanceof Uint8Array && sameBytes(b.identityKey, r.identity.publicKey.bytes), 'accepted another identity key');
    must(sameKey(b.signedPreKey, r.signedPreKey), 'accepted a signed prekey the device did not sign as one');
    must(b.oneTimePreKey === undefined || sameKey(b.oneTimePreKey, r.oneTimePreKey), 'accepted a one-time prekey the device did not sign as one');
    const kem = b.kemPreKey.lastResort ? r.lastResortKemPreKey : r.oneTimeKemPreKey;
    must(sameKey(b.kemPreKey, kem), 'accepted a KEM prekey the device did not sign in that role');
  },
});

export const CRYPTO_TARGETS: readonly FuzzTarget[] = [
  initialMessage,
  ratchetMessage,
  sessionState,
  sessionDecrypt,
  acceptSessionTarget,
  unpadTarget,
  prekeyBundle,
];
