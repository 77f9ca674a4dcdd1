/**
 * PQXDH-style handshake: agreement with and without a one-time prekey, one-time and
 * last-resort ML-KEM prekeys, bundle signature checks, and a responder that changes
 * nothing in its store until the first message authenticates.
 */
import { ed25519 } from '@noble/curves/ed25519.js';
import { describe, expect, test } from 'vitest';
import { CryptoError, type CryptoErrorCode } from '../../crypto/errors.js';
import {
  acceptSession,
  decodeInitialMessage,
  INITIAL_HANDSHAKE_BYTES,
  initiateSession,
  type PreKeyBundle,
  verifyPreKeyBundle,
} from '../../crypto/handshake/index.js';
import { identityDhPrivateKey, identityDhPublicKey } from '../../crypto/identity/index.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { toHex } from '../../crypto/primitives/bytes.js';
import { signPublishedKey } from '../../crypto/published-key.js';
import { bundleOf, makeIdentity, makeResponder, type Responder, SESSION_BACKENDS, seededRandom } from './session-fixtures.js';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

async function rejects(p: Promise<unknown>, code: CryptoErrorCode): Promise<CryptoError> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(err, 'expected a CryptoError').toBeInstanceOf(CryptoError);
  expect((err as CryptoError).code).toBe(code);
  return err as CryptoError;
}

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

function flipBit(bytes: Uint8Array, bit: number): Uint8Array {
  const out = bytes.slice();
  out[bit >>> 3] = (out[bit >>> 3] as number) ^ (1 << (bit & 7));
  return out;
}

describe('identity DH keys (Ed25519 -> X25519)', () => {
  test.each(SESSION_BACKENDS)('private and public conversions agree ($name)', (backend) => {
    const random = seededRandom('identity-dh');
    for (let i = 0; i < 4; i++) {
      const identity = makeIdentity(backend, random);
      const seed = identity.exportSeed();
      const priv = identityDhPrivateKey(backend, seed);
      expect(toHex(backend.x25519PublicKey(priv))).toBe(toHex(identityDhPublicKey(identity.publicKey.bytes)));
      // The key pair's own agreement uses exactly that scalar.
      const peer = random(32);
      const peerPublic = backend.x25519PublicKey(peer);
      expect(toHex(identity.agreeX25519(peerPublic))).toBe(toHex(backend.x25519(priv, peerPublic)));
      expect(toHex(identity.agreeX25519(backend.x25519PreparePublicKey(peerPublic)))).toBe(toHex(backend.x25519(peer, identityDhPublicKey(identity.publicKey.bytes))));
      // Same as libsodium / noble's crypto_sign_ed25519_sk_to_curve25519.
      expect(toHex(priv)).toBe(toHex(ed25519.utils.toMontgomerySecret(seed)));
    }
  });

  test('an identity key that is not a curve point is INVALID_KEY', () => {
    // y = 2 is not the y-coordinate of any Ed25519 point.
    const bad = new Uint8Array(32);
    bad[0] = 2;
    throwsCode(() => identityDhPublicKey(bad), 'INVALID_KEY');
  });
});

describe.each(SESSION_BACKENDS)('handshake ($name)', (backend: CryptoBackend) => {
  function setup(seed: string): { responder: Responder; alice: ReturnType<typeof makeIdentity>; random: ReturnType<typeof seededRandom> } {
    const random = seededRandom(seed);
    return { responder: makeResponder(backend, random), alice: makeIdentity(backend, random), random };
  }

  test.each([
    { oneTime: true, lastResort: false },
    { oneTime: false, lastResort: false },
    { oneTime: true, lastResort: true },
    { oneTime: false, lastResort: true },
  ])('agreement and first message: one-time prekey $oneTime, last-resort KEM $lastResort', async ({ oneTime, lastResort }) => {
    const { responder, alice, random } = setup(`agree-${oneTime}-${lastResort}`);
    const bundle = bundleOf(responder, { oneTime, lastResort });
    const session = initiateSession({ identity: alice, bundle, backend, random });
    expect(session.awaitingReply).toBe(true);
    const first = session.encrypt(enc('first message'));
    const decoded = decodeInitialMessage(first);
    expect(decoded.oneTimePreKeyId).toBe(oneTime ? responder.oneTimePreKey.id : undefined);
    expect(decoded.kemLastResort).toBe(lastResort);

    const accepted = await acceptSession({ identity: responder.identity, store: responder.store, message: first, backend, random });
    expect(dec(accepted.plaintext)).toBe('first message');
    expect(toHex(accepted.remoteIdentityKey)).toBe(toHex(alice.publicKey.bytes));
    expect(toHex(accepted.session.baseKey)).toBe(toHex(session.baseKey));

    // One-time keys used are gone; the last-resort and signed prekeys stay.
    expect(responder.store.oneTime.has(responder.oneTimePreKey.id)).toBe(!oneTime);
    expect(responder.store.kem.has(responder.oneTimeKemPreKey.id)).toBe(lastResort);
    expect(responder.store.kem.has(responder.lastResortKemPreKey.id)).toBe(true);
    expect(responder.store.signed.has(responder.signedPreKey.id)).toBe(true);

    // Both sides derived the same keys: the reply (first DH ratchet step) decrypts too.
    expect(dec(session.decrypt(accepted.session.encrypt(enc('reply'))))).toBe('reply');
    expect(session.awaitingReply).toBe(false);
  });

  test('different handshakes give unrelated sessions', async () => {
    const { responder, alice, random } = setup('unrelated');
    const s1 = initiateSession({ identity: alice, bundle: bundleOf(responder, { oneTime: false, lastResort: true }), backend, random });
    const s2 = initiateSession({ identity: alice, bundle: bundleOf(responder, { oneTime: false, lastResort: true }), backend, random });
    const m1 = s1.encrypt(enc('one'));
    const m2 = s2.encrypt(enc('two'));
    const { session: bob1 } = await acceptSession({ identity: responder.identity, store: responder.store, message: m1, backend });
    // m2 is another handshake: the existing session refuses it, a new accept takes it.
    throwsCode(() => bob1.decrypt(m2), 'INVALID_STATE');
    const { plaintext } = await acceptSession({ identity: responder.identity, store: responder.store, message: m2, backend });
    expect(dec(plaintext)).toBe('two');
  });

  test('initial messages repeat the handshake until the first reply', async () => {
    const { responder, alice, random } = setup('repeat');
    const a = initiateSession({ identity: alice, bundle: bundleOf(responder), backend, random });
    const m0 = a.encrypt(enc('m0'));
    const m1 = a.encrypt(enc('m1'));
    const m2 = a.encrypt(enc('m2'));
    expect(decodeInitialMessage(m2).baseKey).toEqual(decodeInitialMessage(m0).baseKey);
    // m0 is lost; m1 sets the session up, m2 and then m0 decrypt in it.
    const { session: b, plaintext } = await acceptSession({ identity: responder.identity, store: responder.store, message: m1, backend });
    expect(dec(plaintext)).toBe('m1');
    expect(dec(b.decrypt(m2))).toBe('m2');
    expect(dec(b.decrypt(m0))).toBe('m0');
    throwsCode(() => b.decrypt(m1), 'REPLAYED_MESSAGE');
    // A repeat whose handshake part was altered is a forgery.
    const m3 = a.encrypt(enc('m3'));
    const before = b.serialize();
    throwsCode(() => b.decrypt(flipBit(m3, 8 * (INITIAL_HANDSHAKE_BYTES - 5))), 'DECRYPT_FAILED');
    expect(b.serialize()).toEqual(before);
    expect(dec(b.decrypt(m3))).toBe('m3');
    // After the reply, plain ratchet messages.
    a.decrypt(b.encrypt(enc('reply')));
    const m4 = a.encrypt(enc('m4'));
    expect(m4[0]).toBe(0x11);
    expect(dec(b.decrypt(m4))).toBe('m4');
  });

  test('a replayed initial message cannot set up a second session once its one-time prekey is used', async () => {
    const { responder, alice, random } = setup('replay-initial');
    const a = initiateSession({ identity: alice, bundle: bundleOf(responder), backend, random });
    const m0 = a.encrypt(enc('m0'));
    await acceptSession({ identity: responder.identity, store: responder.store, message: m0, backend });
    await rejects(acceptSession({ identity: responder.identity, store: responder.store, message: m0, backend }), 'DECRYPT_FAILED');
  });

  test('a base key in another encoding of the same point is refused, so a replay cannot pass for a new handshake', async () => {
    // X25519 ignores the top bit of a u-coordinate (RFC 7748 §5) and the base key is
    // not in the associated data: flipping that bit gave a message that set up the same
    // session again under a different base key, past the callers' check for repeats.
    const { responder, alice, random } = setup('base-key-encoding');
    const a = initiateSession({ identity: alice, bundle: bundleOf(responder, { oneTime: false, lastResort: true }), backend, random });
    const m0 = a.encrypt(enc('m0'));
    const { session: b } = await acceptSession({ identity: responder.identity, store: responder.store, message: m0, backend });
    const replay = flipBit(m0, 8 * (33 + 31) + 7);
    throwsCode(() => decodeInitialMessage(replay), 'INVALID_MESSAGE');
    throwsCode(() => b.decrypt(replay), 'INVALID_MESSAGE');
    await rejects(acceptSession({ identity: responder.identity, store: responder.store, message: replay, backend }), 'INVALID_MESSAGE');
    // u >= p is the other non-canonical form: p + 1 stands for 1.
    const aboveP = m0.slice();
    aboveP.set([0xee, ...new Array<number>(30).fill(0xff), 0x7f], 33);
    throwsCode(() => decodeInitialMessage(aboveP), 'INVALID_MESSAGE');
  });

  describe('bundle signatures', () => {
    const forge = (sig: Uint8Array) => flipBit(sig, 5);

    test.each([
      ['signed prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, signedPreKey: { ...b.signedPreKey, signature: forge(b.signedPreKey.signature) } })],
      ['signed prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, signedPreKey: { ...b.signedPreKey, id: b.signedPreKey.id + 1 } })],
      ['signed prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, signedPreKey: { ...b.signedPreKey, publicKey: flipBit(b.signedPreKey.publicKey, 9) } })],
      ['one-time prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, oneTimePreKey: { ...b.oneTimePreKey!, signature: forge(b.oneTimePreKey!.signature) } })],
      ['one-time KEM prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, kemPreKey: { ...b.kemPreKey, signature: forge(b.kemPreKey.signature) } })],
      ['one-time KEM prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, kemPreKey: { ...b.kemPreKey, publicKey: flipBit(b.kemPreKey.publicKey, 100) } })],
      // A one-time KEM key passed off as the last-resort one: the signed kind differs.
      ['last-resort KEM prekey', (b: PreKeyBundle): PreKeyBundle => ({ ...b, kemPreKey: { ...b.kemPreKey, lastResort: true } })],
    ])('a forged %s signature is INVALID_SIGNATURE', (label, mutate) => {
      const { responder, alice, random } = setup('forged');
      const bundle = mutate(bundleOf(responder));
      const err = throwsCode(() => verifyPreKeyBundle(backend, bundle), 'INVALID_SIGNATURE');
      expect(err.message).toContain(label);
      throwsCode(() => initiateSession({ identity: alice, bundle, backend, random }), 'INVALID_SIGNATURE');
    });

    test('a forged last-resort KEM signature is INVALID_SIGNATURE', () => {
      const { responder } = setup('forged-lr');
      const b = bundleOf(responder, { lastResort: true });
      const bundle = { ...b, kemPreKey: { ...b.kemPreKey, signature: forge(b.kemPreKey.signature) } };
      expect(throwsCode(() => verifyPreKeyBundle(backend, bundle), 'INVALID_SIGNATURE').message).toContain('last-resort KEM prekey');
    });

    test('keys signed by another identity are INVALID_SIGNATURE', () => {
      const { responder, random } = setup('other-identity');
      const mallory = makeIdentity(backend, random);
      const bundle = { ...bundleOf(responder), identityKey: mallory.publicKey.bytes };
      throwsCode(() => verifyPreKeyBundle(backend, bundle), 'INVALID_SIGNATURE');
      // Mallory re-signing Bob's keys under her own identity is a valid bundle for
      // Mallory, and the session is bound to Mallory's identity key, not Bob's.
      const b = bundleOf(responder);
      const resigned: PreKeyBundle = {
        identityKey: mallory.publicKey.bytes,
        signedPreKey: { ...b.signedPreKey, signature: signPublishedKey(backend, mallory.exportSeed(), 'signed-prekey', b.signedPreKey.id, b.signedPreKey.publicKey) },
        kemPreKey: { ...b.kemPreKey, signature: signPublishedKey(backend, mallory.exportSeed(), 'one-time-kem-prekey', b.kemPreKey.id, b.kemPreKey.publicKey) },
      };
      expect(() => verifyPreKeyBundle(backend, resigned)).not.toThrow();
    });

    test('malformed bundle fields are rejected before any signature check', () => {
      const { responder } = setup('malformed');
      const b = bundleOf(responder);
      throwsCode(() => verifyPreKeyBundle(backend, { ...b, identityKey: new Uint8Array(31) }), 'INVALID_KEY');
      throwsCode(() => verifyPreKeyBundle(backend, { ...b, signedPreKey: { ...b.signedPreKey, id: -1 } }), 'INVALID_ARGUMENT');
      throwsCode(() => verifyPreKeyBundle(backend, { ...b, kemPreKey: { ...b.kemPreKey, publicKey: new Uint8Array(32) } }), 'INVALID_KEY');
    });

    test('a bundle whose parts are not objects is INVALID_ARGUMENT, not a TypeError', () => {
      // Bundles come from an untrusted directory: any shape can arrive.
      const { responder } = setup('shapes');
      const b = bundleOf(responder);
      const shapes: unknown[] = [
        null,
        'bundle',
        { ...b, signedPreKey: undefined },
        { ...b, signedPreKey: null },
        { ...b, oneTimePreKey: null },
        { ...b, oneTimePreKey: 7 },
        { ...b, kemPreKey: undefined },
        { ...b, kemPreKey: 'key' },
      ];
      for (const shape of shapes) throwsCode(() => verifyPreKeyBundle(backend, shape as PreKeyBundle), 'INVALID_ARGUMENT');
    });
  });

  describe('a tampered initial message fails and leaves the store unchanged', () => {
    // Offsets into the initial message (see crypto/handshake/initial-message.ts).
    const fields: [string, number][] = [
      ['identity key', 1],
      ['base key', 33],
      ['signed prekey id', 65],
      ['one-time prekey id', 70],
      ['KEM prekey id', 74],
      ['KEM ciphertext (start)', 78],
      ['KEM ciphertext (end)', INITIAL_HANDSHAKE_BYTES - 1],
      ['ratchet key', INITIAL_HANDSHAKE_BYTES + 1],
      ['previous chain length', INITIAL_HANDSHAKE_BYTES + 33],
      ['message number', INITIAL_HANDSHAKE_BYTES + 40],
      ['ciphertext', INITIAL_HANDSHAKE_BYTES + 45],
    ];

    test.each(fields)('%s', async (_name, offset) => {
      const { responder, alice, random } = setup('tamper');
      const a = initiateSession({ identity: alice, bundle: bundleOf(responder), backend, random });
      const first = a.encrypt(enc('first'));
      const before = responder.store.snapshot();
      for (const bit of [0, 3, 7]) {
        await rejects(
          acceptSession({ identity: responder.identity, store: responder.store, message: flipBit(first, offset * 8 + bit), backend }),
          'DECRYPT_FAILED',
        );
        expect(responder.store.snapshot()).toBe(before);
      }
      // The genuine message still works afterwards, and only then consumes the keys.
      const { plaintext } = await acceptSession({ identity: responder.identity, store: responder.store, message: first, backend });
      expect(dec(plaintext)).toBe('first');
      expect(responder.store.snapshot()).not.toBe(before);
    });

    test('a low-order base key is DECRYPT_FAILED', async () => {
      const { responder, alice, random } = setup('low-order');
      const first = initiateSession({ identity: alice, bundle: bundleOf(responder), backend, random }).encrypt(enc('x'));
      const forged = first.slice();
      forged.fill(0, 33, 65);
      const before = responder.store.snapshot();
      await rejects(acceptSession({ identity: responder.identity, store: responder.store, message: forged, backend }), 'DECRYPT_FAILED');
      expect(responder.store.snapshot()).toBe(before);
    });

    test('structural damage is INVALID_MESSAGE or UNSUPPORTED_VERSION, store unchanged', async () => {
      const { responder, alice, random } = setup('structure');
      const first = initiateSession({ identity: alice, bundle: bundleOf(responder), backend, random }).encrypt(enc('x'));
      const before = responder.store.snapshot();
      const accept = (message: Uint8Array) => acceptSession({ identity: responder.identity, store: responder.store, message, backend });
      await rejects(accept(first.subarray(0, INITIAL_HANDSHAKE_BYTES + 10)), 'INVALID_MESSAGE');
      await rejects(accept(flipBit(first, 8 * 69 + 5)), 'INVALID_MESSAGE'); // unknown flag bit
      await rejects(accept(flipBit(first, 7)), 'UNSUPPORTED_VERSION');
      expect(responder.store.snapshot()).toBe(before);
    });
  });
});
