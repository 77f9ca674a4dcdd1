/**
 * Group sender keys: distribution, signed messages checked before decryption, bounded
 * out-of-order delivery, replays, rotation, and the state codecs.
 */
import { inspect } from 'node:util';
import { fc, test } from '@fast-check/vitest';
import { describe, expect } from 'vitest';
import { InboundSenderKeys, OutboundSenderKey } from '../../crypto/group/index.js';
import { GROUP_MESSAGE_SIGNATURE_LABEL } from '../../crypto/group/labels.js';
import { signatureTranscript } from '../../crypto/identity/index.js';
import {
  MAX_GROUP_ID_BYTES,
  MAX_SENDER_KEY_FORWARD_JUMP,
  MAX_SENDER_KEY_GENERATIONS,
  MAX_SENDER_KEY_SKIPPED_KEYS,
} from '../../crypto/limits.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { toHex } from '../../crypto/primitives/bytes.js';
import { ChainKey } from '../../crypto/ratchet/chain-key.js';
import { SESSION_BACKENDS, seededRandom, cryptoCodeOf } from './session-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);
const GROUP = enc('group:engineering');

const codeOf = cryptoCodeOf;

function flipBit(bytes: Uint8Array, bit: number): Uint8Array {
  const out = bytes.slice();
  out[bit >>> 3] = (out[bit >>> 3] as number) ^ (1 << (bit & 7));
  return out;
}

/**
 * A copy of `sender` moved ahead to iteration `to` without encrypting (and signing) every
 * message in between: rewrites the iteration and chain key in its serialized state.
 * State layout: u8 version | u8 group id length | group id | u32 key id | u32 iteration |
 * 32 chain key | 32 signing seed | 32 signing key.
 */
function fastForward(sender: OutboundSenderKey, to: number, backend: CryptoBackend): OutboundSenderKey {
  const state = sender.serialize();
  const at = 2 + (state[1] as number) + 4;
  const view = new DataView(state.buffer);
  let ck = new ChainKey(state.slice(at + 4, at + 36), view.getUint32(at));
  while (ck.index < to) ck = ck.next(backend);
  view.setUint32(at, ck.index);
  state.set(ck.exportBytes(), at + 4);
  return OutboundSenderKey.deserialize(state, { backend });
}

describe.each(SESSION_BACKENDS)('sender keys ($name)', (backend: CryptoBackend) => {
  function setup(seed: string): { sender: OutboundSenderKey; receiver: InboundSenderKeys } {
    const sender = OutboundSenderKey.create(GROUP, { backend, random: seededRandom(seed) });
    const receiver = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend });
    return { sender, receiver };
  }

  test('members decrypt what the sender encrypts', () => {
    const { sender, receiver } = setup('basic');
    const other = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend });
    for (let i = 0; i < 5; i++) {
      const m = sender.encrypt(enc(`m${i}`));
      expect(dec(receiver.decrypt(m))).toBe(`m${i}`);
      expect(dec(other.decrypt(m))).toBe(`m${i}`);
    }
    expect(receiver.keyIds).toEqual([sender.keyId]);
    expect(toHex(receiver.groupId)).toBe(toHex(GROUP));
  });

  test('a member who joins later reads from the distributed iteration on', () => {
    const { sender } = setup('late-join');
    const early = sender.encrypt(enc('before'));
    const late = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend });
    expect(codeOf(() => late.decrypt(early))).toBe('REPLAYED_MESSAGE');
    expect(dec(late.decrypt(sender.encrypt(enc('after'))))).toBe('after');
  });

  test('the signature is checked before decryption: a member cannot forge the sender', () => {
    const { sender, receiver } = setup('forge');
    // A member knows the chain key, so it can produce a valid AEAD ciphertext; it can't sign
    // with the sender's key. Build exactly that: same group, key id and chain, own signing key.
    const state = sender.serialize();
    const forgedState = state.slice();
    forgedState.set(seededRandom('mallory')(32), forgedState.length - 64); // signing seed
    forgedState.set(backend.ed25519PublicKey(forgedState.subarray(forgedState.length - 64, forgedState.length - 32)), forgedState.length - 32);
    const mallory = OutboundSenderKey.deserialize(forgedState, { backend });
    const forged = mallory.encrypt(enc('pay mallory'));
    const before = receiver.serialize();
    expect(codeOf(() => receiver.decrypt(forged))).toBe('DECRYPT_FAILED');
    expect(receiver.serialize()).toEqual(before);
    // The genuine message for that iteration still decrypts.
    expect(dec(receiver.decrypt(sender.encrypt(enc('genuine'))))).toBe('genuine');
  });

  test('a message is bound to its group', () => {
    const { sender } = setup('group-binding');
    // A receiver with identical keys filed under another group id rejects the message.
    const d = sender.distributionMessage();
    const otherGroup = enc('group:sales-and-ops');
    const moved = new Uint8Array(d.length - GROUP.length + otherGroup.length);
    moved[0] = d[0] as number;
    moved[1] = otherGroup.length;
    moved.set(otherGroup, 2);
    moved.set(d.subarray(2 + GROUP.length), 2 + otherGroup.length);
    const elsewhere = InboundSenderKeys.fromDistribution(moved, { backend });
    expect(codeOf(() => elsewhere.decrypt(sender.encrypt(enc('x'))))).toBe('DECRYPT_FAILED');
  });

  test('any bit flip is rejected and changes nothing', () => {
    const { sender, receiver } = setup('flips');
    const m = sender.encrypt(enc('flip me'));
    const before = receiver.serialize();
    for (let bit = 0; bit < m.length * 8; bit += 3) {
      const code = codeOf(() => receiver.decrypt(flipBit(m, bit)));
      const byte = bit >>> 3;
      // Kind byte: version or type; key id: unknown generation; everything else: signature.
      const expected = byte === 0 ? ['UNSUPPORTED_VERSION', 'INVALID_MESSAGE'] : byte < 5 ? ['INVALID_STATE'] : ['DECRYPT_FAILED'];
      expect(expected).toContain(code);
      expect(receiver.serialize()).toEqual(before);
    }
    expect(dec(receiver.decrypt(m))).toBe('flip me');
  });

  test('replays are REPLAYED_MESSAGE, including after a skipped key was used', () => {
    const { sender, receiver } = setup('replay');
    const m = [0, 1, 2].map((i) => sender.encrypt(enc(`m${i}`)));
    receiver.decrypt(m[2]!);
    receiver.decrypt(m[0]!);
    const before = receiver.serialize();
    expect(codeOf(() => receiver.decrypt(m[2]!))).toBe('REPLAYED_MESSAGE');
    expect(codeOf(() => receiver.decrypt(m[0]!))).toBe('REPLAYED_MESSAGE');
    expect(receiver.serialize()).toEqual(before);
    expect(dec(receiver.decrypt(m[1]!))).toBe('m1');
    expect(codeOf(() => receiver.decrypt(m[1]!))).toBe('REPLAYED_MESSAGE');
  });

  test('a forward jump beyond the limit is TOO_MANY_SKIPPED; at the limit it decrypts', () => {
    const { sender, receiver } = setup('jump');
    const m0 = sender.encrypt(enc('m0'));
    const atLimit = fastForward(sender, MAX_SENDER_KEY_FORWARD_JUMP, backend).encrypt(enc('at limit'));
    const beyond = fastForward(sender, MAX_SENDER_KEY_FORWARD_JUMP + 1, backend).encrypt(enc('beyond'));
    const before = receiver.serialize();
    expect(codeOf(() => receiver.decrypt(beyond))).toBe('TOO_MANY_SKIPPED');
    expect(receiver.serialize()).toEqual(before);
    expect(dec(receiver.decrypt(atLimit))).toBe('at limit');
    expect(dec(receiver.decrypt(beyond))).toBe('beyond');
    expect(dec(receiver.decrypt(m0))).toBe('m0');
  });

  test('skipped keys are bounded, oldest evicted first', () => {
    const { sender, receiver } = setup('evict');
    const early = [0, 1, 2].map((i) => sender.encrypt(enc(`m${i}`)));
    // Skip 0..MAX-1: the store is exactly full.
    const ahead = fastForward(sender, MAX_SENDER_KEY_SKIPPED_KEYS, backend);
    receiver.decrypt(ahead.encrypt(enc('far')));
    receiver.decrypt(ahead.encrypt(enc('no skip')));
    expect(dec(receiver.decrypt(early[2]!))).toBe('m2');
    // Two more skipped keys (store at MAX+1 after m2 was used): the oldest, m0, goes.
    ahead.encrypt(enc('lost 1'));
    ahead.encrypt(enc('lost 2'));
    receiver.decrypt(ahead.encrypt(enc('after lost')));
    expect(codeOf(() => receiver.decrypt(early[0]!))).toBe('REPLAYED_MESSAGE');
    expect(dec(receiver.decrypt(early[1]!))).toBe('m1');
  });

  test('rotation: messages in flight still decrypt, older generations are refused', () => {
    const { sender, receiver } = setup('rotate');
    const removed = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend });
    const inFlight = sender.encrypt(enc('sent before the change'));
    const firstId = sender.keyId;
    const d1 = sender.rotate(); // membership changed: `removed` does not get d1
    expect(sender.keyId).toBe(firstId + 1);
    receiver.processDistribution(d1);
    const after = sender.encrypt(enc('after the change'));
    expect(dec(receiver.decrypt(after))).toBe('after the change');
    expect(dec(receiver.decrypt(inFlight))).toBe('sent before the change');
    expect(codeOf(() => removed.decrypt(after))).toBe('INVALID_STATE');

    const late = [sender.encrypt(enc('g2 late'))];
    for (let i = 0; i < MAX_SENDER_KEY_GENERATIONS; i++) receiver.processDistribution(sender.rotate());
    expect(receiver.keyIds.length).toBe(MAX_SENDER_KEY_GENERATIONS);
    // The generation of `late` has been rotated out of the window.
    expect(codeOf(() => receiver.decrypt(late[0]!))).toBe('INVALID_STATE');
    expect(dec(receiver.decrypt(sender.encrypt(enc('current'))))).toBe('current');
  });

  test('a repeated distribution changes nothing; a conflicting one is refused', () => {
    const { sender, receiver } = setup('redistribute');
    const d0 = sender.distributionMessage();
    const m = sender.encrypt(enc('m'));
    receiver.decrypt(m);
    const before = receiver.serialize();
    receiver.processDistribution(d0); // an old copy cannot rewind the chain
    expect(receiver.serialize()).toEqual(before);
    expect(codeOf(() => receiver.decrypt(m))).toBe('REPLAYED_MESSAGE');
    const conflicting = d0.slice();
    conflicting[conflicting.length - 1] = (conflicting[conflicting.length - 1] as number) ^ 1;
    expect(codeOf(() => receiver.processDistribution(conflicting))).toBe('INVALID_MESSAGE');
    const elsewhere = OutboundSenderKey.create(enc('another group'), { backend, random: seededRandom('elsewhere') });
    expect(codeOf(() => receiver.processDistribution(elsewhere.distributionMessage()))).toBe('INVALID_MESSAGE');
    expect(receiver.serialize()).toEqual(before);
  });

  test('malformed input is typed', () => {
    const { sender, receiver } = setup('malformed');
    const d = sender.distributionMessage();
    expect(codeOf(() => InboundSenderKeys.fromDistribution(d.subarray(0, d.length - 1)))).toBe('INVALID_MESSAGE');
    expect(codeOf(() => InboundSenderKeys.fromDistribution(Uint8Array.of(...d, 0)))).toBe('INVALID_MESSAGE');
    expect(codeOf(() => InboundSenderKeys.fromDistribution(Uint8Array.of(0x23, ...d.subarray(1))))).toBe('UNSUPPORTED_VERSION');
    expect(codeOf(() => InboundSenderKeys.fromDistribution(Uint8Array.of(0x14, ...d.subarray(1))))).toBe('INVALID_MESSAGE');
    expect(codeOf(() => receiver.decrypt(new Uint8Array(0)))).toBe('INVALID_MESSAGE');
    expect(codeOf(() => receiver.decrypt(sender.encrypt(enc('x')).subarray(0, 88)))).toBe('INVALID_MESSAGE');
    expect(codeOf(() => OutboundSenderKey.create(new Uint8Array(0)))).toBe('INVALID_ARGUMENT');
    expect(codeOf(() => OutboundSenderKey.create(new Uint8Array(MAX_GROUP_ID_BYTES + 1)))).toBe('INVALID_ARGUMENT');
  });

  test('state codecs round-trip and carry on; unknown versions are refused', () => {
    const { sender, receiver } = setup('codec');
    const held = sender.encrypt(enc('held'));
    receiver.decrypt(sender.encrypt(enc('next')));
    receiver.processDistribution(sender.rotate());
    const s2 = OutboundSenderKey.deserialize(sender.serialize(), { backend });
    const r2 = InboundSenderKeys.deserialize(receiver.serialize(), { backend });
    expect(r2.serialize()).toEqual(receiver.serialize());
    expect(s2.serialize()).toEqual(sender.serialize());
    expect(dec(r2.decrypt(held))).toBe('held');
    expect(dec(r2.decrypt(s2.encrypt(enc('carried on'))))).toBe('carried on');
    const bad = (b: Uint8Array) => Uint8Array.of(9, ...b.subarray(1));
    expect(codeOf(() => OutboundSenderKey.deserialize(bad(sender.serialize())))).toBe('UNSUPPORTED_VERSION');
    expect(codeOf(() => InboundSenderKeys.deserialize(bad(receiver.serialize())))).toBe('UNSUPPORTED_VERSION');
    const r = receiver.serialize();
    expect(codeOf(() => InboundSenderKeys.deserialize(r.subarray(0, r.length - 1)))).toBe('INVALID_STATE');
    expect(codeOf(() => OutboundSenderKey.deserialize(Uint8Array.of(...sender.serialize(), 0)))).toBe('INVALID_STATE');
  });

  test.prop([fc.integer(), fc.integer({ min: 1, max: 40 }).chain((n) => fc.shuffledSubarray([...Array(n).keys()], { minLength: n }))], {
    numRuns: backend.name === 'noble' ? 10 : 30,
  })('out-of-order delivery within the limit decrypts every message exactly once', (seed, order) => {
    const sender = OutboundSenderKey.create(GROUP, { backend, random: seededRandom(seed) });
    const receiver = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend });
    const messages = order.map((_, i) => sender.encrypt(enc(`m${i}`)));
    for (const i of order) expect(dec(receiver.decrypt(messages[i]!))).toBe(`m${i}`);
    for (const i of order.slice(0, 3)) expect(codeOf(() => receiver.decrypt(messages[i]!))).toBe('REPLAYED_MESSAGE');
  });

  test.prop([fc.integer(), fc.integer({ min: 1, max: 50 })], { numRuns: 5 })(
    'a jump past the limit is TOO_MANY_SKIPPED and changes nothing',
    (seed, beyond) => {
      const sender = OutboundSenderKey.create(GROUP, { backend, random: seededRandom(seed) });
      const receiver = InboundSenderKeys.fromDistribution(sender.distributionMessage(), { backend });
      // Only the iteration in the header matters, and it is checked before any key is derived.
      const target = MAX_SENDER_KEY_FORWARD_JUMP + beyond;
      const message = fastForward(sender, target, backend).encrypt(enc('far ahead'));
      const before = receiver.serialize();
      expect(codeOf(() => receiver.decrypt(message))).toBe('TOO_MANY_SKIPPED');
      expect(receiver.serialize()).toEqual(before);
    },
  );
});

test('group message signatures use the project-wide labelled transcript', () => {
  expect(toHex(GROUP_MESSAGE_SIGNATURE_LABEL)).toBe(toHex(signatureTranscript('sender-key/message', new Uint8Array(0))));
});

test('sender-key state never prints its secrets', () => {
  const sender = OutboundSenderKey.create(GROUP, { random: seededRandom('print') });
  const receiver = InboundSenderKeys.fromDistribution(sender.distributionMessage());
  for (const [value, label, state] of [
    [sender, 'OutboundSenderKey', sender.serialize()],
    [receiver, 'InboundSenderKeys', receiver.serialize()],
  ] as const) {
    const stateHex = toHex(state);
    for (const text of [JSON.stringify(value), String(value), inspect(value, { depth: 10, showHidden: true })]) {
      expect(text).toContain(`${label} redacted`);
      for (let i = 0; i + 64 <= stateHex.length; i += 16) expect(text).not.toContain(stateHex.slice(i, i + 64));
    }
  }
});
