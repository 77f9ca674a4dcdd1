/**
 * Secret-holding types never print their secret, whatever printing path is used.
 */
import util from 'node:util';
import { describe, expect, it } from 'vitest';
import { identityDhPrivateKey, IdentityKeyPair } from '../../crypto/identity/index.js';
import { Ed25519PrivateKey, MlKem768PrivateKey, X25519PrivateKey } from '../../crypto/keys.js';
import { toHex } from '../../crypto/primitives/bytes.js';
import type { RandomSource } from '../../crypto/primitives/random.js';
import { BACKENDS, expectCryptoError } from './helpers.js';

/** Deterministic bytes with no zero runs, so a leak of any 8-byte window is detectable. */
const counterRandom: RandomSource = (n) => Uint8Array.from({ length: n }, (_, i) => ((i * 37 + 11) % 251) + 1);

/** Text encodings of (any 8-byte window of) the secret a printer might produce. */
function secretForms(secret: Uint8Array): string[] {
  const forms: string[] = [];
  for (let i = 0; i + 8 <= secret.length; i += 8) {
    const w = secret.subarray(i, i + 8);
    forms.push(toHex(w), toHex(w).toUpperCase());
  }
  const b = Buffer.from(secret);
  forms.push(b.toString('base64').slice(0, 16), b.toString('base64url').slice(0, 16));
  return forms;
}

/**
 * Whether the secret's bytes appear as consecutive decimal numbers in `printed`, which
 * is how util.inspect (aligned columns) and JSON.stringify ({"0":12,...}) show a
 * Uint8Array. Compares every 8-byte window of the secret.
 */
function hasDecimalRun(printed: string, secret: Uint8Array): boolean {
  const nums = (printed.match(/\d+/g) ?? []).map(Number);
  const jsonNums = (printed.match(/"\d+":(\d+)/g) ?? []).map((m) => Number(m.split(':')[1]));
  for (const list of [nums, jsonNums]) {
    for (let i = 0; i + 8 <= secret.length; i++) {
      const w = Array.from(secret.subarray(i, i + 8));
      for (let j = 0; j + 8 <= list.length; j++) if (w.every((v, k) => list[j + k] === v)) return true;
    }
  }
  return false;
}

function printedForms(value: unknown): string[] {
  return [
    util.inspect(value),
    util.inspect(value, { showHidden: true, depth: 10, getters: true }),
    util.inspect(value, { customInspect: false, showHidden: true, depth: 10 }),
    util.inspect({ nested: [value] }, { depth: 10 }),
    util.format('%o %O %s %j', value, value, value, value),
    JSON.stringify(value),
    JSON.stringify({ nested: value }),
    `${String(value)}`,
    `${value as string}`,
    Object.keys(value as object).join(','),
    JSON.stringify(Object.entries(value as object)),
    JSON.stringify({ ...(value as object) }),
  ];
}

function expectNoLeak(value: unknown, secret: Uint8Array): void {
  const printed = printedForms(value);
  for (const p of printed) {
    for (const f of secretForms(secret)) expect(p.includes(f), `leaked ${f} in ${p}`).toBe(false);
    expect(hasDecimalRun(p, secret), `leaked secret bytes as numbers in ${p}`).toBe(false);
  }
}

describe('leak detector', () => {
  it('catches a secret held in a plain field (positive control)', () => {
    const secret = counterRandom(32);
    expect(() => expectNoLeak({ secret }, secret)).toThrow(/leaked/);
    expect(() => expectNoLeak({ s: toHex(secret) }, secret)).toThrow(/leaked/);
    expect(() => expectNoLeak({ s: Buffer.from(secret).toString('base64') }, secret)).toThrow(/leaked/);
    class PlainField {
      constructor(readonly key: Uint8Array) {}
    }
    expect(() => expectNoLeak(new PlainField(secret), secret)).toThrow(/leaked/);
  });
});

describe.each(BACKENDS)('key wrappers (%s)', (_name, b) => {
  it('X25519PrivateKey prints its fingerprint only', () => {
    const k = X25519PrivateKey.generate(counterRandom, b);
    const secret = k.exportSecret();
    expect(secret).toEqual(counterRandom(32));
    expectNoLeak(k, secret);
    expect(String(k)).toMatch(/^X25519PrivateKey\(fingerprint=[0-9a-f]{16}\)$/);
    expect(JSON.parse(JSON.stringify(k))).toEqual({ type: 'X25519PrivateKey', fingerprint: k.fingerprint });
    expect(util.inspect(k)).toBe(String(k));
  });

  it('Ed25519PrivateKey and IdentityKeyPair print their fingerprint only', () => {
    const k = Ed25519PrivateKey.generate(counterRandom, b);
    expectNoLeak(k, k.exportSeed());
    const id = IdentityKeyPair.generate(counterRandom, b);
    expectNoLeak(id, id.exportSeed());
    // Also once it holds its X25519 form (after an agreement).
    id.agreeX25519(b.x25519PublicKey(counterRandom(32)));
    expectNoLeak(id, id.exportSeed());
    expectNoLeak(id, identityDhPrivateKey(b, id.exportSeed()));
    expect(String(id)).toBe(`IdentityKeyPair(fingerprint=${id.publicKey.fingerprint})`);
    // Exported seed of the same random bytes gives the same key.
    expect(toHex(id.publicKey.bytes)).toBe(toHex(k.publicKey));
  });

  it('prepared private keys print no secret', () => {
    const secret = counterRandom(32);
    expectNoLeak(b.x25519PrepareKey(secret), secret);
    expectNoLeak(b.ed25519PrepareKey(secret), secret);
    expect(String(b.x25519PrepareKey(secret))).toBe('[X25519 private key redacted]');
    expect(JSON.stringify({ k: b.ed25519PrepareKey(secret) })).toBe('{"k":"[Ed25519 private key redacted]"}');
  });

  it('MlKem768PrivateKey prints its fingerprint only', () => {
    const k = MlKem768PrivateKey.generate(counterRandom, b);
    const secret = k.exportSecret();
    // The decapsulation key embeds the public key; only its secret parts must not show.
    expectNoLeak(k, secret.subarray(0, 1152));
    expectNoLeak(k, secret.subarray(2400 - 32));
  });

  it('wrappers copy their input and work', () => {
    const raw = counterRandom(32);
    const k = X25519PrivateKey.fromBytes(raw, b);
    raw.fill(0);
    const peer = X25519PrivateKey.generate(undefined, b);
    expect(toHex(k.agree(peer.publicKey))).toBe(toHex(peer.agree(k.publicKey)));
    expectCryptoError(() => k.agree(new Uint8Array(32)), 'INVALID_KEY');
    expectCryptoError(() => X25519PrivateKey.fromBytes(new Uint8Array(31), b), 'INVALID_KEY');

    const e = Ed25519PrivateKey.fromSeed(counterRandom(32), b);
    expect(b.ed25519Verify(e.sign(raw), raw, e.publicKey)).toBe(true);
    expectCryptoError(() => Ed25519PrivateKey.fromSeed(new Uint8Array(64), b), 'INVALID_KEY');

    const m = MlKem768PrivateKey.generate(undefined, b);
    const { cipherText, sharedSecret } = b.mlkemEncapsulate(m.publicKey);
    expect(toHex(m.decapsulate(cipherText))).toBe(toHex(sharedSecret));
    const restored = MlKem768PrivateKey.fromBytes(m.exportSecret(), b);
    expect(toHex(restored.publicKey)).toBe(toHex(m.publicKey));
    expect(toHex(restored.decapsulate(cipherText))).toBe(toHex(sharedSecret));
    const corrupt = m.exportSecret();
    corrupt[1500]! ^= 1; // inside the embedded public key: the FIPS 203 hash check fails
    expectCryptoError(() => MlKem768PrivateKey.fromBytes(corrupt, b), 'INVALID_KEY');
  });
});

describe('keys taken from a Node Buffer', () => {
  it('are copies: changing the Buffer afterwards changes no key (Buffer#slice would be a view)', () => {
    const pool = Buffer.alloc(64, 7);
    const view = pool.subarray(16, 48);
    const x = X25519PrivateKey.fromBytes(view);
    const ed = Ed25519PrivateKey.fromSeed(view);
    const xPublic = x.publicKey.slice();
    const edPublic = ed.publicKey.slice();
    pool.fill(0);
    expect(x.exportSecret()).toEqual(new Uint8Array(32).fill(7));
    expect(ed.exportSeed()).toEqual(new Uint8Array(32).fill(7));
    expect(X25519PrivateKey.fromBytes(x.exportSecret()).publicKey).toEqual(xPublic);
    expect(Ed25519PrivateKey.fromSeed(ed.exportSeed()).publicKey).toEqual(edPublic);
  });
});
