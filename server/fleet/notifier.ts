/**
 * The bus relays sharing a database wake each other on (mailbox notices,
 * server/fleet/notice.ts): PostgreSQL LISTEN/NOTIFY by default, or a NATS server
 * (HERMETIC_NATS_URL, server/fleet/nats-notifier.ts).
 *
 * Delivery on either bus is at most once: a notice sent while a relay's subscription is
 * down is lost to it. A notifier that comes back after losing its subscription calls
 * `onResubscribed`, and the mailbox service then re-reads every connected mailbox's tail
 * (besides its periodic catch-up scan), so a lost notice delays a delivery and never
 * loses one.
 */
import type { SqlExecutor } from '../storage/database.js';
import { MAILBOX_CHANNEL, type MailboxNotice, type NoticeKind, decodeNotice, encodeNotice } from './notice.js';

export type NotifierKind = 'pg' | 'nats';

/** Unsubscribes (resolves once nothing more will be delivered). */
export type Unsubscribe = () => Promise<void>;

export interface Notifier {
  readonly kind: NotifierKind;
  /**
   * Whether a notice can be sent inside a database transaction (`publish(notice, tx)`),
   * to be delivered only if and when it commits. PostgreSQL NOTIFY can (and the store
   * function, migrations/0004, sends each commit's tails notice that way); a notifier
   * that can't is published to after the commit, by the relay, tails notices included.
   */
  readonly transactional: boolean;
  /**
   * Sends a notice to every relay subscribed, this one included. With `tx` (only when
   * `transactional`), as part of that transaction. Rejects when it could not be sent.
   */
  publish(notice: MailboxNotice, tx?: SqlExecutor): Promise<void>;
  /**
   * Delivers every well-formed notice to `onNotice` (malformed ones are dropped and
   * counted); `onResubscribed` is told each time a lost subscription is back. Resolves
   * once subscribed.
   */
  subscribe(onNotice: (notice: MailboxNotice) => void, onResubscribed: () => void): Promise<Unsubscribe>;
  /** Releases the notifier's own connections (not the database's). */
  close(): Promise<void>;
}

/** Counts for metrics (hermetic_notifier_*_total{notifier}). */
export interface NotifierObserver {
  published?(kind: NoticeKind): void;
  received?(kind: NoticeKind): void;
  /** A message on the bus that is not a well-formed notice (ignored). */
  malformed?(): void;
  resubscribed?(): void;
}

/** Decodes one message from the bus, counting it; undefined (counted) when malformed. */
export function receive(payload: string | Uint8Array, observer: NotifierObserver | undefined): MailboxNotice | undefined {
  const n = decodeNotice(payload);
  if (n === undefined) observer?.malformed?.();
  else observer?.received?.(n.kind);
  return n;
}

/** What a PostgreSQL notifier needs of the database: statements and LISTEN. */
export interface ListenDatabase extends SqlExecutor {
  listen(channel: string, onNotify: (payload: string) => void, onResubscribed?: () => void): Promise<() => Promise<void>>;
}

/**
 * Notices over PostgreSQL LISTEN/NOTIFY on MAILBOX_CHANNEL (PGlite too, where there is
 * only one relay). The subscription is the database driver's (server/storage/pg-listen.ts:
 * a dedicated connection, opened again after it is lost).
 */
export class PgNotifier implements Notifier {
  readonly kind = 'pg';
  readonly transactional = true;

  constructor(
    private readonly db: ListenDatabase,
    private readonly observer?: NotifierObserver,
    private readonly channel: string = MAILBOX_CHANNEL,
  ) {}

  async publish(notice: MailboxNotice, tx?: SqlExecutor): Promise<void> {
    await (tx ?? this.db).query('SELECT pg_notify($1, $2)', [this.channel, encodeNotice(notice)]);
    this.observer?.published?.(notice.kind);
  }

  subscribe(onNotice: (notice: MailboxNotice) => void, onResubscribed: () => void): Promise<Unsubscribe> {
    return this.db.listen(
      this.channel,
      (payload) => {
        const n = receive(payload, this.observer);
        if (n) onNotice(n);
      },
      () => {
        this.observer?.resubscribed?.();
        onResubscribed();
      },
    );
  }

  async close(): Promise<void> {
    // The subscription and the statements use the database's connections.
  }
}
