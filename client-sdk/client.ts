/**
 * The managed client an application embeds: `createClient` opens (or creates) this
 * device, enrols it in its user's device list (as the root, or by waiting to be linked by
 * an existing device), keeps its prekeys published, holds a connection to the relay, and
 * turns `send` and incoming envelopes into end-to-end encrypted messages with an outbox
 * (nothing sent is lost while offline) and an inbox (each message offered exactly once
 * until marked done). docs/SDK.md is the guide.
 */
import { DeviceChain, type ListedDevice } from '../crypto/devices/chain.js';
import { createLinkRequest, decodeLinkRequest, encodeLinkRequest, linkEntry, linkRequestFingerprint, revokeEntry, rootEntry } from '../crypto/devices/link.js';
import { CryptoError } from '../crypto/errors.js';
import { SafetyNumber } from '../crypto/identity/safety-number.js';
import { pad } from '../crypto/padding.js';
import type { CryptoBackend } from '../crypto/primitives/backend.js';
import { equalBytes } from '../crypto/primitives/bytes.js';
import { cryptoReady, defaultBackend } from '../crypto/primitives/index.js';
import { type RandomSource, systemRandom } from '../crypto/primitives/random.js';
import { encodeBase64url } from '../protocol/base64url.js';
import { DEVICE_ID_PATTERN, MAX_DEVICE_ID_LENGTH, MAX_TTL_SECONDS, MAX_USER_ID_LENGTH, MIN_TTL_SECONDS, USER_ID_PATTERN } from '../protocol/limits.js';
import { relayOrigin } from '../protocol/origin.js';
import { type Clock, systemClock } from './clock.js';
import { Connection, type OfflineReason } from './connection.js';
import { DeviceKeys, type DeviceRecord, loadDevice, newDevice, saveDevice } from './device.js';
import { Directory, type TrustPolicy } from './directory.js';
import { SdkError, passing } from './errors.js';
import { Emitter } from './events.js';
import { type Flag, FlagQueue } from './flags.js';
import { GroupKeys, type GroupTarget } from './groups.js';
import { idSource } from './ids.js';
import { type FaultHook, Inbox, type InboxRecord } from './inbox.js';
import { CRYPTO_READY_WAIT_MS, LOG_RETRY_MS, LOG_SUBMIT_BATCH, RECEIPT_RETRY_MS, RECEIPT_SWEEP_MAX_MS, RECEIPT_SWEEP_MIN_MS } from './limits.js';
import { DEDUPE_PRUNE_INTERVAL_MS, DEFAULT_TTL_SECONDS, HEALING_MIN_INTERVAL_MS, LINK_POLL_MS, MAX_BODY_BYTES, MAX_GROUP_ID_LENGTH, MAX_GROUP_MEMBERS, PREKEY_TOPUP_DELAY_MS } from './limits.js';
import { type OutboxEntry, type SentInfo, Outbox } from './outbox.js';
import { type BodyKind, type Payload, decodeBody, encodeBody, encodePayload } from './payload.js';
import { Sessions } from './sessions.js';
import { EncryptedStore, type StoreKey } from './stores/encrypted.js';
import { NS, type Store, type StoreTx, Transactor, decodeRecord, encodeRecord } from './stores/store.js';
import { type FetchLike, RelayHttp } from './transport/http.js';
import { type Transport, webSocketTransport } from './transport/transport.js';
import { Anomalies } from './anomalies.js';
import { type ReceiptInfo, type ReceiptPolicy, LOG_QUEUE_PREFIX, Receipts, resolveReceiptPolicy } from './receipts.js';
import { SignedEvents } from './signed-events.js';
import { EvidenceError } from '../crypto/evidence/errors.js';
import { type EventInput, type SignedEvent, parseEvent, verifyEvent } from '../crypto/evidence/event.js';
import { type ReceiptEntry, signReceipt } from '../crypto/evidence/receipt.js';
import { IdentityKey } from '../crypto/identity/identity-key.js';
import { canonicalJson } from '../crypto/evidence/json.js';
import { TopicKeys } from './topic-keys.js';
import {
  type ConsumerOptions,
  type PublishOptions,
  type PublishResult,
  type SubscribeOptions,
  type Subscription,
  type TopicMessage,
  Consumer,
  TopicRouter,
  checkBodySize,
  isTopicRequestId,
  orderingKeyBytes,
} from './topics.js';
import type { CreateGroupRequest, GroupInfoAnswer, TopicInfoAnswer } from '../protocol/topics.js';
import { GROUP_NAME_PATTERN, MAX_GROUP_NAME_LENGTH, MAX_TOPIC_NAME_LENGTH, TOPIC_NAME_PATTERN } from '../protocol/limits.js';
import { DEDUPE_RETENTION_MS, MAX_TOPIC_READERS } from './limits.js';

export type ClientState = 'awaiting-link' | 'connecting' | 'online' | 'offline' | 'closed';

export interface StateChange {
  readonly state: ClientState;
  /** Why the client is offline (or closed). */
  readonly reason?: OfflineReason | 'not-linked' | undefined;
  readonly detail?: string | undefined;
}

/** A received message, offered until `done()` is called. */
export interface Message {
  /** The sender's id for this message (base64url), the same on every device it reached. */
  readonly id: string;
  /** The envelope it came in (base64url). */
  readonly envelopeId: string;
  readonly from: { readonly userId: string; readonly deviceId: string };
  /** The user it was sent to: this user, or (on a copy from one of this user's other
   * devices) the user that device sent it to. Undefined for group messages. */
  readonly to: string | undefined;
  /** The group it was sent to, for group messages. */
  readonly groupId: string | undefined;
  /** 'bytes', 'text' or 'json': what `body` is. */
  readonly kind: BodyKind;
  readonly body: unknown;
  /** The sender's clock when it was sent; the relay's when stored; ours when received (ms). */
  readonly sentAt: number;
  readonly storedAt: number;
  readonly receivedAt: number;
  /** The mailbox sequence it was delivered at. */
  readonly seq: number;
  /** Anomalies noticed about this message (LATE, REORDERED, ...); empty for a normal one. */
  readonly flags: readonly string[];
  /** The sender device's number for it in this conversation (absent from older senders). */
  readonly number: number | undefined;
  /** For a signed event (`kind` 'event'): the verified event (also in `body`) and its JWS, verbatim. */
  readonly event: { readonly jws: string; readonly event: SignedEvent } | undefined;
  /** Marks the message handled: it is never offered again. */
  done(): Promise<void>;
}

export interface ClientEvents extends Record<string, unknown> {
  state: StateChange;
  message: Message;
  flag: Flag;
  /** An outbox entry reached the relay (also one sent after a restart). */
  sent: SentInfo;
  /** A failure not tied to a call: an outbox entry refused, a store failure. */
  error: SdkError;
  /** A recipient device's signed receipt for an envelope this device sent, verified. */
  receipt: ReceiptInfo;
  /** Receipts the relay appended to its transparency log. */
  logged: { readonly receipts: number; readonly indexes: readonly number[] };
  /** A topic message this device published was committed (also one sent after a restart). */
  published: PublishResult;
}

/** Options of one `send`. */
export interface SendOptions {
  /** Ask that the recipients' receipts for it go to the relay's transparency log. */
  readonly logReceipt?: boolean | undefined;
}

export interface ClientOptions {
  /** The relay: `https://relay.example.com` (http(s) or ws(s); a path prefix is kept). */
  readonly url: string;
  readonly userId: string;
  /** The user's token, or a function returning one; called again with `fresh` when the last was refused or expires. */
  readonly token: string | ((fresh: boolean) => string | Promise<string>);
  /** Where the device keeps its state (MemoryStore, FileStore, IndexedDbStore, or your own). */
  readonly store: Store;
  /** Encrypts everything stored with this key or passphrase. */
  readonly storeKey?: StoreKey | undefined;
  /** This device's id, chosen on first use (default: random). */
  readonly deviceId?: string | undefined;
  /** What a changed identity does to sending: 'warn' (flag and go on, the default) or 'block'. */
  readonly trustPolicy?: TrustPolicy | undefined;
  /** How long the relay keeps an undelivered envelope (seconds). */
  readonly ttlSeconds?: number | undefined;
  /** Connect right away (default true). */
  readonly connect?: boolean | undefined;
  readonly clock?: Clock | undefined;
  readonly random?: RandomSource | undefined;
  readonly backend?: CryptoBackend | undefined;
  readonly transport?: Transport | undefined;
  readonly fetch?: FetchLike | undefined;
  /** Fault injection for tests: called at each step of receiving (see FaultPoint). */
  readonly faultHook?: FaultHook | undefined;
  /** Delivery receipts: what to sign, what to log, the deadlines and tolerances of the anomaly flags. */
  readonly receipts?: ReceiptPolicy | undefined;
}

/** The next message number of `conversation` (1, 2, ...), in the sealing transaction. */
async function nextNumber(tx: StoreTx, conversation: string): Promise<number> {
  const key = `n:${conversation}`;
  const raw = await tx.get(NS.conversations, key);
  const last = raw === undefined ? 0 : decodeRecord<{ n: number }>(raw).n;
  // Past 2^32-1 (never in practice) the numbers wrap to 1: receivers see a REPLAY, not a crash.
  const n = last >= 0xffff_ffff ? 1 : last + 1;
  tx.put(NS.conversations, key, encodeRecord({ n }));
  return n;
}

/** A message body as sent: bytes, a string or a JSON value, at most MAX_BODY_BYTES. */
function encodeAppBody(body: unknown): { kind: BodyKind; bytes: Uint8Array } {
  let encoded: { kind: BodyKind; bytes: Uint8Array };
  try {
    encoded = encodeBody(body);
  } catch (cause) {
    throw new SdkError('INVALID_ARGUMENT', 'a body is bytes, a string or a JSON value', { cause });
  }
  if (encoded.bytes.length > MAX_BODY_BYTES) throw new SdkError('BODY_TOO_LARGE', `a body is at most ${MAX_BODY_BYTES} bytes`);
  return encoded;
}

/** Compares two strings without an early exit on the first difference. */
function equalStrings(a: string, b: string): boolean {
  const enc = new TextEncoder();
  const x = enc.encode(a);
  const y = enc.encode(b);
  return x.length === y.length && equalBytes(x, y);
}

function checkId(value: unknown, what: string, max: number, pattern: RegExp): string {
  if (typeof value !== 'string' || value.length === 0 || value.length > max || !pattern.test(value)) {
    throw new SdkError('INVALID_ARGUMENT', `${what} must match ${pattern.source} (1..${max} characters)`);
  }
  return value;
}

/** The relay's HTTP base, WebSocket URL and origin, from the URL the app gives. */
function relayUrls(url: string): { http: string; ws: string; origin: string } {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new SdkError('INVALID_ARGUMENT', 'url must be the relay\'s http(s) or ws(s) URL');
  }
  const secure = u.protocol === 'https:' || u.protocol === 'wss:';
  if (!['http:', 'https:', 'ws:', 'wss:'].includes(u.protocol)) throw new SdkError('INVALID_ARGUMENT', 'url must be http(s) or ws(s)');
  const path = u.pathname.replace(/\/+$/, '');
  const http = `${secure ? 'https' : 'http'}://${u.host}${path}`;
  const ws = `${secure ? 'wss' : 'ws'}://${u.host}${path}/v1/ws`;
  const origin = relayOrigin(ws);
  if (origin === undefined) throw new SdkError('INVALID_ARGUMENT', 'url is not a relay URL');
  return { http, ws, origin };
}

/** Waits (at most CRYPTO_READY_WAIT_MS) for the default backend's libsodium to load or fail. */
async function cryptoLoaded(): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const waited = new Promise<void>((resolve) => {
    timer = setTimeout(resolve, CRYPTO_READY_WAIT_MS);
  });
  await Promise.race([cryptoReady(), waited]);
  clearTimeout(timer);
}

/** Opens the device in `store` (creating it on first use) and starts it. */
export async function createClient(options: ClientOptions): Promise<HermeticClient> {
  const userId = checkId(options.userId, 'userId', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
  if (options.deviceId !== undefined) checkId(options.deviceId, 'deviceId', MAX_DEVICE_ID_LENGTH, DEVICE_ID_PATTERN);
  const ttl = options.ttlSeconds ?? DEFAULT_TTL_SECONDS;
  if (!Number.isInteger(ttl) || ttl < MIN_TTL_SECONDS || ttl > MAX_TTL_SECONDS) throw new SdkError('INVALID_ARGUMENT', `ttlSeconds must be ${MIN_TTL_SECONDS}..${MAX_TTL_SECONDS}`);
  if (typeof options.token !== 'string' && typeof options.token !== 'function') throw new SdkError('INVALID_ARGUMENT', 'token must be a string or a function');
  if (options.trustPolicy !== undefined && options.trustPolicy !== 'warn' && options.trustPolicy !== 'block') throw new SdkError('INVALID_ARGUMENT', "trustPolicy is 'warn' or 'block'");
  const urls = relayUrls(options.url);
  if (options.backend === undefined) await cryptoLoaded();
  const store = options.storeKey ? await EncryptedStore.open(options.store, options.storeKey) : options.store;
  const db = new Transactor(store);
  const random = options.random ?? systemRandom;
  const record = await db.run(async (tx) => {
    const d = await loadDevice(tx);
    if (d) {
      if (d.userId !== userId) throw new SdkError('INVALID_ARGUMENT', `this store belongs to user ${d.userId}`);
      if (options.deviceId !== undefined && d.deviceId !== options.deviceId) throw new SdkError('INVALID_ARGUMENT', `this store belongs to device ${d.deviceId}`);
      return d;
    }
    const created = newDevice(userId, options.deviceId ?? `d${encodeBase64url(random(9))}`, random);
    saveDevice(tx, created);
    return created;
  });
  const client = new HermeticClient(options, urls, db, record, ttl);
  await client.start();
  return client;
}

export class HermeticClient {
  readonly userId: string;
  readonly deviceId: string;
  /** Resolves once this device is in its user's device list (at once for the root). */
  readonly linked: Promise<void>;
  #resolveLinked!: () => void;
  #rejectLinked!: (err: unknown) => void;

  readonly #events: Emitter<ClientEvents>;
  readonly #db: Transactor;
  readonly #clock: Clock;
  readonly #random: RandomSource;
  /** Message and envelope ids (never key material). */
  readonly #newId: RandomSource;
  readonly #backend: CryptoBackend;
  readonly #http: RelayHttp;
  readonly #keys: DeviceKeys;
  readonly #flags: FlagQueue;
  readonly #directory: Directory;
  readonly #sessions: Sessions;
  readonly #groups: GroupKeys;
  readonly #topicKeys: TopicKeys;
  readonly #topics: TopicRouter;
  readonly #outbox: Outbox;
  readonly #inbox: Inbox;
  readonly #connection: Connection;
  readonly #ttl: number;
  readonly #autoConnect: boolean;
  #record: DeviceRecord;
  #state: StateChange = { state: 'offline', reason: 'starting' };
  #closed = false;
  #linkTimer: ReturnType<Clock['setTimeout']> | undefined;
  /** Stored messages not yet offered in this run (no consumer yet). */
  readonly #unoffered: Message[] = [];
  /** Each open messages() iterator: given a message, or `undefined` when the client closes. */
  readonly #iterators = new Set<(m: Message | undefined) => void>();
  readonly #lastHeal = new Map<string, number>();
  #flagDrain: Promise<void> = Promise.resolve();
  #maintainTimer: ReturnType<Clock['setTimeout']> | undefined;
  #lastPrune = -Infinity;
  /** Session setups in flight, per device: concurrent sends share one bundle fetch. */
  readonly #starting = new Map<string, Promise<void>>();
  readonly #fault: FaultHook | undefined;
  readonly #receipts: Receipts;
  readonly #anomalies: Anomalies;
  readonly #signedEvents: SignedEvents;
  #receiptTimer: ReturnType<Clock['setTimeout']> | undefined;
  #sweepTimer: ReturnType<Clock['setTimeout']> | undefined;
  #flushing: Promise<void> = Promise.resolve();
  #logging = false;
  #connectedAt = 0;
  #sweeping = false;
  #logRetryAt = 0;
  /** Signed events are signed one at a time, so each source's chain has no fork. */
  #eventChain: Promise<unknown> = Promise.resolve();

  constructor(options: ClientOptions, urls: { http: string; ws: string; origin: string }, db: Transactor, record: DeviceRecord, ttl: number) {
    this.userId = record.userId;
    this.deviceId = record.deviceId;
    this.#record = record;
    this.#db = db;
    this.#ttl = ttl;
    this.#autoConnect = options.connect !== false;
    this.#clock = options.clock ?? systemClock;
    this.#random = options.random ?? systemRandom;
    // An injected source (tests) is used as it is, so its sequence stays reproducible.
    this.#newId = options.random ?? idSource(systemRandom);
    this.#backend = options.backend ?? defaultBackend;
    this.#events = new Emitter<ClientEvents>((err) => queueMicrotask(() => { throw err; }));
    this.linked = new Promise<void>((resolve, reject) => {
      this.#resolveLinked = resolve;
      this.#rejectLinked = reject;
    });
    this.linked.catch(() => undefined);
    const tokenOption = options.token;
    let cached: string | undefined = typeof tokenOption === 'string' ? tokenOption : undefined;
    const token = async (fresh: boolean): Promise<string> => {
      if (typeof tokenOption === 'string') return tokenOption;
      if (cached === undefined || fresh) cached = await tokenOption(fresh);
      if (typeof cached !== 'string' || cached.length === 0) throw new SdkError('INVALID_ARGUMENT', 'the token function must return a non-empty string');
      return cached;
    };
    const fetchImpl: FetchLike = options.fetch ?? ((url, init) => globalThis.fetch(url, init));
    this.#http = new RelayHttp(urls.http, token, fetchImpl);
    this.#keys = new DeviceKeys(record, db, this.#http, this.#backend, this.#random, () => this.#clock.now());
    // A drain queued now runs after the transaction that wrote the flag (they are serialized).
    this.#flags = new FlagQueue(() => this.#clock.now(), () => this.#drainFlags());
    this.#directory = new Directory(db, this.#http, this.#backend, () => this.#clock.now(), options.trustPolicy ?? 'warn', this.#flags, this.userId);
    this.#sessions = new Sessions(this.#keys.identity, this.#backend, this.#random);
    this.#groups = new GroupKeys(this.#backend, this.#random);
    this.#topicKeys = new TopicKeys(this.#backend, this.#random);
    this.#topics = new TopicRouter({
      db,
      backend: this.#backend,
      clock: this.#clock,
      keys: this.#topicKeys,
      userId: this.userId,
      deviceId: this.deviceId,
      newId: (n) => this.#newId(n),
      send: (frame) => this.#connection.sendTopic(frame),
      online: () => this.#connection.online,
      assertLinked: () => this.#assertLinked(),
      seal: (topic, readers, inner, inTx) => this.#sealTopic(topic, readers, inner, inTx),
      verifyEvent: async (jws, from) => {
        const { event, signer } = await this.verifyEvent(jws);
        if (signer.userId !== from.userId || signer.deviceId !== from.deviceId) throw new SdkError('EVIDENCE_INVALID', `the event is signed by ${signer.userId}/${signer.deviceId}, not by its publisher`);
        return event;
      },
      report: (err) => this.#report(err),
      published: (r) => this.#events.emit('published', r),
    });
    const policy = resolveReceiptPolicy(options.receipts, (d) => new SdkError('INVALID_ARGUMENT', d));
    this.#receipts = new Receipts(policy, this.#backend, this.#flags, this.userId, this.deviceId);
    this.#anomalies = new Anomalies(policy);
    this.#signedEvents = new SignedEvents(this.#backend, this.#keys.identity, this.userId, this.deviceId);
    this.#connection = new Connection(
      {
        wsUrl: urls.ws,
        origin: urls.origin,
        userId: this.userId,
        deviceId: this.deviceId,
        identity: this.#keys.identity,
        token,
        transport: options.transport ?? webSocketTransport(),
        clock: this.#clock,
        random: this.#random,
      },
      {
        onState: (state, reason, detail) => {
          if (this.#closed) return;
          this.#outbox.setOnline(state === 'online');
          if (state !== 'online') this.#topics.offline();
          if (reason === 'revoked') void this.#checkRevoked(detail);
          this.#setState({ state, reason, detail });
        },
        onOnline: () => {
          this.#connectedAt = this.#clock.now();
          this.#inbox.reset();
          this.#topics.online();
          void this.#maintain();
          void this.#pruneSeen();
          this.#scheduleReceipts(0);
          void this.#submitLog();
        },
        onDeliver: (f) => this.#inbox.deliver(f),
        onMalformedDeliver: (header, detail) => this.#inbox.malformed(header, detail),
        onQueueEmpty: () => undefined,
        onExpired: (from, to) => this.#inbox.expired(from, to),
        onStored: (f) => void this.#outbox.onStored(f.id, f.storedAt, f.duplicate).catch((err: unknown) => this.#report(err)),
        onSendError: (id, err) => void this.#outbox.onError(id, err).catch((e: unknown) => this.#report(e)),
        onProblem: (detail) => this.#report(new SdkError('RELAY_PROTOCOL_ERROR', detail)),
        onTopicFrame: (f) => this.#topics.onFrame(f),
        onTopicError: (id, err) => {
          if (!isTopicRequestId(id)) return false;
          this.#topics.onError(id, err);
          return true;
        },
      },
    );
    this.#outbox = new Outbox(
      db,
      this.#clock,
      (frame) => this.#connection.sendBinary(frame),
      (entry) => this.#repair(entry),
      (info) => this.#events.emit('sent', info),
      (_entry, err) => this.#events.emit('error', err),
      (tx, entry, storedAt) => {
        if (!entry.noReceipt && this.#receipts.policy.expect) this.#receipts.awaitReceipts(tx, { envelopeId: entry.envelopeId, recipient: entry.recipient, messageId: entry.messageId, targets: entry.targets, log: entry.logReceipt === true, ttlSeconds: entry.ttlSeconds }, storedAt, this.#clock.now());
      },
    );
    this.#inbox = new Inbox({
      db,
      directory: this.#directory,
      sessions: this.#sessions,
      groups: this.#groups,
      topicKeys: this.#topicKeys,
      topicKeyStored: (from, keyId) => this.#topics.keyArrived(from, keyId),
      flags: this.#flags,
      anomalies: this.#anomalies,
      receipts: this.#receipts,
      events: this.#signedEvents,
      backend: this.#backend,
      now: () => this.#clock.now(),
      connectedAt: () => this.#connectedAt,
      userId: this.userId,
      deviceId: this.deviceId,
      ack: (seq) => this.#connection.ack(seq),
      resync: (delayMs) => this.#connection.restart(delayMs, 'received envelopes could not be handled; they will be delivered again'),
      offered: (stored) => {
        for (const s of stored) this.#offer(this.#message(s.key, s.record));
        this.#drainFlags();
      },
      heal: (u, d, e) => this.#heal(u, d, e),
      prekeysUsed: () => this.#scheduleMaintain(),
      receiptsVerified: (list) => {
        for (const r of list) this.#events.emit('receipt', r);
        this.#drainFlags();
        void this.#submitLog();
      },
      receiptsPending: () => this.#scheduleReceipts(this.#receipts.policy.flushDelayMs),
      problem: (err) => this.#report(err),
      fault: options.faultHook,
    });
    this.#fault = options.faultHook;
  }

  // ---------------------------------------------------------------------------------
  // Lifecycle
  // ---------------------------------------------------------------------------------

  /** The connection state, or 'awaiting-link' / 'closed'. */
  get state(): StateChange {
    return this.#state;
  }

  /** While awaiting a link: the code to show (text or QR) on this device. */
  get linkCode(): string | undefined {
    return this.#record.status === 'unlinked' ? encodeLinkRequest(createLinkRequest(this.#keys.identity, this.userId, this.deviceId)) : undefined;
  }

  /** This device's identity key fingerprint, to compare on both screens when linking. */
  get fingerprint(): string {
    return this.#keys.identity.publicKey.fingerprint;
  }

  /** @internal Called by createClient. */
  async start(): Promise<void> {
    await this.#outbox.load();
    await this.#topics.load();
    const pending = await this.#db.run((tx) => tx.list(NS.inbox, 'm:'));
    for (const [key, raw] of pending) this.#unoffered.push(this.#message(key, decodeRecord<InboxRecord>(raw)));
    if (this.#record.status === 'revoked') {
      this.#setState({ state: 'offline', reason: 'revoked', detail: 'this device was revoked' });
      this.#rejectLinked(new SdkError('DEVICE_REVOKED'));
      return;
    }
    this.#armSweep();
    if (this.#record.status === 'linked') {
      this.#resolveLinked();
      this.#drainFlags();
      if (this.#autoConnect) this.#connection.start();
      return;
    }
    await this.#enrol();
  }

  /** Enrols this device: the root of an empty list, or linked by an existing device. */
  async #enrol(): Promise<void> {
    const chain = await this.#directory.devices(this.userId, { refresh: true });
    const listed = chain.device(this.deviceId);
    if (listed && !equalBytes(listed.identityKey, this.#keys.identity.publicKey.bytes)) {
      throw new SdkError('NOT_LINKED', `device id ${this.deviceId} is taken in ${this.userId}'s list by another key; use another device id`);
    }
    if (!listed && chain.length === 0) {
      await this.#http.postDeviceEntry(rootEntry(this.#keys.identity, this.userId, this.deviceId));
      await this.#directory.devices(this.userId, { refresh: true });
    } else if (!listed) {
      this.#setState({ state: 'awaiting-link', reason: 'not-linked', detail: 'show linkCode on an existing device of this user' });
      this.#pollForLink();
      return;
    }
    await this.#becomeLinked();
  }

  #pollForLink(): void {
    this.#linkTimer = this.#clock.setTimeout(() => {
      this.#linkTimer = undefined;
      if (this.#closed) return;
      void this.#directory
        .devices(this.userId, { refresh: true })
        .then(async (chain) => {
          const listed = chain.device(this.deviceId);
          if (listed && equalBytes(listed.identityKey, this.#keys.identity.publicKey.bytes)) await this.#becomeLinked();
          else if (!this.#closed) this.#pollForLink();
        })
        .catch((err: unknown) => {
          this.#report(err);
          if (!this.#closed) this.#pollForLink();
        });
    }, LINK_POLL_MS);
  }

  async #becomeLinked(): Promise<void> {
    this.#record = await this.#db.run(async (tx) => {
      const d = (await loadDevice(tx)) as DeviceRecord;
      d.status = 'linked';
      saveDevice(tx, d);
      return d;
    });
    await this.#keys.maintain();
    this.#resolveLinked();
    this.#drainFlags();
    this.#setState({ state: 'offline', reason: 'starting' });
    if (this.#autoConnect && !this.#closed) this.#connection.start();
  }

  /**
   * The relay said this device is revoked (close 4003, or DEVICE_NOT_FOUND at
   * authentication). That is final only if this user's verified device list says so: a
   * relay (or anyone between) could say it of any device. Otherwise reconnect with backoff.
   */
  async #checkRevoked(detail: string | undefined): Promise<void> {
    let listed: boolean;
    try {
      listed = (await this.#directory.devices(this.userId, { refresh: true })).device(this.deviceId) !== undefined;
    } catch (err) {
      this.#report(err);
      listed = true; // unknown: not revoked on the relay's word alone
    }
    if (this.#closed) return;
    if (!listed) {
      await this.#markRevoked();
      return;
    }
    this.#report(new SdkError('RELAY_PROTOCOL_ERROR', `the relay refused this device as revoked (${detail ?? 'no detail'}), but its verified device list still names it`));
    this.#connection.resume();
  }

  async #markRevoked(): Promise<void> {
    this.#record = await this.#db.run(async (tx) => {
      const d = (await loadDevice(tx)) as DeviceRecord;
      d.status = 'revoked';
      saveDevice(tx, d);
      return d;
    });
  }

  /** Connects (when created with `connect: false`, or after `disconnect`). */
  connect(): void {
    this.#assertOpen();
    if (this.#record.status === 'linked') this.#connection.start();
  }

  /** Drops the connection; the outbox keeps what is sent meanwhile. */
  disconnect(): void {
    this.#connection.stop();
  }

  /** Forgets remembered envelope ids past their retention (at most once per interval). */
  async #pruneSeen(): Promise<void> {
    const now = this.#clock.now();
    if (now - this.#lastPrune < DEDUPE_PRUNE_INTERVAL_MS) return;
    this.#lastPrune = now;
    try {
      await this.#inbox.prune();
      await this.#db.run(async (tx) => {
        await this.#topics.prune(tx, now - DEDUPE_RETENTION_MS);
        await this.#topicKeys.prune(tx, now);
      });
    } catch (err) {
      this.#report(err);
    }
  }

  /** After sessions started with us used one-time prekeys: top up soon (once per burst). */
  #scheduleMaintain(): void {
    if (this.#maintainTimer !== undefined || this.#closed) return;
    this.#maintainTimer = this.#clock.setTimeout(() => {
      this.#maintainTimer = undefined;
      void this.#maintain();
    }, PREKEY_TOPUP_DELAY_MS);
  }

  // ---------------------------------------------------------------------------------
  // Receipts
  // ---------------------------------------------------------------------------------

  /** Signs and sends pending receipt entries after `delayMs` (once per burst). */
  #scheduleReceipts(delayMs: number): void {
    if (this.#closed || this.#receiptTimer !== undefined) return;
    this.#receiptTimer = this.#clock.setTimeout(() => {
      this.#receiptTimer = undefined;
      this.#flushing = this.#flushing.then(() => this.#flushReceipts()).catch((err: unknown) => this.#report(err));
    }, delayMs);
  }

  /**
   * One signed receipt per sender user for what is pending, sent to every device of that
   * user; the entries are deleted in the transaction that puts the receipt in the outbox.
   * A sender that cannot be sent to (no verified list, blocked, no devices) loses its
   * entries; one that cannot be reached now (the relay unreachable) keeps them for later.
   */
  async #flushReceipts(): Promise<void> {
    if (this.#closed || this.#record.status !== 'linked') return;
    const groups = await this.#db.run((tx) => this.#receipts.pending(tx));
    const policy = this.#receipts.policy;
    let more = false;
    let retry = false;
    for (const g of groups) {
      if (g.more) more = true;
      const { jws, used } = this.#signFitting(g.entries);
      if (used < g.entries.length) more = true;
      const settle = (tx: StoreTx) => {
        for (const k of g.keys.slice(0, used)) tx.delete(NS.receiptsPending, k);
        if (policy.log === 'all') this.#receipts.queueForLog(tx, jws);
      };
      if (!policy.send) {
        await this.#db.run(settle);
        continue;
      }
      try {
        const payload: Payload = { type: 'receipt', sentAt: this.#clock.now(), messageId: this.#newId(16), jws };
        // Once in the outbox, it is sent when possible (and kept across restarts).
        await this.#sendPayload(g.userId, payload, { copyToOwnDevices: false, noReceipt: true, queued: true, inTx: settle });
      } catch (err) {
        if (passing(err)) {
          retry = true;
          continue;
        }
        // Nobody to send it to: the entries go (and to the log, if it takes them all).
        await this.#db.run(settle);
        this.#report(err);
      }
    }
    // Unreachable now: later (never at once, which would spin while the relay is away).
    if (retry) this.#scheduleReceipts(RECEIPT_RETRY_MS);
    else if (more) this.#scheduleReceipts(0);
    void this.#submitLog();
  }

  /** Signs as many of `entries` (in order) as fit in MAX_RECEIPT_JWS_BYTES: halves until they do. */
  #signFitting(entries: ReceiptEntry[]): { jws: string; used: number } {
    for (let used = entries.length; ; used = Math.ceil(used / 2)) {
      try {
        const jws = signReceipt(this.#keys.identity, { v: 1, recipient: { user: this.userId, device: this.deviceId }, issuedAt: this.#clock.now(), entries: entries.slice(0, used) }, this.#backend);
        return { jws, used };
      } catch (err) {
        // One entry always fits (its fields are bounded well below the limit).
        if (!(err instanceof EvidenceError) || used === 1) throw err;
      }
    }
  }

  /** MISSING_RECEIPT and GAP are found by a periodic sweep (the next one is armed before this one runs). */
  #armSweep(): void {
    if (this.#closed) return;
    const p = this.#receipts.policy;
    const every = Math.max(RECEIPT_SWEEP_MIN_MS, Math.min(RECEIPT_SWEEP_MAX_MS, p.gapWindowMs, p.deadlineMs));
    this.#sweepTimer = this.#clock.setTimeout(() => {
      this.#sweepTimer = undefined;
      this.#armSweep();
      if (this.#sweeping) return;
      this.#sweeping = true;
      void this.#sweep()
        .catch((err: unknown) => this.#report(err))
        .finally(() => (this.#sweeping = false));
    }, every);
  }

  async #sweep(): Promise<void> {
    if (this.#closed) return;
    const raised = await this.#db.run(async (tx) => {
      const now = this.#clock.now();
      let n = await this.#receipts.sweepMissing(tx, now);
      for (const g of await this.#anomalies.dueGaps(tx, now)) {
        n++;
        this.#flags.add(tx, {
          code: 'GAP',
          userId: g.senderUserId ?? this.userId,
          deviceId: g.senderDeviceId ?? this.deviceId,
          at: now,
          detail:
            g.kind === 'mailbox'
              ? `mailbox sequences ${g.from}..${g.to} were never delivered nor announced as expired`
              : `messages ${g.from}..${g.to} of ${g.senderUserId}/${g.senderDeviceId} in ${g.conversation} never arrived`,
          evidence: { ...g },
        });
      }
      return n;
    });
    if (raised > 0) this.#drainFlags();
  }

  /** Submits queued receipts to the relay's transparency log (in the background, with backoff). */
  async #submitLog(): Promise<void> {
    if (!this.#receipts.logQueued || this.#logging || this.#closed || this.#record.status !== 'linked' || this.#clock.now() < this.#logRetryAt) return;
    this.#logging = true;
    try {
      for (;;) {
        this.#receipts.logQueued = false;
        const queued = (await this.#db.run((tx) => tx.list(NS.receiptsLog, LOG_QUEUE_PREFIX))).slice(0, LOG_SUBMIT_BATCH);
        if (queued.length === 0 || this.#closed) return;
        this.#receipts.logQueued = true;
        const jws = queued.map(([, v]) => new TextDecoder().decode(v));
        let indexes: number[];
        try {
          indexes = await this.#http.submitReceipts(jws);
        } catch (err) {
          if (passing(err)) {
            // As soon as a rate limit allows, else after LOG_RETRY_MS.
            const after = err instanceof SdkError && typeof err.details?.retryAfterMs === 'number' ? Math.min(LOG_RETRY_MS, Math.max(10, err.details.retryAfterMs)) : LOG_RETRY_MS;
            this.#logRetryAt = this.#clock.now() + after;
            this.#clock.setTimeout(() => void this.#submitLog(), after);
            return;
          }
          // Refused for good. The relay names the receipt it refused: only that one is
          // dropped (and said), the rest go again; without a name, the whole batch goes.
          const at = err instanceof SdkError ? err.details?.index : undefined;
          const refused = typeof at === 'number' && Number.isInteger(at) && at >= 0 && at < queued.length ? [queued[at]!] : queued;
          await this.#db.run((tx) => {
            for (const [k] of refused) tx.delete(NS.receiptsLog, k);
          });
          this.#report(err);
          continue;
        }
        await this.#db.run((tx) => {
          for (const [k] of queued) tx.delete(NS.receiptsLog, k);
        });
        this.#events.emit('logged', { receipts: jws.length, indexes });
      }
    } finally {
      this.#logging = false;
    }
  }

  /** Publishes prekeys where the relay runs low, and replaces old signed ones. */
  async #maintain(): Promise<void> {
    try {
      await this.#keys.maintain();
    } catch (err) {
      this.#report(err);
    }
  }

  /** Closes the client: the connection ends, calls reject with CLIENT_CLOSED. The store is closed too. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    if (this.#linkTimer) this.#clock.clearTimeout(this.#linkTimer);
    if (this.#maintainTimer) this.#clock.clearTimeout(this.#maintainTimer);
    if (this.#receiptTimer) this.#clock.clearTimeout(this.#receiptTimer);
    if (this.#sweepTimer) this.#clock.clearTimeout(this.#sweepTimer);
    this.#connection.stop();
    const err = new SdkError('CLIENT_CLOSED');
    this.#outbox.close(err);
    this.#topics.close(err);
    this.#rejectLinked(err);
    this.#setState({ state: 'closed', reason: 'closed' });
    // An iterator waiting for the next message ends now (rather than wait forever).
    for (const push of this.#iterators) push(undefined);
    await this.#db.run(() => undefined).catch(() => undefined);
    await this.#db.store.close();
  }

  #assertOpen(): void {
    if (this.#closed) throw new SdkError('CLIENT_CLOSED');
  }

  #assertLinked(): void {
    this.#assertOpen();
    if (this.#record.status === 'revoked') throw new SdkError('DEVICE_REVOKED');
    if (this.#record.status !== 'linked') throw new SdkError('NOT_LINKED', 'this device is waiting to be linked (see linkCode)');
  }

  #setState(s: StateChange): void {
    this.#state = s;
    this.#events.emit('state', s);
  }

  #report(err: unknown): void {
    const e = err instanceof SdkError ? err : new SdkError('RELAY_ERROR', (err as Error)?.message ?? String(err), { cause: err });
    this.#events.emit('error', e);
  }

  // ---------------------------------------------------------------------------------
  // Events and messages
  // ---------------------------------------------------------------------------------

  on<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): () => void {
    const off = this.#events.on(event, listener);
    if (event === 'message') queueMicrotask(() => this.#flushUnoffered());
    if (event === 'flag') this.#drainFlags();
    return off;
  }

  off<K extends keyof ClientEvents>(event: K, listener: (value: ClientEvents[K]) => void): void {
    this.#events.off(event, listener);
  }

  /** Received messages, stored ones first, then as they arrive, until the client closes. */
  messages(): AsyncIterableIterator<Message> {
    const queue: Message[] = [];
    let wake: (() => void) | undefined;
    const push = (m: Message | undefined): void => {
      if (m !== undefined) queue.push(m);
      wake?.();
    };
    this.#iterators.add(push);
    queueMicrotask(() => this.#flushUnoffered());
    const it: AsyncIterableIterator<Message> = {
      next: async () => {
        for (;;) {
          const m = queue.shift();
          if (m) return { value: m, done: false };
          if (this.#closed) {
            this.#iterators.delete(push);
            return { value: undefined, done: true };
          }
          await new Promise<void>((r) => (wake = r));
          wake = undefined;
        }
      },
      return: async () => {
        this.#iterators.delete(push);
        return { value: undefined, done: true };
      },
      [Symbol.asyncIterator]: () => it,
    };
    return it;
  }

  /** Messages stored and not yet marked done. */
  async pending(): Promise<Message[]> {
    this.#assertOpen();
    const rows = await this.#db.run((tx) => tx.list(NS.inbox, 'm:'));
    return rows.map(([key, raw]) => this.#message(key, decodeRecord<InboxRecord>(raw)));
  }

  #message(key: string, r: InboxRecord): Message {
    let body: unknown;
    let event: Message['event'];
    try {
      body = decodeBody(r.kind, r.body);
      if (r.kind === 'event') event = { jws: new TextDecoder().decode(r.body), event: body as SignedEvent };
    } catch {
      body = r.body;
    }
    return {
      id: encodeBase64url(r.messageId),
      envelopeId: encodeBase64url(r.envelopeId),
      from: { userId: r.senderUserId, deviceId: r.senderDeviceId },
      to: r.to,
      groupId: r.groupId,
      kind: r.kind,
      body,
      sentAt: r.sentAt,
      storedAt: r.storedAt,
      receivedAt: r.receivedAt,
      seq: r.seq,
      flags: r.flags,
      number: r.number,
      event,
      done: async () => {
        this.#assertOpen();
        await this.#db.run((tx) => tx.delete(NS.inbox, key));
        this.#fault?.('done', r.seq);
      },
    };
  }

  #offer(m: Message): void {
    if (this.#events.listenerCount('message') === 0 && this.#iterators.size === 0) {
      this.#unoffered.push(m);
      return;
    }
    this.#events.emit('message', m);
    for (const push of this.#iterators) push(m);
  }

  #flushUnoffered(): void {
    if (this.#events.listenerCount('message') === 0 && this.#iterators.size === 0) return;
    for (const m of this.#unoffered.splice(0)) this.#offer(m);
  }

  /** Offers stored flags to 'flag' listeners, then forgets them. */
  #drainFlags(): void {
    this.#flagDrain = this.#flagDrain.then(async () => {
      if (this.#closed || this.#events.listenerCount('flag') === 0) return;
      const pending = await this.#db.run((tx) => FlagQueue.pending(tx));
      if (pending.length === 0) return;
      for (const p of pending) this.#events.emit('flag', p.flag);
      await this.#db.run((tx) => {
        for (const p of pending) tx.delete(NS.inbox, p.key);
      });
    }).catch((err: unknown) => this.#report(err));
  }

  // ---------------------------------------------------------------------------------
  // Sending
  // ---------------------------------------------------------------------------------

  /**
   * Sends `body` (bytes, a string or a JSON value) to every device of `userId` and to this
   * user's other devices. Resolves once the relay stored it for the recipient; while
   * offline it waits in the outbox (and survives a restart).
   */
  async send(userId: string, body: unknown, options: SendOptions = {}): Promise<SentInfo> {
    this.#assertLinked();
    checkId(userId, 'userId', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    const encoded = encodeAppBody(body);
    const payload: Payload = { type: 'message', sentAt: this.#clock.now(), messageId: this.#newId(16), number: undefined, to: userId, groupId: undefined, kind: encoded.kind, body: encoded.bytes };
    const [first] = await this.#sendPayload(userId, payload, { copyToOwnDevices: userId !== this.userId, logReceipt: options.logReceipt === true });
    if (first === undefined) throw new SdkError('UNKNOWN_USER', `${userId} has no other devices to send to`);
    return first;
  }

  /**
   * Signs `event` (CloudEvents-shaped: id, type, data; optional source, subject, time) with
   * this device's identity key as the next link of its source's hash chain, and sends the
   * JWS end-to-end encrypted to `userId`. The receiver verifies it and keeps the JWS, which
   * a third party can verify later: unlike a message, a signed event is not deniable.
   */
  async sendEvent(userId: string, input: EventInput, options: SendOptions = {}): Promise<SentInfo & { jws: string; event: SignedEvent }> {
    this.#assertLinked();
    checkId(userId, 'userId', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    if (typeof input !== 'object' || input === null) throw new SdkError('INVALID_ARGUMENT', 'an event is an object with id, type and data');
    const run = this.#eventChain.then(async () => {
      const signed = await this.#db.run((tx) => this.#signedEvents.sign(tx, input, userId, this.#clock.now())).catch((err: unknown) => {
        if (err instanceof EvidenceError) throw new SdkError('INVALID_ARGUMENT', err.message, { cause: err });
        throw err;
      });
      const body = new TextEncoder().encode(signed.jws);
      if (body.length > MAX_BODY_BYTES) throw new SdkError('BODY_TOO_LARGE', `a signed event is at most ${MAX_BODY_BYTES} bytes`);
      const payload: Payload = { type: 'message', sentAt: this.#clock.now(), messageId: this.#newId(16), number: undefined, to: userId, groupId: undefined, kind: 'event', body };
      const [first] = await this.#sendPayload(userId, payload, { copyToOwnDevices: userId !== this.userId, logReceipt: options.logReceipt === true, inTx: signed.commit });
      if (first === undefined) throw new SdkError('UNKNOWN_USER', `${userId} has no other devices to send to`);
      return { ...first, jws: signed.jws, event: signed.event };
    });
    this.#eventChain = run.catch(() => undefined);
    return run;
  }

  /**
   * Verifies a signed event's JWS (one kept from a Message, say) with its signer device's
   * key from that user's verified device list. Throws SdkError EVIDENCE_INVALID when it
   * is malformed or does not verify, UNKNOWN_DEVICE when the signer is not listed.
   */
  async verifyEvent(jws: string): Promise<{ event: SignedEvent; signer: { userId: string; deviceId: string } }> {
    this.#assertOpen();
    let parsed;
    try {
      parsed = parseEvent(jws);
    } catch (err) {
      if (err instanceof EvidenceError) throw new SdkError('EVIDENCE_INVALID', err.message, { cause: err, details: { evidenceCode: err.code } });
      throw err;
    }
    const { signeruser, signerdevice } = parsed.event;
    const device = (await this.#directory.devices(signeruser)).device(signerdevice);
    if (device === undefined) throw new SdkError('UNKNOWN_DEVICE', `${signeruser}/${signerdevice} is not in that user's verified device list`);
    try {
      verifyEvent(jws, IdentityKey.fromBytes(device.identityKey, this.#backend), this.#backend);
    } catch (err) {
      if (err instanceof EvidenceError) throw new SdkError('EVIDENCE_INVALID', err.message, { cause: err, details: { evidenceCode: err.code } });
      throw err;
    }
    return { event: parsed.event, signer: { userId: signeruser, deviceId: signerdevice } };
  }

  /** Verified receipts kept for what this device sent: all, or for one envelope or message id. */
  async receipts(filter: { envelopeId?: string; messageId?: string } = {}): Promise<ReceiptInfo[]> {
    this.#assertOpen();
    return this.#db.run((tx) => this.#receipts.list(tx, filter));
  }

  /** The devices a payload for `userId` goes to: all of them, minus this one. The trust
   * policy is checked after the list is (re)fetched, since fetching it may have adopted a
   * new root that blocks sending. */
  async #targets(userId: string, refresh = false): Promise<ListedDevice[]> {
    const chain = await this.#directory.devices(userId, { refresh });
    await this.#directory.assertSendable(userId);
    return chain.devices.filter((d) => !(userId === this.userId && d.deviceId === this.deviceId));
  }

  /** Starts sessions (from verified bundles) with every device that has none. */
  async #ensureSessions(devices: ReadonlyArray<{ userId: string; device: ListedDevice }>): Promise<void> {
    const missing = await this.#db.run(async (tx) => {
      const out: Array<{ userId: string; device: ListedDevice }> = [];
      for (const d of devices) if (!(await this.#sessions.has(tx, d.userId, d.device.deviceId))) out.push(d);
      return out;
    });
    await Promise.all(missing.map((m) => this.#startSession(m.userId, m.device, false)));
  }

  /**
   * Starts a session with one device from a fresh verified bundle (`replace`: even if one
   * exists). One setup per device at a time: concurrent sends wait for the same one, so
   * they neither spend two one-time prekeys nor see each other's bundle as a replay.
   */
  #startSession(userId: string, device: ListedDevice, replace: boolean): Promise<void> {
    const k = `${userId} ${device.deviceId}`;
    const inFlight = this.#starting.get(k);
    if (inFlight) return inFlight;
    const p = (async () => {
      if (!replace && (await this.#db.run((tx) => this.#sessions.has(tx, userId, device.deviceId)))) return;
      const bundle = await this.#directory.bundle(userId, device);
      await this.#db.run(async (tx) => {
        await Directory.assertSendableIn(tx, userId);
        // Unless replacing: a session may have begun meanwhile (the device's own initial message): keep it.
        if (replace || !(await this.#sessions.has(tx, userId, device.deviceId))) await this.#sessions.start(tx, userId, device.deviceId, bundle);
      });
    })().finally(() => this.#starting.delete(k));
    this.#starting.set(k, p);
    return p;
  }

  /**
   * Encrypts one payload for the recipient's devices (and, with `copyToOwnDevices`, our
   * other devices), stores the outbox entries with the advanced sessions, then sends.
   * Resolves with what the relay answered, recipient first.
   */
  async #sendPayload(userId: string, payload: Payload, opts: { copyToOwnDevices: boolean; logReceipt?: boolean; noReceipt?: boolean; queued?: boolean; inTx?: (tx: StoreTx) => void }): Promise<SentInfo[]> {
    const plan: Array<{ userId: string; devices: ListedDevice[] }> = [{ userId, devices: await this.#targets(userId) }];
    if (plan[0]!.devices.length === 0) throw new SdkError('UNKNOWN_USER', `${userId} has no devices to send to`);
    if (opts.copyToOwnDevices) {
      const own = await this.#targets(this.userId);
      if (own.length > 0) plan.push({ userId: this.userId, devices: own });
    }
    await this.#ensureSessions(plan.flatMap((p) => p.devices.map((device) => ({ userId: p.userId, device }))));
    const entries = await this.#db.run(async (tx) => {
      const out: Array<{ key: string; entry: OutboxEntry }> = [];
      for (const p of plan) await Directory.assertSendableIn(tx, p.userId);
      // A message takes the next number of its conversation (one for all its copies).
      const numbered = payload.type === 'message' ? { ...payload, number: await nextNumber(tx, `u:${userId}`) } : payload;
      const padded = pad(encodePayload(numbered));
      opts.inTx?.(tx);
      for (const p of plan) {
        const targets = [];
        for (const d of p.devices) targets.push({ deviceId: d.deviceId, payload: await this.#sessions.seal(tx, p.userId, d.deviceId, padded) });
        const entry: OutboxEntry = { v: 1, envelopeId: this.#newId(16), recipient: p.userId, ttlSeconds: this.#ttl, targets, padded, group: false, messageId: payload.messageId, mismatches: 0, createdAt: this.#clock.now(), ...(opts.noReceipt ? { noReceipt: true } : {}), ...(opts.logReceipt ? { logReceipt: true } : {}) };
        out.push({ key: await this.#outbox.add(tx, entry), entry });
      }
      return out;
    });
    const results = entries.map((e) => this.#outbox.committed(e.key, e.entry));
    // Copies to our own devices report failures through 'error'; the caller waits for the recipient's.
    for (const r of results.slice(1)) r.catch(() => undefined);
    if (opts.queued) {
      // In the outbox: it goes when it can; failures are reported through 'error'.
      results[0]?.catch(() => undefined);
      return [];
    }
    return [await (results[0] as Promise<SentInfo>)];
  }

  /** Corrects an outbox entry the relay refused for its device list, from the verified list. */
  async #repair(entry: OutboxEntry): Promise<OutboxEntry | undefined> {
    // #targets applies the trust policy to the list it fetched (it may have a new root).
    const wanted = await this.#targets(entry.recipient, true);
    const have = new Set(entry.targets.map((t) => t.deviceId));
    const want = new Set(wanted.map((d) => d.deviceId));
    if (have.size === want.size && [...have].every((d) => want.has(d))) return undefined; // the relay disagrees with the verified list
    const missing = wanted.filter((d) => !have.has(d.deviceId));
    if (!entry.group) await this.#ensureSessions(missing.map((device) => ({ userId: entry.recipient, device })));
    return this.#db.run(async (tx) => {
      const targets = entry.targets.filter((t) => want.has(t.deviceId));
      for (const d of missing) {
        // A device added while a group message was on its way has no sender key for it yet.
        const payload = entry.group || entry.padded === undefined ? (entry.targets[0]?.payload as Uint8Array) : await this.#sessions.seal(tx, entry.recipient, d.deviceId, entry.padded);
        targets.push({ deviceId: d.deviceId, payload });
      }
      return { ...entry, targets };
    });
  }

  /** Asks a device whose message we could not decrypt to use a new session. */
  #heal(userId: string, deviceId: string, envelopeId: Uint8Array): void {
    const k = `${userId} ${deviceId}`;
    const last = this.#lastHeal.get(k);
    const now = this.#clock.now();
    if (last !== undefined && now - last < HEALING_MIN_INTERVAL_MS) return;
    this.#lastHeal.set(k, now);
    void (async () => {
      // A new session becomes current; the old one is kept (archived), so messages the
      // sender already sent on it still decrypt if it was not the session that broke.
      const device = (await this.#directory.devices(userId)).device(deviceId);
      if (!device) return;
      await this.#directory.assertSendable(userId);
      await this.#startSession(userId, device, true);
      await this.#sendPayload(userId, { type: 'reset', sentAt: now, messageId: this.#newId(16), failedEnvelopeId: envelopeId }, { copyToOwnDevices: false });
    })().catch((err: unknown) => this.#report(err));
  }

  // ---------------------------------------------------------------------------------
  // Devices and trust
  // ---------------------------------------------------------------------------------

  /** The verified devices of `userId` (default: this user). */
  async devices(userId: string = this.userId): Promise<ListedDevice[]> {
    this.#assertOpen();
    checkId(userId, 'userId', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    return (await this.#directory.devices(userId, { refresh: true })).devices;
  }

  /**
   * Reads a link code without acting on it: the device id and key fingerprint to show the
   * person, who compares the fingerprint with the one the new device shows and confirms,
   * before linkDevice. (Anyone who gets a code pasted or scanned adds their own device.)
   */
  inspectLinkCode(code: string): { userId: string; deviceId: string; fingerprint: string } {
    this.#assertOpen();
    const request = this.#decodeLinkCode(code);
    return { userId: request.userId, deviceId: request.deviceId, fingerprint: linkRequestFingerprint(request, this.#backend) };
  }

  #decodeLinkCode(code: string): ReturnType<typeof decodeLinkRequest> {
    if (typeof code !== 'string') throw new SdkError('INVALID_LINK_CODE', 'a link code is a string');
    let request;
    try {
      request = decodeLinkRequest(code, this.#backend);
    } catch (cause) {
      throw new SdkError('INVALID_LINK_CODE', `the link code is not valid: ${(cause as Error).message}`, { cause });
    }
    if (request.userId !== this.userId) throw new SdkError('INVALID_LINK_CODE', `the link code is for user ${request.userId}`);
    return request;
  }

  /**
   * On an existing device: links the device whose link code this is (after the person
   * confirmed it; see inspectLinkCode). With `fingerprint`, the one the person confirmed,
   * the code must carry that key or nothing is signed. Returns the device id and fingerprint.
   */
  async linkDevice(code: string, opts: { fingerprint?: string } = {}): Promise<{ deviceId: string; fingerprint: string }> {
    this.#assertLinked();
    const request = this.#decodeLinkCode(code);
    const fingerprint = linkRequestFingerprint(request, this.#backend);
    if (opts.fingerprint !== undefined && !equalStrings(opts.fingerprint, fingerprint)) {
      throw new SdkError('INVALID_LINK_CODE', 'the link code carries another key than the fingerprint confirmed');
    }
    await this.#changeList((chain) => linkEntry(chain, this.deviceId, this.#keys.identity, request));
    return { deviceId: request.deviceId, fingerprint };
  }

  /** Revokes one of this user's devices (this one included). */
  async revokeDevice(deviceId: string): Promise<void> {
    this.#assertLinked();
    await this.#changeList((chain) => {
      if (!chain.device(deviceId)) throw new SdkError('INVALID_ARGUMENT', `${deviceId} is not an active device of ${this.userId}`);
      return revokeEntry(chain, this.deviceId, this.#keys.identity, deviceId);
    });
  }

  /** Appends an entry to our own list, re-signing once if another change came first. */
  async #changeList(make: (chain: DeviceChain) => Uint8Array): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const chain = await this.#directory.devices(this.userId, { refresh: true });
      try {
        await this.#http.postDeviceEntry(make(chain));
        break;
      } catch (err) {
        if (!(err instanceof SdkError && err.relayCode === 'DEVICE_LIST_CONFLICT' && attempt < 2)) throw err;
      }
    }
    await this.#directory.devices(this.userId, { refresh: true });
    this.#drainFlags();
  }

  /** The safety number of this user and `userId`, from both account roots, to compare out of band. */
  async safetyNumber(userId: string): Promise<SafetyNumber> {
    this.#assertOpen();
    checkId(userId, 'userId', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    const [ours, theirs] = await Promise.all([this.#directory.devices(this.userId), this.#directory.devices(userId)]);
    if (!ours.rootIdentityKey || !theirs.rootIdentityKey) throw new SdkError('UNKNOWN_USER', `${userId} has no device list`);
    return SafetyNumber.compute({ identityKey: ours.rootIdentityKey, stableId: this.userId }, { identityKey: theirs.rootIdentityKey, stableId: userId }, this.#backend);
  }

  /** Trust decisions about other users' identities. */
  readonly trust = {
    /** Accepts a changed identity, unblocking sends to the user. */
    accept: async (userId: string): Promise<void> => {
      this.#assertTrustArg(userId);
      await this.#directory.accept(userId);
    },
    /** Marks the user's current identity verified (a later change always blocks). */
    verify: async (userId: string, verified = true): Promise<void> => {
      this.#assertTrustArg(userId);
      await this.#directory.markVerified(userId, verified === true);
    },
    /** What is pinned for the user. */
    status: async (userId: string): Promise<{ verified: boolean; blocked: boolean } | undefined> => {
      this.#assertTrustArg(userId);
      const t = await this.#db.run((tx) => Directory.loadTrust(tx, userId));
      return t && { verified: t.verified, blocked: t.blocked };
    },
  };

  #assertTrustArg(userId: string): void {
    this.#assertOpen();
    checkId(userId, 'userId', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
  }

  // ---------------------------------------------------------------------------------
  // Groups
  // ---------------------------------------------------------------------------------

  /** A group to send to with sender keys; `members` are user ids (this user may be among them). */
  group(groupId: string, members: readonly string[]): Group {
    this.#assertOpen();
    if (typeof groupId !== 'string' || groupId.length === 0 || new TextEncoder().encode(groupId).length > MAX_GROUP_ID_LENGTH) {
      throw new SdkError('INVALID_ARGUMENT', `a group id is 1..${MAX_GROUP_ID_LENGTH} bytes`);
    }
    return new Group(groupId, members, (g, m, b) => this.#sendGroup(g, m, b));
  }

  /** The devices of `users` and this user's other devices, with a session started with each. */
  async #fanOut(users: readonly string[]): Promise<{ plan: Array<{ userId: string; devices: ListedDevice[] }>; all: Array<{ userId: string; device: ListedDevice }> }> {
    const plan: Array<{ userId: string; devices: ListedDevice[] }> = [];
    for (const u of users) plan.push({ userId: u, devices: await this.#targets(u) });
    const own = await this.#targets(this.userId);
    if (own.length > 0) plan.push({ userId: this.userId, devices: own });
    const all = plan.flatMap((p) => p.devices.map((device) => ({ userId: p.userId, device })));
    await this.#ensureSessions(all);
    return { plan, all };
  }

  async #sendGroup(groupId: string, members: readonly string[], body: unknown): Promise<SentInfo[]> {
    this.#assertLinked();
    const users = [...new Set(members)].filter((u) => u !== this.userId);
    for (const u of users) checkId(u, 'member', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    const encoded = encodeAppBody(body);
    const { plan, all } = await this.#fanOut(users);
    const now = this.#clock.now();
    const messageId = this.#newId(16);
    const entries = await this.#db.run(async (tx) => {
      const out: Array<{ key: string; entry: OutboxEntry }> = [];
      for (const p of plan) await Directory.assertSendableIn(tx, p.userId);
      const targets: GroupTarget[] = all.map((a) => ({ userId: a.userId, deviceId: a.device.deviceId }));
      const { key, distribution, needIt } = await this.#groups.prepare(tx, groupId, users, targets);
      if (distribution) {
        // Over the pairwise sessions, to every device of each user one of whose devices needs it.
        const padded = pad(encodePayload({ type: 'distribution', sentAt: now, messageId: this.#newId(16), groupId, distribution }));
        for (const p of plan.filter((x) => needIt.some((n) => n.userId === x.userId))) {
          const t = [];
          for (const d of p.devices) t.push({ deviceId: d.deviceId, payload: await this.#sessions.seal(tx, p.userId, d.deviceId, padded) });
          const entry: OutboxEntry = { v: 1, envelopeId: this.#newId(16), recipient: p.userId, ttlSeconds: this.#ttl, targets: t, padded, group: false, messageId: this.#newId(16), mismatches: 0, createdAt: this.#clock.now() };
          out.push({ key: await this.#outbox.add(tx, entry), entry });
        }
      }
      const padded = pad(encodePayload({ type: 'message', sentAt: now, messageId, number: await nextNumber(tx, `g:${groupId}`), to: undefined, groupId, kind: encoded.kind, body: encoded.bytes }));
      const ciphertext = await this.#groups.seal(tx, groupId, key, padded);
      const messages: Array<{ key: string; entry: OutboxEntry }> = [];
      for (const p of plan) {
        const entry: OutboxEntry = { v: 1, envelopeId: this.#newId(16), recipient: p.userId, ttlSeconds: this.#ttl, targets: p.devices.map((d) => ({ deviceId: d.deviceId, payload: ciphertext })), padded: undefined, group: true, messageId, mismatches: 0, createdAt: this.#clock.now() };
        messages.push({ key: await this.#outbox.add(tx, entry), entry });
      }
      return { distributions: out, messages };
    });
    for (const d of entries.distributions) this.#outbox.committed(d.key, d.entry).catch(() => undefined);
    return Promise.all(entries.messages.map((m) => this.#outbox.committed(m.key, m.entry)));
  }

  // ---------------------------------------------------------------------------------
  // Topics
  // ---------------------------------------------------------------------------------

  /**
   * A topic to publish to and read from. `readers` are the users whose devices get this
   * device's topic key (this user's other devices always do): only they can read what this
   * device publishes. The relay's access control decides who may subscribe at all.
   */
  topic(name: string, opts: { readers?: readonly string[] } = {}): Topic {
    this.#assertOpen();
    checkTopic(name, 'a topic');
    return new Topic(name, opts.readers ?? [], {
      publish: (t, readers, body, o) => this.#publishTopic(t, readers, body, o),
      publishEvent: (t, readers, input, o) => this.#publishTopicEvent(t, readers, input, o),
      subscribe: (t, handler, o) => {
        this.#assertLinked();
        if (typeof handler !== 'function') throw new SdkError('INVALID_ARGUMENT', 'subscribe takes a handler function');
        return this.#topics.subscribe(t, handler, o);
      },
      info: (t) => {
        this.#assertOpen();
        return this.#http.topicInfo(t);
      },
    });
  }

  /** A member of consumer group `group` of `topic`: `run(handler)` starts it. */
  consumer(topic: string, group: string, opts: ConsumerOptions = {}): Consumer {
    this.#assertLinked();
    checkTopic(topic, 'a topic');
    checkId(group, 'a group name', MAX_GROUP_NAME_LENGTH, GROUP_NAME_PATTERN);
    return this.#topics.consumer(topic, group, opts);
  }

  /** Creates a topic (the token must allow `create` on it), kept by age and/or size. */
  async createTopic(name: string, opts: { retentionMs?: number; retentionBytes?: number } = {}): Promise<TopicInfoAnswer> {
    this.#assertOpen();
    checkTopic(name, 'a topic');
    return this.#http.createTopic({ name, retentionMs: opts.retentionMs, retentionBytes: opts.retentionBytes });
  }

  /** Creates a consumer group of `topic` (the token must allow `consume` on it and `publish` on its dead-letter topic). */
  async createGroup(topic: string, group: { name: string } & Omit<CreateGroupRequest, 'name'>): Promise<GroupInfoAnswer> {
    this.#assertOpen();
    checkTopic(topic, 'a topic');
    if (typeof group !== 'object' || group === null) throw new SdkError('INVALID_ARGUMENT', 'a group is { name, deadLetterTopic, visibilityMs?, maxDeliveries?, orderedByKey? }');
    checkId(group.name, 'a group name', MAX_GROUP_NAME_LENGTH, GROUP_NAME_PATTERN);
    checkTopic(group.deadLetterTopic, 'deadLetterTopic');
    return this.#http.createGroup(topic, { ...group });
  }

  /** A consumer group's state: committed offset, in flight, redeliveries, dead-lettered. */
  async groupInfo(topic: string, group: string): Promise<GroupInfoAnswer> {
    this.#assertOpen();
    checkTopic(topic, 'a topic');
    checkId(group, 'a group name', MAX_GROUP_NAME_LENGTH, GROUP_NAME_PATTERN);
    return this.#http.groupInfo(topic, group);
  }

  async #publishTopic(topic: string, readers: readonly string[], body: unknown, opts: PublishOptions): Promise<PublishResult> {
    this.#assertLinked();
    const o = publishOptions(opts);
    const encoded = encodeAppBody(body);
    checkBodySize(encoded.bytes);
    return this.#topics.publish(topic, readers, { id: o.id ?? encodeBase64url(this.#newId(16)), key: o.key, kind: encoded.kind, sentAt: this.#clock.now(), body: encoded.bytes });
  }

  /**
   * Signs `input` as the next event of its source's chain for this topic and publishes the
   * JWS; its publish id is the event id unless `id` is given. Publishing the same event id
   * again with the same type, subject and data answers with the first publish.
   */
  async #publishTopicEvent(topic: string, readers: readonly string[], input: EventInput, opts: PublishOptions): Promise<PublishResult & { jws: string | undefined }> {
    this.#assertLinked();
    if (typeof input !== 'object' || input === null) throw new SdkError('INVALID_ARGUMENT', 'an event is an object with id, type and data');
    const o = publishOptions(opts);
    const id = o.id ?? input.id;
    let content: Uint8Array;
    try {
      content = new TextEncoder().encode(canonicalJson([input.source ?? null, input.type, input.subject ?? null, input.data]));
    } catch (cause) {
      throw new SdkError('INVALID_ARGUMENT', 'the event data is not JSON', { cause });
    }
    let jws: string | undefined;
    const run = this.#eventChain.then(() =>
      this.#topics.publish(topic, readers, {
        id,
        key: o.key,
        kind: 'event',
        sentAt: this.#clock.now(),
        content,
        body: async () => {
          const signed = await this.#db.run(async (tx) => {
            const s = await this.#signedEvents.sign(tx, input, `topic:${topic}`, this.#clock.now());
            s.commit(tx);
            return s;
          }).catch((err: unknown) => {
            if (err instanceof EvidenceError) throw new SdkError('INVALID_ARGUMENT', err.message, { cause: err });
            throw err;
          });
          jws = signed.jws;
          const bytes = new TextEncoder().encode(signed.jws);
          checkBodySize(bytes);
          return bytes;
        },
      }),
    );
    this.#eventChain = run.catch(() => undefined);
    const result = await run;
    return { ...result, jws };
  }

  /**
   * Seals a topic message with this device's current generation for `topic`, first handing
   * the generation (over the pairwise sessions, through the outbox) to every device of the
   * readers and of this user that does not hold it yet. `inTx` stores the sealed message in
   * the same transaction.
   */
  async #sealTopic(topic: string, readers: readonly string[], inner: Uint8Array, inTx: (tx: StoreTx, payload: Uint8Array) => Promise<void>): Promise<void> {
    const users = [...new Set(userList(readers, MAX_TOPIC_READERS, 'a topic has at most {max} readers'))].filter((u) => u !== this.userId);
    for (const u of users) checkId(u, 'a reader', MAX_USER_ID_LENGTH, USER_ID_PATTERN);
    const { plan, all } = await this.#fanOut(users);
    const self = { userId: this.userId, deviceId: this.deviceId };
    const distributions = await this.#db.run(async (tx) => {
      const out: Array<{ key: string; entry: OutboxEntry }> = [];
      for (const p of plan) await Directory.assertSendableIn(tx, p.userId);
      const now = this.#clock.now();
      const targets: GroupTarget[] = all.map((a) => ({ userId: a.userId, deviceId: a.device.deviceId }));
      const { key, distribution, needIt } = await this.#topicKeys.prepare(tx, topic, targets, now);
      // This device reads its own messages too (a subscription to its own topic).
      if (!(await this.#topicKeys.find(tx, self, key.keyId))) await this.#topicKeys.receive(tx, self, key.distribution(), now);
      if (distribution) {
        const padded = pad(encodePayload({ type: 'topic-key', sentAt: now, messageId: this.#newId(16), distribution }));
        for (const p of plan) {
          const devices = p.devices.filter((d) => needIt.some((n) => n.userId === p.userId && n.deviceId === d.deviceId));
          if (devices.length === 0) continue;
          const t = [];
          for (const d of devices) t.push({ deviceId: d.deviceId, payload: await this.#sessions.seal(tx, p.userId, d.deviceId, padded) });
          const entry: OutboxEntry = { v: 1, envelopeId: this.#newId(16), recipient: p.userId, ttlSeconds: this.#ttl, targets: t, padded, group: false, messageId: this.#newId(16), mismatches: 0, createdAt: now, noReceipt: true };
          out.push({ key: await this.#outbox.add(tx, entry), entry });
        }
      }
      await inTx(tx, key.seal(pad(inner)));
      return out;
    });
    // The generation travels by mailbox; a reader's SDK holds messages a while for it.
    for (const d of distributions) this.#outbox.committed(d.key, d.entry).catch(() => undefined);
  }

  /** For tests and operations: publish prekeys now. */
  async maintainKeys(): Promise<{ uploaded: number }> {
    this.#assertLinked();
    return this.#keys.maintain();
  }

  toString(): string {
    return `HermeticClient(${this.userId}/${this.deviceId})`;
  }

  toJSON(): { userId: string; deviceId: string; state: ClientState } {
    return { userId: this.userId, deviceId: this.deviceId, state: this.#state.state };
  }
}

/** A copy of a list of user ids the application gives (group members, topic readers), bounded. */
function userList(list: readonly string[], max: number, tooMany: string): string[] {
  if (!Array.isArray(list) || list.length > max) throw new SdkError('INVALID_ARGUMENT', tooMany.replace('{max}', String(max)));
  return [...list];
}

/** A group: `send` encrypts once with this device's sender key for every member device. */
export class Group {
  #members: string[];

  constructor(
    readonly id: string,
    members: readonly string[],
    private readonly sender: (groupId: string, members: readonly string[], body: unknown) => Promise<SentInfo[]>,
  ) {
    this.#members = userList(members, MAX_GROUP_MEMBERS, 'a group has at most {max} members');
  }

  get members(): readonly string[] {
    return [...this.#members];
  }

  /** Changes the members; a member removed cannot read what is sent afterwards. */
  setMembers(members: readonly string[]): void {
    this.#members = userList(members, MAX_GROUP_MEMBERS, 'a group has at most {max} members');
  }

  send(body: unknown): Promise<SentInfo[]> {
    return this.sender(this.id, this.#members, body);
  }
}

interface TopicOps {
  publish(topic: string, readers: readonly string[], body: unknown, opts: PublishOptions): Promise<PublishResult>;
  publishEvent(topic: string, readers: readonly string[], input: EventInput, opts: PublishOptions): Promise<PublishResult & { jws: string | undefined }>;
  subscribe(topic: string, handler: (m: TopicMessage) => unknown, opts: SubscribeOptions): Subscription;
  info(topic: string): Promise<TopicInfoAnswer>;
}

function checkTopic(name: unknown, what: string): string {
  return checkId(name, what, MAX_TOPIC_NAME_LENGTH, TOPIC_NAME_PATTERN);
}

function publishOptions(opts: unknown): { id: string | undefined; key: Uint8Array | undefined } {
  if (opts === undefined || opts === null) return { id: undefined, key: undefined };
  if (typeof opts !== 'object') throw new SdkError('INVALID_ARGUMENT', 'publish options are { id?, key? }');
  const o = opts as PublishOptions;
  if (o.id !== undefined && typeof o.id !== 'string') throw new SdkError('INVALID_ARGUMENT', 'a publish id is a string');
  return { id: o.id, key: orderingKeyBytes(o.key) };
}

/** A topic as this device publishes to it and reads it. */
export class Topic {
  #readers: string[];

  constructor(
    readonly name: string,
    readers: readonly string[],
    private readonly ops: TopicOps,
  ) {
    this.#readers = userList(readers, MAX_TOPIC_READERS, 'a topic has at most {max} readers');
  }

  get readers(): readonly string[] {
    return [...this.#readers];
  }

  /** Changes the readers; a reader removed cannot read what is published afterwards. */
  setReaders(readers: readonly string[]): void {
    this.#readers = userList(readers, MAX_TOPIC_READERS, 'a topic has at most {max} readers');
  }

  /** Publishes `body` (bytes, a string or a JSON value), end-to-end encrypted for the readers. Resolves once committed. */
  publish(body: unknown, opts: PublishOptions = {}): Promise<PublishResult> {
    return this.ops.publish(this.name, this.#readers, body, opts);
  }

  /** Publishes a signed event (the receiver verifies it against this device's key). */
  publishEvent(input: EventInput, opts: PublishOptions = {}): Promise<PublishResult & { jws: string | undefined }> {
    return this.ops.publishEvent(this.name, this.#readers, input, opts);
  }

  /** Reads the topic from `opts.from` (default 'latest'): messages reach `handler` one at a time, in offset order. */
  subscribe(handler: (m: TopicMessage) => unknown, opts: SubscribeOptions = {}): Subscription {
    return this.ops.subscribe(this.name, handler, opts);
  }

  info(): Promise<TopicInfoAnswer> {
    return this.ops.info(this.name);
  }
}

export { CryptoError };
