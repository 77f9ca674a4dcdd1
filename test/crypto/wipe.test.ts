/**
 * Intermediate secrets are overwritten once they are no longer needed: the handshake's
 * DH outputs, KEM shared secret and handshake secret, and the ratchet's used message
 * keys and replaced chain keys. A recording backend keeps every secret output it hands
 * out; after the operation, exactly the ones the state still holds may be non-zero.
 */
import { describe, expect, it } from 'vitest';
import { acceptSession, initiateSession } from '../../crypto/handshake/index.js';
import type { CryptoBackend, PreparedX25519PrivateKey } from '../../crypto/primitives/backend.js';
import { Session } from '../../crypto/ratchet/session.js';
import { bundleOf, makeIdentity, makeResponder, SESSION_BACKENDS, seededRandom } from './session-fixtures.js';

interface Recorded {
  readonly kind: string;
  readonly bytes: Uint8Array;
}

/** The backend, with every secret output (DH, KEM, HMAC, HKDF) recorded. */
function recording(inner: CryptoBackend): { backend: CryptoBackend; outputs: Recorded[] } {
  const outputs: Recorded[] = [];
  const keep = (kind: string, bytes: Uint8Array): Uint8Array => {
    outputs.push({ kind, bytes });
    return bytes;
  };
  const prepared = (k: PreparedX25519PrivateKey): PreparedX25519PrivateKey => ({
    publicKey: () => k.publicKey(),
    agree: (theirs) => keep('x25519', k.agree(theirs)),
  });
  const backend: CryptoBackend = {
    ...inner,
    hmacSha256: (key, data) => keep('hmac', inner.hmacSha256(key, data)),
    hkdfSha256: (ikm, salt, info, length) => keep('hkdf', inner.hkdfSha256(ikm, salt, info, length)),
    x25519: (sk, pk) => keep('x25519', inner.x25519(sk, pk)),
    x25519PrepareKey: (sk) => prepared(inner.x25519PrepareKey(sk)),
    mlkemEncapsulate: (pk, m) => {
      const r = inner.mlkemEncapsulate(pk, m);
      keep('mlkem', r.sharedSecret);
      return r;
    },
    mlkemDecapsulate: (ct, sk) => keep('mlkem', inner.mlkemDecapsulate(ct, sk)),
  };
  return { backend, outputs };
}

const isZero = (b: Uint8Array): boolean => b.every((x) => x === 0);

describe.each(SESSION_BACKENDS.map((b) => [b.name, b] as const))('wiping secrets (%s)', (_name, inner) => {
  it('the handshake wipes its DH outputs, KEM secret and handshake secret on both sides', async () => {
    const random = seededRandom('wipe-handshake');
    const a = recording(inner);
    const b = recording(inner);
    // Keys made on the recording backends use them for their agreements too.
    const responder = makeResponder(b.backend, random);
    const alice = makeIdentity(a.backend, random);
    const session = initiateSession({ identity: alice, bundle: bundleOf(responder), backend: a.backend, random });
    const dh = a.outputs.filter((o) => o.kind === 'x25519' || o.kind === 'mlkem');
    expect(dh.length).toBe(5); // 4 DH + 1 KEM
    for (const o of dh) expect(isZero(o.bytes), o.kind).toBe(true);
    // The handshake secret (PQXDH's HKDF output) is wiped; the initial keys derived from it
    // are the session's root and first chain key, still live.
    const hkdf = a.outputs.filter((o) => o.kind === 'hkdf');
    expect(hkdf.length).toBe(2);
    expect(isZero(hkdf[0]!.bytes)).toBe(true);
    expect(isZero(hkdf[1]!.bytes)).toBe(false);

    const first = session.encrypt(new Uint8Array([1]));
    b.outputs.length = 0;
    await acceptSession({ identity: responder.identity, store: responder.store, message: first, backend: b.backend, random });
    for (const o of b.outputs.filter((x) => x.kind === 'x25519' || x.kind === 'mlkem')) expect(isZero(o.bytes), o.kind).toBe(true);
    expect(isZero(b.outputs.find((o) => o.kind === 'hkdf')!.bytes)).toBe(true);
  });

  it('a refused initial message leaves no agreement secret behind', async () => {
    const random = seededRandom('wipe-refused');
    const b = recording(inner);
    const responder = makeResponder(b.backend, random);
    const session = initiateSession({ identity: makeIdentity(inner, random), bundle: bundleOf(responder), backend: inner, random });
    const message = session.encrypt(new Uint8Array([1]));
    message[message.length - 1]! ^= 1;
    b.outputs.length = 0;
    await expect(acceptSession({ identity: responder.identity, store: responder.store, message, backend: b.backend, random })).rejects.toMatchObject({
      code: 'DECRYPT_FAILED',
    });
    const secrets = b.outputs.filter((o) => o.kind !== 'hmac');
    expect(secrets.length).toBeGreaterThan(0);
    for (const o of secrets) expect(isZero(o.bytes), o.kind).toBe(true);
  });

  it('sending: every used message key and replaced chain key is wiped, only the current chain key is not', async () => {
    const random = seededRandom('wipe-send');
    const responder = makeResponder(inner, random);
    const alice = initiateSession({ identity: makeIdentity(inner, random), bundle: bundleOf(responder), backend: inner, random });
    const r = recording(inner);
    const a = Session.deserialize(alice.serialize(), { backend: r.backend, random });
    for (let i = 0; i < 3; i++) a.encrypt(new Uint8Array([i]));
    // mk0, ck1, mk1, ck2, mk2, ck3: only ck3 is live.
    expect(r.outputs.map((o) => o.kind)).toEqual(['hmac', 'hmac', 'hmac', 'hmac', 'hmac', 'hmac']);
    expect(r.outputs.filter((o) => !isZero(o.bytes))).toHaveLength(1);
  });

  it('receiving across a DH ratchet step wipes the old root, chain and message keys; a forged message wipes what it derived', async () => {
    const random = seededRandom('wipe-receive');
    const responder = makeResponder(inner, random);
    const alice = initiateSession({ identity: makeIdentity(inner, random), bundle: bundleOf(responder), backend: inner, random });
    const { session: bob } = await acceptSession({ identity: responder.identity, store: responder.store, message: alice.encrypt(new Uint8Array([0])), backend: inner, random });
    const reply = bob.encrypt(new Uint8Array([1]));
    const forged = reply.slice();
    forged[forged.length - 1]! ^= 1;

    const r = recording(inner);
    const a = Session.deserialize(alice.serialize(), { backend: r.backend, random });
    const before = a.serialize();
    expect(() => a.decrypt(forged)).toThrow();
    expect(a.serialize()).toEqual(before);
    for (const o of r.outputs) expect(isZero(o.bytes), `${o.kind} after a forgery`).toBe(true);

    r.outputs.length = 0;
    a.decrypt(reply);
    // Live now: the new root key and the receiving chain's next key (both from the same
    // HKDF output or chain step); everything else derived here is wiped.
    const live = r.outputs.filter((o) => !isZero(o.bytes));
    expect(live.map((o) => o.kind).sort()).toEqual(['hkdf', 'hmac']);
  });
});
