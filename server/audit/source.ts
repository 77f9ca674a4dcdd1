/**
 * Where `hermetic audit verify` reads the log from: a relay over HTTP, or an export
 * directory. Both give the same things in the same order — the log key, the checkpoint
 * history oldest first, consistency proofs, the receipts in index order with their
 * inclusion proofs, the recipient devices' keys — and neither is trusted: the verifier
 * checks everything they give. Malformed input arrives as an item with an error, never
 * as an exception out of the iteration (except a relay that stops answering).
 */
import path from 'node:path';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import type { JsonObject } from '../../protocol/decode.js';
import type { CheckpointRecord, LogKeyAnswer } from '../../protocol/log.js';
import { parseCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { parseNote } from '../../crypto/tlog/note.js';
import {
  EXPORT_FILES,
  HASHED_FILES,
  type HashedFile,
  type Manifest,
  type ReceiptLine,
  decodeAt,
  decodeCheckpointLine,
  decodeConsistencyLine,
  decodeJwkLine,
  decodeKeyFile,
  decodeManifest,
  decodeReceiptLine,
} from './format.js';
import { type FileDigest, type JsonlLine, JsonlReader, readJsonFile } from './jsonl.js';
import { MAX_AUDIT_DEVICES, MAX_EXPORT_LINE_BYTES, MAX_KEY_FILE_BYTES, MAX_MANIFEST_BYTES } from './limits.js';
import { RelayAnswerError, type RelayClient } from './relay-client.js';

/** One item read: a value, or why the input at `where` was refused. */
export type Item<T> = { readonly where: string; readonly value: T } | { readonly where: string; readonly error: EvidenceError };

/** A receipt as read; `inclusion` is absent when the proof is fetched on demand. */
export type SourceReceipt = Omit<ReceiptLine, 'inclusion'> & { readonly inclusion?: readonly string[] };

export interface AuditSource {
  readonly kind: 'relay' | 'export';
  /** The relay URL or the export directory. */
  readonly location: string;
  key(): Promise<LogKeyAnswer>;
  checkpoints(): AsyncIterable<Item<CheckpointRecord>>;
  /** The consistency proof between sizes `from` < `to`; undefined when the source has none. */
  consistency(from: number, to: number): Promise<readonly string[] | undefined>;
  /** Receipts in index order (those below `headSize`, for a relay). */
  receipts(headSize: number): AsyncIterable<Item<SourceReceipt>>;
  /** The audit path of a receipt in the tree of `size` leaves. */
  inclusion(receipt: SourceReceipt, size: number): Promise<readonly string[]>;
  /** The device's key as a JWK object; undefined when the source has none for it. */
  jwk(user: string, device: string): Promise<JsonObject | undefined>;
  /** Caveats about what this source can show (a token without the auditor claim). */
  notes?(): Promise<string[]>;
  /** The head the source says its proofs are for, if it says. */
  declaredHead?(): { readonly size: number; readonly root: string } | undefined;
  /** Problems found with the input as a whole (file hashes against the manifest). */
  finish(): Promise<EvidenceError[]>;
}

export const NOT_AUDITOR = 'the token has no auditor claim: only receipts naming its user were listed, not the whole log';

/** The live log of a relay. Errors of the relay itself surface as RelayAnswerError. */
export class RelaySource implements AuditSource {
  readonly kind = 'relay';
  readonly location: string;
  readonly #client: RelayClient;
  readonly #keys = new Map<string, Promise<JsonObject | undefined>>();

  constructor(client: RelayClient) {
    this.#client = client;
    this.location = client.baseUrl;
  }

  key(): Promise<LogKeyAnswer> {
    return this.#client.key();
  }

  async notes(): Promise<string[]> {
    return (await this.#client.isAuditor()) ? [] : [NOT_AUDITOR];
  }

  async *checkpoints(): AsyncGenerator<Item<CheckpointRecord>> {
    // The newest checkpoint bounds the history read (the log may grow meanwhile).
    const note = await this.#client.checkpoint();
    let size: number;
    try {
      size = parseCheckpoint(parseNote(note).text).size;
    } catch (err) {
      yield { where: 'GET /v1/log/checkpoint', error: err as EvidenceError };
      return;
    }
    for await (const c of this.#client.checkpoints(0, size)) yield { where: `checkpoint of size ${c.size}`, value: c };
  }

  async consistency(from: number, to: number): Promise<readonly string[]> {
    return (await this.#client.consistency(from, to)).hashes;
  }

  async *receipts(headSize: number): AsyncGenerator<Item<SourceReceipt>> {
    for await (const r of this.#client.receipts(0, headSize)) yield { where: `receipt ${r.index}`, value: r };
  }

  async inclusion(receipt: SourceReceipt, size: number): Promise<readonly string[]> {
    const p = await this.#client.inclusion(receipt.index, size);
    if (p.index !== receipt.index || p.size !== size) throw new RelayAnswerError('/v1/log/proof/inclusion', 'answer names another leaf or size');
    return p.hashes;
  }

  jwk(user: string, device: string): Promise<JsonObject | undefined> {
    const k = `${user}\n${device}`;
    let p = this.#keys.get(k);
    if (p === undefined) {
      if (this.#keys.size >= MAX_AUDIT_DEVICES) return Promise.reject(new RelayAnswerError('jwk', `more than ${MAX_AUDIT_DEVICES} recipient devices`));
      p = this.#client.jwk(user, device);
      this.#keys.set(k, p);
    }
    return p;
  }

  async finish(): Promise<EvidenceError[]> {
    return [];
  }
}

/** Maps a reader's lines through a decoder; bad lines become error items. */
async function* decoded<T>(reader: JsonlReader, name: string, decode: (o: JsonObject) => T): AsyncGenerator<Item<T>> {
  for await (const l of reader.lines()) {
    const where = `${name} line ${l.line}`;
    if ('error' in l) {
      yield { where, error: l.error };
      continue;
    }
    try {
      yield { where, value: decodeAt(where, () => decode(l.value)) };
    } catch (err) {
      yield { where, error: err as EvidenceError };
    }
  }
}

/** An export directory (format.ts). Reads each file once, as a stream. */
export class ExportSource implements AuditSource {
  readonly kind = 'export';
  readonly location: string;
  readonly #problems: EvidenceError[] = [];
  readonly #digests = new Map<HashedFile, FileDigest>();
  readonly #readers = new Map<HashedFile, JsonlReader>();
  #manifest: Manifest | undefined;
  #keys: Promise<Map<string, JsonObject>> | undefined;
  #consistency: AsyncIterator<Item<{ from: number; to: number; hashes: readonly string[] }>> | undefined;
  #pending: Item<{ from: number; to: number; hashes: readonly string[] }> | undefined;

  constructor(dir: string) {
    this.location = dir;
    for (const name of HASHED_FILES) {
      if (name !== EXPORT_FILES.key) this.#readers.set(name, new JsonlReader(path.join(dir, name), name, MAX_EXPORT_LINE_BYTES));
    }
    try {
      const { value } = readJsonFile(path.join(dir, EXPORT_FILES.manifest), EXPORT_FILES.manifest, MAX_MANIFEST_BYTES);
      this.#manifest = decodeAt(EXPORT_FILES.manifest, () => decodeManifest(value));
    } catch (err) {
      if (!(err instanceof EvidenceError)) throw err;
      this.#problems.push(err);
    }
  }

  /** The manifest, when it was readable. */
  get manifest(): Manifest | undefined {
    return this.#manifest;
  }

  declaredHead(): { readonly size: number; readonly root: string } | undefined {
    return this.#manifest?.head;
  }

  #reader(name: HashedFile): JsonlReader {
    return this.#readers.get(name) as JsonlReader;
  }

  async key(): Promise<LogKeyAnswer> {
    const { value, digest } = readJsonFile(path.join(this.location, EXPORT_FILES.key), EXPORT_FILES.key, MAX_KEY_FILE_BYTES);
    this.#digests.set(EXPORT_FILES.key, digest);
    return decodeAt(EXPORT_FILES.key, () => decodeKeyFile(value));
  }

  checkpoints(): AsyncIterable<Item<CheckpointRecord>> {
    return decoded(this.#reader(EXPORT_FILES.checkpoints), EXPORT_FILES.checkpoints, decodeCheckpointLine);
  }

  /**
   * Proofs are asked for in increasing order of sizes, as they appear in the file, so a
   * forward-only cursor finds them without holding the file in memory.
   */
  async consistency(from: number, to: number): Promise<readonly string[] | undefined> {
    this.#consistency ??= decoded(this.#reader(EXPORT_FILES.consistency), EXPORT_FILES.consistency, decodeConsistencyLine)[Symbol.asyncIterator]();
    for (;;) {
      if (this.#pending === undefined) {
        const n = await this.#consistency.next();
        if (n.done) return undefined;
        this.#pending = n.value;
      }
      const item = this.#pending;
      if ('error' in item) {
        this.#problems.push(item.error);
        this.#pending = undefined;
        continue;
      }
      const p = item.value;
      if (p.from === from && p.to === to) {
        this.#pending = undefined;
        return p.hashes;
      }
      if (p.from > from || (p.from === from && p.to > to)) return undefined;
      this.#pending = undefined;
    }
  }

  receipts(): AsyncIterable<Item<SourceReceipt>> {
    return decoded(this.#reader(EXPORT_FILES.receipts), EXPORT_FILES.receipts, decodeReceiptLine);
  }

  async inclusion(receipt: SourceReceipt): Promise<readonly string[]> {
    return receipt.inclusion ?? [];
  }

  async jwk(user: string, device: string): Promise<JsonObject | undefined> {
    // Loaded once, on first use; concurrent callers wait for the same load.
    this.#keys ??= this.#loadKeys();
    return (await this.#keys).get(`${user}\n${device}`);
  }

  async #loadKeys(): Promise<Map<string, JsonObject>> {
    const keys = new Map<string, JsonObject>();
    for await (const item of decoded(this.#reader(EXPORT_FILES.jwks), EXPORT_FILES.jwks, decodeJwkLine)) {
      if ('error' in item) {
        this.#problems.push(item.error);
        continue;
      }
      if (keys.size >= MAX_AUDIT_DEVICES) {
        this.#problems.push(new EvidenceError('INVALID_EXPORT', `${item.where}: more than ${MAX_AUDIT_DEVICES} device keys`));
        break;
      }
      keys.set(`${item.value.user}\n${item.value.device}`, item.value.jwk);
    }
    return keys;
  }

  async finish(): Promise<EvidenceError[]> {
    // Read what was not read to the end, so every file's hash is known.
    await this.jwk('', '');
    while (this.#consistency !== undefined && !(await this.#consistency.next()).done);
    for (const name of HASHED_FILES) {
      const reader = this.#readers.get(name);
      if (reader !== undefined && reader.digest() === undefined) for await (const l of reader.lines()) void (l satisfies JsonlLine);
      const digest = reader !== undefined ? reader.digest() : this.#digests.get(name);
      const want = this.#manifest?.files[name];
      if (digest === undefined || want === undefined) continue;
      if (digest.sha256 !== want.sha256 || digest.bytes !== want.bytes) {
        this.#problems.push(new EvidenceError('INVALID_EXPORT', `${name}: its SHA-256 is not the one in the manifest (the file was changed)`));
      }
    }
    return this.#problems;
  }
}
