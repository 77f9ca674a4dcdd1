/**
 * C2SP signed notes (c2sp.org/signed-note) with Ed25519 keys (signature type 0x01).
 *
 * A note is UTF-8 text ending in a newline, a blank line, then one or more lines
 * `— <key name> <base64(key id || signature)>`. Keys are named; the 4-byte key id is
 * SHA-256(name || 0x0A || 0x01 || public key)[:4]. Text strings for keys:
 *   verifier  `<name>+<8 hex key id>+<base64(0x01 || public key)>`
 *   signer    `PRIVATE+KEY+<name>+<8 hex key id>+<base64(0x01 || seed)>`
 * The signer string is a secret: NoteSigner never prints it (toString, JSON, inspect);
 * only `exportSignerKey()` returns it, for the key store.
 */
import { Ed25519PrivateKey } from '../keys.js';
import type { CryptoBackend, PreparedEd25519PublicKey } from '../primitives/backend.js';
import { concatBytes, copyBytes, readU32be, toHex, u32be, utf8Decode, utf8Encode } from '../primitives/bytes.js';
import { defaultBackend } from '../primitives/index.js';
import { systemRandom, type RandomSource } from '../primitives/random.js';
import { ED25519_PUBLIC_KEY_BYTES, ED25519_SEED_BYTES, ED25519_SIGNATURE_BYTES } from '../primitives/sizes.js';
import { EvidenceError } from '../evidence/errors.js';
import { fromBase64, toBase64 } from './base64.js';
import { MAX_KEY_NAME_BYTES, MAX_KEY_STRING_CHARS, MAX_NOTE_BYTES, MAX_NOTE_SIGNATURES } from './limits.js';

/** Signature type byte for Ed25519 (signed-note §Signature types). */
export const SIG_TYPE_ED25519 = 0x01;

/** The em dash (U+2014) and space that start every signature line. */
const SIG_PREFIX = '\u2014 ';
const SIGNER_PREFIX = 'PRIVATE+KEY+';
const KEY_ID_BYTES = 4;
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

function noteError(message: string): EvidenceError {
  return new EvidenceError('INVALID_NOTE', message);
}

/** Key names: non-empty, bounded, no Unicode spaces, no '+', no control characters. */
export function isValidKeyName(name: unknown): name is string {
  return (
    typeof name === 'string' &&
    name.length > 0 &&
    utf8Encode(name).length <= MAX_KEY_NAME_BYTES &&
    !/[\s+\u0000-\u001f\u007f]/u.test(name)
  );
}

/** key ID = SHA-256(key name || 0x0A || 0x01 || 32-byte Ed25519 public key)[:4], as a uint32. */
export function noteKeyId(name: string, publicKey: Uint8Array, backend: CryptoBackend = defaultBackend): number {
  const digest = backend.sha256(concatBytes(utf8Encode(name), Uint8Array.of(0x0a, SIG_TYPE_ED25519), publicKey));
  return readU32be(digest, 0);
}

const HEX8 = /^[0-9a-f]{8}$/;

/** Splits `<name>+<hex id>+<base64(type || key)>` after the checks every key string shares. */
function parseKeyParts(name: string, idHex: string, keyB64: string, expectedLength: number): { keyId: number; key: Uint8Array } {
  if (!isValidKeyName(name)) throw noteError('key name is empty or has spaces or "+"');
  if (!HEX8.test(idHex)) throw noteError('key id must be 8 lowercase hex digits');
  const raw = fromBase64(keyB64);
  if (raw === undefined || raw.length !== 1 + expectedLength) throw noteError('key must be base64 of the type byte and the key');
  if (raw[0] !== SIG_TYPE_ED25519) throw noteError('only Ed25519 (type 0x01) keys are supported');
  return { keyId: Number.parseInt(idHex, 16), key: raw.subarray(1) };
}

function keyIdHex(keyId: number): string {
  return toHex(u32be(keyId));
}

/** A note verifier key: a name, its key id and an Ed25519 public key (public data). */
export class NoteVerifier {
  readonly name: string;
  readonly keyId: number;
  readonly #publicKey: Uint8Array;
  readonly #prepared: PreparedEd25519PublicKey;

  private constructor(name: string, keyId: number, publicKey: Uint8Array, backend: CryptoBackend) {
    this.name = name;
    this.keyId = keyId;
    this.#publicKey = publicKey;
    this.#prepared = backend.ed25519PreparePublicKey(publicKey);
  }

  /** A verifier for `name` and a 32-byte Ed25519 public key (copied). */
  static fromPublicKey(name: string, publicKey: Uint8Array, backend: CryptoBackend = defaultBackend): NoteVerifier {
    if (!isValidKeyName(name)) throw noteError('key name is empty or has spaces or "+"');
    if (!(publicKey instanceof Uint8Array) || publicKey.length !== ED25519_PUBLIC_KEY_BYTES) {
      throw noteError('Ed25519 public key must be 32 bytes');
    }
    const key = copyBytes(publicKey);
    return new NoteVerifier(name, noteKeyId(name, key, backend), key, backend);
  }

  /**
   * Parses `<name>+<hex key id>+<base64(0x01 || public key)>`. The key id must be the one
   * the name and key give (signed-note: "MUST match"). Throws INVALID_NOTE.
   */
  static parse(vkey: string, backend: CryptoBackend = defaultBackend): NoteVerifier {
    if (typeof vkey !== 'string' || vkey.length > MAX_KEY_STRING_CHARS) throw noteError('verifier key is not a bounded string');
    const parts = vkey.split('+');
    // The base64 part may itself contain '+': the name and id are the first two fields.
    if (parts.length < 3) throw noteError('verifier key must be name+id+key');
    const [name, idHex] = parts as [string, string];
    const { keyId, key } = parseKeyParts(name, idHex, parts.slice(2).join('+'), ED25519_PUBLIC_KEY_BYTES);
    const verifier = NoteVerifier.fromPublicKey(name, key, backend);
    if (verifier.keyId !== keyId) throw noteError('verifier key id does not match its name and key');
    return verifier;
  }

  /** A copy of the Ed25519 public key. */
  get publicKey(): Uint8Array {
    return copyBytes(this.#publicKey);
  }

  /** True when `signature` (64 bytes) is this key's signature over `message`. */
  verify(message: Uint8Array, signature: Uint8Array): boolean {
    return signature.length === ED25519_SIGNATURE_BYTES && this.#prepared.verify(signature, message);
  }

  /** The verifier key string. */
  toString(): string {
    return `${this.name}+${keyIdHex(this.keyId)}+${toBase64(concatBytes(Uint8Array.of(SIG_TYPE_ED25519), this.#publicKey))}`;
  }

  toJSON(): string {
    return this.toString();
  }

  [INSPECT](): string {
    return `NoteVerifier(${this.toString()})`;
  }
}

/** A note signing key: a name and an Ed25519 seed. Printing it never shows the seed. */
export class NoteSigner {
  readonly name: string;
  readonly keyId: number;
  readonly #key: Ed25519PrivateKey;
  readonly #verifier: NoteVerifier;

  private constructor(name: string, key: Ed25519PrivateKey, backend: CryptoBackend) {
    this.name = name;
    this.#key = key;
    this.#verifier = NoteVerifier.fromPublicKey(name, key.publicKey, backend);
    this.keyId = this.#verifier.keyId;
  }

  /** A new random key for `name`. */
  static generate(name: string, random: RandomSource = systemRandom, backend: CryptoBackend = defaultBackend): NoteSigner {
    if (!isValidKeyName(name)) throw noteError('key name is empty or has spaces or "+"');
    return new NoteSigner(name, Ed25519PrivateKey.generate(random, backend), backend);
  }

  /** From `name` and a stored 32-byte seed (copied). */
  static fromSeed(name: string, seed: Uint8Array, backend: CryptoBackend = defaultBackend): NoteSigner {
    if (!isValidKeyName(name)) throw noteError('key name is empty or has spaces or "+"');
    if (!(seed instanceof Uint8Array) || seed.length !== ED25519_SEED_BYTES) throw noteError('Ed25519 seed must be 32 bytes');
    return new NoteSigner(name, Ed25519PrivateKey.fromSeed(seed, backend), backend);
  }

  /**
   * Parses `PRIVATE+KEY+<name>+<hex key id>+<base64(0x01 || seed)>`; the key id must be
   * the one the name and derived public key give. Throws INVALID_NOTE (the message never
   * contains the key).
   */
  static parse(skey: string, backend: CryptoBackend = defaultBackend): NoteSigner {
    if (typeof skey !== 'string' || skey.length > MAX_KEY_STRING_CHARS || !skey.startsWith(SIGNER_PREFIX)) {
      throw noteError('signer key must start with PRIVATE+KEY+');
    }
    const parts = skey.slice(SIGNER_PREFIX.length).split('+');
    if (parts.length < 3) throw noteError('signer key must be PRIVATE+KEY+name+id+key');
    const [name, idHex] = parts as [string, string];
    const { keyId, key } = parseKeyParts(name, idHex, parts.slice(2).join('+'), ED25519_SEED_BYTES);
    const signer = NoteSigner.fromSeed(name, key, backend);
    key.fill(0);
    if (signer.keyId !== keyId) throw noteError('signer key id does not match its name and key');
    return signer;
  }

  /** The matching verifier. */
  get verifier(): NoteVerifier {
    return this.#verifier;
  }

  /** The Ed25519 signature (64 bytes) over `message`. */
  sign(message: Uint8Array): Uint8Array {
    return this.#key.sign(message);
  }

  /** The secret signer key string, for the key store only. */
  exportSignerKey(): string {
    const seed = this.#key.exportSeed();
    const encoded = toBase64(concatBytes(Uint8Array.of(SIG_TYPE_ED25519), seed));
    seed.fill(0);
    return `${SIGNER_PREFIX}${this.name}+${keyIdHex(this.keyId)}+${encoded}`;
  }

  toString(): string {
    return `NoteSigner(${this.name}+${keyIdHex(this.keyId)})`;
  }

  toJSON(): { type: string; name: string; keyId: string } {
    return { type: 'NoteSigner', name: this.name, keyId: keyIdHex(this.keyId) };
  }

  [INSPECT](): string {
    return this.toString();
  }
}

/** One signature line of a note. */
export interface NoteSignature {
  readonly name: string;
  readonly keyId: number;
  /** The signature bytes after the key id. */
  readonly signature: Uint8Array;
}

export interface OpenedNote {
  /** The signed text, ending in a newline. */
  readonly text: string;
  /** The known keys whose signatures verified, in the note's order. */
  readonly verifiedBy: readonly NoteVerifier[];
  /** Signatures by keys not among the verifiers (ignored, as the spec requires). */
  readonly unknown: readonly NoteSignature[];
}

/** Control characters other than newline make a note invalid (signed-note §Format). */
// eslint-disable-next-line no-control-regex
const FORBIDDEN_CONTROL = /[\u0000-\u0009\u000b-\u001f]/;

function checkText(text: string): void {
  if (text.length === 0 || !text.endsWith('\n')) throw noteError('note text must end with a newline');
  if (FORBIDDEN_CONTROL.test(text)) throw noteError('note has a control character other than newline');
}

/**
 * Signs `text` (which must end in a newline) with each signer, in order, giving the
 * note's text form.
 */
export function signNote(text: string, signers: NoteSigner | readonly NoteSigner[]): string {
  if (typeof text !== 'string') throw noteError('note text must be a string');
  checkText(text);
  const list = Array.isArray(signers) ? (signers as readonly NoteSigner[]) : [signers as NoteSigner];
  if (list.length === 0 || list.length > MAX_NOTE_SIGNATURES) throw noteError('a note needs between 1 and 32 signatures');
  const message = utf8Encode(text);
  if (message.length > MAX_NOTE_BYTES) throw noteError('note is over the size limit');
  let note = `${text}\n`;
  for (const signer of list) {
    const sig = concatBytes(u32be(signer.keyId), signer.sign(message));
    note += `${SIG_PREFIX}${signer.name} ${toBase64(sig)}\n`;
  }
  if (utf8Encode(note).length > MAX_NOTE_BYTES) throw noteError('note is over the size limit');
  return note;
}

/** Splits a note into its text and parsed signature lines (no verification). */
export function parseNote(note: string | Uint8Array): { text: string; signatures: NoteSignature[] } {
  let s: string;
  if (note instanceof Uint8Array) {
    if (note.length > MAX_NOTE_BYTES) throw noteError('note is over the size limit');
    try {
      s = utf8Decode(note);
    } catch {
      throw noteError('note is not valid UTF-8');
    }
  } else if (typeof note === 'string') {
    if (note.length > MAX_NOTE_BYTES) throw noteError('note is over the size limit');
    const bytes = utf8Encode(note);
    if (bytes.length > MAX_NOTE_BYTES) throw noteError('note is over the size limit');
    // A lone surrogate has no UTF-8 form: the encoder replaces it, so the round trip differs.
    if (utf8Decode(bytes) !== note) throw noteError('note is not valid UTF-8');
    s = note;
  } else {
    throw noteError('note must be a string or bytes');
  }
  checkText(s);
  const split = s.lastIndexOf('\n\n');
  if (split < 0) throw noteError('note has no blank line before its signatures');
  const text = s.slice(0, split + 1);
  const lines = s.slice(split + 2, -1).split('\n');
  if (lines.length > MAX_NOTE_SIGNATURES) throw noteError('note has too many signatures');
  const signatures = lines.map(parseSignatureLine);
  return { text, signatures };
}

function parseSignatureLine(line: string): NoteSignature {
  if (!line.startsWith(SIG_PREFIX)) throw noteError('signature line must start with an em dash and a space');
  const rest = line.slice(SIG_PREFIX.length);
  const space = rest.indexOf(' ');
  if (space < 0) throw noteError('signature line must be "— name signature"');
  const name = rest.slice(0, space);
  if (!isValidKeyName(name)) throw noteError('signature key name is empty or has spaces or "+"');
  const raw = fromBase64(rest.slice(space + 1));
  if (raw === undefined) throw noteError('signature is not canonical base64');
  if (raw.length <= KEY_ID_BYTES) throw noteError('signature is too short');
  return { name, keyId: readU32be(raw, 0), signature: raw.slice(KEY_ID_BYTES) };
}

/**
 * Opens a signed note: checks its form, verifies every signature by a known key and
 * returns the text. Unknown keys' signatures are ignored (returned in `unknown`).
 * Throws EvidenceError: INVALID_NOTE for a malformed note, a key signing twice, or no
 * signature by a known key; BAD_SIGNATURE when a known key's signature does not verify.
 */
export function openNote(note: string | Uint8Array, verifiers: readonly NoteVerifier[]): OpenedNote {
  const known = new Map<string, NoteVerifier>();
  for (const v of verifiers) {
    const key = `${v.name}\n${v.keyId}`;
    if (known.has(key)) throw noteError('two verifier keys share a name and key id');
    known.set(key, v);
  }
  const { text, signatures } = parseNote(note);
  const message = utf8Encode(text);
  const verifiedBy: NoteVerifier[] = [];
  const unknown: NoteSignature[] = [];
  for (const sig of signatures) {
    const verifier = known.get(`${sig.name}\n${sig.keyId}`);
    if (verifier === undefined) {
      unknown.push(sig);
      continue;
    }
    if (verifiedBy.includes(verifier)) throw noteError('a key signed the note twice');
    if (!verifier.verify(message, sig.signature)) {
      throw new EvidenceError('BAD_SIGNATURE', `signature by ${sig.name} does not verify`);
    }
    verifiedBy.push(verifier);
  }
  if (verifiedBy.length === 0) throw noteError('note has no signature by a known key');
  return { text, verifiedBy, unknown };
}
