/**
 * The device's WebSocket to the relay, kept open: it authenticates with the device's
 * identity key over the relay's challenge and origin, renews its token before it
 * expires, sends a ping when the line is quiet and gives up on a line that stays silent,
 * and reconnects with jittered exponential backoff — except when the relay said not to
 * (the device was replaced by a newer connection, or revoked).
 *
 * Frames are decoded once, by protocol/'s decoders; whatever the relay sends that does
 * not decode is dropped and reported (the connection is not trusted to be well-formed).
 */
import type { IdentityKeyPair } from '../crypto/identity/identity-key.js';
import type { RandomSource } from '../crypto/primitives/random.js';
import { type DeliverFrame, peekDeliverHeader } from '../protocol/envelopes.js';
import { CLOSE_CODES, ERROR_CODES, ProtocolError } from '../protocol/errors.js';
import { type ClientFrame, type ServerFrame, decodeServerFrame, encodeClientFrame } from '../protocol/frames.js';
import type { TopicClientFrame, TopicServerFrame } from '../protocol/topic-frames.js';
import { FEATURE_STORED_BATCH, type StoredBatchFrame } from '../protocol/stored-batch.js';
import { deviceAuthTranscript } from '../protocol/transcripts.js';
import type { Clock, TimerHandle } from './clock.js';
import { HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS, RECONNECT_BASE_MS, RECONNECT_MAX_MS, TOKEN_RENEW_MARGIN_MS } from './limits.js';
import type { Transport, TransportSocket } from './transport/transport.js';

export type ConnectionState = 'connecting' | 'online' | 'offline';

/** Why the connection is not online. */
export type OfflineReason =
  | 'starting'
  | 'network'
  | 'auth-failed'
  | 'replaced'
  | 'revoked'
  | 'relay-shutting-down'
  | 'heartbeat-timeout'
  | 'closed';

export interface ConnectionHandlers {
  onState(state: ConnectionState, reason: OfflineReason | undefined, detail?: string): void;
  onOnline(): void;
  onDeliver(frame: DeliverFrame): void;
  /** A DELIVER whose header reads but whose body does not (oversized, truncated). */
  onMalformedDeliver(header: NonNullable<ReturnType<typeof peekDeliverHeader>>, detail: string): void;
  onQueueEmpty(through: number): void;
  onExpired(from: number, to: number): void;
  onStored(frame: Extract<ServerFrame, { type: 'stored' }>): void;
  onSendError(id: number, error: ProtocolError): void;
  /** A frame of the topic protocol (answers, messages, leases, ended subscriptions). */
  onTopicFrame(frame: TopicServerFrame): void;
  /** An error answering a topic request: true if it was one (its id is in the topic range). */
  onTopicError(id: number, error: ProtocolError): boolean;
  /** A frame that did not decode, or an error with no request id. */
  onProblem(detail: string): void;
}

export interface ConnectionOptions {
  readonly wsUrl: string;
  /** The relay origin signed into the auth transcript (protocol/origin.ts). */
  readonly origin: string;
  readonly userId: string;
  readonly deviceId: string;
  readonly identity: IdentityKeyPair;
  /** A token; `fresh` asks for a newly issued one (the last was refused or expires). */
  readonly token: (fresh: boolean) => Promise<string>;
  readonly transport: Transport;
  readonly clock: Clock;
  readonly random: RandomSource;
}

export class Connection {
  #socket: TransportSocket | undefined;
  #state: ConnectionState = 'offline';
  #authed = false;
  #stopped = true;
  #attempt = 0;
  #retryTimer: TimerHandle | undefined;
  #heartbeatTimer: TimerHandle | undefined;
  #renewTimer: TimerHandle | undefined;
  #lastFrameAt = 0;
  #pingId = 0;
  /** Set when the relay said not to come back (replaced, revoked). */
  #final: OfflineReason | undefined;
  /** The last connection was refused for its token: ask for a fresh one. */
  #needFreshToken = false;
  /** The reason the last socket ended, told when it closes. */
  #pendingReason: { reason: OfflineReason; detail?: string } | undefined;
  /** The next reconnect waits at least this long (set by restart). */
  #minDelay = 0;

  constructor(
    private readonly opts: ConnectionOptions,
    private readonly h: ConnectionHandlers,
  ) {}

  get state(): ConnectionState {
    return this.#state;
  }

  get online(): boolean {
    return this.#state === 'online';
  }

  start(): void {
    if (!this.#stopped || this.#final) return;
    this.#stopped = false;
    this.#open();
  }

  stop(): void {
    this.#stopped = true;
    this.#clearTimers();
    const s = this.#socket;
    this.#socket = undefined;
    s?.close(1000, 'client closing');
    this.#setState('offline', 'closed');
  }

  /** Drops the connection and reconnects after at least `minDelayMs` (the relay then
   * delivers again from after the last acknowledgement). */
  restart(minDelayMs: number, detail: string): void {
    const socket = this.#socket;
    if (!socket || this.#stopped) return;
    this.#minDelay = Math.max(this.#minDelay, minDelayMs);
    this.#fail(socket, 'network', detail);
  }

  /** Reconnects (with backoff) after the relay said this device was revoked but the
   * device's own verified list says it was not: the relay's word alone is not enough. */
  resume(): void {
    if (this.#final !== 'revoked') return;
    this.#final = undefined;
    this.#stopped = false;
    this.#scheduleReconnect();
  }

  /** Sends a binary SEND (online only). */
  sendBinary(frame: Uint8Array): boolean {
    if (!this.#socket || !this.#authed) return false;
    this.#socket.send(frame);
    return true;
  }

  /** Sends a topic frame (online only). */
  sendTopic(frame: TopicClientFrame): boolean {
    if (!this.#socket || !this.#authed) return false;
    this.#send(frame);
    return true;
  }

  ack(seq: number): void {
    if (this.#socket && this.#authed) this.#send({ type: 'ack', seq });
  }

  #setState(state: ConnectionState, reason: OfflineReason | undefined, detail?: string): void {
    if (this.#state === state && state !== 'offline') return;
    this.#state = state;
    this.h.onState(state, reason, detail);
  }

  #send(f: ClientFrame): void {
    this.#socket?.send(encodeClientFrame(f));
  }

  #open(): void {
    this.#authed = false;
    this.#pendingReason = undefined;
    this.#setState('connecting', undefined);
    const socket = this.opts.transport.open(this.opts.wsUrl, {
      onOpen: () => {
        this.#lastFrameAt = this.opts.clock.now();
        this.#armHeartbeat();
      },
      onMessage: (data) => {
        if (this.#socket !== socket) return;
        this.#lastFrameAt = this.opts.clock.now();
        let frame: ServerFrame | DeliverFrame | StoredBatchFrame;
        try {
          frame = decodeServerFrame(data);
        } catch (err) {
          const header = typeof data === 'string' ? undefined : peekDeliverHeader(data);
          if (header && this.#authed) this.h.onMalformedDeliver(header, (err as Error).message);
          else this.h.onProblem(`a frame from the relay did not decode: ${(err as Error).message}`);
          return;
        }
        void this.#onFrame(socket, frame);
      },
      onClose: (code, reason) => {
        if (this.#socket !== socket) return;
        this.#socket = undefined;
        this.#authed = false;
        this.#clearTimers();
        this.#onClosed(code, reason);
      },
    });
    this.#socket = socket;
  }

  async #onFrame(socket: TransportSocket, frame: ServerFrame | DeliverFrame | StoredBatchFrame): Promise<void> {
    switch (frame.type) {
      case 'challenge': {
        let token: string;
        try {
          token = await this.opts.token(this.#needFreshToken);
        } catch (err) {
          this.#fail(socket, 'auth-failed', `the token provider failed: ${(err as Error).message}`);
          return;
        }
        if (this.#socket !== socket) return;
        const signature = this.opts.identity.sign(deviceAuthTranscript(frame.nonce, this.opts.userId, this.opts.deviceId, this.opts.origin));
        // STORED answers come batched in binary frames from a relay that knows them; one
        // that does not ignores the feature and answers in JSON, which is read as well.
        this.#send({ type: 'auth', token, deviceId: this.opts.deviceId, origin: this.opts.origin, signature, features: [FEATURE_STORED_BATCH] });
        return;
      }
      case 'auth_ok':
        this.#authed = true;
        this.#attempt = 0;
        this.#needFreshToken = false;
        this.#armRenewal(frame.expiresAt);
        this.#setState('online', undefined);
        this.h.onOnline();
        return;
      case 'token_ok':
        this.#armRenewal(frame.expiresAt);
        return;
      case 'pong':
        return;
      case 'deliver':
        this.h.onDeliver(frame);
        return;
      case 'queue_empty':
        this.h.onQueueEmpty(frame.through);
        return;
      case 'expired':
        this.h.onExpired(frame.from, frame.to);
        return;
      case 'stored':
        this.h.onStored(frame);
        return;
      case 'stored_batch':
        for (const answer of frame.answers) this.h.onStored(answer);
        return;
      case 'published':
      case 'subscribed':
      case 'unsubscribed':
      case 'topic_message':
      case 'subscription_ended':
      case 'consuming':
      case 'leased':
      case 'settled':
      case 'stopped':
        if (this.#authed) this.h.onTopicFrame(frame);
        return;
      case 'error': {
        const err = new ProtocolError(frame.code, frame.message, frame.details ? { ...frame.details } : undefined);
        if (frame.id !== undefined && this.#authed) {
          if (this.h.onTopicError(frame.id, err)) return;
          this.h.onSendError(frame.id, err);
          return;
        }
        if (!this.#authed) {
          // Refused authentication: the relay closes the socket next (4001), or could not
          // check it now (UNAVAILABLE, 1013): back off and try again with the same token.
          const reason: OfflineReason = frame.code === 'DEVICE_NOT_FOUND' ? 'revoked' : ERROR_CODES[frame.code].retry ? 'network' : 'auth-failed';
          this.#pendingReason = { reason, detail: `${frame.code}: ${frame.message}` };
          return;
        }
        if (frame.code === 'TOKEN_EXPIRED') this.#pendingReason = { reason: 'auth-failed', detail: frame.message };
        this.h.onProblem(`relay error ${frame.code}: ${frame.message}`);
        return;
      }
    }
  }

  #fail(socket: TransportSocket, reason: OfflineReason, detail: string): void {
    this.#pendingReason = { reason, detail };
    socket.close(1000, reason);
  }

  #onClosed(code: number, reason: string): void {
    if (this.#stopped) return;
    let why: OfflineReason = this.#pendingReason?.reason ?? 'network';
    let detail = this.#pendingReason?.detail ?? `closed with ${code}${reason ? ` (${reason})` : ''}`;
    if (code === CLOSE_CODES.REPLACED) {
      why = 'replaced';
      this.#final = 'replaced';
    } else if (code === CLOSE_CODES.DEVICE_REVOKED) {
      why = 'revoked';
      this.#final = 'revoked';
    } else if (code === CLOSE_CODES.GOING_AWAY) {
      why = 'relay-shutting-down';
    } else if (why === 'revoked' && code === CLOSE_CODES.AUTH_FAILED) {
      // DEVICE_NOT_FOUND at authentication: this device is not (any more) in its list.
      this.#final = 'revoked';
    }
    if (why === 'heartbeat-timeout') detail = 'the relay was silent too long';
    this.#needFreshToken = why === 'auth-failed';
    this.#setState('offline', why, detail);
    if (this.#final) {
      this.#stopped = true;
      return;
    }
    this.#scheduleReconnect();
  }

  #scheduleReconnect(): void {
    const cap = Math.min(RECONNECT_MAX_MS, RECONNECT_BASE_MS * 2 ** Math.min(this.#attempt, 16));
    this.#attempt++;
    const r = this.opts.random(4);
    const fraction = ((((r[0] as number) << 24) | ((r[1] as number) << 16) | ((r[2] as number) << 8) | (r[3] as number)) >>> 0) / 0x1_0000_0000;
    // Full jitter, with a floor so a flapping relay is not hammered.
    const delay = Math.max(RECONNECT_BASE_MS / 2, Math.floor(cap * fraction), this.#minDelay);
    this.#minDelay = 0;
    this.#retryTimer = this.opts.clock.setTimeout(() => {
      this.#retryTimer = undefined;
      if (!this.#stopped) this.#open();
    }, delay);
  }

  #armHeartbeat(): void {
    if (this.#heartbeatTimer) this.opts.clock.clearTimeout(this.#heartbeatTimer);
    this.#heartbeatTimer = this.opts.clock.setTimeout(() => {
      this.#heartbeatTimer = undefined;
      const socket = this.#socket;
      if (!socket) return;
      const quiet = this.opts.clock.now() - this.#lastFrameAt;
      if (quiet >= HEARTBEAT_TIMEOUT_MS) {
        this.#fail(socket, 'heartbeat-timeout', 'the relay was silent too long');
        // A dead TCP connection may never deliver the close: treat it as closed now.
        if (this.#socket === socket) {
          this.#socket = undefined;
          this.#authed = false;
          this.#clearTimers();
          this.#onClosed(1006, 'heartbeat timeout');
        }
        return;
      }
      if (quiet >= HEARTBEAT_INTERVAL_MS) this.#send({ type: 'ping', id: ++this.#pingId >>> 0 });
      this.#armHeartbeat();
    }, Math.min(HEARTBEAT_INTERVAL_MS, HEARTBEAT_TIMEOUT_MS) / 2);
  }

  #armRenewal(expiresAt: number): void {
    if (this.#renewTimer) this.opts.clock.clearTimeout(this.#renewTimer);
    const delay = Math.max(0, expiresAt - TOKEN_RENEW_MARGIN_MS - this.opts.clock.now());
    this.#renewTimer = this.opts.clock.setTimeout(() => {
      this.#renewTimer = undefined;
      void this.opts.token(true).then(
        (token) => {
          if (this.#authed) this.#send({ type: 'token', token });
        },
        (err: unknown) => this.h.onProblem(`the token provider failed: ${(err as Error).message}`),
      );
    }, Math.min(delay, 0x7fff_ffff));
  }

  #clearTimers(): void {
    for (const t of [this.#retryTimer, this.#heartbeatTimer, this.#renewTimer]) if (t) this.opts.clock.clearTimeout(t);
    this.#retryTimer = this.#heartbeatTimer = this.#renewTimer = undefined;
  }
}
