/**
 * The relay's store-and-forward engine: group-commits SENDs, applies ACKs in batches,
 * keeps one DeliveryStream per connected device, and wakes streams when envelopes
 * commit — directly for this relay's own commits, by LISTEN/NOTIFY for other relays'
 * (one NOTIFY per commit), and by a periodic catch-up scan as a safety net. A commit
 * touching too many mailboxes for one notification sends an "all" notice instead, which
 * asks every other relay for a catch-up scan: at most one scan runs at a time per relay,
 * and requests made meanwhile are merged into one more, so a burst of such commits costs
 * each relay at most two scans, each reading CATCHUP_PAGE_SIZE mailboxes per query. A
 * sweeper removes expired envelopes and idempotency records.
 */
import type { Logger } from 'pino';
import { ACK_BATCH_MAX, ACK_BATCH_MAX_WAIT_MS, CATCHUP_INTERVAL_MS, CATCHUP_PAGE_SIZE, SEND_BATCH_CONCURRENCY, SEND_BATCH_MAX, SEND_PARALLEL_MIN, SWEEP_BATCH, SWEEP_BEHIND_PAUSE_MS, SWEEP_CONCURRENCY, SWEEP_INTERVAL_MS, SWEEP_TICK_BUDGET_MS } from '../limits.js';
import type { Database } from '../storage/database.js';
import { Batcher } from './batcher.js';
import { KeyedBatcher } from './keyed-batcher.js';
import { MAILBOX_CHANNEL, type MailboxStore, type SendItem, type SendResult, type StoredEnvelope, decodeNotice, encodeConnectedNotice } from './store.js';
import { DeliveryStream, type StreamSink } from './stream.js';

interface Attached {
  readonly stream: DeliveryStream;
  readonly authAt: number;
  /** Closes the connection: `replaced` by a newer one, or the device was `revoked`. */
  readonly close: (why: 'replaced' | 'revoked') => void;
}

interface Ack {
  readonly userId: string;
  readonly deviceId: string;
  readonly seq: number;
}

function key(u: string, d: string): string {
  return `${u}\u0000${d}`;
}

export interface MailboxServiceOptions {
  readonly db: Database;
  readonly store: MailboxStore;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Observes each SEND batch size (metrics). */
  readonly onBatch?: (size: number) => void;
  /** Told of each notice heard from another relay (metrics). */
  readonly onNotice?: () => void;
  /** Told when the LISTEN subscription was lost and is back (metrics). */
  readonly onResubscribed?: () => void;
  /** Told of each catch-up scan that starts, and what asked for it (metrics). */
  readonly onCatchUp?: (reason: CatchUpReason) => void;
  /** Told, per statement of a catch-up scan, of the connected mailboxes it compared and of
   * those it found with news or gone, the rows it returned (metrics). */
  readonly onCatchUpPage?: (checked: number, found: number) => void;
  /** Expiry sweeper: records per batch, time per tick and batches at once
   * (SWEEP_BATCH, SWEEP_TICK_BUDGET_MS, SWEEP_CONCURRENCY). */
  readonly sweep?: { readonly batch: number; readonly budgetMs: number; readonly concurrency?: number };
  /** Told of each sweep tick's removals (metrics). */
  readonly onSwept?: (removed: { envelopes: number; sends: number }) => void;
}

/** What asked for a catch-up scan: an "all" notice, the timer, or a restored LISTEN. */
export type CatchUpReason = 'notice' | 'interval' | 'resubscribed';

export class MailboxService {
  private readonly attached = new Map<string, Attached>();
  /** Per device, the write of its latest ACK while it is in flight (never rejects). */
  private readonly pendingAck = new Map<string, Promise<void>>();
  /** Group commit of SENDs: concurrent batches never share a recipient (keyed-batcher). */
  private readonly sends: KeyedBatcher<SendItem, SendResult>;
  private readonly acks: Batcher<Ack, void>;
  private readonly timers: NodeJS.Timeout[] = [];
  private sweepTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly now: () => number;
  /** The catch-up scans in progress (at most one at a time), and what asked for the next. */
  private catchingUp: Promise<void> | undefined;
  private nextCatchUp: CatchUpReason | undefined;

  constructor(private readonly opts: MailboxServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.sends = new KeyedBatcher<SendItem, SendResult>(
      { maxBatch: SEND_BATCH_MAX, concurrency: SEND_BATCH_CONCURRENCY, parallelMin: SEND_PARALLEL_MIN, onError: (err) => this.reportWakeError(err) },
      (item) => item.recipientUserId,
      async (items) => {
        opts.onBatch?.(items.length);
        const { results, committed } = await opts.store.storeBatch(items);
        return { results, after: () => this.wake(committed) };
      },
    );
    this.acks = new Batcher<Ack, void>({ maxBatch: ACK_BATCH_MAX, maxWaitMs: ACK_BATCH_MAX_WAIT_MS, concurrency: 1 }, async (items) => {
      await opts.store.ackBatch(items);
      return { results: items.map(() => undefined) };
    });
  }

  async start(): Promise<void> {
    this.unlisten = await this.opts.db.listen(
      MAILBOX_CHANNEL,
      (payload) => this.onNotice(payload),
      () => {
        // Notices sent while the subscription was down are lost: re-read every tail now
        // rather than at the next scheduled catch-up.
        this.opts.onResubscribed?.();
        this.requestCatchUp('resubscribed');
      },
    );
    this.timers.push(setInterval(() => this.requestCatchUp('interval'), CATCHUP_INTERVAL_MS).unref());
    this.scheduleSweep(SWEEP_INTERVAL_MS);
  }

  /** Stops timers and waits for queued SENDs and ACKs to be written. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.sweepTimer);
    await Promise.all([this.sends.drained(), this.acks.drained()]);
    await this.unlisten?.();
  }

  private reportWakeError(err: unknown): void {
    this.opts.logger.error({ err: { message: (err as Error).message } }, 'waking recipients after a commit failed');
  }

  /** Hands this relay's own commits to the connected recipients, one wake per device. */
  private wake(committed: readonly StoredEnvelope[]): void {
    const byStream = new Map<DeliveryStream, StoredEnvelope[]>();
    for (const env of committed) {
      const stream = this.attached.get(key(env.userId, env.deviceId))?.stream;
      if (!stream) continue;
      const list = byStream.get(stream);
      if (list) list.push(env);
      else byStream.set(stream, [env]);
    }
    for (const [stream, envs] of byStream) stream.onCommitted(envs);
  }

  send(item: SendItem): Promise<SendResult> {
    return this.sends.submit(item);
  }

  /**
   * Binds a device's delivery stream to a connection. `replace` closes that connection
   * when a newer one for the same device appears (here or on another relay).
   */
  async attach(userId: string, deviceId: string, sink: StreamSink, close: (why: 'replaced' | 'revoked') => void): Promise<DeliveryStream> {
    const k = key(userId, deviceId);
    // An ACK this relay took for the device but has not yet written (it acked and
    // reconnected at once) is written first, so the stream resumes after it.
    await this.pendingAck.get(k);
    const position = await this.opts.store.position(userId, deviceId);
    if (!position) throw new Error(`no mailbox for device ${deviceId}`);
    const stream = new DeliveryStream(sink, {
      fetch: (after, limit) => this.opts.store.fetch(userId, deviceId, after, limit),
      onError: (err) => this.opts.logger.error({ err: { message: (err as Error).message }, userId, deviceId }, 'backlog read failed'),
    }, position, this.now);
    const authAt = this.now();
    this.attached.get(k)?.close('replaced');
    this.attached.set(k, { stream, authAt, close });
    // Tell other relays, so that a device has one live connection fleet-wide.
    await this.opts.db
      .query('SELECT pg_notify($1, $2)', [MAILBOX_CHANNEL, encodeConnectedNotice(this.opts.nodeId, userId, deviceId, authAt)])
      .catch((err: unknown) => this.opts.logger.warn({ err: { message: (err as Error).message } }, 'connected notice failed'));
    stream.pump();
    return stream;
  }

  detach(userId: string, deviceId: string, stream: DeliveryStream): void {
    const k = key(userId, deviceId);
    if (this.attached.get(k)?.stream === stream) this.attached.delete(k);
  }

  /** Applies a cumulative ACK from a connection; persisted in the next ACK batch. */
  ack(userId: string, deviceId: string, stream: DeliveryStream, seq: number): void {
    if (!stream.ack(seq)) return;
    const k = key(userId, deviceId);
    const written: Promise<void> = this.acks.submit({ userId, deviceId, seq }).then(
      () => undefined,
      (err: unknown) => {
        // The envelopes stay stored and are delivered again: at-least-once, never lost.
        this.opts.logger.error({ err: { message: (err as Error).message } }, 'ack batch failed');
      },
    ).finally(() => {
      if (this.pendingAck.get(k) === written) this.pendingAck.delete(k);
    });
    this.pendingAck.set(k, written);
  }

  private onNotice(payload: string): void {
    const n = decodeNotice(payload);
    if (!n) return;
    // Sent from inside the revoking transaction, so by no relay in particular: every
    // relay, this one included, closes the device's connection.
    if (n.kind === 'revoked') {
      this.attached.get(key(n.userId, n.deviceId))?.close('revoked');
      return;
    }
    if (n.node === this.opts.nodeId) return;
    this.opts.onNotice?.();
    switch (n.kind) {
      case 'tails':
        for (const [u, d, seq] of n.tails) this.attached.get(key(u, d))?.stream.onTail(seq);
        return;
      case 'all':
        this.requestCatchUp('notice');
        return;
      case 'connected': {
        // Only a newer connection elsewhere replaces ours (both relays hear both notices).
        const a = this.attached.get(key(n.userId, n.deviceId));
        if (a && n.at >= a.authAt) a.close('replaced');
        return;
      }
    }
  }

  /**
   * Asks for a catch-up scan. At most one runs at a time: a request made while one runs
   * is merged with any other into a single scan after it (the running scan may have read
   * some tails before the commit that asked). Without this, each "all" notice started a
   * scan of every connected mailbox, and a burst of large commits on one relay made every
   * other relay run as many scans at once.
   */
  requestCatchUp(reason: CatchUpReason): void {
    if (this.catchingUp) {
      this.nextCatchUp ??= reason;
      return;
    }
    this.catchingUp = this.catchUpWhileAsked(reason);
  }

  private async catchUpWhileAsked(first: CatchUpReason): Promise<void> {
    let reason: CatchUpReason | undefined = first;
    try {
      while (reason !== undefined) {
        this.nextCatchUp = undefined;
        this.opts.onCatchUp?.(reason);
        await this.catchUp();
        reason = this.nextCatchUp;
      }
    } finally {
      // In the same turn as the last look at nextCatchUp: no request falls in between.
      this.catchingUp = undefined;
    }
  }

  /**
   * Compares every connected device's tail with the database's, CATCHUP_PAGE_SIZE
   * mailboxes per statement, so that delivery survives a lost NOTIFY. The statement
   * returns only the mailboxes whose tail moved past what their stream knows, and those
   * that are gone: a connected device whose mailbox is gone was revoked (its mailbox goes
   * with it, and it had one when it attached), and its connection is closed here if the
   * notice that should have closed it was missed. The connections are walked a page at a
   * time through a live iterator, never copied whole, so no turn of the event loop works
   * on more than one page however many devices are connected, and streams without news
   * are left alone (but for pumping again one whose backlog read failed).
   */
  async catchUp(): Promise<void> {
    const connected = this.attached.entries();
    try {
      for (;;) {
        const page: Array<[string, Attached]> = [];
        for (let e = connected.next(); !e.done; e = connected.next()) {
          if (page.push(e.value) === CATCHUP_PAGE_SIZE) break;
        }
        if (page.length > 0) await this.catchUpPage(page);
        if (page.length < CATCHUP_PAGE_SIZE) return;
      }
    } catch (err) {
      this.opts.logger.warn({ err: { message: (err as Error).message } }, 'catch-up scan failed');
    }
  }

  private async catchUpPage(page: ReadonlyArray<[string, Attached]>): Promise<void> {
    const boxes = page.map(([k, a]) => {
      const [userId, deviceId] = k.split('\u0000') as [string, string];
      return { userId, deviceId, tail: a.stream.knownTail };
    });
    const ahead = await this.opts.store.tailsAhead(boxes);
    this.opts.onCatchUpPage?.(page.length, ahead.size);
    for (const [i, [k, a]] of page.entries()) {
      if (!ahead.has(k)) {
        if (a.stream.stalled) a.stream.pump();
        continue;
      }
      const tail = ahead.get(k);
      if (tail !== undefined) {
        this.attached.get(k)?.stream.onTail(tail);
      } else if (this.attached.get(k) === a) {
        const { userId, deviceId } = boxes[i]!;
        this.opts.logger.info({ userId, deviceId }, 'closing the connection of a revoked device (its notice was missed)');
        a.close('revoked');
      }
    }
  }

  /**
   * The sweeper's schedule: a tick every SWEEP_INTERVAL_MS while it keeps up; one that
   * ended on its time budget (still behind) is followed by the next after only
   * SWEEP_BEHIND_PAUSE_MS, so a backlog is swept at the database's pace, not one
   * budget per interval.
   */
  private scheduleSweep(delayMs: number): void {
    this.sweepTimer = setTimeout(() => {
      void this.sweep().then((r) => {
        if (!this.stopped) this.scheduleSweep(r.caughtUp ? SWEEP_INTERVAL_MS : SWEEP_BEHIND_PAUSE_MS);
      });
    }, delayMs).unref();
  }

  /**
   * One tick of the expiry sweeper: batches until one comes back short (caught up) or
   * the tick's time budget is spent, whichever is first. Returns what it removed, and
   * whether it caught up (also after an error: the next tick comes at the usual time).
   */
  async sweep(): Promise<{ envelopes: number; sends: number; batches: number; caughtUp: boolean }> {
    const batch = this.opts.sweep?.batch ?? SWEEP_BATCH;
    const budgetMs = this.opts.sweep?.budgetMs ?? SWEEP_TICK_BUDGET_MS;
    const workers = this.opts.sweep?.concurrency ?? SWEEP_CONCURRENCY;
    // The budget is wall time spent, not the expiry clock (which tests set).
    const start = performance.now();
    const total = { envelopes: 0, sends: 0, batches: 0, caughtUp: true };
    // Each worker runs batches until one comes back short; batches skip the records
    // other batches hold, so workers never take the same records.
    const worker = async (): Promise<void> => {
      for (;;) {
        const r = await this.opts.store.sweepExpired(batch);
        total.envelopes += r.envelopes;
        total.sends += r.sends;
        total.batches++;
        if (r.sends < batch) return;
        if (performance.now() - start >= budgetMs) {
          total.caughtUp = false;
          return;
        }
      }
    };
    const failures = (await Promise.allSettled(Array.from({ length: workers }, worker))).filter((r) => r.status === 'rejected');
    for (const f of failures) {
      this.opts.logger.warn({ err: { message: ((f as PromiseRejectedResult).reason as Error)?.message } }, 'expiry sweep failed');
    }
    if (total.envelopes || total.sends) {
      this.opts.logger.info({ envelopes: total.envelopes, sends: total.sends }, 'expired envelopes removed');
      this.opts.onSwept?.({ envelopes: total.envelopes, sends: total.sends });
    }
    return total;
  }

}
