/**
 * Compact JWS (RFC 7515) with EdDSA over Ed25519 (RFC 8037), signed by a device's
 * identity key, and the identity key as a JWK with its RFC 7638 thumbprint.
 *
 * What a device signs as a JWS — delivery receipts and signed events — can be checked by
 * any standard JOSE library with the device's public JWK. The signing input
 * (`base64url(header) "." base64url(payload)`) always starts with "eyJ", so it can never
 * equal one of Hermetic's own signed transcripts, which all start with "hermetic/v1/"
 * (protocol/labels.ts): a JWS signature never verifies as anything else, nor the reverse.
 *
 * Verification is strict: exactly three canonical base64url parts, a JSON header with
 * exactly `alg` "EdDSA", the expected `typ`, and a `kid` equal to the thumbprint of the
 * key that verifies it (no `crit`, no `jwk`/`jku`/`x5u`: the key is never taken from the
 * message), a bounded size, and a strict RFC 8032 signature check by the backend.
 */
import { IdentityKey, type IdentityKeyPair } from '../identity/identity-key.js';
import type { CryptoBackend } from '../primitives/backend.js';
import { defaultBackend } from '../primitives/index.js';
import { decodeBase64url, encodeBase64url } from '../../protocol/base64url.js';
import { EvidenceError } from './errors.js';
import { jsonProblem } from './json.js';

/** An Ed25519 public key as a JWK (RFC 8037 §2). */
export interface OkpJwk {
  readonly kty: 'OKP';
  readonly crv: 'Ed25519';
  readonly x: string;
}

export interface JwsHeader {
  readonly alg: 'EdDSA';
  readonly typ: string;
  readonly kid: string;
}

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });
const HEADER_MEMBERS = ['alg', 'kid', 'typ'];
/** Longest header accepted (ours are about 120 bytes). */
const MAX_HEADER_BYTES = 512;

/** The identity key as a public JWK. */
export function identityJwk(key: IdentityKey | Uint8Array): OkpJwk {
  return { kty: 'OKP', crv: 'Ed25519', x: encodeBase64url(key instanceof IdentityKey ? key.bytes : key) };
}

/** Thumbprints of identity keys already computed (a verifier checks many JWS per key). */
const thumbprints = new WeakMap<IdentityKey, string>();

/** The RFC 7638 thumbprint (SHA-256, base64url) of an Ed25519 public key's JWK. */
export function jwkThumbprint(key: IdentityKey | Uint8Array | OkpJwk, backend: CryptoBackend = defaultBackend): string {
  if (key instanceof IdentityKey) {
    let t = thumbprints.get(key);
    if (t === undefined) {
      t = jwkThumbprint(identityJwk(key), backend);
      thumbprints.set(key, t);
    }
    return t;
  }
  const jwk = key instanceof Uint8Array ? identityJwk(key) : key;
  // Required members only, in lexicographic order, no whitespace (RFC 7638 §3.2).
  const canonical = `{"crv":"Ed25519","kty":"OKP","x":"${jwk.x}"}`;
  return encodeBase64url(backend.sha256(encoder.encode(canonical)));
}

/** An identity key from a public JWK; INVALID_JWS for anything but an Ed25519 OKP key. */
export function identityKeyFromJwk(jwk: unknown, backend: CryptoBackend = defaultBackend): IdentityKey {
  if (typeof jwk !== 'object' || jwk === null) throw new EvidenceError('INVALID_JWS', 'a JWK is a JSON object');
  const j = jwk as Record<string, unknown>;
  if (j.kty !== 'OKP' || j.crv !== 'Ed25519' || typeof j.x !== 'string') throw new EvidenceError('INVALID_JWS', 'not an Ed25519 OKP JWK');
  if ('d' in j) throw new EvidenceError('INVALID_JWS', 'a private JWK is never accepted where a public key is expected');
  const x = decodeBase64url(j.x);
  if (x === undefined || x.length !== 32) throw new EvidenceError('INVALID_JWS', 'the JWK "x" is not 32 bytes of base64url');
  try {
    return IdentityKey.fromBytes(x, backend);
  } catch (err) {
    throw new EvidenceError('INVALID_JWS', 'the JWK is not a usable Ed25519 public key', { cause: err });
  }
}

/** Signs `payload` as a compact JWS with the device's identity key. */
export function signJws(signer: IdentityKeyPair, typ: string, payload: Uint8Array, backend: CryptoBackend = defaultBackend): string {
  const header: JwsHeader = { alg: 'EdDSA', typ, kid: jwkThumbprint(signer.publicKey, backend) };
  const input = `${encodeBase64url(encoder.encode(JSON.stringify(header)))}.${encodeBase64url(payload)}`;
  return `${input}.${encodeBase64url(signer.sign(encoder.encode(input)))}`;
}

export interface ParsedJws {
  readonly header: JwsHeader;
  readonly payload: Uint8Array;
  /** The signing input and the signature, for `verifyParsedJws`. */
  readonly signingInput: Uint8Array;
  readonly signature: Uint8Array;
}

/**
 * Parses a compact JWS without verifying it (to find the signer by `kid`). Throws
 * INVALID_JWS for anything that is not a well-formed one of type `typ` within `maxBytes`.
 */
export function parseJws(jws: string, typ: string, maxBytes: number): ParsedJws {
  if (typeof jws !== 'string') throw new EvidenceError('INVALID_JWS', 'a JWS is a string');
  if (jws.length > maxBytes) throw new EvidenceError('INVALID_JWS', `a JWS of type ${typ} is at most ${maxBytes} bytes`);
  const first = jws.indexOf('.');
  const second = first < 0 ? -1 : jws.indexOf('.', first + 1);
  if (first < 0 || second < 0 || jws.indexOf('.', second + 1) >= 0) throw new EvidenceError('INVALID_JWS', 'a compact JWS has exactly three parts');
  const h = jws.slice(0, first);
  if (h.length > MAX_HEADER_BYTES) throw new EvidenceError('INVALID_JWS', 'the JWS header is too long');
  const headerBytes = decodeBase64url(h);
  const payload = decodeBase64url(jws.slice(first + 1, second));
  const signature = decodeBase64url(jws.slice(second + 1));
  if (headerBytes === undefined || payload === undefined || signature === undefined) throw new EvidenceError('INVALID_JWS', 'a JWS part is not canonical base64url');
  if (signature.length !== 64) throw new EvidenceError('INVALID_JWS', 'an EdDSA signature is 64 bytes');
  let header: unknown;
  let headerText: string;
  try {
    headerText = decoder.decode(headerBytes);
    header = JSON.parse(headerText);
  } catch {
    throw new EvidenceError('INVALID_JWS', 'the JWS header is not JSON');
  }
  const problem = jsonProblem(headerText, 1);
  if (problem !== undefined) throw new EvidenceError('INVALID_JWS', `the JWS header: ${problem}`);
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new EvidenceError('INVALID_JWS', 'the JWS header is not a JSON object');
  const hd = header as Record<string, unknown>;
  const members = Object.keys(hd).sort();
  if (members.length !== HEADER_MEMBERS.length || members.some((m, i) => m !== HEADER_MEMBERS[i])) {
    throw new EvidenceError('INVALID_JWS', `the JWS header has exactly "alg", "typ" and "kid" (got ${members.slice(0, 8).join(', ')})`);
  }
  if (hd.alg !== 'EdDSA') throw new EvidenceError('INVALID_JWS', 'the JWS algorithm must be EdDSA');
  if (hd.typ !== typ) throw new EvidenceError('INVALID_JWS', `the JWS type must be ${typ}`);
  if (typeof hd.kid !== 'string' || !/^[A-Za-z0-9_-]{43}$/.test(hd.kid)) throw new EvidenceError('INVALID_JWS', 'the JWS kid must be a key thumbprint');
  return { header: hd as unknown as JwsHeader, payload, signingInput: encoder.encode(jws.slice(0, second)), signature };
}

/** Verifies a parsed JWS with `key`: its kid must be the key's thumbprint. Throws BAD_SIGNATURE. */
export function verifyParsedJws(parsed: ParsedJws, key: IdentityKey, backend: CryptoBackend = defaultBackend): void {
  if (parsed.header.kid !== jwkThumbprint(key, backend)) throw new EvidenceError('BAD_SIGNATURE', 'the JWS kid is not the thumbprint of the verifying key');
  if (!key.verify(parsed.signingInput, parsed.signature)) throw new EvidenceError('BAD_SIGNATURE', 'the JWS signature does not verify');
}

/** Parses and verifies; returns the payload bytes. */
export function verifyJws(jws: string, typ: string, key: IdentityKey, maxBytes: number, backend: CryptoBackend = defaultBackend): ParsedJws {
  const parsed = parseJws(jws, typ, maxBytes);
  verifyParsedJws(parsed, key, backend);
  return parsed;
}

/** The JSON payload of a JWS, as a plain object (INVALID_* per `code` when it is not one). */
export function jsonPayload(parsed: ParsedJws, code: 'INVALID_RECEIPT' | 'INVALID_EVENT'): Record<string, unknown> {
  let v: unknown;
  let text: string;
  try {
    text = decoder.decode(parsed.payload);
    v = JSON.parse(text);
  } catch {
    throw new EvidenceError(code, 'the payload is not JSON');
  }
  // One reading only: no member twice, and no nesting deep enough to hurt a reader.
  const problem = jsonProblem(text);
  if (problem !== undefined) throw new EvidenceError(code, `the payload: ${problem}`);
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new EvidenceError(code, 'the payload is not a JSON object');
  return v as Record<string, unknown>;
}
