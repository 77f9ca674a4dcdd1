/**
 * Minimal length-checked byte reader and writer for the session layer's own binary
 * formats (session state, sender-key state and messages). A reader that runs past the end
 * throws a CryptoError with the code its caller chose (INVALID_STATE for stored state,
 * INVALID_MESSAGE for wire data), so nothing partially decoded ever escapes.
 */
import { CryptoError, type CryptoErrorCode } from '../errors.js';
import { copyBytes } from '../primitives/bytes.js';

export class ByteWriter {
  #buf: Uint8Array;
  #len = 0;

  constructor(capacity = 256) {
    this.#buf = new Uint8Array(capacity);
  }

  #reserve(n: number): void {
    if (this.#len + n <= this.#buf.length) return;
    const next = new Uint8Array(Math.max(this.#buf.length * 2, this.#len + n));
    next.set(this.#buf.subarray(0, this.#len));
    this.#buf = next;
  }

  u8(n: number): this {
    this.#reserve(1);
    this.#buf[this.#len++] = n & 0xff;
    return this;
  }

  u16(n: number): this {
    this.#reserve(2);
    this.#buf[this.#len++] = (n >>> 8) & 0xff;
    this.#buf[this.#len++] = n & 0xff;
    return this;
  }

  u32(n: number): this {
    this.#reserve(4);
    this.#buf[this.#len++] = n >>> 24;
    this.#buf[this.#len++] = (n >>> 16) & 0xff;
    this.#buf[this.#len++] = (n >>> 8) & 0xff;
    this.#buf[this.#len++] = n & 0xff;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.#reserve(b.length);
    this.#buf.set(b, this.#len);
    this.#len += b.length;
    return this;
  }

  /** A fresh array holding exactly what was written. */
  finish(): Uint8Array {
    return this.#buf.slice(0, this.#len);
  }
}

export class ByteReader {
  readonly #buf: Uint8Array;
  readonly #code: CryptoErrorCode;
  readonly #what: string;
  #off = 0;

  constructor(buf: Uint8Array, code: CryptoErrorCode, what: string) {
    this.#buf = buf;
    this.#code = code;
    this.#what = what;
  }

  fail(reason: string): CryptoError {
    return new CryptoError(this.#code, `${this.#what}: ${reason}`);
  }

  #need(n: number): void {
    if (this.#off + n > this.#buf.length) throw this.fail('truncated');
  }

  u8(): number {
    this.#need(1);
    return this.#buf[this.#off++] as number;
  }

  u16(): number {
    this.#need(2);
    const b = this.#buf;
    const v = ((b[this.#off] as number) << 8) | (b[this.#off + 1] as number);
    this.#off += 2;
    return v;
  }

  u32(): number {
    this.#need(4);
    const b = this.#buf;
    const o = this.#off;
    const v = (((b[o] as number) << 24) | ((b[o + 1] as number) << 16) | ((b[o + 2] as number) << 8) | (b[o + 3] as number)) >>> 0;
    this.#off += 4;
    return v;
  }

  /** A copy, so the decoded object never aliases the caller's buffer. */
  bytes(n: number): Uint8Array {
    this.#need(n);
    const out = copyBytes(this.#buf.subarray(this.#off, this.#off + n));
    this.#off += n;
    return out;
  }

  get remaining(): number {
    return this.#buf.length - this.#off;
  }

  /** Rejects trailing bytes: every accepted encoding is exactly one value. */
  end(): void {
    if (this.#off !== this.#buf.length) throw this.fail('trailing bytes');
  }
}
