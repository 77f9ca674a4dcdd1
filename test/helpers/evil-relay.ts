/**
 * A malicious relay for tests: an HTTP and WebSocket proxy in front of a real relay
 * process, which clients use as their relay URL. The real relay is started with its
 * public URL set to the proxy's, so devices sign the proxy's origin into their auth
 * transcript and authenticate through it (as they would through a relay operator who
 * runs the real software behind a hostile front end).
 *
 * HTTP requests pass through unchanged. On the WebSocket the proxy reads every frame:
 * the JSON control frames, the binary SENDs clients make and the binary DELIVERs the
 * relay makes (with protocol/'s decoders and encoders), and, on command, manipulates
 * them per recipient device and/or per sender:
 *
 * - `drop`: a DELIVER never reaches its device (with `hide`, later ones are renumbered
 *   so the mailbox sequence shows no hole);
 * - `duplicate`: a DELIVER is delivered again right after, at a new sequence;
 * - `delay`: a DELIVER is held until `release()` (or for `ms`);
 * - `reorder`: a DELIVER is held until the next matching one went first;
 * - `alter`: one byte of a DELIVER's ciphertext is flipped;
 * - `replay`: an envelope delivered earlier is delivered again, with its same bytes, at
 *   a new sequence (under a fresh envelope id by default, so that deduplication by id
 *   does not catch it);
 * - `withhold`: SENDs from a device (to one user, or all) are swallowed and answered
 *   with a made-up STORED, so the sender believes the relay took them.
 *
 * With no rule set, every frame passes through unchanged.
 *
 * Sequences. The device sees the proxy's numbering: a real sequence plus a per-device
 * offset that a hidden drop lowers and an inserted frame raises. The device acknowledges
 * what it saw; the proxy acknowledges to the relay the highest real sequence all of whose
 * predecessors were delivered and acknowledged, or dropped on purpose (a held envelope
 * is acknowledged only once delivered). The numbering is kept per device across its
 * connections, so an envelope the relay delivers again after a reconnect comes at the
 * sequence the device saw it at the first time.
 */
import http from 'node:http';
import type net from 'node:net';
import { type RawData, WebSocket, WebSocketServer } from 'ws';
import { encodeBase64url } from '../../protocol/base64url.js';
import { BINARY_FRAME, type DeliverFrame, decodeDeliver, decodeSend, encodeDeliver } from '../../protocol/envelopes.js';
import { decodeClientFrame, decodeServerFrame, encodeClientFrame, encodeServerFrame } from '../../protocol/frames.js';
import { type RelayOptions, type RelayProcess, startRelay } from './relay.js';

/** Who a rule applies to: a user, or one device of it; absent fields match anything. */
export interface PartyMatch {
  readonly userId?: string;
  readonly deviceId?: string;
}

/** A DELIVER: `to` is the device whose mailbox it is, `from` the sender device. */
export interface DeliverMatch {
  readonly to?: PartyMatch;
  readonly from?: PartyMatch;
}

export type ManipulationKind = 'drop' | 'duplicate' | 'delay' | 'reorder' | 'alter' | 'replay' | 'withhold';

/** What a rule did to one frame. */
export interface Action {
  readonly kind: ManipulationKind;
  /** The envelope (base64url), as the relay had it. */
  readonly envelopeId: string;
  /** For a replay under a fresh id: the id the device saw. */
  readonly deliveredAs?: string;
  readonly to: { readonly userId: string; readonly deviceId?: string };
  readonly from: { readonly userId: string; readonly deviceId: string };
  /** The real relay's mailbox sequence (DELIVERs). */
  readonly realSeq?: number;
  /** The sequence the device saw it at (for a drop: would have seen it at). */
  readonly seq?: number;
}

export interface Rule {
  readonly kind: ManipulationKind;
  /** What the rule did so far, in order. */
  readonly actions: readonly Action[];
  /** Resolves once the rule acted `n` times (default 1). */
  acted(n?: number, timeoutMs?: number): Promise<Action[]>;
  /** Stops the rule (held frames stay held until released). */
  cancel(): void;
  /** Delivers what the rule holds (delay). */
  release(): void;
}

/** Delivered envelopes remembered per device, for replays. */
const MAX_HISTORY = 1_000;

/** One frame the device got, or will get, for one real sequence not yet acknowledged to the relay. */
type Entry =
  | { readonly state: 'delivered'; readonly seq: number; readonly bytes: Uint8Array }
  | { readonly state: 'dropped' }
  | { readonly state: 'held'; seq: number; readonly bytes: Uint8Array };

/** A device's mailbox as the proxy sees it, across the device's connections. */
class Mailbox {
  /** Proxy sequence = real sequence + offset (for envelopes not yet seen). */
  offset = 0;
  /** Highest real sequence the relay delivered (or announced as expired). */
  highReal = 0;
  /** Highest sequence the device was sent. */
  highSeq = 0;
  /** Highest sequence the device acknowledged. */
  deviceAck = 0;
  /** Highest real sequence acknowledged to the relay. */
  relayAck = 0;
  readonly entries = new Map<number, Entry>();
  readonly history = new Map<string, DeliverFrame>();
  conn: Conn | undefined;

  constructor(
    readonly userId: string,
    readonly deviceId: string,
  ) {}

  remember(f: DeliverFrame): void {
    const id = encodeBase64url(f.envelopeId);
    this.history.delete(id);
    this.history.set(id, f);
    if (this.history.size > MAX_HISTORY) this.history.delete(this.history.keys().next().value as string);
  }

  /** The next sequence for a frame the relay never sent (an inserted copy). */
  insertSeq(): number {
    const seq = Math.max(this.highSeq, this.highReal + this.offset) + 1;
    this.offset = seq - this.highReal;
    return seq;
  }
}

/** One client connection and its connection to the real relay. */
interface Conn {
  readonly down: WebSocket;
  readonly up: WebSocket;
  mailbox: Mailbox | undefined;
  /** Frames from the device before the relay's socket opened. */
  readonly early: Array<{ data: RawData; binary: boolean }>;
}

interface RuleState {
  readonly kind: ManipulationKind;
  readonly match: DeliverMatch;
  remaining: number;
  readonly actions: Action[];
  /** delay/reorder: what the rule holds, per mailbox. */
  readonly held: Array<{ mailbox: Mailbox; realSeq: number; action: Action }>;
  readonly hide: boolean;
  /** withhold: the recipient user of the SENDs to swallow. */
  readonly toUser?: string | undefined;
  /** delay: release after this long (ms); by `release()` when absent. */
  readonly ms?: number | undefined;
}

function matches(p: PartyMatch | undefined, userId: string, deviceId: string | undefined): boolean {
  if (p === undefined) return true;
  return (p.userId === undefined || p.userId === userId) && (p.deviceId === undefined || p.deviceId === deviceId);
}

const asBytes = (d: RawData): Uint8Array => {
  if (Array.isArray(d)) return new Uint8Array(Buffer.concat(d));
  if (d instanceof ArrayBuffer) return new Uint8Array(d);
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
};

/** A close code that may be sent in a close frame (RFC 6455 section 7.4). */
const sendableClose = (code: number): number => (code >= 3000 && code <= 4999) || [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013, 1014].includes(code) ? code : 1000;

async function waitUntil<T>(what: string, get: () => T | undefined, timeoutMs: number): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = get();
    if (v !== undefined) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

export class EvilRelay {
  readonly #mailboxes = new Map<string, Mailbox>();
  readonly #rules: RuleState[] = [];
  readonly #conns = new Set<Conn>();
  readonly #timers = new Set<ReturnType<typeof setTimeout>>();
  #freshIds = 0;
  /** Frames that did not decode (from either side): passed on unchanged, and counted. */
  undecoded = 0;

  private constructor(
    private readonly server: http.Server,
    private readonly wss: WebSocketServer,
    readonly port: number,
    readonly relay: RelayProcess,
  ) {}

  /** The URL clients use: http://127.0.0.1:<port>. */
  get url(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  /**
   * Listens on a free port, then starts a real relay whose public URL is this proxy's
   * (its origin is what devices sign) and forwards to it.
   */
  static async start(opts: RelayOptions = {}): Promise<EvilRelay> {
    const server = http.createServer();
    const port = await new Promise<number>((resolve, reject) => {
      server.once('error', reject);
      server.listen(0, '127.0.0.1', () => resolve((server.address() as net.AddressInfo).port));
    });
    let relay: RelayProcess;
    try {
      relay = await startRelay({ ...opts, env: { ...opts.env, HERMETIC_PUBLIC_URL: `http://127.0.0.1:${port}` } });
    } catch (err) {
      server.close();
      throw err;
    }
    const evil = new EvilRelay(server, new WebSocketServer({ noServer: true }), port, relay);
    server.on('request', (req, res) => evil.#http(req, res));
    server.on('upgrade', (req, socket, head) => evil.#upgrade(req, socket as net.Socket, head));
    return evil;
  }

  // -------------------------------------------------------------------------------
  // Commands
  // -------------------------------------------------------------------------------

  /** Drops the next `count` matching DELIVERs; with `hide` (default) later ones are renumbered to close the hole. */
  drop(match: DeliverMatch, opts: { hide?: boolean; count?: number } = {}): Rule {
    return this.#add({ kind: 'drop', match, remaining: opts.count ?? 1, hide: opts.hide ?? true });
  }

  /** Delivers the next `count` matching DELIVERs twice: again right after, at a new sequence. */
  duplicate(match: DeliverMatch, opts: { count?: number } = {}): Rule {
    return this.#add({ kind: 'duplicate', match, remaining: opts.count ?? 1 });
  }

  /** Holds the next matching DELIVER until `release()`, or for `ms`. Later ones pass. */
  delay(match: DeliverMatch, opts: { ms?: number } = {}): Rule {
    return this.#add({ kind: 'delay', match, remaining: 1, ms: opts.ms });
  }

  /**
   * Holds the next matching DELIVER until the next one for the same device went first.
   * With `hide`, the two swap sequences too (the mailbox sequence looks in order).
   */
  reorder(match: DeliverMatch, opts: { hide?: boolean } = {}): Rule {
    return this.#add({ kind: 'reorder', match, remaining: 2, hide: opts.hide ?? false });
  }

  /** Flips the last byte of the next `count` matching DELIVERs' ciphertext. */
  alter(match: DeliverMatch, opts: { count?: number } = {}): Rule {
    return this.#add({ kind: 'alter', match, remaining: opts.count ?? 1 });
  }

  /**
   * Swallows the SENDs a device (`from`) makes — to `toUser` only, when given — while the
   * rule is on, answering each with a made-up STORED. Receipts are encrypted, but they go
   * from the recipient device to the sender user: this is how a relay withholds them.
   */
  withhold(from: PartyMatch, opts: { toUser?: string; count?: number } = {}): Rule {
    return this.#add({ kind: 'withhold', match: { from }, remaining: opts.count ?? Number.POSITIVE_INFINITY, toUser: opts.toUser });
  }

  /**
   * Delivers an envelope this device was delivered before, same bytes, at a new sequence:
   * under a fresh envelope id (default) or its own. The device must be connected.
   */
  replay(envelopeId: string, to: PartyMatch, opts: { freshEnvelopeId?: boolean } = {}): Action {
    const found = [...this.#mailboxes.values()].filter((m) => matches(to, m.userId, m.deviceId) && m.history.has(envelopeId));
    if (found.length !== 1) throw new Error(`replay: ${found.length} devices were delivered envelope ${envelopeId}; name one`);
    const mailbox = found[0]!;
    const conn = mailbox.conn;
    if (conn === undefined) throw new Error(`replay: ${mailbox.userId}/${mailbox.deviceId} is not connected`);
    const old = mailbox.history.get(envelopeId)!;
    const fresh = opts.freshEnvelopeId ?? true;
    const id = fresh ? this.#freshEnvelopeId() : old.envelopeId;
    const seq = mailbox.insertSeq();
    this.#toDevice(mailbox, seq, encodeDeliver({ ...old, seq, envelopeId: id }));
    return {
      kind: 'replay',
      envelopeId,
      ...(fresh ? { deliveredAs: encodeBase64url(id) } : {}),
      to: { userId: mailbox.userId, deviceId: mailbox.deviceId },
      from: { userId: old.senderUserId, deviceId: old.senderDeviceId },
      seq,
    };
  }

  /**
   * How a device's mailbox stands: `offset` (its numbering minus the relay's), the highest
   * sequence it acknowledged (`deviceAck`, its numbering) and the highest real sequence
   * acknowledged to the relay for it (`relayAck`). Undefined before it connected.
   */
  mailbox(userId: string, deviceId: string): { offset: number; deviceAck: number; relayAck: number; unacknowledged: number } | undefined {
    const m = this.#mailboxes.get(`${userId} ${deviceId}`);
    return m && { offset: m.offset, deviceAck: m.deviceAck, relayAck: m.relayAck, unacknowledged: m.entries.size };
  }

  /** Removes every rule; what rules hold is delivered. */
  clear(): void {
    for (const r of [...this.#rules]) this.#release(r);
    this.#rules.length = 0;
  }

  /** Stops the proxy (and its connections) and the relay behind it. */
  async stop(): Promise<void> {
    for (const t of this.#timers) clearTimeout(t);
    for (const c of this.#conns) {
      c.down.terminate();
      c.up.terminate();
    }
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
    await this.relay.stop();
  }

  // -------------------------------------------------------------------------------
  // Rules
  // -------------------------------------------------------------------------------

  #add(o: { kind: ManipulationKind; match: DeliverMatch; remaining: number; hide?: boolean; toUser?: string | undefined; ms?: number | undefined }): Rule {
    const state: RuleState = { kind: o.kind, match: o.match, remaining: o.remaining, actions: [], held: [], hide: o.hide ?? false, toUser: o.toUser, ms: o.ms };
    this.#rules.push(state);
    const cancel = (): void => {
      const i = this.#rules.indexOf(state);
      if (i >= 0) this.#rules.splice(i, 1);
    };
    return {
      kind: o.kind,
      actions: state.actions,
      acted: (n = 1, timeoutMs = 20_000) => waitUntil(`${n} ${o.kind} action(s)`, () => (state.actions.length >= n ? state.actions.slice() : undefined), timeoutMs),
      cancel,
      release: () => this.#release(state),
    };
  }

  #release(state: RuleState): void {
    for (const h of state.held.splice(0)) this.#deliverHeld(h.mailbox, h.realSeq);
  }

  /** The first rule that takes this DELIVER for this mailbox. */
  #ruleFor(mailbox: Mailbox, f: DeliverFrame): RuleState | undefined {
    return this.#rules.find(
      (r) => r.kind !== 'withhold' && r.remaining > 0 && matches(r.match.to, mailbox.userId, mailbox.deviceId) && matches(r.match.from, f.senderUserId, f.senderDeviceId) && (r.held.length === 0 || r.held[0]!.mailbox === mailbox),
    );
  }

  #freshEnvelopeId(): Uint8Array {
    const id = new Uint8Array(16);
    id.set(Buffer.from(`evil-relay-${++this.#freshIds}`.padEnd(16, '.')).subarray(0, 16));
    return id;
  }

  // -------------------------------------------------------------------------------
  // HTTP
  // -------------------------------------------------------------------------------

  #http(req: http.IncomingMessage, res: http.ServerResponse): void {
    const up = http.request({ host: '127.0.0.1', port: this.relay.port, method: req.method, path: req.url, headers: req.headers }, (answer) => {
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    up.on('error', () => res.destroy());
    req.pipe(up);
  }

  // -------------------------------------------------------------------------------
  // WebSocket
  // -------------------------------------------------------------------------------

  #upgrade(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    this.wss.handleUpgrade(req, socket, head, (down) => {
      const up = new WebSocket(`ws://127.0.0.1:${this.relay.port}${req.url ?? '/'}`, { perMessageDeflate: false });
      const conn: Conn = { down, up, mailbox: undefined, early: [] };
      this.#conns.add(conn);
      up.on('open', () => {
        for (const e of conn.early.splice(0)) this.#fromDevice(conn, e.data, e.binary);
      });
      down.on('message', (data, binary) => {
        if (up.readyState === WebSocket.CONNECTING) conn.early.push({ data, binary });
        else this.#fromDevice(conn, data, binary);
      });
      up.on('message', (data, binary) => this.#fromRelay(conn, data, binary));
      const end = (other: WebSocket, code: number, reason: Buffer): void => {
        this.#conns.delete(conn);
        if (conn.mailbox?.conn === conn) conn.mailbox.conn = undefined;
        if (other.readyState === WebSocket.OPEN) other.close(sendableClose(code), reason);
        else if (other.readyState === WebSocket.CONNECTING) other.terminate();
      };
      down.on('close', (code, reason) => end(up, code, reason));
      up.on('close', (code, reason) => end(down, code, reason));
      down.on('error', () => up.terminate());
      up.on('error', () => down.terminate());
    });
  }

  #fromDevice(conn: Conn, data: RawData, binary: boolean): void {
    if (conn.up.readyState !== WebSocket.OPEN) return;
    const bytes = asBytes(data);
    if (binary && bytes[0] === BINARY_FRAME.SEND && conn.mailbox !== undefined && this.#withheld(conn, conn.mailbox, bytes)) return;
    if (!binary && conn.mailbox !== undefined) {
      let frame;
      try {
        frame = decodeClientFrame(bytes);
      } catch {
        this.undecoded++;
        conn.up.send(bytes, { binary: false });
        return;
      }
      if (frame.type === 'ack') {
        this.#ackFromDevice(conn, conn.mailbox, frame.seq);
        return;
      }
    }
    conn.up.send(bytes, { binary });
  }

  /** A SEND a withhold rule swallows: answered with a STORED the relay never sent. */
  #withheld(conn: Conn, mailbox: Mailbox, bytes: Uint8Array): boolean {
    let send;
    try {
      send = decodeSend(bytes);
    } catch {
      return false; // the relay answers what does not decode
    }
    const rule = this.#rules.find((r) => r.kind === 'withhold' && r.remaining > 0 && matches(r.match.from, mailbox.userId, mailbox.deviceId) && (r.toUser === undefined || r.toUser === send.recipientUserId));
    if (rule === undefined) return false;
    rule.remaining--;
    const envelopeId = encodeBase64url(send.envelopeId);
    rule.actions.push({ kind: 'withhold', envelopeId, to: { userId: send.recipientUserId }, from: { userId: mailbox.userId, deviceId: mailbox.deviceId } });
    const now = Date.now();
    conn.down.send(
      encodeServerFrame({ type: 'stored', id: send.id, envelopeId, duplicate: false, storedAt: now, expiresAt: now + send.ttlSeconds * 1000, recipients: send.targets.map((t) => ({ deviceId: t.deviceId, seq: 1 })) }),
    );
    return true;
  }

  /**
   * The device acknowledged through `seq` (its numbering): tell the relay the highest real
   * sequence whose predecessors were all delivered and acknowledged, or dropped.
   */
  #ackFromDevice(conn: Conn, mailbox: Mailbox, seq: number): void {
    mailbox.deviceAck = Math.max(mailbox.deviceAck, seq);
    let through = mailbox.relayAck;
    for (const real of [...mailbox.entries.keys()].sort((a, b) => a - b)) {
      const e = mailbox.entries.get(real)!;
      if (e.state === 'held' || (e.state === 'delivered' && e.seq > mailbox.deviceAck)) break;
      through = real;
    }
    if (through <= mailbox.relayAck) return;
    for (const real of mailbox.entries.keys()) if (real <= through) mailbox.entries.delete(real);
    mailbox.relayAck = through;
    conn.up.send(encodeClientFrame({ type: 'ack', seq: through }));
  }

  #fromRelay(conn: Conn, data: RawData, binary: boolean): void {
    if (conn.down.readyState !== WebSocket.OPEN) return;
    const bytes = asBytes(data);
    let frame;
    try {
      frame = decodeServerFrame(bytes, binary);
    } catch {
      this.undecoded++;
      conn.down.send(bytes, { binary });
      return;
    }
    const mailbox = conn.mailbox;
    switch (frame.type) {
      case 'auth_ok': {
        const key = `${frame.userId} ${frame.deviceId}`;
        let m = this.#mailboxes.get(key);
        if (m === undefined) {
          m = new Mailbox(frame.userId, frame.deviceId);
          this.#mailboxes.set(key, m);
        }
        conn.mailbox = m;
        m.conn = conn;
        break;
      }
      case 'deliver':
        if (mailbox !== undefined) {
          this.#deliver(mailbox, frame);
          return;
        }
        break;
      case 'expired':
        if (mailbox !== undefined) {
          // Nothing to hold or drop: announced in the device's numbering, acknowledged as delivered.
          const from = frame.from + mailbox.offset;
          const to = frame.to + mailbox.offset;
          mailbox.highReal = Math.max(mailbox.highReal, frame.to);
          const bytesOut = encodeServerFrame({ type: 'expired', from, to });
          mailbox.entries.set(frame.to, { state: 'delivered', seq: to, bytes: new Uint8Array(0) });
          mailbox.highSeq = Math.max(mailbox.highSeq, to);
          conn.down.send(bytesOut);
          return;
        }
        break;
      case 'queue_empty':
        if (mailbox !== undefined && frame.through > 0) {
          conn.down.send(encodeServerFrame({ type: 'queue_empty', through: Math.max(0, frame.through + mailbox.offset) }));
          return;
        }
        break;
      default:
        break;
    }
    conn.down.send(bytes, { binary });
  }

  /** A DELIVER from the relay for `mailbox`: passed on, or manipulated by a rule. */
  #deliver(mailbox: Mailbox, f: DeliverFrame): void {
    const known = mailbox.entries.get(f.seq);
    if (known !== undefined) {
      // Delivered again after a reconnect: the same as the first time.
      if (known.state === 'delivered') this.#toDevice(mailbox, known.seq, known.bytes);
      return;
    }
    if (f.seq <= mailbox.relayAck) return;
    mailbox.highReal = Math.max(mailbox.highReal, f.seq);
    mailbox.remember(f);
    const rule = this.#ruleFor(mailbox, f);
    const action = (seq: number | undefined): Action => ({
      kind: rule!.kind,
      envelopeId: encodeBase64url(f.envelopeId),
      to: { userId: mailbox.userId, deviceId: mailbox.deviceId },
      from: { userId: f.senderUserId, deviceId: f.senderDeviceId },
      realSeq: f.seq,
      ...(seq === undefined ? {} : { seq }),
    });
    const seq = f.seq + mailbox.offset;
    if (rule === undefined) {
      this.#send(mailbox, f.seq, seq, encodeDeliver({ ...f, seq }));
      return;
    }
    rule.remaining--;
    switch (rule.kind) {
      case 'drop':
        mailbox.entries.set(f.seq, { state: 'dropped' });
        if (rule.hide) mailbox.offset--;
        rule.actions.push(action(seq));
        return;
      case 'alter': {
        const payload = f.payload.slice();
        payload[payload.length - 1]! ^= 0x01;
        this.#send(mailbox, f.seq, seq, encodeDeliver({ ...f, seq, payload }));
        rule.actions.push(action(seq));
        return;
      }
      case 'duplicate': {
        this.#send(mailbox, f.seq, seq, encodeDeliver({ ...f, seq }));
        const again = mailbox.insertSeq();
        this.#toDevice(mailbox, again, encodeDeliver({ ...f, seq: again }));
        rule.actions.push(action(again));
        return;
      }
      case 'delay':
        this.#hold(rule, mailbox, f, seq, action(seq));
        return;
      case 'reorder': {
        const first = rule.held[0];
        if (first === undefined) {
          this.#hold(rule, mailbox, f, seq, action(seq));
          return;
        }
        // The second: it goes first (with `hide`, at the first one's sequence).
        const [mine, theirs] = rule.hide ? [first.action.seq!, seq] : [seq, first.action.seq!];
        this.#send(mailbox, f.seq, mine, encodeDeliver({ ...f, seq: mine }));
        rule.actions.push(action(mine));
        if (rule.hide) {
          const e = mailbox.entries.get(first.realSeq);
          if (e?.state === 'held') e.seq = theirs;
          first.action = { ...first.action, seq: theirs };
          rule.actions[0] = first.action;
        }
        this.#release(rule);
        return;
      }
      case 'replay':
      case 'withhold':
        return;
    }
  }

  #hold(rule: RuleState, mailbox: Mailbox, f: DeliverFrame, seq: number, action: Action): void {
    mailbox.entries.set(f.seq, { state: 'held', seq, bytes: encodeDeliver({ ...f, seq }) });
    mailbox.highSeq = Math.max(mailbox.highSeq, seq);
    rule.held.push({ mailbox, realSeq: f.seq, action });
    rule.actions.push(action);
    if (rule.ms !== undefined) {
      const t = setTimeout(() => {
        this.#timers.delete(t);
        this.#release(rule);
      }, rule.ms);
      this.#timers.add(t);
    }
  }

  /** Delivers a held frame (at its sequence, which a hidden reorder may have changed). */
  #deliverHeld(mailbox: Mailbox, realSeq: number): void {
    const e = mailbox.entries.get(realSeq);
    if (e?.state !== 'held') return;
    const f = decodeDeliver(e.bytes);
    this.#send(mailbox, realSeq, e.seq, f.seq === e.seq ? e.bytes : encodeDeliver({ ...f, seq: e.seq }));
  }

  /** Sends a frame for a real sequence and remembers it (for acknowledgement and redelivery). */
  #send(mailbox: Mailbox, realSeq: number, seq: number, bytes: Uint8Array): void {
    mailbox.entries.set(realSeq, { state: 'delivered', seq, bytes });
    this.#toDevice(mailbox, seq, bytes);
  }

  #toDevice(mailbox: Mailbox, seq: number, bytes: Uint8Array): void {
    mailbox.highSeq = Math.max(mailbox.highSeq, seq);
    const conn = mailbox.conn;
    if (conn !== undefined && conn.down.readyState === WebSocket.OPEN) conn.down.send(bytes, { binary: true });
  }
}
