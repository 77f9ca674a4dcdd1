/**
 * Mailbox notices over NATS core publish/subscribe (HERMETIC_NATS_URL), for fleets that
 * keep wake-ups off the database: one subject, `<prefix>.mailbox`, that every relay of
 * the fleet publishes to and subscribes to (its own notices come back to it, as NOTIFY's
 * do). The prefix (HERMETIC_NATS_SUBJECT_PREFIX) keeps fleets that share a NATS server
 * apart: relays sharing a database must share it, other fleets must not.
 *
 * NATS cannot take part in a database transaction, so the relay publishes after the
 * commit (`transactional` is false). Core NATS is at most once: the client reconnects
 * by itself (forever, NATS_RECONNECT_WAIT_MS apart) and subscribes again, and the
 * notifier then tells its subscriber (`onResubscribed`), which re-reads what it may
 * have missed.
 *
 * Credentials: `user:password@` or `token@` in the URL, or a credentials file
 * (HERMETIC_NATS_CREDS_FILE: a JWT and NKey seed, as `nsc` writes). `tls://` asks for
 * TLS, the server checked against the system's CAs (and NODE_EXTRA_CA_CERTS). The
 * credentials never appear in logs: only the servers' host and port do.
 */
import fs from 'node:fs';
import type { Logger } from 'pino';
import { type NatsConnection, type NodeConnectionOptions, connect, credsAuthenticator } from '@nats-io/transport-node';
import { NATS_CONNECT_TIMEOUT_MS, NATS_RECONNECT_JITTER_MS, NATS_RECONNECT_WAIT_MS } from '../limits.js';
import type { SqlExecutor } from '../storage/database.js';
import { type MailboxNotice, encodeNotice } from './notice.js';
import { type Notifier, type NotifierObserver, type Unsubscribe, receive } from './notifier.js';
import { MAX_NATS_SUBJECT_PREFIX_LENGTH, NATS_SUBJECT_PREFIX_PATTERN, NatsUrlError, parseNatsUrl } from './nats-url.js';

export interface NatsNotifierOptions {
  /** HERMETIC_NATS_URL (see parseNatsUrl). */
  readonly url: string;
  /** Subjects are `<subjectPrefix>.mailbox`. */
  readonly subjectPrefix: string;
  /** A NATS credentials file (JWT and NKey seed). */
  readonly credsFile?: string;
  /** The connection's name as the NATS server shows it. */
  readonly name?: string;
  readonly logger?: Logger;
  readonly observer?: NotifierObserver;
}

export class NatsNotifier implements Notifier {
  readonly kind = 'nats';
  readonly transactional = false;
  private readonly onReconnect = new Set<() => void>();

  private constructor(
    private readonly nc: NatsConnection,
    readonly subject: string,
    private readonly opts: NatsNotifierOptions,
  ) {
    void this.watch();
  }

  /** Connects (failing if no server answers within NATS_CONNECT_TIMEOUT_MS). */
  static async connect(opts: NatsNotifierOptions): Promise<NatsNotifier> {
    if (!NATS_SUBJECT_PREFIX_PATTERN.test(opts.subjectPrefix) || opts.subjectPrefix.length > MAX_NATS_SUBJECT_PREFIX_LENGTH) {
      throw new NatsUrlError('the subject prefix must be dot-separated tokens of A-Z a-z 0-9 _ -');
    }
    const s = parseNatsUrl(opts.url);
    const options: NodeConnectionOptions = {
      servers: [...s.servers],
      ...(opts.name ? { name: opts.name } : {}),
      ...(s.user !== undefined ? { user: s.user, pass: s.pass ?? '' } : {}),
      ...(s.token !== undefined ? { token: s.token } : {}),
      ...(s.tls ? { tls: {} } : {}),
      ...(opts.credsFile ? { authenticator: credsAuthenticator(new Uint8Array(fs.readFileSync(opts.credsFile))) } : {}),
      timeout: NATS_CONNECT_TIMEOUT_MS,
      reconnect: true,
      maxReconnectAttempts: -1,
      reconnectTimeWait: NATS_RECONNECT_WAIT_MS,
      reconnectJitter: NATS_RECONNECT_JITTER_MS,
      reconnectJitterTLS: NATS_RECONNECT_JITTER_MS,
    };
    let nc: NatsConnection;
    try {
      nc = await connect(options);
    } catch (err) {
      // The servers without credentials: safe to show.
      throw new Error(`cannot connect to NATS (HERMETIC_NATS_URL: ${s.servers.join(', ')}): ${(err as Error).message}`);
    }
    opts.logger?.info({ servers: s.servers, subject: `${opts.subjectPrefix}.mailbox` }, 'notices over NATS');
    return new NatsNotifier(nc, `${opts.subjectPrefix}.mailbox`, opts);
  }

  /** Follows the connection's status: logs it, and tells subscribers of a reconnection. */
  private async watch(): Promise<void> {
    for await (const s of this.nc.status()) {
      if (s.type === 'disconnect') {
        this.opts.logger?.warn({ server: s.server }, 'NATS connection lost; reconnecting');
      } else if (s.type === 'reconnect') {
        // The client has sent the subscriptions again; once the server has answered a
        // PING after them it has them, and notices from here on arrive.
        try {
          await this.nc.flush();
        } catch {
          continue; // lost again: the next reconnect tells
        }
        this.opts.logger?.info({ server: s.server }, 'NATS connection restored');
        for (const f of this.onReconnect) f();
      } else if (s.type === 'error') {
        this.opts.logger?.warn({ err: { message: s.error.message } }, 'NATS error');
      }
    }
  }

  async publish(notice: MailboxNotice, tx?: SqlExecutor): Promise<void> {
    if (tx !== undefined) throw new Error('NATS notices cannot be sent inside a database transaction');
    // Throws once the connection is closed; while reconnecting, the client holds it.
    this.nc.publish(this.subject, encodeNotice(notice));
    this.opts.observer?.published?.(notice.kind);
  }

  async subscribe(onNotice: (notice: MailboxNotice) => void, onResubscribed: () => void): Promise<Unsubscribe> {
    const sub = this.nc.subscribe(this.subject, {
      callback: (err, msg) => {
        if (err) {
          this.opts.logger?.warn({ err: { message: err.message } }, 'NATS subscription error');
          return;
        }
        const n = receive(msg.data, this.opts.observer);
        if (n) onNotice(n);
      },
    });
    const resubscribed = (): void => {
      this.opts.observer?.resubscribed?.();
      onResubscribed();
    };
    this.onReconnect.add(resubscribed);
    // Subscribed once the server has it.
    await this.nc.flush();
    return async () => {
      this.onReconnect.delete(resubscribed);
      if (!sub.isClosed()) sub.unsubscribe();
    };
  }

  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    // Sends what was published and not yet written, then closes.
    await this.nc.drain().catch(() => this.nc.close());
  }
}
