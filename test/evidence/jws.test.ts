/**
 * JWS receipts and signed events: the RFC 8037 vectors, jose's own verifier on our
 * output (and ours on jose's), and strict refusal of everything malformed.
 */
import { CompactSign, compactVerify, importJWK } from 'jose';
import { describe, expect, it } from 'vitest';
import {
  EvidenceError,
  RECEIPT_TYP,
  type ReceiptPayload,
  eventHash,
  identityJwk,
  identityKeyFromJwk,
  jwkThumbprint,
  parseReceipt,
  signEvent,
  signReceipt,
  verifyEvent,
  verifyJws,
  verifyReceipt,
} from '../../crypto/evidence/index.js';
import { IdentityKeyPair } from '../../crypto/identity/identity-key.js';
import { availableBackends } from '../../crypto/primitives/index.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';

const enc = new TextEncoder();
const dec = new TextDecoder();

function code(fn: () => unknown): string {
  try {
    fn();
  } catch (err) {
    if (err instanceof EvidenceError) return err.code;
    throw err;
  }
  throw new Error('did not throw');
}

// RFC 8037, Appendix A.1, A.3 and A.4.
const RFC8037 = {
  d: 'nWGxne_9WmC6hEr0kuwsxERJxWl7MmkZcDusAxyuf2A',
  x: '11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo',
  thumbprint: 'kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k',
  jws: 'eyJhbGciOiJFZERTQSJ9.RXhhbXBsZSBvZiBFZDI1NTE5IHNpZ25pbmc.hgyY0il_MGCjP0JzlnLWG1PPOt7-09PGcvMg3AIbQR6dWbhijcNR4ki4iylGjg5BhVsPt9g7sVvpAr_MuM0KAg',
};

function receipt(over: Partial<ReceiptPayload> = {}): ReceiptPayload {
  return {
    v: 1,
    recipient: { user: 'bob', device: 'bob-phone' },
    issuedAt: 1_800_000_000_500,
    entries: [
      {
        envelopeId: encodeBase64url(new Uint8Array(16).fill(7)),
        sha256: encodeBase64url(new Uint8Array(32).fill(9)),
        seq: 42,
        sender: { user: 'alice', device: 'alice-laptop' },
        messageNumber: 3,
        sentAt: 1_800_000_000_000,
        storedAt: 1_800_000_000_100,
        receivedAt: 1_800_000_000_200,
        disposition: 'processed',
        flags: [],
      },
    ],
    ...over,
  };
}

describe.each(availableBackends.map((b) => [b.name, b] as const))('evidence JWS on %s', (_name, backend) => {
  it('matches RFC 8037: the public key, the thumbprint and the signature', () => {
    const pair = IdentityKeyPair.fromSeed(decodeBase64url(RFC8037.d)!, backend);
    expect(identityJwk(pair.publicKey)).toEqual({ kty: 'OKP', crv: 'Ed25519', x: RFC8037.x });
    expect(jwkThumbprint(pair.publicKey, backend)).toBe(RFC8037.thumbprint);
    const [h, p, s] = RFC8037.jws.split('.') as [string, string, string];
    expect(encodeBase64url(pair.sign(enc.encode(`${h}.${p}`)))).toBe(s);
  });

  it('receipts verify with jose, and with us; a changed byte does not', async () => {
    const pair = IdentityKeyPair.generate(undefined, backend);
    const jws = signReceipt(pair, receipt(), backend);
    const key = await importJWK(identityJwk(pair.publicKey), 'EdDSA');
    const verified = await compactVerify(jws, key);
    expect(verified.protectedHeader).toEqual({ alg: 'EdDSA', typ: RECEIPT_TYP, kid: jwkThumbprint(pair.publicKey, backend) });
    expect(JSON.parse(dec.decode(verified.payload))).toEqual(receipt());
    expect(verifyReceipt(jws, pair.publicKey, backend).payload).toEqual(receipt());
    // Any change to the payload breaks both verifiers.
    const [h, p, s] = jws.split('.') as [string, string, string];
    const other = encodeBase64url(enc.encode(JSON.stringify(receipt({ issuedAt: 1 }))));
    await expect(compactVerify(`${h}.${other}.${s}`, key)).rejects.toThrow();
    expect(code(() => verifyReceipt(`${h}.${other}.${s}`, pair.publicKey, backend))).toBe('BAD_SIGNATURE');
    // Another device's key: the kid does not match.
    expect(code(() => verifyReceipt(jws, IdentityKeyPair.generate(undefined, backend).publicKey, backend))).toBe('BAD_SIGNATURE');
    void p;
  });

  it('accepts a receipt jose signed with the device key', async () => {
    const seed = new Uint8Array(32).fill(5);
    const pair = IdentityKeyPair.fromSeed(seed, backend);
    const jwk = { ...identityJwk(pair.publicKey), d: encodeBase64url(seed) };
    const jws = await new CompactSign(enc.encode(JSON.stringify(receipt())))
      .setProtectedHeader({ alg: 'EdDSA', typ: RECEIPT_TYP, kid: jwkThumbprint(pair.publicKey, backend) })
      .sign(await importJWK(jwk, 'EdDSA'));
    expect(verifyReceipt(jws, pair.publicKey, backend).payload.entries[0]!.seq).toBe(42);
  });
});

describe('evidence JWS strictness', () => {
  const pair = IdentityKeyPair.generate();
  const good = signReceipt(pair, receipt());
  const [h, p, s] = good.split('.') as [string, string, string];
  const header = (o: unknown) => encodeBase64url(enc.encode(JSON.stringify(o)));
  const kid = jwkThumbprint(pair.publicKey);
  const resigned = (hdr: string, payload = p) => `${hdr}.${payload}.${encodeBase64url(pair.sign(enc.encode(`${hdr}.${payload}`)))}`;

  it('refuses malformed compact serializations with INVALID_JWS', () => {
    for (const bad of ['', 'a.b', `${h}.${p}`, `${h}.${p}.${s}.x`, `${h}.${p}.${s}=`, `${h}+.${p}.${s}`, `${h}.${p}.${s.slice(0, -4)}`, 'x'.repeat(300_000)]) {
      expect(code(() => verifyReceipt(bad, pair.publicKey)), bad.slice(0, 40)).toBe('INVALID_JWS');
    }
  });

  it('refuses headers that are not exactly EdDSA, the receipt type and a thumbprint kid', () => {
    const cases = [
      { alg: 'none', typ: RECEIPT_TYP, kid },
      { alg: 'HS256', typ: RECEIPT_TYP, kid },
      { alg: 'EdDSA', typ: 'JWT', kid },
      { alg: 'EdDSA', typ: 'hermetic-event+jws', kid },
      { alg: 'EdDSA', typ: RECEIPT_TYP },
      { alg: 'EdDSA', typ: RECEIPT_TYP, kid, crit: ['b64'], b64: false },
      { alg: 'EdDSA', typ: RECEIPT_TYP, kid, jwk: identityJwk(pair.publicKey) },
      { alg: 'EdDSA', typ: RECEIPT_TYP, kid: 'short' },
    ];
    for (const c of cases) expect(code(() => verifyReceipt(resigned(header(c)), pair.publicKey)), JSON.stringify(c)).toBe('INVALID_JWS');
    expect(code(() => verifyReceipt(resigned(encodeBase64url(enc.encode('[1]'))), pair.publicKey))).toBe('INVALID_JWS');
    expect(code(() => verifyReceipt(resigned(encodeBase64url(enc.encode('{'))), pair.publicKey))).toBe('INVALID_JWS');
  });

  it('refuses signed payloads that are not receipts with INVALID_RECEIPT', () => {
    const e0 = receipt().entries[0]!;
    const payloads: unknown[] = [
      'not json',
      [],
      { ...receipt(), v: 2 },
      { ...receipt(), extra: 1 },
      receipt({ entries: [] }),
      receipt({ entries: Array.from({ length: 129 }, (_, i) => ({ ...e0, envelopeId: encodeBase64url(new Uint8Array(16).fill(i % 256)), seq: i })) }),
      receipt({ entries: [e0, e0] }),
      receipt({ entries: [{ ...e0, seq: -1 }] }),
      receipt({ entries: [{ ...e0, seq: 1.5 }] }),
      receipt({ entries: [{ ...e0, sha256: 'AAAA' }] }),
      receipt({ entries: [{ ...e0, flags: ['NOPE'] as never }] }),
      receipt({ entries: [{ ...e0, flags: ['LATE', 'LATE'] }] }),
      receipt({ entries: [{ ...e0, disposition: 'rejected' }] }),
      receipt({ entries: [{ ...e0, reason: 'DECRYPT_FAILED' }] }),
      receipt({ entries: [{ ...e0, sender: { user: 'a', device: 'has space' } }] }),
      receipt({ recipient: { user: '', device: 'd' } }),
      { ...receipt(), issuedAt: '1' },
    ];
    for (const pl of payloads) {
      const body = encodeBase64url(enc.encode(typeof pl === 'string' ? pl : JSON.stringify(pl)));
      expect(code(() => verifyReceipt(resigned(h, body), pair.publicKey)), JSON.stringify(pl).slice(0, 80)).toBe('INVALID_RECEIPT');
    }
    // And we never sign one.
    expect(code(() => signReceipt(pair, receipt({ entries: [] })))).toBe('INVALID_RECEIPT');
  });

  it('reads JSON one way only: a member twice, or nesting past the bound, is refused (never a stack overflow)', () => {
    const text = JSON.stringify(receipt());
    const twice = text.replace('"issuedAt":', '"issuedAt":1,"issuedAt":');
    expect(code(() => verifyReceipt(resigned(h, encodeBase64url(enc.encode(twice))), pair.publicKey))).toBe('INVALID_RECEIPT');
    const dupHeader = encodeBase64url(enc.encode(`{"alg":"EdDSA","typ":"${RECEIPT_TYP}","kid":"${kid}","kid":"${kid}"}`));
    expect(code(() => verifyReceipt(resigned(dupHeader), pair.publicKey))).toBe('INVALID_JWS');
    const deep = `{"v":${'['.repeat(15_000)}${']'.repeat(15_000)}}`;
    expect(code(() => verifyReceipt(resigned(h, encodeBase64url(enc.encode(deep))), pair.publicKey))).toBe('INVALID_RECEIPT');
    // Escaped member names are compared decoded.
    const escaped = text.replace('"issuedAt":', '"issuedAt":1,"issued\\u0041t":').replace('issued\\u0041t', 'issuedA\\u0074');
    expect(code(() => verifyReceipt(resigned(h, encodeBase64url(enc.encode(escaped))), pair.publicKey))).toBe('INVALID_RECEIPT');
  });

  it('never takes the key from the message, and refuses private JWKs as public keys', () => {
    expect(parseReceipt(good).parsed.header.kid).toBe(kid);
    expect(code(() => identityKeyFromJwk({ ...identityJwk(pair.publicKey), d: 'AAAA' }))).toBe('INVALID_JWS');
    expect(code(() => identityKeyFromJwk({ kty: 'EC', crv: 'P-256', x: 'AAAA' }))).toBe('INVALID_JWS');
    expect(identityKeyFromJwk(identityJwk(pair.publicKey)).equals(pair.publicKey)).toBe(true);
    expect(() => verifyJws(good, RECEIPT_TYP, pair.publicKey, 1 << 20)).not.toThrow();
  });
});

describe('signed events', () => {
  const pair = IdentityKeyPair.generate();
  const first = {
    specversion: '1.0' as const,
    id: 'pay-1',
    source: 'urn:bank-a:payments',
    type: 'com.example.payment.created',
    time: '2026-11-30T10:00:00.000Z',
    datacontenttype: 'application/json' as const,
    data: { amount: '100.00', currency: 'EUR' },
    sequence: 1,
    signeruser: 'bank-a',
    signerdevice: 'gateway-1',
  };

  it('verify with jose and with us; the chain hash is the SHA-256 of the previous JWS', async () => {
    const jws1 = signEvent(pair, first);
    const second = { ...first, id: 'pay-2', sequence: 2, previoushash: eventHash(jws1) };
    const jws2 = signEvent(pair, second);
    const key = await importJWK(identityJwk(pair.publicKey), 'EdDSA');
    expect(JSON.parse(dec.decode((await compactVerify(jws2, key)).payload))).toEqual(second);
    expect(verifyEvent(jws2, pair.publicKey).event.previoushash).toBe(encodeBase64url((await import('node:crypto')).createHash('sha256').update(jws1).digest()));
  });

  it('refuses events off the schema', () => {
    const bad: unknown[] = [
      { ...first, specversion: '0.3' },
      { ...first, sequence: 0 },
      { ...first, sequence: 2 },
      { ...first, previoushash: encodeBase64url(new Uint8Array(32)) },
      { ...first, time: 'yesterday' },
      { ...first, id: '' },
      { ...first, id: 'a\nb' },
      { ...first, datacontenttype: 'text/plain' },
      { ...first, other: 1 },
      (({ data: _d, ...rest }) => rest)(first),
    ];
    for (const e of bad) expect(code(() => signEvent(pair, e as never)), JSON.stringify(e).slice(0, 60)).toBe('INVALID_EVENT');
  });
});
