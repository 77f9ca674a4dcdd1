/**
 * The relay's store-and-forward engine: group-commits SENDs, applies ACKs in batches,
 * keeps one DeliveryStream per connected device, and wakes streams when envelopes
 * commit — directly for this relay's own commits, by a notice on the fleet's notifier
 * (server/fleet/notifier.ts: PostgreSQL NOTIFY or NATS) for other relays' (one notice
 * per commit), and by a periodic catch-up scan as a safety net. A commit
 * touching too many mailboxes for one notification sends an "all" notice instead, which
 * asks every other relay for a catch-up scan: at most one scan runs at a time per relay,
 * and requests made meanwhile are merged into one more, so a burst of such commits costs
 * each relay at most two scans, each reading CATCHUP_PAGE_SIZE mailboxes per query. A
 * retirement pass drops old partitions of the envelope log, carrying forward what is
 * still unacknowledged.
 */
import type { Logger } from 'pino';
import { ACK_BATCH_MAX, ACK_BATCH_MAX_WAIT_MS, CATCHUP_INTERVAL_MS, CATCHUP_PAGE_SIZE, SEND_BATCH_CONCURRENCY, SEND_BATCH_MAX, SEND_PARALLEL_MIN, RETIREMENT_CATCH_UP_DELAY_MS, RETIREMENT_TICKS_PER_PARTITION } from '../limits.js';
import type { Database } from '../storage/database.js';
import { Batcher } from '../batching/batcher.js';
import { KeyedBatcher } from '../batching/keyed-batcher.js';
import { type MailboxNotice, connectedNotice, tailsNotices } from '../fleet/notice.js';
import { type Notifier, PgNotifier } from '../fleet/notifier.js';
import type { MailboxStore, Retired, SendItem, SendResult, StoredEnvelope } from './store.js';
import { mailboxKey } from './key.js';
import { DeliveryStream, type StreamSink, type StreamSource } from './stream.js';

/** A device's connection as the service sees it: where its stream writes, and how it is closed. */
export interface DeviceConnection extends StreamSink {
  /** Closes the connection: `replaced` by a newer one, or the device was `revoked`. */
  close(why: 'replaced' | 'revoked'): void;
}

interface Attached {
  /** The device, and its key in the attached map (kept: the catch-up scan reads them every
   * interval, and making them again would allocate per connection per scan). */
  readonly userId: string;
  readonly deviceId: string;
  readonly key: string;
  readonly stream: DeliveryStream;
  readonly authAt: number;
  readonly connection: DeviceConnection;
}

/**
 * A connected device's backlog, read from the store. One object per stream with its
 * methods on the prototype: closures made per connection are kept as long as it is open.
 */
class Backlog implements StreamSource {
  constructor(
    private readonly store: MailboxStore,
    private readonly logger: Logger,
    private readonly userId: string,
    private readonly deviceId: string,
  ) {}

  fetch(afterSeq: number, limit: number): Promise<StoredEnvelope[]> {
    return this.store.fetch(this.userId, this.deviceId, afterSeq, limit);
  }

  onError(err: unknown): void {
    this.logger.error({ err: { message: (err as Error).message }, userId: this.userId, deviceId: this.deviceId }, 'backlog read failed');
  }
}

interface Ack {
  readonly userId: string;
  readonly deviceId: string;
  readonly seq: number;
}


export interface MailboxServiceOptions {
  readonly db: Database;
  readonly store: MailboxStore;
  /** The bus notices travel on; PostgreSQL NOTIFY on `db` when omitted. */
  readonly notifier?: Notifier;
  readonly nodeId: string;
  readonly logger: Logger;
  readonly now?: () => number;
  /** Observes each SEND batch size (metrics). */
  readonly onBatch?: (size: number) => void;
  /** Told of each notice heard from another relay (metrics). */
  readonly onNotice?: () => void;
  /** Topic notices of other relays (server/topics/hub.ts), heard on the same bus. */
  readonly onTopicNotice?: (n: Extract<MailboxNotice, { kind: 'topic' }>) => void;
  /** Told when the notifier's subscription was lost and is back (metrics). */
  readonly onResubscribed?: () => void;
  /** Told of each catch-up scan that starts, and what asked for it (metrics). */
  readonly onCatchUp?: (reason: CatchUpReason) => void;
  /** Told of each retirement pass that ran (metrics). */
  readonly onRetired?: (retired: Retired) => void;
  /** Told, per statement of a catch-up scan, of the connected mailboxes it compared and of
   * those it found with news or gone, the rows it returned (metrics). */
  readonly onCatchUpPage?: (checked: number, found: number) => void;
}

/** What asked for a catch-up scan: an "all" notice, the timer, or a restored subscription. */
export type CatchUpReason = 'notice' | 'interval' | 'resubscribed';

export class MailboxService {
  private readonly attached = new Map<string, Attached>();
  /** Per device, the write of its latest ACK while it is in flight (never rejects). */
  private readonly pendingAck = new Map<string, Promise<void>>();
  /** Group commit of SENDs: concurrent batches never share a recipient (keyed-batcher). */
  private readonly sends: KeyedBatcher<SendItem, SendResult>;
  private readonly acks: Batcher<Ack, void>;
  private readonly timers: NodeJS.Timeout[] = [];
  private retireTimer: NodeJS.Timeout | undefined;
  private stopped = false;
  private unlisten: (() => Promise<void>) | undefined;
  private readonly now: () => number;
  private readonly notifier: Notifier;
  /** The catch-up scans in progress (at most one at a time), and what asked for the next. */
  private catchingUp: Promise<void> | undefined;
  private nextCatchUp: CatchUpReason | undefined;

  constructor(private readonly opts: MailboxServiceOptions) {
    this.now = opts.now ?? Date.now;
    this.notifier = opts.notifier ?? new PgNotifier(opts.db);
    this.sends = new KeyedBatcher<SendItem, SendResult>(
      { maxBatch: SEND_BATCH_MAX, concurrency: SEND_BATCH_CONCURRENCY, parallelMin: SEND_PARALLEL_MIN, onError: (err) => this.reportWakeError(err) },
      (item) => item.recipientUserId,
      async (items) => {
        opts.onBatch?.(items.length);
        const { results, committed } = await opts.store.storeBatch(items);
        return { results, after: () => this.committed(committed) };
      },
    );
    this.acks = new Batcher<Ack, void>({ maxBatch: ACK_BATCH_MAX, maxWaitMs: ACK_BATCH_MAX_WAIT_MS, concurrency: 1 }, async (items) => {
      await opts.store.ackBatch(items);
      return { results: items.map(() => undefined) };
    });
  }

  async start(): Promise<void> {
    this.unlisten = await this.notifier.subscribe(
      (notice) => this.onNotice(notice),
      () => {
        // Notices sent while the subscription was down are lost: re-read every tail now
        // rather than at the next scheduled catch-up.
        this.opts.onResubscribed?.();
        this.requestCatchUp('resubscribed');
        // On a bus published to after the commit, what this relay published while its
        // connection was down may be lost too: the other relays re-read theirs as well.
        if (!this.notifier.transactional) void this.publish({ node: this.opts.nodeId, kind: 'all' }, 'catch-up notice failed');
      },
    );
    this.timers.push(setInterval(() => this.requestCatchUp('interval'), CATCHUP_INTERVAL_MS).unref());
    await this.opts.store.ensurePartitions();
    this.scheduleRetirement();
  }

  /** Stops timers and waits for queued SENDs and ACKs to be written. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const t of this.timers) clearInterval(t);
    clearTimeout(this.retireTimer);
    await Promise.all([this.sends.drained(), this.acks.drained()]);
    await this.unlisten?.();
  }

  private reportWakeError(err: unknown): void {
    this.opts.logger.error({ err: { message: (err as Error).message } }, 'waking recipients after a commit failed');
  }

  /**
   * After a commit: tells the other relays (unless the store function already did, in
   * the transaction: on NATS the store is built without a NOTIFY channel) and wakes this
   * relay's own recipients.
   */
  private committed(envs: readonly StoredEnvelope[]): void {
    if (!this.notifier.transactional && envs.length > 0) {
      for (const n of tailsNotices(this.opts.nodeId, envs)) void this.publish(n, 'tails notice failed');
    }
    this.wake(envs);
  }

  /** Sends a notice without waiting; a failure is logged (catch-up scans cover it). */
  private publish(notice: MailboxNotice, what: string): Promise<void> {
    return this.notifier.publish(notice).catch((err: unknown) => this.opts.logger.warn({ err: { message: (err as Error).message } }, what));
  }

  /** Hands this relay's own commits to the connected recipients, one wake per device. */
  private wake(committed: readonly StoredEnvelope[]): void {
    const byStream = new Map<DeliveryStream, StoredEnvelope[]>();
    for (const env of committed) {
      // One key string per mailbox of the commit, shared by its envelopes: its hash is
      // computed once, not once per envelope as a key made here would be.
      const stream = this.attached.get(env.mailbox)?.stream;
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
   * Binds a device's delivery stream to a connection. The connection is closed when a
   * newer one for the same device appears (here or on another relay), or the device is
   * revoked.
   */
  async attach(userId: string, deviceId: string, connection: DeviceConnection): Promise<DeliveryStream> {
    const k = mailboxKey(userId, deviceId);
    // An ACK this relay took for the device but has not yet written (it acked and
    // reconnected at once) is written first, so the stream resumes after it.
    await this.pendingAck.get(k);
    const position = await this.opts.store.position(userId, deviceId);
    if (!position) throw new Error(`no mailbox for device ${deviceId}`);
    const stream = new DeliveryStream(connection, new Backlog(this.opts.store, this.opts.logger, userId, deviceId), position, this.now);
    const authAt = this.now();
    this.attached.get(k)?.connection.close('replaced');
    this.attached.set(k, { userId, deviceId, key: k, stream, authAt, connection });
    // Tell other relays, so that a device has one live connection fleet-wide.
    await this.publish(connectedNotice(this.opts.nodeId, userId, deviceId, authAt), 'connected notice failed');
    stream.pump();
    return stream;
  }

  detach(userId: string, deviceId: string, stream: DeliveryStream): void {
    const k = mailboxKey(userId, deviceId);
    if (this.attached.get(k)?.stream === stream) this.attached.delete(k);
  }

  /** Applies a cumulative ACK from a connection; persisted in the next ACK batch. */
  ack(userId: string, deviceId: string, stream: DeliveryStream, seq: number): void {
    if (!stream.ack(seq)) return;
    const k = mailboxKey(userId, deviceId);
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

  private onNotice(n: MailboxNotice): void {
    // Sent by no relay in particular (from inside the revoking transaction, or after it
    // committed): every relay, this one included, closes the device's connection.
    if (n.kind === 'revoked') {
      this.attached.get(mailboxKey(n.userId, n.deviceId))?.connection.close('revoked');
      return;
    }
    if (n.node === this.opts.nodeId) return;
    this.opts.onNotice?.();
    switch (n.kind) {
      case 'tails':
        for (const [u, d, seq] of n.tails) this.attached.get(mailboxKey(u, d))?.stream.onTail(seq);
        return;
      case 'all':
        this.requestCatchUp('notice');
        return;
      case 'connected': {
        // Only a newer connection elsewhere replaces ours (both relays hear both notices).
        const a = this.attached.get(mailboxKey(n.userId, n.deviceId));
        if (a && n.at >= a.authAt) a.connection.close('replaced');
        return;
      }
      case 'topic':
        this.opts.onTopicNotice?.(n);
        return;
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
    const connected = this.attached.values();
    try {
      for (;;) {
        const page: Attached[] = [];
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

  private async catchUpPage(page: readonly Attached[]): Promise<void> {
    const ahead = await this.opts.store.tailsAhead({
      userIds: page.map((a) => a.userId),
      deviceIds: page.map((a) => a.deviceId),
      tails: page.map((a) => a.stream.knownTail),
    });
    this.opts.onCatchUpPage?.(page.length, ahead.size);
    for (const a of page) {
      if (ahead.size === 0 || !ahead.has(a.key)) {
        if (a.stream.stalled) a.stream.pump();
        continue;
      }
      const tail = ahead.get(a.key);
      if (tail !== undefined) {
        this.attached.get(a.key)?.stream.onTail(tail);
      } else if (this.attached.get(a.key) === a) {
        this.opts.logger.info({ userId: a.userId, deviceId: a.deviceId }, 'closing the connection of a revoked device (its notice was missed)');
        a.connection.close('revoked');
      }
    }
  }

  /** Retirement runs every partition width / RETIREMENT_TICKS_PER_PARTITION, or sooner after
   * a pass that ran out of drain budget. */
  private scheduleRetirement(delayMs?: number): void {
    const every = Math.max(1, Math.floor(this.opts.store.partitionMs / RETIREMENT_TICKS_PER_PARTITION));
    this.retireTimer = setTimeout(() => {
      void this.retire().then((r) => {
        // A pass that ran out of drain budget is followed soon by the next.
        if (!this.stopped) this.scheduleRetirement(r?.behind ? Math.min(RETIREMENT_CATCH_UP_DELAY_MS, every) : undefined);
      });
    }, delayMs ?? every).unref();
  }

  /**
   * One retirement pass (partitions made ahead, old ones retired). Never throws: a
   * failure is logged and the next pass tries again, nothing being lost meanwhile.
   */
  async retire(): Promise<Retired | undefined> {
    try {
      const r = await this.opts.store.retire();
      if (r.drainFailed) {
        this.opts.logger.warn({ partition: r.drainFailed.partition, err: { message: r.drainFailed.error.message } }, 'envelope partition drain failed');
      }
      if (r.deferred) {
        this.opts.logger.warn(r.deferred, 'envelope partition drop deferred: its table lock was not free in time');
      }
      if (r.partitions || r.carried || r.expired) {
        this.opts.logger.info({ partitions: r.partitions, carried: r.carried, expired: r.expired }, 'envelope partitions retired');
      }
      this.opts.onRetired?.(r);
      return r;
    } catch (err) {
      this.opts.logger.warn({ err: { message: (err as Error).message } }, 'retirement pass failed');
      return undefined;
    }
  }
}
