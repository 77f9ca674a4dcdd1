/**
 * JSON-lines files of an export, written and read as streams so that memory stays
 * bounded however long the log is. Both sides hash the exact bytes (SHA-256) for the
 * manifest. The reader refuses a line longer than its limit without buffering it, and
 * reports each bad line on its own so one broken line does not hide the rest.
 */
import fs from 'node:fs';
import { once } from 'node:events';
import { sha256 } from '@noble/hashes/sha2.js';
import { bytesToHex } from '@noble/hashes/utils.js';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import type { JsonObject } from '../../protocol/decode.js';

const NEWLINE = 0x0a;
const decoder = new TextDecoder('utf-8', { fatal: true });

export interface FileDigest {
  readonly sha256: string;
  readonly bytes: number;
}

/** Appends JSON values, one per line, waiting for the disk when its buffer is full. */
export class JsonlWriter {
  readonly #stream: fs.WriteStream;
  readonly #hash = sha256.create();
  #bytes = 0;
  #lines = 0;
  #error: Error | undefined;

  private constructor(stream: fs.WriteStream) {
    this.#stream = stream;
    stream.on('error', (err) => (this.#error = err));
  }

  /** Creates `file`, which must not exist ('wx': an export never overwrites a file). */
  static async create(file: string): Promise<JsonlWriter> {
    const stream = fs.createWriteStream(file, { flags: 'wx', mode: 0o644 });
    await once(stream, 'open');
    return new JsonlWriter(stream);
  }

  get lines(): number {
    return this.#lines;
  }

  async write(value: unknown): Promise<void> {
    if (this.#error) throw this.#error;
    const line = Buffer.from(`${JSON.stringify(value)}\n`, 'utf8');
    this.#hash.update(line);
    this.#bytes += line.length;
    this.#lines++;
    if (!this.#stream.write(line)) await once(this.#stream, 'drain');
  }

  async close(): Promise<FileDigest> {
    if (this.#error) throw this.#error;
    this.#stream.end();
    await once(this.#stream, 'finish');
    return { sha256: bytesToHex(this.#hash.digest()), bytes: this.#bytes };
  }
}

/** Writes a whole small JSON file and returns its digest. */
export function writeJsonFile(file: string, value: unknown): FileDigest {
  const bytes = Buffer.from(`${JSON.stringify(value, null, 2)}\n`, 'utf8');
  fs.writeFileSync(file, bytes, { flag: 'wx', mode: 0o644 });
  return { sha256: bytesToHex(sha256(bytes)), bytes: bytes.length };
}

/** Reads a whole small JSON file of at most `maxBytes`, with its digest. INVALID_EXPORT otherwise. */
export function readJsonFile(file: string, name: string, maxBytes: number): { value: JsonObject; digest: FileDigest } {
  let fd: number;
  try {
    fd = fs.openSync(file, 'r');
  } catch {
    throw new EvidenceError('INVALID_EXPORT', `${name}: missing or unreadable`);
  }
  try {
    const size = fs.fstatSync(fd).size;
    if (size > maxBytes) throw new EvidenceError('INVALID_EXPORT', `${name}: larger than ${maxBytes} bytes`);
    const bytes = Buffer.alloc(size);
    let read = 0;
    while (read < size) {
      const n = fs.readSync(fd, bytes, read, size - read, read);
      if (n === 0) break;
      read += n;
    }
    const body = bytes.subarray(0, read);
    return { value: parseJsonLine(body, name), digest: { sha256: bytesToHex(sha256(body)), bytes: read } };
  } finally {
    fs.closeSync(fd);
  }
}

function parseJsonLine(bytes: Uint8Array, where: string): JsonObject {
  let v: unknown;
  try {
    v = JSON.parse(decoder.decode(bytes));
  } catch {
    throw new EvidenceError('INVALID_EXPORT', `${where}: not UTF-8 JSON`);
  }
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new EvidenceError('INVALID_EXPORT', `${where}: not a JSON object`);
  return v as JsonObject;
}

/** One line: its number (from 1) and the object, or why it is not one. */
export type JsonlLine = { readonly line: number; readonly value: JsonObject } | { readonly line: number; readonly error: EvidenceError };

/**
 * Reads `file` line by line. Lines over `maxLineBytes`, lines that are not a JSON object,
 * and a last line without its newline are yielded as errors (INVALID_EXPORT). A missing
 * file is one error. `digest()` is the file's hash once every line was read.
 */
export class JsonlReader {
  readonly #file: string;
  readonly #name: string;
  readonly #max: number;
  #digest: FileDigest | undefined;

  constructor(file: string, name: string, maxLineBytes: number) {
    this.#file = file;
    this.#name = name;
    this.#max = maxLineBytes;
  }

  /** The file's digest, after `lines()` ran to the end (undefined before, or if it was missing). */
  digest(): FileDigest | undefined {
    return this.#digest;
  }

  async *lines(): AsyncGenerator<JsonlLine> {
    const hash = sha256.create();
    let bytes = 0;
    let line = 1;
    let parts: Buffer[] = [];
    let pending = 0;
    let skipping = false;
    const err = (message: string): JsonlLine => ({ line, error: new EvidenceError('INVALID_EXPORT', `${this.#name} line ${line}: ${message}`) });
    let stream: fs.ReadStream;
    try {
      stream = fs.createReadStream(this.#file, { highWaterMark: 64 * 1024 });
      await once(stream, 'open');
    } catch {
      yield { line: 0, error: new EvidenceError('INVALID_EXPORT', `${this.#name}: missing or unreadable`) };
      return;
    }
    for await (const chunk of stream as AsyncIterable<Buffer>) {
      hash.update(chunk);
      bytes += chunk.length;
      let start = 0;
      for (;;) {
        const nl = chunk.indexOf(NEWLINE, start);
        const end = nl < 0 ? chunk.length : nl;
        if (!skipping) {
          if (pending + (end - start) > this.#max) {
            // Too long: drop what was gathered and skip to the next newline.
            skipping = true;
            parts = [];
            pending = 0;
          } else if (end > start) {
            parts.push(chunk.subarray(start, end));
            pending += end - start;
          }
        }
        if (nl < 0) break;
        if (skipping) yield err(`longer than ${this.#max} bytes`);
        else {
          const body = Buffer.concat(parts, pending);
          try {
            yield { line, value: parseJsonLine(body, `${this.#name} line ${line}`) };
          } catch (e) {
            yield { line, error: e as EvidenceError };
          }
        }
        parts = [];
        pending = 0;
        skipping = false;
        line++;
        start = nl + 1;
      }
    }
    if (pending > 0 || skipping) yield err('the last line has no newline (truncated file?)');
    this.#digest = { sha256: bytesToHex(hash.digest()), bytes };
  }
}
