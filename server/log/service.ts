/**
 * The receipt log: admits submitted receipts (admission.ts), appends them through a
 * group-commit sequencer (one transaction per batch, serialized across relays by the
 * tree head's row lock), signs checkpoints (checkpointer.ts) and answers the read API:
 * proofs, tiles, checkpoint history and receipt listings. The HTTP routes are in
 * server/http/log-routes.ts; docs/PROTOCOL.md "Receipt log" documents them.
 */
import type { Logger } from 'pino';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { appendLeaves, consistencyProof, inclusionProof, treeHash } from '../../crypto/tlog/merkle.js';
import { formatTlogProof } from '../../crypto/tlog/proof-format.js';
import { ProtocolError } from '../../protocol/errors.js';
import { LOG_SUBMIT_BURST, LOG_SUBMITS_PER_SECOND, type LoggedReceipt } from '../../protocol/log.js';
import { RateLimiter } from '../ratelimit.js';
import { LOG_APPEND_BATCH_MAX } from '../limits.js';
import { Batcher } from '../batching/batcher.js';
import type { RelayMetrics } from '../metrics.js';
import type { Database } from '../storage/database.js';
import { admitReceipts } from './admission.js';
import { Checkpointer } from './checkpointer.js';
import type { LogKey } from './log-key.js';
import { type AppendedLeaf, type LeafInput, LogStore, type StoredCheckpoint, type StoredLeaf, type TreeHead } from './store.js';

export interface ReceiptLogOptions {
  readonly db: Database;
  readonly backend: CryptoBackend;
  readonly key: LogKey;
  readonly now: () => number;
  readonly logger: Logger;
  readonly metrics: RelayMetrics;
  readonly checkpointIntervalMs: number;
}

export interface SubmitResult {
  readonly entries: readonly LoggedReceipt[];
  readonly checkpoint?: StoredCheckpoint;
}

export class ReceiptLog {
  readonly store: LogStore;
  readonly checkpoints: Checkpointer;
  private readonly sequencer: Batcher<LeafInput, AppendedLeaf>;
  private lastSignedAtMs: number | undefined;
  /** The largest tree size this relay has seen (its own appends, any relay's checkpoints). */
  private treeSize = 0;
  private readonly limiter: RateLimiter;

  constructor(private readonly opts: ReceiptLogOptions) {
    this.store = new LogStore(opts.db);
    this.limiter = new RateLimiter(LOG_SUBMIT_BURST, LOG_SUBMITS_PER_SECOND, opts.now);
    const { metrics } = opts;
    this.checkpoints = new Checkpointer(this.store, opts.key, opts.now, opts.logger, (c) => {
      this.lastSignedAtMs = Math.max(this.lastSignedAtMs ?? 0, c.signedAtMs);
      this.sawSize(c.size);
    });
    // The age is computed when scraped, from the newest checkpoint this relay has seen.
    metrics.setLogCheckpointAge(() => (this.lastSignedAtMs === undefined ? undefined : (opts.now() - this.lastSignedAtMs) / 1000));
    this.sequencer = new Batcher<LeafInput, AppendedLeaf>({ maxBatch: LOG_APPEND_BATCH_MAX, maxWaitMs: 0, concurrency: 1 }, async (items) => {
      const { results, head } = await this.store.append(items, opts.now(), {
        append: (size, hashes, read) => appendLeaves(size, hashes, read, opts.backend),
        root: (size, read) => treeHash(size, read, opts.backend),
      });
      metrics.logReceiptsAppended.inc(results.filter((r) => !r.duplicate).length);
      this.sawSize(head.size);
      return { results };
    });
  }

  async start(): Promise<void> {
    await this.checkpoints.start(this.opts.checkpointIntervalMs);
    this.sawSize((await this.store.treeHead()).size);
  }

  private sawSize(size: number): void {
    this.treeSize = Math.max(this.treeSize, size);
    this.opts.metrics.logTreeSize.set(this.treeSize);
  }

  /** Waits for queued appends and a signing in progress. */
  async stop(): Promise<void> {
    const signing = this.checkpoints.stop();
    await this.sequencer.drained();
    await signing;
  }

  /** Counts a submission refused before admission (malformed request, too many receipts). */
  refused(code: string): void {
    this.opts.metrics.logSubmissionsRefused.inc({ code });
  }

  /**
   * Admits and appends a submission; resolves once every receipt is durably in the log
   * (and, with `checkpoint`, covered by a signed checkpoint).
   */
  async submit(caller: string, receipts: readonly string[], checkpoint: boolean): Promise<SubmitResult> {
    let leaves: LeafInput[];
    try {
      const waitMs = this.limiter.take(caller);
      if (waitMs > 0) throw new ProtocolError('RATE_LIMITED', 'too many receipt log submissions; retry later', { retryAfterMs: waitMs });
      leaves = await admitReceipts(caller, receipts, this.store, this.opts.backend);
    } catch (err) {
      if (err instanceof ProtocolError) this.refused(err.code);
      throw err;
    }
    const appended = await Promise.all(leaves.map((l) => this.sequencer.submit(l)));
    const entries = appended.map((a, i) => ({
      index: a.index,
      leafHash: Buffer.from((leaves[i] as LeafInput).leafHash).toString('base64'),
      duplicate: a.duplicate,
    }));
    if (!checkpoint) return { entries };
    const covering = await this.checkpoints.covering(Math.max(...appended.map((a) => a.index)) + 1);
    return { entries, checkpoint: covering };
  }

  head(): Promise<TreeHead> {
    return this.store.treeHead();
  }

  /** Refuses a `size` beyond the committed tree. */
  private async within(size: number, field: string): Promise<void> {
    const head = await this.store.treeHead();
    if (size > head.size) throw new ProtocolError('BAD_REQUEST', `${field}: beyond the log's size ${head.size}`);
  }

  async inclusion(index: number, size: number): Promise<Uint8Array[]> {
    if (index >= size) throw new ProtocolError('BAD_REQUEST', 'index: must be below size');
    await this.within(size, 'size');
    return inclusionProof(index, size, this.store.reader(), this.opts.backend);
  }

  async consistency(from: number, to: number): Promise<Uint8Array[]> {
    if (from > to) throw new ProtocolError('BAD_REQUEST', 'from: must not exceed to');
    await this.within(to, 'to');
    return consistencyProof(from, to, this.store.reader(), this.opts.backend);
  }

  /**
   * A C2SP tlog-proof for leaf `index`: its inclusion proof in the newest checkpoint
   * (one is signed now if none covers the leaf yet), with that checkpoint.
   */
  async tlogProof(index: number): Promise<string> {
    const head = await this.store.treeHead();
    if (index >= head.size) throw new ProtocolError('BAD_REQUEST', `index: beyond the log's size ${head.size}`);
    const cp = await this.checkpoints.covering(index + 1);
    const proof = await inclusionProof(index, cp.size, this.store.reader(), this.opts.backend);
    return formatTlogProof({ index, proof, checkpoint: cp.note });
  }

  /** Receipts from index `from` that concern `userId` (every receipt for an auditor). */
  async receipts(caller: { userId: string; auditor: boolean }, from: number, limit: number): Promise<StoredLeaf[]> {
    return caller.auditor ? this.store.leaves(from, limit) : this.store.leavesOf(caller.userId, from, limit);
  }
}
