/**
 * A bounds-checked reader and a growable writer for binary frames. Every read checks the
 * remaining length first and fails with ProtocolError('BAD_REQUEST'), so a truncated or
 * lying frame can never read past its end or allocate from a length it claims.
 */
import { ProtocolError } from './errors.js';

const encoder = new TextEncoder();
const decoder = new TextDecoder('utf-8', { fatal: true });

/**
 * Integers are read from the bytes directly rather than through a DataView: a reader is
 * made per frame, and a DataView per frame was an allocation per SEND on the relay.
 */
export class BinaryReader {
  private off = 0;

  constructor(private readonly buf: Uint8Array) {}

  /** The big-endian u32 at `at` (bounds already checked). */
  private u32At(at: number): number {
    const b = this.buf;
    return (b[at] as number) * 0x100_0000 + (((b[at + 1] as number) << 16) | ((b[at + 2] as number) << 8) | (b[at + 3] as number));
  }

  get remaining(): number {
    return this.buf.length - this.off;
  }

  private need(n: number, what: string): void {
    if (this.remaining < n) throw new ProtocolError('BAD_REQUEST', `frame truncated reading ${what}`);
  }

  u8(what: string): number {
    this.need(1, what);
    return this.buf[this.off++] as number;
  }

  u16(what: string): number {
    this.need(2, what);
    const v = ((this.buf[this.off] as number) << 8) | (this.buf[this.off + 1] as number);
    this.off += 2;
    return v;
  }

  u32(what: string): number {
    this.need(4, what);
    const v = this.u32At(this.off);
    this.off += 4;
    return v;
  }

  /** u64 as a JS number; values above 2^53 are refused (sequences and times fit). */
  u64(what: string): number {
    this.need(8, what);
    const hi = this.u32At(this.off);
    const lo = this.u32At(this.off + 4);
    this.off += 8;
    if (hi > 0x1fffff) throw new ProtocolError('BAD_REQUEST', `${what} out of range`);
    return hi * 0x1_0000_0000 + lo;
  }

  /** Exactly n bytes, as a view into the frame (copy it if it must outlive the frame). */
  bytes(n: number, what: string): Uint8Array {
    this.need(n, what);
    const b = this.buf.subarray(this.off, this.off + n);
    this.off += n;
    return b;
  }

  /**
   * Exactly n bytes, copied out of the frame. (Not `bytes(n).slice()`: on a Node Buffer,
   * which is what Node's sockets hand over, slice() is a view of the same memory.)
   */
  copy(n: number, what: string): Uint8Array {
    return new Uint8Array(this.bytes(n, what));
  }

  /** u8 length + UTF-8 string, length checked against max before reading. */
  str8(what: string, max: number, pattern?: RegExp): string {
    const n = this.u8(what);
    if (n === 0 || n > max) throw new ProtocolError('BAD_REQUEST', `${what}: length must be 1..${max}`);
    let s: string;
    try {
      s = decoder.decode(this.bytes(n, what));
    } catch {
      throw new ProtocolError('BAD_REQUEST', `${what}: not UTF-8`);
    }
    if (pattern && !pattern.test(s)) throw new ProtocolError('BAD_REQUEST', `${what}: has characters outside the allowed set`);
    return s;
  }

  end(what: string): void {
    if (this.remaining !== 0) throw new ProtocolError('BAD_REQUEST', `${what}: ${this.remaining} trailing bytes`);
  }
}

export class BinaryWriter {
  private buf: Uint8Array;
  private view: DataView;
  private off = 0;

  constructor(initial = 256) {
    this.buf = new Uint8Array(initial);
    this.view = new DataView(this.buf.buffer);
  }

  private room(n: number): void {
    if (this.off + n <= this.buf.length) return;
    let size = this.buf.length * 2;
    while (size < this.off + n) size *= 2;
    const next = new Uint8Array(size);
    next.set(this.buf.subarray(0, this.off));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }

  u8(v: number): this {
    this.room(1);
    this.buf[this.off++] = v;
    return this;
  }

  u16(v: number): this {
    this.room(2);
    this.view.setUint16(this.off, v);
    this.off += 2;
    return this;
  }

  u32(v: number): this {
    this.room(4);
    this.view.setUint32(this.off, v);
    this.off += 4;
    return this;
  }

  u64(v: number): this {
    if (!Number.isSafeInteger(v) || v < 0) throw new RangeError('u64 must be a non-negative safe integer');
    this.room(8);
    this.view.setUint32(this.off, Math.floor(v / 0x1_0000_0000));
    this.view.setUint32(this.off + 4, v >>> 0);
    this.off += 8;
    return this;
  }

  bytes(b: Uint8Array): this {
    this.room(b.length);
    this.buf.set(b, this.off);
    this.off += b.length;
    return this;
  }

  str8(s: string): this {
    if (s.length <= 255 && this.asciiInto(s)) return this;
    // UTF-8 takes at most 3 bytes per UTF-16 unit: encode in place, then write the length.
    this.room(1 + s.length * 3);
    const { written } = encoder.encodeInto(s, this.buf.subarray(this.off + 1));
    if (written > 255) throw new RangeError('string too long for a u8 length');
    this.buf[this.off] = written;
    this.off += 1 + written;
    return this;
  }

  /** Writes `s` as str8 when it is all ASCII (ids always are): for a few dozen
   * characters about twice as fast as the encoder call. False, having written nothing
   * (bytes past the end do not count), otherwise. */
  private asciiInto(s: string): boolean {
    this.room(1 + s.length);
    const at = this.off + 1;
    for (let i = 0; i < s.length; i++) {
      const c = s.charCodeAt(i);
      if (c >= 0x80) return false;
      this.buf[at + i] = c;
    }
    this.buf[this.off] = s.length;
    this.off = at + s.length;
    return true;
  }

  /** The bytes written so far: a view of the writer's buffer, valid until it is written
   * again (see reset). */
  finish(): Uint8Array {
    return this.buf.subarray(0, this.off);
  }

  /** Starts over in the same buffer, so one writer can encode frame after frame without
   * allocating; each finish() view is then only valid until the next write. */
  reset(): this {
    this.off = 0;
    return this;
  }
}
