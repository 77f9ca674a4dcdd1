/**
 * What the session layer decodes from bytes it keeps as copies, also when the bytes come
 * as a Node Buffer (what sockets, files and the pg driver return), whose slice() is a
 * view: overwriting or reusing the caller's buffer afterwards must change nothing.
 */
import { describe, expect, test } from 'vitest';
import { InboundSenderKeys, OutboundSenderKey } from '../../crypto/group/index.js';
import { decodeDistribution } from '../../crypto/group/wire.js';
import { acceptSession, decodeInitialMessage, initiateSession } from '../../crypto/handshake/index.js';
import { pad, unpad } from '../../crypto/padding.js';
import { Session } from '../../crypto/ratchet/index.js';
import { bundleOf, makeIdentity, makeResponder, makeSessionPair, SESSION_BACKENDS, seededRandom } from './session-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);

/** Runs `use` on a Buffer copy of `bytes`, then overwrites the buffer. */
function fromBuffer<T>(bytes: Uint8Array, use: (b: Buffer) => T): T {
  const b = Buffer.from(bytes);
  const out = use(b);
  b.fill(0x5a);
  return out;
}

describe.each(SESSION_BACKENDS.map((b) => [b.name, b] as const))('%s backend', (_name, backend) => {
  test('a session restored from a Buffer does not change when the buffer does', async () => {
    const { alice } = await makeSessionPair(backend, 'buffer-restore');
    const state = alice.serialize();
    const restored = fromBuffer(state, (b) => Session.deserialize(b, { backend }));
    expect(restored.serialize()).toEqual(state);
  });

  test('a session keeps no part of a message decrypted from a Buffer', async () => {
    const { alice, bob } = await makeSessionPair(backend, 'buffer-decrypt');
    // Alice's next message starts a new chain: Bob keeps its ratchet key from the header.
    const b = Buffer.from(alice.encrypt(enc('new chain')));
    bob.decrypt(b);
    const state = bob.serialize();
    b.fill(0x5a);
    expect(bob.serialize()).toEqual(state);
    expect(new TextDecoder().decode(alice.decrypt(bob.encrypt(enc('reply'))))).toBe('reply');
  });

  test('an initial message decoded or accepted from a Buffer leaves nothing aliased', async () => {
    const random = seededRandom('buffer-initial');
    const responder = makeResponder(backend, random);
    const alice = initiateSession({ identity: makeIdentity(backend, random), bundle: bundleOf(responder), backend, random });
    const first = alice.encrypt(enc('first'));
    const decoded = fromBuffer(first, (b) => decodeInitialMessage(b));
    const expected = decodeInitialMessage(first.slice());
    expect([decoded.identityKey, decoded.baseKey, decoded.kemCipherText]).toEqual([expected.identityKey, expected.baseKey, expected.kemCipherText]);

    const b = Buffer.from(first);
    const { session } = await acceptSession({ identity: responder.identity, store: responder.store, message: b, backend });
    const state = session.serialize();
    b.fill(0x5a);
    expect(session.serialize()).toEqual(state);
    expect(session.baseKey).toEqual(expected.baseKey);
  });
});

test('unpad of a Buffer returns a copy', () => {
  const plaintext = enc('padded text');
  const out = fromBuffer(pad(plaintext), (b) => unpad(b));
  expect(out).toEqual(plaintext);
});

test('sender keys decoded from Buffers do not change when the buffers do', () => {
  const random = seededRandom('buffer-sender-keys');
  const out = OutboundSenderKey.create(enc('group'), { random });
  const outState = out.serialize();
  expect(fromBuffer(outState, (b) => OutboundSenderKey.deserialize(b)).serialize()).toEqual(outState);

  const distribution = out.distributionMessage();
  expect(fromBuffer(distribution, (b) => decodeDistribution(b))).toEqual(decodeDistribution(distribution.slice()));
  const inbound = fromBuffer(distribution, (b) => InboundSenderKeys.fromDistribution(b));
  const inState = InboundSenderKeys.fromDistribution(distribution).serialize();
  expect(inbound.serialize()).toEqual(inState);
  expect(fromBuffer(inState, (b) => InboundSenderKeys.deserialize(b)).serialize()).toEqual(inState);

  const keys = InboundSenderKeys.deserialize(inState);
  fromBuffer(out.rotate(), (b) => keys.processDistribution(b));
  const rotated = keys.serialize();
  expect(InboundSenderKeys.deserialize(rotated).serialize()).toEqual(rotated);
  expect(new TextDecoder().decode(keys.decrypt(out.encrypt(enc('after rotation'))))).toBe('after rotation');
});
