/**
 * A seeded end-to-end transcript (handshake, first message, reply, a message on the next
 * chain, a sender-key distribution and group message) must be byte-identical on every
 * backend and on every mix of them (a noble initiator with a libsodium responder, and so
 * on), and its digest is pinned: any change to a label, layout or KDF of the session
 * layer changes it, and must come with a new protocol version.
 */
import { sha256 } from '@noble/hashes/sha2.js';
import { expect, test } from 'vitest';
import { InboundSenderKeys, OutboundSenderKey } from '../../crypto/group/index.js';
import { acceptSession, initiateSession } from '../../crypto/handshake/index.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { concatBytes, toHex } from '../../crypto/primitives/bytes.js';
import { bundleOf, makeIdentity, makeResponder, SESSION_BACKENDS, seededRandom } from './session-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);

/** The transcript with the initiator (and group sender) on `backend`, the responder (and group receiver) on `peer`. */
async function transcript(backend: CryptoBackend, peer: CryptoBackend = backend): Promise<Uint8Array[]> {
  const random = seededRandom('transcript');
  const responder = makeResponder(peer, random);
  const alice = initiateSession({ identity: makeIdentity(backend, random), bundle: bundleOf(responder), backend, random });
  const first = alice.encrypt(enc('one'));
  const { session: bob, plaintext } = await acceptSession({
    identity: responder.identity,
    store: responder.store,
    message: first,
    backend: peer,
    random,
  });
  expect(plaintext).toEqual(enc('one'));
  const reply = bob.encrypt(enc('two'));
  alice.decrypt(reply);
  const third = alice.encrypt(enc('three'));
  expect(bob.decrypt(third)).toEqual(enc('three'));
  const sender = OutboundSenderKey.create(enc('group'), { backend, random });
  const distribution = sender.distributionMessage();
  const group = sender.encrypt(enc('four'));
  expect(InboundSenderKeys.fromDistribution(distribution, { backend: peer }).decrypt(group)).toEqual(enc('four'));
  return [first, reply, third, distribution, group, alice.serialize(), bob.serialize()];
}

const PINNED = '7247a2944571572f10c9c2d662aa6029bb388aa231466de62c10510b1df189d8';

test('the seeded transcript is identical on every backend and matches the pinned digest', async () => {
  for (const backend of SESSION_BACKENDS) {
    expect(toHex(sha256(concatBytes(...(await transcript(backend))))), backend.name).toBe(PINNED);
  }
});

test('the seeded transcript is identical with the two sides on different backends', async () => {
  for (const a of SESSION_BACKENDS) {
    for (const b of SESSION_BACKENDS) {
      if (a === b) continue;
      expect(toHex(sha256(concatBytes(...(await transcript(a, b))))), `${a.name} initiator, ${b.name} responder`).toBe(PINNED);
    }
  }
});
