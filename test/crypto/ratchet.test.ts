/**
 * Double Ratchet: conversations with DH steps, out-of-order delivery, replays, the named
 * limits, the state codec, and keys that never print their secrets.
 */
import { inspect } from 'node:util';
import { describe, expect, test } from 'vitest';
import { CryptoError, type CryptoErrorCode } from '../../crypto/errors.js';
import { MAX_RECEIVER_CHAINS, MAX_SKIPPED_KEYS_PER_MESSAGE, MAX_SKIPPED_KEYS_STORED } from '../../crypto/limits.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { toHex } from '../../crypto/primitives/bytes.js';
import { ChainKey } from '../../crypto/ratchet/chain-key.js';
import { MessageKey } from '../../crypto/ratchet/message-key.js';
import { RatchetKeyPair, RemoteRatchetKey } from '../../crypto/ratchet/ratchet-key.js';
import { RootKey } from '../../crypto/ratchet/root-key.js';
import { Session, sessionMessageType } from '../../crypto/ratchet/index.js';
import { makeSessionPair, SESSION_BACKENDS, seededRandom } from './session-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

function throwsCode(fn: () => unknown, code: CryptoErrorCode): CryptoError {
  let err: unknown;
  try {
    fn();
  } catch (e) {
    err = e;
  }
  expect(err, 'expected a CryptoError').toBeInstanceOf(CryptoError);
  expect((err as CryptoError).code).toBe(code);
  return err as CryptoError;
}

/** Header field offsets in a ratchet message (crypto/ratchet/message.ts). */
const PN_OFFSET = 33;
const N_OFFSET = 37;

function withU32(message: Uint8Array, offset: number, value: number): Uint8Array {
  const out = message.slice();
  new DataView(out.buffer).setUint32(offset, value);
  return out;
}

describe.each(SESSION_BACKENDS)('double ratchet ($name)', (backend: CryptoBackend) => {
  test('a conversation with a DH ratchet step at every turn', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'turns');
    const seen = new Set<string>();
    for (let turn = 0; turn < 6; turn++) {
      const [from, to] = turn % 2 === 0 ? [alice, bob] : [bob, alice];
      for (let i = 0; i < 3; i++) {
        const m = from.encrypt(enc(`t${turn}m${i}`));
        expect(sessionMessageType(m)).toBe('ratchet');
        seen.add(toHex(m.subarray(1, 33)));
        expect(dec(to.decrypt(m))).toBe(`t${turn}m${i}`);
      }
    }
    // One ratchet key per turn: the DH ratchet advanced each time the speaker changed.
    expect(seen.size).toBe(6);
  });

  test('out-of-order delivery within and across chains, including the previous chain', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'ooo');
    const a = [0, 1, 2, 3].map((i) => alice.encrypt(enc(`a${i}`)));
    expect(dec(bob.decrypt(a[2]!))).toBe('a2');
    const b = bob.encrypt(enc('b0'));
    expect(dec(alice.decrypt(b))).toBe('b0');
    // Alice's next chain; its header says her previous chain had 4 messages.
    const a2 = [0, 1].map((i) => alice.encrypt(enc(`next${i}`)));
    expect(dec(bob.decrypt(a2[1]!))).toBe('next1');
    expect(dec(bob.decrypt(a[3]!))).toBe('a3'); // previous chain, key stored from PN
    expect(dec(bob.decrypt(a[0]!))).toBe('a0');
    expect(dec(bob.decrypt(a2[0]!))).toBe('next0');
    expect(dec(bob.decrypt(a[1]!))).toBe('a1');
  });

  test('replays are REPLAYED_MESSAGE and change nothing', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'replay');
    const m = [0, 1, 2].map((i) => alice.encrypt(enc(`m${i}`)));
    bob.decrypt(m[0]!);
    bob.decrypt(m[2]!); // m1's key is now a skipped key
    const before = bob.serialize();
    throwsCode(() => bob.decrypt(m[0]!), 'REPLAYED_MESSAGE');
    throwsCode(() => bob.decrypt(m[2]!), 'REPLAYED_MESSAGE');
    expect(bob.serialize()).toEqual(before);
    bob.decrypt(m[1]!);
    throwsCode(() => bob.decrypt(m[1]!), 'REPLAYED_MESSAGE');
  });

  test('a message too far ahead is TOO_MANY_SKIPPED; at the limit it decrypts', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'skip-limit');
    const first = alice.encrypt(enc('first'));
    const atLimit = withU32(first, N_OFFSET, MAX_SKIPPED_KEYS_PER_MESSAGE + 1);
    const before = bob.serialize();
    // The header is checked against the limit before any key is derived.
    throwsCode(() => bob.decrypt(atLimit), 'TOO_MANY_SKIPPED');
    expect(bob.serialize()).toEqual(before);

    // `first` has message number 0, so the last of these has number MAX: a jump of exactly MAX.
    const messages: Uint8Array[] = [];
    for (let i = 1; i <= MAX_SKIPPED_KEYS_PER_MESSAGE; i++) messages.push(alice.encrypt(enc(`m${i}`)));
    expect(dec(bob.decrypt(messages[messages.length - 1]!))).toBe(`m${MAX_SKIPPED_KEYS_PER_MESSAGE}`);
    expect(dec(bob.decrypt(first))).toBe('first');
    const next = alice.encrypt(enc('next'));
    expect(dec(bob.decrypt(next))).toBe('next');
  });

  test('a new chain whose previous-chain length runs too far ahead is TOO_MANY_SKIPPED', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'pn-limit');
    bob.decrypt(alice.encrypt(enc('a')));
    alice.decrypt(bob.encrypt(enc('b')));
    const m = alice.encrypt(enc('new chain')); // header PN = 1
    const before = bob.serialize();
    throwsCode(() => bob.decrypt(withU32(m, PN_OFFSET, MAX_SKIPPED_KEYS_PER_MESSAGE + 2)), 'TOO_MANY_SKIPPED');
    expect(bob.serialize()).toEqual(before);
    expect(dec(bob.decrypt(m))).toBe('new chain');
  });

  test('the skipped-key store is bounded and evicts the oldest keys first', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'evict');
    const all: Uint8Array[] = [];
    for (let i = 0; i < 2 * MAX_SKIPPED_KEYS_STORED + 2; i++) all.push(alice.encrypt(enc(`m${i}`)));
    bob.decrypt(all[MAX_SKIPPED_KEYS_STORED]!); // stores keys 0..MAX-1
    bob.decrypt(all[2 * MAX_SKIPPED_KEYS_STORED + 1]!); // stores MAX+1..2*MAX, evicting 0..MAX-1
    // Evicted keys are gone for good: indistinguishable from a used key.
    throwsCode(() => bob.decrypt(all[0]!), 'REPLAYED_MESSAGE');
    throwsCode(() => bob.decrypt(all[MAX_SKIPPED_KEYS_STORED - 1]!), 'REPLAYED_MESSAGE');
    expect(dec(bob.decrypt(all[MAX_SKIPPED_KEYS_STORED + 1]!))).toBe(`m${MAX_SKIPPED_KEYS_STORED + 1}`);
    expect(dec(bob.decrypt(all[2 * MAX_SKIPPED_KEYS_STORED]!))).toBe(`m${2 * MAX_SKIPPED_KEYS_STORED}`);
  });

  test('receiving chains beyond the limit are dropped, their stored skipped keys kept', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'chains');
    // Each round gives Bob a new receiving chain; the first message of each is held back.
    const late: Uint8Array[] = [];
    for (let round = 0; round < MAX_RECEIVER_CHAINS + 2; round++) {
      late.push(alice.encrypt(enc(`late${round}`)));
      bob.decrypt(alice.encrypt(enc(`on time${round}`)));
      alice.decrypt(bob.encrypt(enc('ack')));
    }
    // Every held-back message still decrypts from the skipped-key store.
    for (let round = 0; round < late.length; round++) expect(dec(bob.decrypt(late[round]!))).toBe(`late${round}`);
    // A message on a dropped chain that was never skipped cannot be opened: its chain
    // key is gone, and a "new chain" with that key fails authentication.
    const { alice: a2, bob: b2 } = await makeSessionPair(backend, 'chains-2');
    const oldChain: Uint8Array[] = [];
    for (let round = 0; round < MAX_RECEIVER_CHAINS + 1; round++) {
      const m = a2.encrypt(enc(`r${round}`));
      b2.decrypt(m);
      oldChain.push(m);
      a2.decrypt(b2.encrypt(enc('ack')));
    }
    throwsCode(() => b2.decrypt(oldChain[0]!), 'DECRYPT_FAILED');
    throwsCode(() => b2.decrypt(oldChain[MAX_RECEIVER_CHAINS]!), 'REPLAYED_MESSAGE');
  });

  test('a message cannot be moved into another session', async () => {
    const p1 = await makeSessionPair(backend, 'move-1');
    const p2 = await makeSessionPair(backend, 'move-2');
    const m = p1.alice.encrypt(enc('for p1'));
    const before = p2.bob.serialize();
    throwsCode(() => p2.bob.decrypt(m), 'DECRYPT_FAILED');
    expect(p2.bob.serialize()).toEqual(before);
  });

  test('a responder that has not replied cannot take a new ratchet key (nothing to answer it with)', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'inactive', { reply: false });
    const forged = alice.encrypt(enc('x')).slice(); // still an initial message
    const ratchetPart = forged.subarray(forged.length - (enc('x').length + 16 + 41));
    ratchetPart[1] = (ratchetPart[1] as number) ^ 1; // another ratchet key
    const before = bob.serialize();
    throwsCode(() => bob.decrypt(ratchetPart), 'DECRYPT_FAILED');
    expect(bob.serialize()).toEqual(before);
  });

  test('malformed messages are typed errors', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'malformed');
    const m = alice.encrypt(enc('m'));
    throwsCode(() => bob.decrypt(new Uint8Array(0)), 'INVALID_MESSAGE');
    throwsCode(() => bob.decrypt(m.subarray(0, 56)), 'INVALID_MESSAGE');
    throwsCode(() => bob.decrypt(Uint8Array.of(0x21, ...m.subarray(1))), 'UNSUPPORTED_VERSION');
    throwsCode(() => bob.decrypt(Uint8Array.of(0x15, ...m.subarray(1))), 'INVALID_MESSAGE');
    expect(dec(bob.decrypt(m))).toBe('m');
  });

  test('empty and large plaintexts', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'sizes');
    expect(bob.decrypt(alice.encrypt(new Uint8Array(0)))).toEqual(new Uint8Array(0));
    const big = new Uint8Array(64 * 1024).map((_, i) => (i * 131) & 0xff);
    expect(bob.decrypt(alice.encrypt(big))).toEqual(big);
  });

  describe('state codec', () => {
    test('round-trips and continues the conversation on both sides', async () => {
      let { alice, bob } = await makeSessionPair(backend, 'codec');
      const held = alice.encrypt(enc('held'));
      bob.decrypt(alice.encrypt(enc('x')));
      alice = Session.deserialize(alice.serialize(), { backend });
      bob = Session.deserialize(bob.serialize(), { backend });
      expect(Session.deserialize(bob.serialize(), { backend }).serialize()).toEqual(bob.serialize());
      expect(dec(bob.decrypt(held))).toBe('held');
      expect(dec(alice.decrypt(bob.encrypt(enc('y'))))).toBe('y');
      expect(bob.role).toBe('responder');
      expect(alice.role).toBe('initiator');
    });

    test('keeps a pending handshake and the responder digest', async () => {
      const { alice, bob } = await makeSessionPair(backend, 'codec-pending', { reply: false });
      const a = Session.deserialize(alice.serialize(), { backend });
      const b = Session.deserialize(bob.serialize(), { backend });
      expect(a.awaitingReply).toBe(true);
      const m = a.encrypt(enc('again'));
      expect(sessionMessageType(m)).toBe('initial');
      expect(dec(b.decrypt(m))).toBe('again');
    });

    test('unknown version is UNSUPPORTED_VERSION, damage is INVALID_STATE', async () => {
      const { bob } = await makeSessionPair(backend, 'codec-bad');
      const s = bob.serialize();
      throwsCode(() => Session.deserialize(Uint8Array.of(2, ...s.subarray(1))), 'UNSUPPORTED_VERSION');
      throwsCode(() => Session.deserialize(new Uint8Array(0)), 'INVALID_STATE');
      throwsCode(() => Session.deserialize(s.subarray(0, s.length - 1)), 'INVALID_STATE');
      throwsCode(() => Session.deserialize(Uint8Array.of(...s, 0)), 'INVALID_STATE');
      throwsCode(() => Session.deserialize(Uint8Array.of(1, 7, ...s.subarray(2))), 'INVALID_STATE');
    });
  });
});

describe('ratchet keys', () => {
  test('agreement does not depend on which backend first prepared either key', () => {
    const [first, second] = SESSION_BACKENDS as [CryptoBackend, CryptoBackend];
    const random = seededRandom('ratchet-keys');
    const ours = RatchetKeyPair.generate(first, random);
    const theirsPair = RatchetKeyPair.generate(second, random);
    const theirs = new RemoteRatchetKey(theirsPair.publicKey.slice());
    const mine = new RemoteRatchetKey(ours.publicKey.slice());
    const expected = toHex(first.x25519(ours.exportPrivateKey(), theirsPair.publicKey));
    // Alternating backends on the same objects: each switch prepares the key again.
    expect(toHex(ours.agree(first, theirs))).toBe(expected);
    expect(toHex(ours.agree(second, theirs))).toBe(expected);
    expect(toHex(ours.agree(first, theirs))).toBe(expected);
    expect(toHex(theirsPair.agree(first, mine))).toBe(expected);
    expect(toHex(theirsPair.agree(second, mine))).toBe(expected);
  });

  test('a low-order peer key is INVALID_KEY, and the key pair stays usable', () => {
    for (const backend of SESSION_BACKENDS) {
      const ours = RatchetKeyPair.generate(backend, seededRandom('low-order'));
      throwsCode(() => ours.agree(backend, new RemoteRatchetKey(new Uint8Array(32))), 'INVALID_KEY');
      const peer = RatchetKeyPair.generate(backend, seededRandom('peer'));
      expect(ours.agree(backend, new RemoteRatchetKey(peer.publicKey.slice()))).toEqual(
        peer.agree(backend, new RemoteRatchetKey(ours.publicKey.slice())),
      );
    }
  });
});

describe('secrets never print', () => {
  const secret = new Uint8Array(32).fill(0xab);
  const secretHex = toHex(secret);

  function expectRedacted(value: object, label: string): void {
    for (const text of [JSON.stringify(value), String(value), inspect(value, { depth: 10, showHidden: true }), `${value as unknown as string}`]) {
      expect(text).not.toContain(secretHex);
      expect(text).not.toContain('171, 171'); // 0xab as decimal array elements
      expect(text).toContain(`${label} redacted`);
    }
    expect(JSON.stringify({ nested: value })).toBe(`{"nested":"[${label} redacted]"}`);
  }

  test('keys and chains', () => {
    expectRedacted(new RootKey(secret), 'RootKey');
    expectRedacted(new ChainKey(secret, 3), 'ChainKey');
    expectRedacted(new MessageKey(secret, 3), 'MessageKey');
    expectRedacted(new RatchetKeyPair(secret, new Uint8Array(32)), 'RatchetKeyPair');
  });

  test('a ratchet key pair holding its prepared key', () => {
    for (const backend of SESSION_BACKENDS) {
      const pair = new RatchetKeyPair(secret, backend.x25519PublicKey(secret));
      pair.agree(backend, new RemoteRatchetKey(backend.x25519PublicKey(new Uint8Array(32).fill(1))));
      expectRedacted(pair, 'RatchetKeyPair');
    }
  });

  test('a session', async () => {
    const { alice } = await makeSessionPair(SESSION_BACKENDS[0]!, 'print');
    const stateHex = toHex(alice.serialize());
    for (const text of [JSON.stringify(alice), String(alice), inspect(alice, { depth: 10, showHidden: true })]) {
      expect(text).toContain('Session redacted');
      // No 32-byte window of the serialized state (which holds every secret) appears.
      for (let i = 0; i + 64 <= stateHex.length; i += 16) expect(text).not.toContain(stateHex.slice(i, i + 64));
    }
  });
});
