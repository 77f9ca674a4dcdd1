import { describe, expect, it } from 'vitest';
import { IdentityKey, IdentityKeyPair, SafetyNumber, computeSafetyNumber } from '../../crypto/identity/index.js';
import { toHex } from '../../crypto/primitives/bytes.js';
import { BACKENDS, expectCryptoError, hex } from './helpers.js';

// RFC 8032 TEST 1 and TEST 2 public keys as two identities.
const ALICE = { identityKey: hex('d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a'), stableId: 'alice' };
const BOB = { identityKey: hex('3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c'), stableId: 'bob' };

/**
 * Pinned once, and cross-checked against a separate implementation of the construction
 * in crypto/identity/safety-number.ts written with Python's hashlib. Any change to the
 * construction (version, iterations, digit encoding, ordering) changes these, and must
 * come with a new SAFETY_NUMBER_VERSION.
 */
const PINNED_DIGITS = '130913229492263763132617449443424931320961591809333972751357';
const PINNED_SCANNABLE =
  '0000' +
  '1ac7d28823cab3b44f86aab145f507e41cc5eb19e51374b41e7f14dfabe3032e' +
  '926ce48b9d8ec76c33f9347c93d17706bf3d79e5536ca5056ff31dc8cafde7a0';

describe.each(BACKENDS)('safety numbers (%s)', (_name, b) => {
  it('matches the pinned vector', () => {
    const sn = SafetyNumber.compute(ALICE, BOB, b);
    expect(sn.digits).toBe(PINNED_DIGITS);
    expect(toHex(sn.scannable)).toBe(PINNED_SCANNABLE);
  });

  it('is the same from both sides and shown as 12 groups of 5 digits', () => {
    const ab = SafetyNumber.compute(ALICE, BOB, b);
    const ba = computeSafetyNumber(BOB, ALICE, b);
    expect(ab.digits).toBe(ba.digits);
    expect(toHex(ab.scannable)).toBe(toHex(ba.scannable));
    expect(ab.equals(ba)).toBe(true);
    expect(ab.digits).toMatch(/^\d{60}$/);
    expect(ab.groups).toHaveLength(12);
    for (const g of ab.groups) expect(g).toMatch(/^\d{5}$/);
    expect(String(ab)).toBe(ab.groups.join(' '));
    expect(ab.scannable.length).toBe(66);
    expect(ab.matchesScanned(ba.scannable)).toBe(true);
  });

  it('IdentityKey and raw bytes give the same number', () => {
    const viaKey = SafetyNumber.compute({ ...ALICE, identityKey: IdentityKey.fromBytes(ALICE.identityKey, b) }, BOB, b);
    expect(viaKey.digits).toBe(SafetyNumber.compute(ALICE, BOB, b).digits);
  });

  it('a different key or id gives a different number, and the scan does not match', () => {
    const real = SafetyNumber.compute(ALICE, BOB, b);
    const mallory = IdentityKeyPair.generate(undefined, b).publicKey;
    const mitm = SafetyNumber.compute(ALICE, { identityKey: mallory, stableId: 'bob' }, b);
    const otherId = SafetyNumber.compute(ALICE, { ...BOB, stableId: 'bob2' }, b);
    expect(mitm.digits).not.toBe(real.digits);
    expect(otherId.digits).not.toBe(real.digits);
    expect(real.matchesScanned(mitm.scannable)).toBe(false);
    expect(real.equals(mitm)).toBe(false);
    // Half the digits (Alice's) stay the same: each half depends on one party only.
    const aliceHalf = (s: SafetyNumber) => [s.digits.slice(0, 30), s.digits.slice(30)];
    expect(aliceHalf(real).some((h) => aliceHalf(mitm).includes(h))).toBe(true);
  });

  it('scanned payload checks', () => {
    const sn = SafetyNumber.compute(ALICE, BOB, b);
    const wrongVersion = sn.scannable;
    wrongVersion[1] = 1;
    expectCryptoError(() => sn.matchesScanned(wrongVersion), 'UNSUPPORTED_VERSION');
    expectCryptoError(() => sn.matchesScanned(sn.scannable.subarray(0, 65)), 'INVALID_MESSAGE');
    expectCryptoError(() => sn.matchesScanned(new Uint8Array(1)), 'INVALID_MESSAGE');
    const flipped = sn.scannable;
    flipped[40]! ^= 1;
    expect(sn.matchesScanned(flipped)).toBe(false);
  });

  it('input checks', () => {
    expectCryptoError(() => SafetyNumber.compute({ ...ALICE, stableId: '' }, BOB, b), 'INVALID_ARGUMENT');
    expectCryptoError(() => SafetyNumber.compute({ ...ALICE, stableId: 'x'.repeat(257) }, BOB, b), 'INVALID_ARGUMENT');
    expectCryptoError(() => SafetyNumber.compute({ ...ALICE, identityKey: new Uint8Array(31) }, BOB, b), 'INVALID_KEY');
  });
});
