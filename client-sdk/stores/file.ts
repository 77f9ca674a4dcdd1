/**
 * A durable store in a directory, for Node: every commit is one record appended to a log
 * and flushed to disk (fdatasync) before it resolves; the whole state is rewritten now and
 * then as a snapshot (written to a temporary file, flushed, renamed over the old one) and
 * the log emptied. A record cut short by a crash fails its checksum and is dropped with
 * everything after it, so a commit is either wholly there after a restart or not at all.
 *
 * A lock file keeps a second process (or a second client in this one) out.
 *
 * Record: u32 length | 8-byte SHA-256 prefix of the body | body, body = u32 write count,
 * then per write: u8 op (1 put, 2 delete) | u16 ns length | ns | u16 key length | key |
 * (put) u32 value length | value. The snapshot is "HMSTORE1" and one such body.
 */
import { createHash } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { SdkError } from '../errors.js';
import type { Store, StoreWrite } from './store.js';

const MAGIC = Buffer.from('HMSTORE1');
const LOG = 'log';
const SNAPSHOT = 'snapshot';
const LOCK = 'lock';
/** The log is folded into a new snapshot once it is larger than this and than the snapshot. */
const COMPACT_MIN_BYTES = 4 * 1024 * 1024;

/** Writes all of `buf` at the file's current end: a write may write less than asked
 * (a full disk, a file-size limit) without failing. */
async function writeFully(fh: fs.promises.FileHandle, buf: Buffer): Promise<void> {
  let off = 0;
  while (off < buf.length) {
    const { bytesWritten } = await fh.write(buf, off, buf.length - off);
    if (bytesWritten <= 0) throw new Error(`a write wrote nothing (${buf.length - off} bytes left)`);
    off += bytesWritten;
  }
}

const OP_PUT = 1;
const OP_DELETE = 2;

function digest(body: Buffer): Buffer {
  return createHash('sha256').update(body).digest().subarray(0, 8);
}

function encodeWrites(writes: Iterable<StoreWrite>): Buffer {
  const parts: Buffer[] = [];
  let count = 0;
  for (const w of writes) {
    count++;
    const ns = Buffer.from(w.ns, 'utf8');
    const key = Buffer.from(w.key, 'utf8');
    const head = Buffer.alloc(1 + 2 + ns.length + 2 + key.length);
    let o = head.writeUInt8('value' in w ? OP_PUT : OP_DELETE, 0);
    o = head.writeUInt16BE(ns.length, o);
    o += ns.copy(head, o);
    o = head.writeUInt16BE(key.length, o);
    key.copy(head, o);
    parts.push(head);
    if ('value' in w) {
      const len = Buffer.alloc(4);
      len.writeUInt32BE(w.value.length);
      parts.push(len, Buffer.from(w.value.buffer, w.value.byteOffset, w.value.byteLength));
    }
  }
  const n = Buffer.alloc(4);
  n.writeUInt32BE(count);
  return Buffer.concat([n, ...parts]);
}

function decodeWrites(body: Buffer): StoreWrite[] {
  let o = 0;
  const need = (k: number): void => {
    if (o + k > body.length) throw new Error('truncated');
  };
  need(4);
  const count = body.readUInt32BE(o);
  o += 4;
  const out: StoreWrite[] = [];
  for (let i = 0; i < count; i++) {
    need(1 + 2);
    const op = body.readUInt8(o);
    const nsLen = body.readUInt16BE(o + 1);
    o += 3;
    need(nsLen + 2);
    const ns = body.toString('utf8', o, o + nsLen);
    o += nsLen;
    const keyLen = body.readUInt16BE(o);
    o += 2;
    need(keyLen);
    const key = body.toString('utf8', o, o + keyLen);
    o += keyLen;
    if (op === OP_PUT) {
      need(4);
      const len = body.readUInt32BE(o);
      o += 4;
      need(len);
      out.push({ ns, key, value: new Uint8Array(body.subarray(o, o + len)) });
      o += len;
    } else if (op === OP_DELETE) {
      out.push({ ns, key, delete: true });
    } else {
      throw new Error(`unknown op ${op}`);
    }
  }
  if (o !== body.length) throw new Error('trailing bytes');
  return out;
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

export class FileStore implements Store {
  readonly #dir: string;
  readonly #data = new Map<string, Map<string, Uint8Array>>();
  #log: fs.promises.FileHandle | undefined;
  #logBytes = 0;
  #snapshotBytes = 0;
  /** Compact once the log is larger than this (raised after a compaction that failed). */
  #compactAt = COMPACT_MIN_BYTES;
  /** Set when a failed write could not be undone: every later commit is refused. */
  #broken: SdkError | undefined;
  #tail: Promise<unknown> = Promise.resolve();
  #closed = false;

  private constructor(dir: string) {
    this.#dir = dir;
  }

  /** Opens (creating) the store in `dir`. Throws STORE_CORRUPT for an unreadable snapshot. */
  static async open(dir: string): Promise<FileStore> {
    await fs.promises.mkdir(dir, { recursive: true, mode: 0o700 });
    const store = new FileStore(dir);
    await store.#lock();
    try {
      await store.#load();
    } catch (err) {
      await store.#unlock();
      throw err;
    }
    return store;
  }

  async #lock(): Promise<void> {
    const file = path.join(this.#dir, LOCK);
    for (let attempt = 0; attempt < 2; attempt++) {
      try {
        await fs.promises.writeFile(file, String(process.pid), { flag: 'wx', mode: 0o600 });
        return;
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
        const holder = Number(await fs.promises.readFile(file, 'utf8').catch(() => ''));
        if (Number.isInteger(holder) && holder > 0 && pidAlive(holder)) {
          throw new SdkError('INVALID_ARGUMENT', `the store in ${this.#dir} is in use by process ${holder}`);
        }
        await fs.promises.rm(file, { force: true }); // left by a process that died
      }
    }
    throw new SdkError('INVALID_ARGUMENT', `could not lock the store in ${this.#dir}`);
  }

  async #unlock(): Promise<void> {
    await fs.promises.rm(path.join(this.#dir, LOCK), { force: true });
  }

  #apply(writes: readonly StoreWrite[]): void {
    for (const w of writes) {
      let m = this.#data.get(w.ns);
      if (!m) this.#data.set(w.ns, (m = new Map()));
      if ('value' in w) m.set(w.key, w.value);
      else m.delete(w.key);
    }
  }

  async #load(): Promise<void> {
    const snapshot = await fs.promises.readFile(path.join(this.#dir, SNAPSHOT)).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (snapshot !== undefined) {
      if (snapshot.length < MAGIC.length + 8 || !snapshot.subarray(0, MAGIC.length).equals(MAGIC)) {
        throw new SdkError('STORE_CORRUPT', 'the store snapshot is not a snapshot of this format');
      }
      const sum = snapshot.subarray(MAGIC.length, MAGIC.length + 8);
      const body = snapshot.subarray(MAGIC.length + 8);
      if (!digest(body).equals(sum)) throw new SdkError('STORE_CORRUPT', 'the store snapshot fails its checksum');
      this.#apply(decodeWrites(body));
      this.#snapshotBytes = snapshot.length;
    }
    const logPath = path.join(this.#dir, LOG);
    const log = await fs.promises.readFile(logPath).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return Buffer.alloc(0);
      throw err;
    });
    let o = 0;
    while (o + 12 <= log.length) {
      const len = log.readUInt32BE(o);
      if (o + 12 + len > log.length) break;
      const body = log.subarray(o + 12, o + 12 + len);
      if (!digest(body).equals(log.subarray(o + 4, o + 12))) break;
      let writes: StoreWrite[];
      try {
        writes = decodeWrites(body);
      } catch {
        break;
      }
      this.#apply(writes);
      o += 12 + len;
    }
    this.#log = await fs.promises.open(logPath, 'a+', 0o600);
    if (o < log.length) {
      // A record cut short by a crash: it never committed. Drop it.
      await this.#log.truncate(o);
      await this.#log.datasync();
    }
    this.#logBytes = o;
  }

  async get(ns: string, key: string): Promise<Uint8Array | undefined> {
    this.#open();
    return this.#data.get(ns)?.get(key)?.slice();
  }

  async list(ns: string, prefix = ''): Promise<Array<[string, Uint8Array]>> {
    this.#open();
    const m = this.#data.get(ns);
    if (!m) return [];
    return [...m.entries()]
      .filter(([k]) => k.startsWith(prefix))
      .sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))
      .map(([k, v]) => [k, v.slice()]);
  }

  commit(writes: readonly StoreWrite[]): Promise<void> {
    this.#open();
    const copy = writes.map((w) => ('value' in w ? { ns: w.ns, key: w.key, value: w.value.slice() } : w));
    const done = this.#tail.then(async () => {
      const body = encodeWrites(copy);
      const head = Buffer.alloc(12);
      head.writeUInt32BE(body.length, 0);
      digest(body).copy(head, 4);
      const log = this.#log as fs.promises.FileHandle;
      if (this.#broken) throw this.#broken;
      try {
        await writeFully(log, Buffer.concat([head, body]));
        await log.datasync();
      } catch (err) {
        // Nothing of this commit may survive (a torn record would also hide every later
        // one at the next load): cut the log back to the last whole record. If even that
        // fails, refuse every later commit until the store is opened again.
        await log
          .truncate(this.#logBytes)
          .then(() => log.datasync())
          .catch((cause: unknown) => {
            this.#broken = new SdkError('STORE_CORRUPT', 'the store log could not be restored after a failed write; open the store again', { cause });
          });
        throw err;
      }
      this.#logBytes += head.length + body.length;
      this.#apply(copy);
      // The commit is durable from here on, whatever compaction does: a compaction that
      // fails is tried again once the log has grown by another COMPACT_MIN_BYTES.
      if (this.#logBytes > this.#compactAt && this.#logBytes > this.#snapshotBytes) {
        await this.#compact().catch(() => {
          this.#compactAt = this.#logBytes + COMPACT_MIN_BYTES;
        });
      }
    });
    this.#tail = done.catch(() => undefined);
    return done;
  }

  /** Writes the whole state as a new snapshot, then empties the log. */
  async #compact(): Promise<void> {
    const all: StoreWrite[] = [];
    for (const [ns, m] of this.#data) for (const [key, value] of m) all.push({ ns, key, value });
    const body = encodeWrites(all);
    const tmp = path.join(this.#dir, `${SNAPSHOT}.tmp`);
    const fh = await fs.promises.open(tmp, 'w', 0o600);
    try {
      await writeFully(fh, Buffer.concat([MAGIC, digest(body), body]));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.promises.rename(tmp, path.join(this.#dir, SNAPSHOT));
    await this.#syncDir();
    // Replaying the old log over the new snapshot would change nothing; empty it.
    const log = this.#log as fs.promises.FileHandle;
    await log.truncate(0);
    await log.datasync();
    this.#snapshotBytes = MAGIC.length + 8 + body.length;
    this.#logBytes = 0;
    this.#compactAt = COMPACT_MIN_BYTES;
  }

  async #syncDir(): Promise<void> {
    const dh = await fs.promises.open(this.#dir, 'r');
    try {
      await dh.sync();
    } finally {
      await dh.close();
    }
  }

  #open(): void {
    if (this.#closed) throw new SdkError('CLIENT_CLOSED', 'the store is closed');
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#tail;
    await this.#log?.close();
    await this.#unlock();
  }
}
