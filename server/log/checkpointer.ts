/**
 * Signs the receipt log's checkpoints (C2SP tlog-checkpoint in a signed note): on a
 * timer when the tree has grown since the last one, and on demand when a submitter asks
 * for a checkpoint covering its receipts. Every checkpoint is kept (log_checkpoints).
 * Relays sharing the database sign from the committed tree head; two signing the same
 * size keep the first one stored (with one key and Ed25519's deterministic signatures,
 * the two are the same bytes anyway). Checkpoints are kept per log key: after a key
 * rotation the newest checkpoint served is one the current key signed.
 */
import type { Logger } from 'pino';
import { signCheckpoint } from '../../crypto/tlog/checkpoint.js';
import type { LogKey } from './log-key.js';
import type { LogStore, StoredCheckpoint } from './store.js';

export class Checkpointer {
  /** The signing in progress: at most one at a time in this process. */
  private signing: Promise<StoredCheckpoint> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private ticking = false;
  /** This log key's verifier key string: checkpoints are kept per key. */
  private readonly verifierKey: string;

  constructor(
    private readonly store: LogStore,
    private readonly key: LogKey,
    private readonly now: () => number,
    private readonly logger: Logger,
    /** Told of the newest checkpoint each time one is signed or found (by any relay). */
    private readonly onNewest: (c: StoredCheckpoint) => void = () => undefined,
  ) {
    this.verifierKey = key.signer.verifier.toString();
  }

  /** The newest checkpoint (signing one for the current tree when there is none yet). */
  async latest(): Promise<StoredCheckpoint> {
    return (await this.store.latestCheckpoint(this.verifierKey)) ?? this.signNow();
  }

  /** A checkpoint of size at least `minSize` (which the tree must already have). */
  async covering(minSize: number): Promise<StoredCheckpoint> {
    const latest = await this.store.latestCheckpoint(this.verifierKey);
    if (latest !== undefined && latest.size >= minSize) return latest;
    return this.signNow();
  }

  /** Signs the committed tree head, unless a checkpoint of its size exists. */
  signNow(): Promise<StoredCheckpoint> {
    const run = (this.signing ?? Promise.resolve())
      .catch(() => undefined)
      .then(async () => {
        const head = await this.store.treeHead();
        const latest = await this.store.latestCheckpoint(this.verifierKey);
        if (latest !== undefined && latest.size >= head.size) {
          this.onNewest(latest);
          return latest;
        }
        const note = signCheckpoint({ origin: this.key.origin, size: head.size, rootHash: head.root, extensions: [] }, this.key.signer);
        const kept = await this.store.saveCheckpoint(this.verifierKey, { size: head.size, root: head.root, note, signedAtMs: this.now() });
        this.onNewest(kept);
        return kept;
      });
    this.signing = run;
    return run;
  }

  /** Signs every `intervalMs` when the tree has grown; also once now. */
  start(intervalMs: number): Promise<StoredCheckpoint> {
    this.timer = setInterval(() => void this.tick(), intervalMs);
    this.timer.unref();
    return this.signNow();
  }

  private async tick(): Promise<void> {
    if (this.ticking) return;
    this.ticking = true;
    try {
      await this.signNow();
    } catch (err) {
      // The database may be away for a while: the next tick tries again.
      this.logger.warn({ err: { message: (err as Error).message } }, 'log checkpoint not signed');
    } finally {
      this.ticking = false;
    }
  }

  /** Stops the timer and waits for a signing in progress. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.signing?.catch(() => undefined);
  }
}
