/**
 * WebSocket connections: a device binds its connection by signing a fresh server
 * challenge with its identity key, after presenting its user's token. Until then the
 * connection can do nothing but authenticate, and it is closed if it doesn't within
 * the auth timeout (AUTH_TIMEOUT_MS unless configured). One connection per device: a
 * newer one replaces the older.
 */
import type { WebSocket } from 'uWebSockets.js';
import type { CryptoBackend } from '../../crypto/primitives/backend.js';
import { CLOSE_CODES, ProtocolError } from '../../protocol/errors.js';
import { type ClientFrame, type ServerFrame, decodeClientFrame, encodeServerFrame } from '../../protocol/frames.js';
import { CHALLENGE_BYTES, MAX_FRAME_BYTES, MAX_PREAUTH_FRAME_BYTES, MAX_STORED_PER_BATCH } from '../../protocol/limits.js';
import { FEATURE_STORED_BATCH, MAX_STORED_BATCH_BYTES, type StoredAnswer, encodeStoredBatch } from '../../protocol/stored-batch.js';
import { deviceAuthTranscript } from '../../protocol/transcripts.js';
import type { TokenVerifier } from '../auth/tokens.js';
import type { DirectoryStore } from '../directory/store.js';
import type { Logger } from 'pino';
import type { RelayMetrics } from '../metrics.js';
import { BinaryWriter } from '../../protocol/binary.js';
import { BINARY_FRAME, type SendFrame, encodeDeliver, peekSendId } from '../../protocol/envelopes.js';
import { encodeBase64url } from '../../protocol/base64url.js';
import type { DeviceConnection, MailboxService } from '../mailbox/service.js';
import type { SendResult, StoredEnvelope } from '../mailbox/store.js';
import type { DeliveryStream } from '../mailbox/stream.js';
import type { Admission, AdmissionTicket } from './admission.js';
import { type PendingSends, pendingKey } from './pending-sends.js';
import { Deadlines } from './deadlines.js';
import { ownSend } from './send-copy.js';
import { DatabaseUnavailableError } from '../storage/database.js';
import { ClockSkewError } from '../mailbox/store.js';
import { NO_TOPIC_GRANTS, type TopicAction, type TopicGrants, checkTopicAccess } from '../topics/acl.js';
import type { ConsumerHub } from '../topics/consumers.js';
import type { TopicHub, TopicPeer } from '../topics/hub.js';

export interface ConnectionData {
  /** Signed once, by the connection's one authentication attempt: dropped when it starts. */
  challenge: Uint8Array | undefined;
  /** The client address the upgrade came from (see admission.ts addressKey). */
  readonly address: string;
  /** Counted by the admission from open to close. */
  admission: AdmissionTicket | undefined;
  /** The relay origins a device may sign for on this connection (protocol/origin.ts). */
  readonly origins: readonly string[];
  state: 'challenge' | 'authenticating' | 'authenticated';
  userId: string | undefined;
  deviceId: string | undefined;
  /** The device's key in the pending SEND budget (pendingKey), once authenticated. */
  pendingKey: string | undefined;
  closed: boolean;
  /** Until authenticated (then cleared and dropped: an idle connection keeps no timer). */
  authTimer: NodeJS.Timeout | undefined;
  /** When the token stops being accepted (its deadline in ConnectionManager's schedule):
   * the connection is closed then, unless a `token` frame renews it. */
  tokenValidUntil: number | undefined;
  stream: DeliveryStream | undefined;
  /** The client asked for STORED answers in STORED_BATCH frames (its `auth` features). */
  storedBatch: boolean;
  /** Frames produced in this turn, written together in one corked write: JSON text, or
   * the STORED answers (at most MAX_STORED_PER_BATCH) of one STORED_BATCH frame. */
  outbox: Array<string | StoredAnswer[]>;
  /** What the token's topic claim allows (renewed with the token). */
  topicGrants: TopicGrants;
  /** The connection as the topic hub sees it, once it used topics. */
  topicPeer: TopicPeer | undefined;
}

export type RelaySocket = WebSocket<ConnectionData>;

export interface ConnectionDeps {
  readonly verifier: TokenVerifier;
  readonly directory: DirectoryStore;
  readonly backend: CryptoBackend;
  readonly metrics: RelayMetrics;
  readonly logger: Logger;
  readonly random: (n: number) => Uint8Array;
  readonly mailbox: MailboxService;
  readonly topics: TopicHub;
  readonly consumers: ConsumerHub;
  readonly admission: Admission;
  /** SENDs awaiting their answer, per device and in all (pending-sends.ts). */
  readonly pending: PendingSends;
  /** Time a connection has to authenticate (AUTH_TIMEOUT_MS unless configured). */
  readonly authTimeoutMs: number;
  readonly now: () => number;
}

export class ConnectionManager {
  /** Every open socket, for shutdown. */
  readonly open = new Set<RelaySocket>();
  /** DELIVER frames are encoded into this one buffer: a socket send copies what it gets. */
  private readonly deliverWriter = new BinaryWriter(4096);
  /** STORED_BATCH frames likewise; sized for the largest, so it never grows. */
  private readonly storedWriter = new BinaryWriter(MAX_STORED_BATCH_BYTES);
  /** Counts by label value (metrics.ts Tally): frames are counted per frame. */
  private readonly framesIn;
  private readonly framesOut;
  private readonly errors;
  private readonly sendsIn;
  private readonly deliversOut;
  private readonly storedBatchesOut;
  /** Token expiries of every authenticated connection, on one timer. */
  private readonly tokenExpiry: Deadlines<RelaySocket>;

  constructor(private readonly deps: ConnectionDeps) {
    const { tallies } = deps.metrics;
    this.framesIn = (type: string) => tallies.framesIn.child(type);
    this.framesOut = (type: string) => tallies.framesOut.child(type);
    this.errors = (code: string) => tallies.errors.child(code);
    this.sendsIn = this.framesIn('send');
    this.deliversOut = this.framesOut('deliver');
    this.storedBatchesOut = this.framesOut('stored_batch');
    this.tokenExpiry = new Deadlines(
      (ws) => this.onTokenDeadline(ws),
      deps.now,
      (err) => deps.logger.error({ err: { message: (err as Error).message } }, 'closing a connection whose token expired failed'),
    );
  }

  newConnectionData(address: string, origins: readonly string[]): ConnectionData {
    return {
      challenge: this.deps.random(CHALLENGE_BYTES),
      address,
      admission: undefined,
      origins,
      state: 'challenge',
      userId: undefined,
      deviceId: undefined,
      pendingKey: undefined,
      closed: false,
      authTimer: undefined,
      tokenValidUntil: undefined,
      stream: undefined,
      storedBatch: false,
      outbox: [],
      topicGrants: NO_TOPIC_GRANTS,
      topicPeer: undefined,
    };
  }

  onOpen(ws: RelaySocket): void {
    const ud = ws.getUserData();
    this.open.add(ws);
    ud.admission = this.deps.admission.opened(ud.address);
    this.deps.metrics.connectionsOpen.inc();
    ud.authTimer = setTimeout(() => {
      if (!ud.closed && ud.state !== 'authenticated') {
        this.sendError(ws, new ProtocolError('AUTH_TIMEOUT', 'not authenticated in time'));
        this.end(ws, CLOSE_CODES.AUTH_FAILED, 'auth timeout');
      }
    }, this.deps.authTimeoutMs);
    if (ud.challenge) this.send(ws, { type: 'challenge', nonce: ud.challenge });
  }

  onClose(ws: RelaySocket): void {
    const ud = ws.getUserData();
    ud.closed = true;
    if (ud.authTimer) clearTimeout(ud.authTimer);
    if (ud.tokenValidUntil !== undefined) this.tokenExpiry.delete(ws, ud.tokenValidUntil);
    this.open.delete(ws);
    if (ud.admission) this.deps.admission.closed(ud.admission);
    this.deps.metrics.connectionsOpen.dec();
    if (ud.userId !== undefined && ud.deviceId !== undefined && ud.stream) {
      this.deps.mailbox.detach(ud.userId, ud.deviceId, ud.stream);
    }
    if (ud.topicPeer) {
      this.deps.topics.close(ud.topicPeer);
      this.deps.consumers.close(ud.topicPeer);
    }
  }

  onDrain(ws: RelaySocket): void {
    const ud = ws.getUserData();
    ud.stream?.onDrain();
    if (ud.topicPeer) {
      this.deps.topics.drain(ud.topicPeer);
      this.deps.consumers.drain(ud.topicPeer);
    }
  }

  /** The message buffer is only valid synchronously: it is decoded before any await. */
  onMessage(ws: RelaySocket, message: ArrayBuffer, isBinary: boolean): void {
    const ud = ws.getUserData();
    if (ud.state !== 'authenticated' && message.byteLength > MAX_PREAUTH_FRAME_BYTES) {
      // Nothing legitimate before auth is this large: a peer that has proved nothing
      // cannot make the relay read (and decode) 1 MiB frames, and is disconnected.
      this.framesIn('invalid').inc();
      const id = isBinary ? peekSendId(new Uint8Array(message)) : undefined;
      this.sendError(ws, new ProtocolError('FRAME_TOO_LARGE', `frames before authentication are limited to ${MAX_PREAUTH_FRAME_BYTES} bytes`, { id }));
      this.end(ws, CLOSE_CODES.AUTH_FAILED, 'frame too large before authentication');
      return;
    }
    const bytes = new Uint8Array(message);
    if (isBinary) {
      this.onBinary(ws, ud, bytes);
      return;
    }
    let frame: ClientFrame;
    try {
      frame = decodeClientFrame(bytes);
    } catch (err) {
      this.framesIn('invalid').inc();
      this.sendError(ws, err);
      return;
    }
    this.framesIn(frame.type).inc();
    switch (frame.type) {
      case 'auth':
        if (ud.state !== 'challenge') {
          this.sendError(ws, new ProtocolError('ALREADY_AUTHENTICATED', 'this connection is already authenticated or authenticating'));
          return;
        }
        ud.state = 'authenticating';
        void this.authenticate(ws, frame);
        return;
      case 'token':
        if (ud.state !== 'authenticated') {
          this.sendError(ws, new ProtocolError('UNAUTHENTICATED', 'authenticate before renewing the token'));
          return;
        }
        void this.renewToken(ws, frame.token);
        return;
      case 'ping':
        this.send(ws, { type: 'pong', id: frame.id });
        return;
      case 'ack':
        if (!ud.stream || ud.userId === undefined || ud.deviceId === undefined) {
          this.sendError(ws, new ProtocolError('UNAUTHENTICATED', 'authenticate before acknowledging'));
          return;
        }
        try {
          this.deps.mailbox.ack(ud.userId, ud.deviceId, ud.stream, frame.seq);
        } catch (err) {
          this.sendError(ws, err);
        }
        return;
      case 'publish':
      case 'subscribe':
      case 'unsubscribe':
      case 'consume':
      case 'settle':
      case 'stop':
        this.onTopicFrame(ws, ud, frame);
        return;
    }
  }

  /** Topic frames (server/topics/hub.ts) and consumer group frames
   * (server/topics/consumers.ts), each checked against the token's topic claim; every
   * answer and refusal carries the frame's request id. */
  private onTopicFrame(ws: RelaySocket, ud: ConnectionData, frame: Extract<ClientFrame, { type: 'publish' | 'subscribe' | 'unsubscribe' | 'consume' | 'settle' | 'stop' }>): void {
    const refuse = (err: unknown): void => {
      const pe = toProtocolError(err, this.deps.logger);
      this.sendError(ws, new ProtocolError(pe.code, pe.message, { ...pe.details, id: frame.id }));
    };
    const peer = this.topicPeer(ws, ud);
    if (!peer || ud.pendingKey === undefined) {
      refuse(new ProtocolError('UNAUTHENTICATED', 'authenticate before using topics'));
      return;
    }
    if (frame.type === 'unsubscribe') {
      this.deps.topics.unsubscribe(peer, frame.topic).then(() => this.send(ws, { type: 'unsubscribed', id: frame.id, topic: frame.topic }), refuse);
      return;
    }
    if (frame.type === 'stop') {
      this.deps.consumers.stop(peer, frame.topic, frame.group).then(
        () => this.send(ws, { type: 'stopped', id: frame.id, topic: frame.topic, group: frame.group }),
        refuse,
      );
      return;
    }
    const action: TopicAction = frame.type === 'publish' ? 'publish' : frame.type === 'subscribe' ? 'subscribe' : 'consume';
    try {
      checkTopicAccess(ud.topicGrants, action, frame.topic);
    } catch (err) {
      const d = (err as ProtocolError).details ?? {};
      this.deps.metrics.topicDenied.inc({ action, reason: String(d.reason) });
      refuse(err);
      return;
    }
    if (frame.type === 'subscribe') {
      this.deps.topics.subscribe(peer, frame.id, frame.topic, frame.from).catch(refuse);
      return;
    }
    // Held in the device's pending budget, like a SEND, until answered: each is a database
    // transaction, and a peer that pipelines them must not queue them without bound.
    const budget = ud.pendingKey;
    const size = frame.type === 'publish' ? frame.payload.byteLength : 0;
    const refused = this.deps.pending.take(budget, size);
    if (refused) {
      refuse(
        refused === 'device'
          ? new ProtocolError('RATE_LIMITED', 'too many requests of this device awaiting their answer')
          : new ProtocolError('RELAY_BUSY', 'the relay holds too many messages awaiting their answer; nothing was stored: retry later'),
      );
      return;
    }
    const answered = (answer: ServerFrame | undefined): void => {
      this.deps.pending.release(budget, size);
      if (answer) this.send(ws, answer);
    };
    const failed = (err: unknown): void => {
      this.deps.pending.release(budget, size);
      refuse(err);
    };
    if (frame.type === 'consume') {
      this.deps.consumers.consume(peer, frame.id, frame.topic, frame.group, frame.prefetch).then(() => answered(undefined), failed);
    } else if (frame.type === 'settle') {
      this.deps.consumers
        .settle(peer, frame.id, frame.topic, frame.group, frame.action, frame.offsets, { epoch: frame.epoch, delayMs: frame.delayMs, byMs: frame.byMs })
        .then(answered, failed);
    } else {
      this.deps.topics.publish(peer, frame.topic, frame).then(answered, failed);
    }
  }

  /** The connection as the topic hub sees it (undefined until authenticated). */
  private topicPeer(ws: RelaySocket, ud: ConnectionData): TopicPeer | undefined {
    if (ud.topicPeer) return ud.topicPeer;
    if (ud.state !== 'authenticated' || ud.userId === undefined || ud.deviceId === undefined) return undefined;
    ud.topicPeer = {
      userId: ud.userId,
      deviceId: ud.deviceId,
      get closed() {
        return ud.closed;
      },
      write: (text, type) => {
        if (ud.closed) return;
        this.writeOutbox(ws, ud);
        ws.send(text, false);
        this.framesOut(type).inc();
      },
      cork: (fn) => {
        if (!ud.closed) ws.cork(fn);
      },
      bufferedAmount: () => (ud.closed ? 0 : ws.getBufferedAmount()),
      join: (channel) => {
        if (!ud.closed) ws.subscribe(channel);
      },
      leave: (channel) => {
        if (!ud.closed) ws.unsubscribe(channel);
      },
    };
    return ud.topicPeer;
  }

  private onBinary(ws: RelaySocket, ud: ConnectionData, bytes: Uint8Array): void {
    if (bytes.length === 0 || bytes[0] !== BINARY_FRAME.SEND) {
      this.framesIn('invalid').inc();
      this.sendError(ws, new ProtocolError('UNKNOWN_FRAME', 'unknown binary frame type'));
      return;
    }
    this.sendsIn.inc();
    // Every refusal of a SEND names its request id when the header holds one.
    const id = peekSendId(bytes);
    if (bytes.length > MAX_FRAME_BYTES) {
      this.sendError(ws, new ProtocolError('FRAME_TOO_LARGE', `frame over ${MAX_FRAME_BYTES} bytes`, { id }));
      return;
    }
    if (ud.state !== 'authenticated' || ud.userId === undefined || ud.deviceId === undefined || ud.pendingKey === undefined) {
      this.sendError(ws, new ProtocolError('UNAUTHENTICATED', 'authenticate before sending', { id }));
      return;
    }
    // The message's buffer is detached once this handler returns: keep its size now.
    const size = bytes.length;
    const userId = ud.userId;
    const deviceId = ud.deviceId;
    const budget = ud.pendingKey;
    // Budgets first: over them, a SEND is refused before any work is done on it.
    const refused = this.deps.pending.take(budget, size);
    if (refused === 'device') {
      this.sendError(ws, new ProtocolError('RATE_LIMITED', 'too many SENDs of this device awaiting their answer', { id }));
      return;
    }
    if (refused === 'relay') {
      this.sendError(ws, new ProtocolError('RELAY_BUSY', 'the relay holds too many SENDs awaiting their answer; nothing was stored: retry later', { id }));
      return;
    }
    let frame: SendFrame;
    let contentHash: Uint8Array;
    try {
      ({ frame, contentHash } = ownSend(bytes));
    } catch (err) {
      this.deps.pending.release(budget, size);
      this.sendError(ws, err);
      return;
    }
    this.deps.mailbox
      .send({
        senderUserId: userId,
        senderDeviceId: deviceId,
        envelopeId: frame.envelopeId,
        contentHash,
        recipientUserId: frame.recipientUserId,
        targets: frame.targets,
        ttlSeconds: frame.ttlSeconds,
      })
      .then(
        (result) => this.answerSend(ws, ud, frame, budget, size, result, undefined),
        (err: unknown) => this.answerSend(ws, ud, frame, budget, size, undefined, err),
      );
  }

  /**
   * Answers a SEND once its fate is known. Never throws: nothing awaits the promise this
   * runs in (one per SEND, where an async function and a finally() made three).
   */
  private answerSend(ws: RelaySocket, ud: ConnectionData, frame: SendFrame, budget: string, size: number, result: SendResult | undefined, err: unknown): void {
    // Released whether or not this connection is still open: the device's budget covers
    // its SENDs, not its connection's (the same device may have reconnected meanwhile).
    this.deps.pending.release(budget, size);
    try {
      if (result?.ok) this.stored(ws, ud, frame.id, frame.envelopeId, result);
      else if (result) this.sendError(ws, new ProtocolError(result.error.code, result.error.message, { ...result.error.details, id: frame.id }));
      else throw err;
    } catch (e) {
      const pe = toProtocolError(e, this.deps.logger);
      this.sendError(ws, new ProtocolError(pe.code, pe.message, { id: frame.id }));
    }
  }

  /**
   * Queues a STORED answer (only ever called once its SEND is committed). A client that
   * asked for STORED_BATCH gets the answers queued together in one frame (the answers of
   * one commit arrive in one turn); any other, one JSON `stored` frame each.
   */
  private stored(ws: RelaySocket, ud: ConnectionData, id: number, envelopeId: Uint8Array, r: Extract<SendResult, { ok: true }>): void {
    if (ud.closed) return;
    const answer: StoredAnswer = { id, envelopeId, duplicate: r.duplicate, storedAt: r.storedAtMs, expiresAt: r.expiresAtMs, recipients: r.stored };
    if (!ud.storedBatch) {
      this.send(ws, jsonStored(answer));
      return;
    }
    const box = ud.outbox;
    if (box.length === 0) queueMicrotask(() => this.flush(ws, ud));
    const last = box[box.length - 1];
    // Appended to the frame being gathered when it is the last thing queued (so answers
    // and errors keep the order they were produced in) and has room.
    if (typeof last === 'object' && last.length < MAX_STORED_PER_BATCH) last.push(answer);
    else box.push([answer]);
  }

  private async authenticate(ws: RelaySocket, frame: Extract<ClientFrame, { type: 'auth' }>): Promise<void> {
    const ud = ws.getUserData();
    const challenge = ud.challenge;
    ud.challenge = undefined;
    try {
      if (!challenge) throw new ProtocolError('CHALLENGE_FAILED', 'this connection has no challenge left to sign');
      // The origin the device signed must be this relay's (channel binding): a signature
      // obtained by a relay that forwarded our challenge names that relay instead.
      if (!ud.origins.includes(frame.origin)) {
        throw new ProtocolError('CHALLENGE_FAILED', `the signed origin ${JSON.stringify(frame.origin)} is not this relay's`);
      }
      const token = await this.deps.verifier.verify(frame.token);
      const userId = token.userId;
      // The device is looked up under the token's user only: a valid token for one user
      // can never bind another user's device, whatever the signature.
      const device = await this.deps.directory.getDevice(userId, frame.deviceId);
      if (!device) throw new ProtocolError('DEVICE_NOT_FOUND', 'no such device for this user');
      const transcript = deviceAuthTranscript(challenge, userId, frame.deviceId, frame.origin);
      if (!this.deps.backend.ed25519Verify(frame.signature, transcript, device.identityKey)) {
        throw new ProtocolError('CHALLENGE_FAILED', 'the challenge signature does not verify with the device identity key');
      }
      if (ud.closed) return;
      ud.state = 'authenticated';
      ud.userId = userId;
      ud.deviceId = frame.deviceId;
      ud.pendingKey = pendingKey(userId, frame.deviceId);
      ud.storedBatch = frame.features?.includes(FEATURE_STORED_BATCH) === true;
      ud.topicGrants = token.topics;
      clearTimeout(ud.authTimer);
      ud.authTimer = undefined;
      if (ud.admission) this.deps.admission.authenticated(ud.admission);
      this.armTokenTimer(ws, token.validUntilMs);
      this.send(ws, {
        type: 'auth_ok',
        userId,
        deviceId: frame.deviceId,
        expiresAt: token.expiresAtMs,
        // The features of the auth frame this relay uses: absent for a client that named none.
        ...(ud.storedBatch ? { features: [FEATURE_STORED_BATCH] } : {}),
      });
      this.deps.logger.debug({ userId, deviceId: frame.deviceId }, 'device authenticated');
      // A newer connection for the same device (on this relay or another) replaces this
      // one; a revocation closes it.
      ud.stream = await this.deps.mailbox.attach(userId, frame.deviceId, new SocketConnection(this, ws, ud));
      if (ud.closed) {
        this.deps.mailbox.detach(userId, frame.deviceId, ud.stream);
        return;
      }
      // A revocation committed while this connection was being set up sent its notice
      // before the stream was attached: look again. When the database cannot answer now,
      // the connection stays: the catch-up scan looks again (it closes the connections
      // of revoked devices), and an outage should not cut a connection that is up.
      const listed = await this.deps.directory.getDevice(userId, frame.deviceId).catch((err: unknown) => {
        if (err instanceof DatabaseUnavailableError) return 'unknown' as const;
        throw err;
      });
      if (!listed && !ud.closed) {
        this.end(ws, CLOSE_CODES.DEVICE_REVOKED, 'device revoked');
      }
    } catch (err) {
      if (ud.closed) return;
      const pe = toProtocolError(err, this.deps.logger);
      this.sendError(ws, pe);
      // Nothing is wrong with the credentials when the relay cannot check them: say so,
      // so that the client reconnects later rather than treating them as refused.
      if (pe.code === 'UNAVAILABLE') this.end(ws, CLOSE_CODES.TRY_AGAIN_LATER, 'try again later');
      else this.end(ws, CLOSE_CODES.AUTH_FAILED, 'authentication failed');
    }
  }

  /** A fresh token for the connection's user extends its life; anything else changes nothing. */
  private async renewToken(ws: RelaySocket, raw: string): Promise<void> {
    const ud = ws.getUserData();
    try {
      const token = await this.deps.verifier.verify(raw);
      if (token.userId !== ud.userId) throw new ProtocolError('TOKEN_INVALID', 'the token names another user than this connection\'s');
      if (ud.closed) return;
      this.armTokenTimer(ws, token.validUntilMs);
      ud.topicGrants = token.topics;
      this.send(ws, { type: 'token_ok', expiresAt: token.expiresAtMs });
      // Standing subscriptions and memberships keep going only while the new claim allows them.
      if (ud.topicPeer) {
        const allowedFor = (action: TopicAction) => (topic: string): ProtocolError | undefined => {
          try {
            checkTopicAccess(token.topics, action, topic);
            return undefined;
          } catch (err) {
            return err as ProtocolError;
          }
        };
        this.deps.topics.recheck(ud.topicPeer, allowedFor('subscribe'));
        this.deps.consumers.recheck(ud.topicPeer, allowedFor('consume'));
      }
    } catch (err) {
      this.sendError(ws, err);
    }
  }

  /** Closes the connection with TOKEN_EXPIRED once its token is no longer accepted. */
  private armTokenTimer(ws: RelaySocket, validUntilMs: number): void {
    const ud = ws.getUserData();
    if (ud.tokenValidUntil !== undefined) this.tokenExpiry.delete(ws, ud.tokenValidUntil);
    ud.tokenValidUntil = validUntilMs;
    this.tokenExpiry.add(ws, validUntilMs);
  }

  private onTokenDeadline(ws: RelaySocket): void {
    const ud = ws.getUserData();
    const validUntilMs = ud.tokenValidUntil;
    ud.tokenValidUntil = undefined;
    if (ud.closed || validUntilMs === undefined) return;
    if (this.deps.now() < validUntilMs) return this.armTokenTimer(ws, validUntilMs);
    this.sendError(ws, new ProtocolError('TOKEN_EXPIRED', 'the token expired; connect again with a fresh one, or send a token frame before it expires'));
    this.end(ws, CLOSE_CODES.AUTH_FAILED, 'token expired');
  }

  /** Writes a DELIVER now (SocketConnection). */
  deliver(ws: RelaySocket, env: StoredEnvelope): void {
    ws.send(encodeDeliver(env, this.deliverWriter), true);
    this.deliversOut.inc();
  }

  /**
   * Queues a control frame. Frames queued in one turn of the event loop (e.g. the STORED
   * answers of one commit) go out in one corked write, one syscall, at the end of it.
   */
  send(ws: RelaySocket, frame: ServerFrame): void {
    const ud = ws.getUserData();
    if (ud.closed) return;
    if (ud.outbox.length === 0) queueMicrotask(() => this.flush(ws, ud));
    ud.outbox.push(encodeServerFrame(frame));
    this.framesOut(frame.type).inc();
  }

  /** Writes a frame now, after what is queued; called inside the stream's cork. */
  sendInStream(ws: RelaySocket, ud: ConnectionData, frame: ServerFrame): void {
    if (ud.closed) return;
    this.writeOutbox(ws, ud);
    ws.send(encodeServerFrame(frame), false);
    this.framesOut(frame.type).inc();
  }

  private flush(ws: RelaySocket, ud: ConnectionData): void {
    if (ud.closed || ud.outbox.length === 0) return;
    ws.cork(() => this.writeOutbox(ws, ud));
  }

  /** Writes queued control frames; call inside a cork. */
  writeOutbox(ws: RelaySocket, ud: ConnectionData): void {
    if (ud.outbox.length === 0) return;
    const frames = ud.outbox;
    ud.outbox = [];
    for (const f of frames) {
      if (typeof f === 'string') {
        ws.send(f, false);
      } else {
        this.writeStoredBatch(ws, f);
      }
    }
  }

  /** Writes one STORED_BATCH (the writer's buffer is reused: uWS copies what it is
   * given). Answers the encoder refuses (none should be: they come from the store) go
   * out as JSON instead, logged: nothing thrown here could reach a caller. */
  private writeStoredBatch(ws: RelaySocket, answers: readonly StoredAnswer[]): void {
    let frame: Uint8Array;
    try {
      frame = encodeStoredBatch(answers, this.storedWriter);
    } catch (err) {
      this.deps.logger.error({ err: { message: (err as Error).message } }, 'a STORED_BATCH did not encode; answered in JSON');
      for (const a of answers) {
        ws.send(encodeServerFrame(jsonStored(a)), false);
        this.framesOut('stored').inc();
      }
      return;
    }
    ws.send(frame, true);
    this.storedBatchesOut.inc();
  }

  /** Closes after writing what is queued (an error frame explaining the close). */
  end(ws: RelaySocket, code: number, reason: string): void {
    const ud = ws.getUserData();
    if (ud.closed) return;
    this.flush(ws, ud);
    ws.end(code, reason);
  }

  sendError(ws: RelaySocket, err: unknown): void {
    const pe = toProtocolError(err, this.deps.logger);
    this.errors(pe.code).inc();
    const { id, ...rest } = pe.details ?? {};
    this.send(ws, {
      type: 'error',
      code: pe.code,
      message: pe.message,
      ...(typeof id === 'number' ? { id } : {}),
      ...(Object.keys(rest).length > 0 ? { details: rest } : {}),
    });
  }

  closeAll(code: number, reason: string): void {
    this.tokenExpiry.clear();
    for (const ws of [...this.open]) {
      this.end(ws, code, reason);
    }
  }
}

/** A STORED answer as its JSON frame. */
function jsonStored(a: StoredAnswer): ServerFrame {
  return {
    type: 'stored',
    id: a.id,
    envelopeId: encodeBase64url(a.envelopeId),
    duplicate: a.duplicate,
    storedAt: a.storedAt,
    expiresAt: a.expiresAt,
    recipients: a.recipients,
  };
}

/**
 * The socket side of an authenticated device's delivery stream, and how the mailbox
 * service closes it. One object per connection with its methods on the prototype: a set
 * of closures made per connection would be kept as long as the connection is open.
 */
class SocketConnection implements DeviceConnection {
  constructor(
    private readonly manager: ConnectionManager,
    private readonly ws: RelaySocket,
    private readonly ud: ConnectionData,
  ) {}

  deliver(env: StoredEnvelope): void {
    this.manager.deliver(this.ws, env);
  }

  // Written in place, not queued: they are ordered with the DELIVERs around them.
  expired(from: number, to: number): void {
    this.manager.sendInStream(this.ws, this.ud, { type: 'expired', from, to });
  }

  queueEmpty(through: number): void {
    this.manager.sendInStream(this.ws, this.ud, { type: 'queue_empty', through });
  }

  bufferedAmount(): number {
    return this.ud.closed ? 0 : this.ws.getBufferedAmount();
  }

  isClosed(): boolean {
    return this.ud.closed;
  }

  cork(fn: () => void): void {
    if (this.ud.closed) return;
    this.ws.cork(() => {
      // Frames queued earlier go first: the connection sees frames in the order made.
      this.manager.writeOutbox(this.ws, this.ud);
      fn();
    });
  }

  close(why: 'replaced' | 'revoked'): void {
    if (this.ud.closed) return;
    if (why === 'revoked') this.manager.end(this.ws, CLOSE_CODES.DEVICE_REVOKED, 'device revoked');
    else this.manager.end(this.ws, CLOSE_CODES.REPLACED, 'replaced by a newer connection');
  }
}

export function toProtocolError(err: unknown, logger: Logger): ProtocolError {
  if (err instanceof ProtocolError) return err;
  if (err instanceof DatabaseUnavailableError) {
    // An outage, not a bug: the pool and LISTEN reconnects log it, once per connection
    // rather than once per request.
    logger.debug({ err: { message: err.message } }, 'database unavailable');
    return new ProtocolError('UNAVAILABLE', 'the database is unavailable; retry later');
  }
  if (err instanceof ClockSkewError) {
    // The relay's clock, not the request: each retirement tick logs it (a warning), so
    // the answers do not, at debug only. Every SEND of every batch fails this way while
    // the clock is off: a warning each was a log line per SEND.
    logger.debug({ err: { message: err.message } }, 'cannot store: clock skew');
    return new ProtocolError('UNAVAILABLE', 'the relay cannot store now; retry later');
  }
  logger.error({ err: { message: (err as Error)?.message, stack: (err as Error)?.stack } }, 'internal error');
  return new ProtocolError('INTERNAL', 'internal error');
}
