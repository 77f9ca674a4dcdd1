/**
 * `hermetic audit export`: copies what an auditor needs from a relay's receipt log into a
 * directory (docs/AUDIT.md): the log key, the checkpoint history with consistency proofs
 * between successive checkpoints, the receipts in range with their inclusion proofs in
 * the newest checkpoint, and the recipient devices' keys. It streams page by page; only
 * the set of recipient devices is held in memory (at most MAX_AUDIT_DEVICES).
 *
 * The export checks nothing: `hermetic audit verify` does, offline.
 */
import fs from 'node:fs';
import path from 'node:path';
import { parseReceipt } from '../../crypto/evidence/receipt.js';
import { parseCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { parseNote } from '../../crypto/tlog/note.js';
import type { CheckpointRecord } from '../../protocol/log.js';
import { type DeviceRef, EXPORT_FILES, EXPORT_FORMAT, EXPORT_VERSION, type ExportRange, type HashedFile, type JwkLine, type Manifest, type ReceiptLine, decodeJwkLine } from './format.js';
import { type FileDigest, JsonlWriter, writeJsonFile } from './jsonl.js';
import { MAX_AUDIT_DEVICES, MAX_MISSING_DEVICES_LISTED, RELAY_CONCURRENCY } from './limits.js';
import { RelayAnswerError, type RelayClient } from './relay-client.js';

export interface ExportOptions {
  readonly client: RelayClient;
  readonly out: string;
  readonly range: ExportRange;
  readonly now?: () => number;
  /** Called as receipts are written (for a progress bar): done so far, and the head's size. */
  readonly onProgress?: (done: number, total: number) => void;
}

export interface ExportSummary {
  readonly manifest: Manifest;
  readonly dir: string;
  /** Whether the token had the auditor claim (else only its user's receipts were exported). */
  readonly auditor: boolean;
}

/** Thrown when the export cannot be made (the relay failed, the directory is not empty). */
export class ExportError extends Error {
  override readonly name = 'ExportError';
}

/** Runs `task` over `items` with at most `limit` in flight; results in order. */
export async function mapLimited<T, R>(items: readonly T[], limit: number, task: (item: T) => Promise<R>): Promise<R[]> {
  const out: R[] = new Array(items.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < items.length) {
      const i = next++;
      out[i] = await task(items[i] as T);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return out;
}

function prepareDir(dir: string): void {
  if (fs.existsSync(dir)) {
    if (!fs.statSync(dir).isDirectory()) throw new ExportError(`${dir} is not a directory`);
    if (fs.readdirSync(dir).length > 0) throw new ExportError(`${dir} is not empty: an export never overwrites files`);
  } else {
    fs.mkdirSync(dir, { recursive: true });
  }
}

/** Does the receipt fall in the range? (Unparseable receipts are kept: verify reports them.) */
function selected(r: { index: number; receipt: string; submittedAt: number }, range: ExportRange): boolean {
  const { from, to, party } = range;
  if (from && 'time' in from && r.submittedAt < from.time) return false;
  if (to && 'time' in to && r.submittedAt > to.time) return false;
  if (party === undefined) return true;
  try {
    const p = parseReceipt(r.receipt).payload;
    return p.recipient.user === party || p.entries.some((e) => e.sender.user === party);
  } catch {
    return true;
  }
}

function recipientOf(receipt: string): DeviceRef | undefined {
  try {
    const p = parseReceipt(receipt).payload;
    return { user: p.recipient.user, device: p.recipient.device };
  } catch {
    return undefined;
  }
}

export async function exportLog(opts: ExportOptions): Promise<ExportSummary> {
  const { client, out, range } = opts;
  const now = opts.now ?? Date.now;
  prepareDir(out);
  const file = (name: string): string => path.join(out, name);

  const key = await client.key();
  const auditor = await client.isAuditor();
  let size: number;
  try {
    size = parseCheckpoint(parseNote(await client.checkpoint()).text).size;
  } catch (err) {
    if (err instanceof RelayAnswerError) throw err;
    throw new ExportError(`the relay's newest checkpoint is malformed: ${(err as Error).message}`);
  }

  // Checkpoint history up to the head, with a consistency proof for each successive pair.
  const checkpoints = await JsonlWriter.create(file(EXPORT_FILES.checkpoints));
  const consistency = await JsonlWriter.create(file(EXPORT_FILES.consistency));
  let prev: CheckpointRecord | undefined;
  for await (const c of client.checkpoints(0, size)) {
    await checkpoints.write(c);
    if (prev !== undefined) await consistency.write(await client.consistency(prev.size, c.size));
    prev = c;
  }
  const head = prev;
  if (head === undefined || head.size !== size) throw new ExportError(`the relay's checkpoint history has no checkpoint of size ${size}`);
  const digests: Partial<Record<HashedFile, FileDigest>> = {};
  digests[EXPORT_FILES.checkpoints] = await checkpoints.close();
  digests[EXPORT_FILES.consistency] = await consistency.close();

  // Receipts in range, each with its audit path in the head.
  const receipts = await JsonlWriter.create(file(EXPORT_FILES.receipts));
  const devices = new Map<string, DeviceRef>();
  const fromIndex = range.from && 'index' in range.from ? range.from.index : 0;
  const endIndex = range.to && 'index' in range.to ? Math.min(size, range.to.index + 1) : size;
  let batch: Array<{ index: number; leafHash: string; receipt: string; submittedAt: number }> = [];
  const flush = async (): Promise<void> => {
    const proofs = await mapLimited(batch, RELAY_CONCURRENCY, (r) => client.inclusion(r.index, size));
    for (const [i, r] of batch.entries()) {
      const line: ReceiptLine = { ...r, inclusion: proofs[i]!.hashes };
      await receipts.write(line);
      const d = recipientOf(r.receipt);
      if (d !== undefined && !devices.has(`${d.user}\n${d.device}`)) {
        if (devices.size >= MAX_AUDIT_DEVICES) throw new ExportError(`more than ${MAX_AUDIT_DEVICES} recipient devices`);
        devices.set(`${d.user}\n${d.device}`, d);
      }
    }
    opts.onProgress?.(receipts.lines, endIndex - fromIndex);
    batch = [];
  };
  for await (const r of client.receipts(fromIndex, endIndex)) {
    if (!selected(r, range)) continue;
    batch.push({ index: r.index, leafHash: r.leafHash, receipt: r.receipt, submittedAt: r.submittedAt });
    if (batch.length >= RELAY_CONCURRENCY * 4) await flush();
  }
  await flush();
  digests[EXPORT_FILES.receipts] = await receipts.close();

  // The recipient devices' keys, as the relay serves them now.
  const jwks = await JsonlWriter.create(file(EXPORT_FILES.jwks));
  const missing: DeviceRef[] = [];
  let missingCount = 0;
  const list = [...devices.values()];
  for (let i = 0; i < list.length; i += RELAY_CONCURRENCY * 4) {
    const part = list.slice(i, i + RELAY_CONCURRENCY * 4);
    const keys = await mapLimited(part, RELAY_CONCURRENCY, (d) => client.jwk(d.user, d.device));
    for (const [j, d] of part.entries()) {
      const k = keys[j];
      if (k === undefined) {
        missingCount++;
        if (missing.length < MAX_MISSING_DEVICES_LISTED) missing.push(d);
        continue;
      }
      let line: JwkLine;
      try {
        line = decodeJwkLine({ user: d.user, device: d.device, jwk: { kty: k.kty, crv: k.crv, x: k.x, kid: k.kid } });
      } catch (err) {
        throw new RelayAnswerError(`/v1/users/…/devices/…/jwk`, `malformed key: ${(err as Error).message}`);
      }
      await jwks.write(line);
    }
  }
  digests[EXPORT_FILES.jwks] = await jwks.close();
  digests[EXPORT_FILES.key] = writeJsonFile(file(EXPORT_FILES.key), { origin: key.origin, verifierKey: key.verifierKey });

  const manifest: Manifest = {
    format: EXPORT_FORMAT,
    version: EXPORT_VERSION,
    createdAt: now(),
    relay: client.baseUrl,
    range,
    head: { size: head.size, root: head.root },
    counts: { checkpoints: checkpoints.lines, consistency: consistency.lines, receipts: receipts.lines, jwks: jwks.lines },
    missingDevices: missing,
    missingDeviceCount: missingCount,
    files: digests as Manifest['files'],
  };
  writeJsonFile(file(EXPORT_FILES.manifest), manifest);
  return { manifest, dir: out, auditor };
}
