/**
 * Input validation and error behaviour of both backends: labelled length asserts with
 * stable codes, all-zero X25519 output refused, one indistinguishable AEAD failure,
 * verification that never throws, and backend selection (per primitive, overridable).
 */
import { afterEach, describe, expect, it } from 'vitest';
import {
  availableBackends,
  defaultBackend,
  describeBackend,
  getBackend,
  selectImplementations,
  nativeBackend,
  nobleBackend,
} from '../../crypto/primitives/index.js';
import { DECRYPT_FAILED_MESSAGE } from '../../crypto/primitives/noble.js';
import { BACKENDS, expectCryptoError, hex } from './helpers.js';

const k32 = new Uint8Array(32).fill(0x42);
const n12 = new Uint8Array(12);

// u-coordinates of order dividing 8 (curve and twist) and their non-canonical twins.
const P = (1n << 255n) - 19n;
const le = (n: bigint): Uint8Array => {
  const out = new Uint8Array(32);
  for (let i = 0; i < 32; i++) out[i] = Number((n >> BigInt(8 * i)) & 0xffn);
  return out;
};
const LOW_ORDER: [string, Uint8Array][] = [
  ['0', le(0n)],
  ['1', le(1n)],
  ['p-1', le(P - 1n)],
  ['p (non-canonical 0)', le(P)],
  ['p+1 (non-canonical 1)', le(P + 1n)],
  ['order 8 (a)', hex('e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800')],
  ['order 8 (b)', hex('5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157')],
  ['0 with top bit set', le(1n << 255n)],
];

describe.each(BACKENDS)('errors (%s)', (_name, b) => {
  it.each(LOW_ORDER)('x25519 refuses low-order public key u=%s with INVALID_KEY', (_l, u) => {
    expectCryptoError(() => b.x25519(k32, u), 'INVALID_KEY', 'x25519 public key is of low order (all-zero shared secret)');
  });

  it.each(LOW_ORDER)('a prepared X25519 key refuses low-order public key u=%s when used', (_l, u) => {
    const message = 'x25519 public key is of low order (all-zero shared secret)';
    const key = b.x25519PrepareKey(k32);
    expectCryptoError(() => key.agree(u), 'INVALID_KEY', message);
    const prepared = b.x25519PreparePublicKey(u);
    expectCryptoError(() => key.agree(prepared), 'INVALID_KEY', message);
    // The key is still usable after a refusal.
    expect(key.agree(b.x25519PublicKey(k32))).toEqual(b.x25519(k32, b.x25519PublicKey(k32)));
  });

  it('prepared keys check sizes like the raw methods', () => {
    expectCryptoError(() => b.x25519PrepareKey(new Uint8Array(31)), 'INVALID_KEY', 'x25519 private key must be 32 bytes');
    expectCryptoError(() => b.x25519PreparePublicKey(new Uint8Array(33)), 'INVALID_KEY', 'x25519 public key must be 32 bytes');
    expectCryptoError(() => b.x25519PrepareKey(k32).agree(new Uint8Array(31)), 'INVALID_KEY', 'x25519 public key must be 32 bytes');
    expectCryptoError(() => b.ed25519PrepareKey(new Uint8Array(64)), 'INVALID_KEY', 'ed25519 seed must be 32 bytes');
    expectCryptoError(() => b.ed25519PreparePublicKey(new Uint8Array(31)), 'INVALID_KEY', 'ed25519 public key must be 32 bytes');
    expectCryptoError(
      () => b.ed25519PrepareKey(k32).sign('x' as unknown as Uint8Array),
      'INVALID_ARGUMENT',
      'ed25519 message must be a Uint8Array',
    );
  });

  it('prepared keys copy their input', () => {
    const seed = k32.slice();
    const signer = b.ed25519PrepareKey(seed);
    const x = b.x25519PrepareKey(seed);
    const peer = b.x25519PublicKey(new Uint8Array(32).fill(7));
    const pub = b.x25519PreparePublicKey(peer);
    seed.fill(0);
    peer.fill(0);
    expect(signer.sign(k32)).toEqual(b.ed25519Sign(k32, k32));
    expect(x.agree(pub)).toEqual(b.x25519(k32, b.x25519PublicKey(new Uint8Array(32).fill(7))));
    pub.bytes.fill(0); // a copy: the prepared key is unchanged
    expect(x.agree(pub)).toEqual(b.x25519(k32, b.x25519PublicKey(new Uint8Array(32).fill(7))));
  });

  it('labelled length asserts carry stable codes', () => {
    expectCryptoError(() => b.x25519PublicKey(new Uint8Array(31)), 'INVALID_KEY', 'x25519 private key must be 32 bytes');
    expectCryptoError(() => b.x25519(new Uint8Array(33), k32), 'INVALID_KEY', 'x25519 private key must be 32 bytes');
    expectCryptoError(() => b.x25519(k32, new Uint8Array(31)), 'INVALID_KEY', 'x25519 public key must be 32 bytes');
    expectCryptoError(() => b.ed25519PublicKey(new Uint8Array(64)), 'INVALID_KEY', 'ed25519 seed must be 32 bytes');
    expectCryptoError(() => b.ed25519Sign(new Uint8Array(31), k32), 'INVALID_KEY', 'ed25519 seed must be 32 bytes');
    expectCryptoError(() => b.aeadSeal(new Uint8Array(16), n12, k32, k32), 'INVALID_KEY', 'aead key must be 32 bytes');
    expectCryptoError(() => b.aeadSeal(k32, new Uint8Array(24), k32, k32), 'INVALID_ARGUMENT', 'aead nonce must be 12 bytes');
    expectCryptoError(() => b.aeadOpen(new Uint8Array(0), n12, k32, k32), 'INVALID_KEY', 'aead key must be 32 bytes');
    expectCryptoError(() => b.aeadOpen(k32, new Uint8Array(8), k32, k32), 'INVALID_ARGUMENT', 'aead nonce must be 12 bytes');
    expectCryptoError(() => b.mlkemKeygen(new Uint8Array(32)), 'INVALID_ARGUMENT', 'ml-kem keygen seed must be 64 bytes');
    expectCryptoError(() => b.mlkemEncapsulate(new Uint8Array(1183)), 'INVALID_KEY', 'ml-kem public key must be 1184 bytes');
    expectCryptoError(
      () => b.mlkemDecapsulate(new Uint8Array(1088), new Uint8Array(2399)),
      'INVALID_KEY',
      'ml-kem secret key must be 2400 bytes',
    );
  });

  it('non-Uint8Array inputs are refused, not coerced', () => {
    const notBytes = 'abc' as unknown as Uint8Array;
    expectCryptoError(() => b.sha256(notBytes), 'INVALID_ARGUMENT', 'sha256 input must be a Uint8Array');
    expectCryptoError(() => b.hmacSha256(notBytes, k32), 'INVALID_ARGUMENT', 'hmac key must be a Uint8Array');
    expectCryptoError(() => b.x25519(k32, [1, 2] as unknown as Uint8Array), 'INVALID_KEY');
    expectCryptoError(() => b.aeadSeal(k32, n12, notBytes, k32), 'INVALID_ARGUMENT', 'aead plaintext must be a Uint8Array');
  });

  it.each([0, -1, 1.5, 8161, Number.NaN])('hkdf length %s is refused', (len) => {
    expectCryptoError(() => b.hkdfSha256(k32, k32, k32, len), 'INVALID_ARGUMENT', 'hkdf length must be an integer in [1, 8160]');
  });

  it('every AEAD failure is the same DECRYPT_FAILED', () => {
    const sealed = b.aeadSeal(k32, n12, new Uint8Array(100), new Uint8Array(3));
    const wrongKey = k32.slice();
    wrongKey[0]! ^= 1;
    const flippedBody = sealed.slice();
    flippedBody[5]! ^= 1;
    const flippedTag = sealed.slice();
    flippedTag[sealed.length - 1]! ^= 1;
    const failures = [
      () => b.aeadOpen(wrongKey, n12, sealed, new Uint8Array(3)),
      () => b.aeadOpen(k32, new Uint8Array(12).fill(1), sealed, new Uint8Array(3)),
      () => b.aeadOpen(k32, n12, sealed, new Uint8Array(4)),
      () => b.aeadOpen(k32, n12, flippedBody, new Uint8Array(3)),
      () => b.aeadOpen(k32, n12, flippedTag, new Uint8Array(3)),
      () => b.aeadOpen(k32, n12, sealed.subarray(0, 15), new Uint8Array(3)),
      () => b.aeadOpen(k32, n12, new Uint8Array(0), new Uint8Array(3)),
    ];
    for (const f of failures) {
      const err = expectCryptoError(f, 'DECRYPT_FAILED', DECRYPT_FAILED_MESSAGE);
      expect(err.cause).toBeUndefined(); // nothing that says which check failed
    }
  });

  it('empty plaintext seals to a bare tag and opens', () => {
    const sealed = b.aeadSeal(k32, n12, new Uint8Array(0), new Uint8Array(0));
    expect(sealed.length).toBe(16);
    expect(b.aeadOpen(k32, n12, sealed, new Uint8Array(0)).length).toBe(0);
  });

  it('a prepared Ed25519 public key never throws on verify: malformed input gives false', () => {
    const pub = b.ed25519PublicKey(k32);
    const sig = b.ed25519Sign(k32, k32);
    const key = b.ed25519PreparePublicKey(pub);
    expect(key.verify(sig, k32)).toBe(true);
    expect(key.verify(sig.subarray(0, 63), k32)).toBe(false);
    expect(key.verify('x' as unknown as Uint8Array, k32)).toBe(false);
    expect(key.verify(sig, null as unknown as Uint8Array)).toBe(false);
    // A key the policy refuses verifies nothing (here: 2^255 - 1, a non-canonical y).
    expect(b.ed25519PreparePublicKey(new Uint8Array(32).fill(0xff)).verify(sig, k32)).toBe(false);
  });

  it('ed25519Verify never throws: malformed input gives false', () => {
    const seed = k32;
    const pub = b.ed25519PublicKey(seed);
    const sig = b.ed25519Sign(seed, k32);
    expect(b.ed25519Verify(sig, k32, pub)).toBe(true);
    expect(b.ed25519Verify(sig.subarray(0, 63), k32, pub)).toBe(false);
    expect(b.ed25519Verify(new Uint8Array(65), k32, pub)).toBe(false);
    expect(b.ed25519Verify(sig, k32, pub.subarray(1))).toBe(false);
    expect(b.ed25519Verify(sig, k32, new Uint8Array(32).fill(0xff))).toBe(false);
    expect(b.ed25519Verify('x' as unknown as Uint8Array, k32, pub)).toBe(false);
    expect(b.ed25519Verify(sig, null as unknown as Uint8Array, pub)).toBe(false);
    // S >= L (malleability) is refused by both: S = S + L.
    const L = (1n << 252n) + 27742317777372353535851937790883648493n;
    let s = 0n;
    for (let i = 31; i >= 0; i--) s = (s << 8n) | BigInt(sig[32 + i]!);
    const mall = sig.slice();
    mall.set(le(s + L), 32);
    expect(b.ed25519Verify(mall, k32, pub)).toBe(false);
  });

  it('outputs are fresh plain Uint8Arrays the caller owns', () => {
    const outs = [
      b.sha256(k32),
      b.sha512(k32),
      b.hmacSha256(k32, k32),
      b.hkdfSha256(k32, k32, k32, 42),
      b.x25519PublicKey(k32),
      b.x25519(k32, b.x25519PublicKey(k32)),
      b.ed25519PublicKey(k32),
      b.ed25519Sign(k32, k32),
      b.aeadSeal(k32, n12, k32, k32),
      b.aeadOpen(k32, n12, b.aeadSeal(k32, n12, k32, k32), k32),
      b.x25519PrepareKey(k32).publicKey(),
      b.x25519PrepareKey(k32).agree(b.x25519PublicKey(k32)),
      b.x25519PreparePublicKey(k32).bytes,
      b.ed25519PrepareKey(k32).publicKey(),
      b.ed25519PrepareKey(k32).sign(k32),
      b.ed25519PreparePublicKey(k32).bytes,
    ];
    for (const o of outs) {
      expect(Object.getPrototypeOf(o)).toBe(Uint8Array.prototype);
      // Owns its whole buffer: no view into a shared pool that .buffer would expose.
      expect(o.buffer.byteLength).toBe(o.byteLength);
    }
    const h1 = b.sha256(k32);
    h1.fill(0);
    expect(b.sha256(k32)).not.toEqual(h1);
  });
});

describe('backend selection', () => {
  afterEach(() => {
    selectImplementations();
  });

  it('in Node the default takes node:crypto for SHA-2, X25519 and Ed25519, libsodium for the rest', () => {
    expect(nativeBackend?.name).toBe('native');
    expect(defaultBackend.name).toBe('default');
    expect(availableBackends.map((b) => b.name)).toEqual(['noble', 'native']);
    const d = describeBackend();
    expect(d.sodium).toBe('ready'); // helpers.ts awaited cryptoReady()
    expect(d.primitives).toEqual({
      sha2: 'native',
      hmac: 'sodium',
      hkdf: 'sodium',
      x25519: 'native',
      ed25519: 'native',
      aead: 'sodium',
      mlkem: 'sodium',
    });
    expect(d.preferences.mlkem).toEqual(['sodium', 'noble']);
    expect(d.preferences.aead).toEqual(['sodium', 'native']);
  });

  it('an override changes the implementation of the primitives named, and the calls follow it', () => {
    const seed = new Uint8Array(32).fill(3);
    const expected = defaultBackend.ed25519Sign(seed, k32);
    const d = selectImplementations({ ed25519: 'sodium', mlkem: 'noble', x25519: 'noble', aead: 'native' });
    expect(d.primitives).toEqual({ ...describeBackend().primitives, ed25519: 'sodium', mlkem: 'noble', x25519: 'noble', aead: 'native' });
    expect(d.primitives.hmac).toBe('sodium');
    expect(defaultBackend.ed25519Sign(seed, k32)).toEqual(expected);
    expect(defaultBackend.ed25519PrepareKey(seed).toString()).toBe('[Ed25519 private key redacted]');
    // Restoring the defaults.
    expect(selectImplementations().primitives.ed25519).toBe('native');
  });

  it('refuses unknown primitives and implementations', () => {
    expectCryptoError(() => selectImplementations({ md5: 'noble' } as never), 'INVALID_ARGUMENT', /unknown primitive "md5"/);
    expectCryptoError(() => selectImplementations({ aead: 'openssl' } as never), 'INVALID_ARGUMENT', /unknown implementation "openssl"/);
    expect(describeBackend().primitives.aead).toBe('sodium'); // nothing changed
  });

  it('getBackend by name; unknown names refused', () => {
    expect(getBackend()).toBe(defaultBackend);
    expect(getBackend('default')).toBe(defaultBackend);
    expect(getBackend('noble')).toBe(nobleBackend);
    expect(getBackend('native')).toBe(nativeBackend);
    expect(getBackend('sodium').name).toBe('sodium');
    expectCryptoError(() => getBackend('openssl'), 'INVALID_ARGUMENT');
  });
});
