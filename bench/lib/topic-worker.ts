/**
 * A topic load generator process (forked by bench/topics.ts through bench/lib/load.ts).
 * It owns publisher and subscriber connections, each a registered device:
 *
 * - publishers send 1 KiB PUBLISH frames to their topic, each with a fresh publish id.
 *   Closed loop (`ratePerSecond` 0): each keeps `window` publishes without a `published`
 *   answer in flight and sends the next one when an answer comes. Open loop: all of them
 *   together publish at `ratePerSecond`, the schedule never waiting for answers
 *   (`window` is then only a safety cap).
 * - subscribers subscribe to their topic from `latest` during setup (so the run starts
 *   with every subscription live) and count the `topic_message` frames they receive,
 *   told apart by their first bytes without decoding them.
 * - consumers join a consumer group (`consume`, with a prefetch) and acknowledge every
 *   message leased to them at once, the offsets of one turn in one `settle`; they count
 *   the acknowledged messages (`settled` answers).
 * - with `latency`, each payload's first 8 bytes carry the time it was published
 *   (performance.now(), float64 LE); a subscriber in this process takes the difference
 *   on receipt, so one clock measures both ends.
 *
 * Control (parent → child): setup, start (begin publishing: warm-up), measure (zero the
 * counters), stop (report and stop publishing), close (disconnect and exit), as the
 * envelope load generator (bench/lib/load-generator.ts).
 */
import crypto from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { type BenchDevice, DeviceSocket } from './device-socket.js';
import { LatencyRecorder } from './latency.js';
import type { LatencySummary } from './load-protocol.js';
import { pace } from './pacing.js';
import { serveWorker } from './worker-control.js';

export interface TopicRole {
  readonly device: BenchDevice;
  readonly topic: string;
}

export interface ConsumerRole extends TopicRole {
  readonly group: string;
  readonly prefetch: number;
}

export interface TopicWorkerSetup {
  readonly wsUrl: string;
  readonly publishers: readonly TopicRole[];
  readonly subscribers: readonly TopicRole[];
  readonly consumers?: readonly ConsumerRole[];
  readonly payloadBytes: number;
  /** Publishes without an answer per publisher (closed loop), or a safety cap (open loop). */
  readonly window: number;
  /** 0: closed loop; otherwise publishes per second by all of this worker's publishers. */
  readonly ratePerSecond: number;
  /** Time stamps in payloads, publish-to-receipt latency measured by the subscribers. */
  readonly latency: boolean;
}

export interface TopicWorkerReport {
  readonly type: 'report';
  readonly elapsedMs: number;
  /** `published` answers received in the window. */
  readonly published: number;
  /** `topic_message` frames received in the window, all subscribers together. */
  readonly delivered: number;
  /** Messages consumers had acknowledged (answered `settled`) in the window. */
  readonly acked: number;
  readonly sent: number;
  /** Open loop: scheduled publishes skipped because a publisher's safety cap was full. */
  readonly throttled: number;
  /** Subscriptions the relay ended (`subscription_ended`), by code. */
  readonly ended: Readonly<Record<string, number>>;
  readonly errors: Readonly<Record<string, number>>;
  /** CPU time this process used in the window. */
  readonly cpuMs: number;
  readonly latency: LatencySummary | undefined;
}


const PUBLISHED_PREFIX = '{"type":"published"';
const ERROR_PREFIX = '{"type":"error"';
const TOPIC_MESSAGE = Buffer.from('{"type":"topic_message"');
const SUBSCRIPTION_ENDED = Buffer.from('{"type":"subscription_ended"');
const PAYLOAD_FIELD = Buffer.from('"payload":"');
const LEASED = Buffer.from('{"type":"leased"');
const OFFSET_FIELD = '"offset":';
const SETTLED_PREFIX = '{"type":"settled"';
/** The time stamp and one more byte: 9 bytes, exactly 12 base64url characters, so the
 * rest of the encoded payload is the template's. */
const STAMP_BYTES = 9;
const STAMP_CHARS = 12;
const PUBLISH_ID_PREFIX_BYTES = 8;
const SUBSCRIBE_TIMEOUT_MS = 30_000;

interface PublisherState {
  readonly socket: DeviceSocket;
  readonly head: string;
  readonly idPrefix: Buffer;
  counter: number;
  inflight: number;
}

let setup: TopicWorkerSetup | undefined;
let payloadB64 = '';
const publishers: PublisherState[] = [];
const subscribers: DeviceSocket[] = [];
let requestId = 0;
let sending = false;
let measuring = false;
let measureStart = 0;
let cpuAtMeasure: NodeJS.CpuUsage | undefined;

let published = 0;
let delivered = 0;
let acked = 0;
let sent = 0;
let throttled = 0;
const errors = new Map<string, number>();
const ended = new Map<string, number>();
const latency = new LatencyRecorder();

function codeOf(text: string): string {
  try {
    const f = JSON.parse(text) as { code?: unknown };
    return typeof f.code === 'string' ? f.code : 'unparsable';
  } catch {
    return 'unparsable';
  }
}

function bump(m: Map<string, number>, k: string): void {
  m.set(k, (m.get(k) ?? 0) + 1);
}

function publishOne(p: PublisherState, stampMs?: number): void {
  // A fresh publish id: the connection's random prefix and a counter.
  p.idPrefix.writeUInt32BE(++p.counter >>> 0, PUBLISH_ID_PREFIX_BYTES);
  const id = p.idPrefix.toString('base64url');
  let payload = payloadB64;
  if (stampMs !== undefined) {
    const stamp = Buffer.alloc(STAMP_BYTES);
    stamp.writeDoubleLE(stampMs, 0);
    payload = stamp.toString('base64url') + payloadB64.slice(STAMP_CHARS);
  }
  requestId = (requestId + 1) >>> 0;
  p.socket.sendText(`${p.head}${requestId},"publishId":"${id}","payload":"${payload}"}`);
  p.inflight++;
  if (measuring) sent++;
}

function refill(p: PublisherState): void {
  const w = setup!.window;
  while (sending && p.inflight < w && p.socket.isOpen) publishOne(p);
}

function onPublisherText(p: PublisherState, text: string): void {
  if (text.startsWith(PUBLISHED_PREFIX)) {
    p.inflight--;
    if (measuring) published++;
  } else if (text.startsWith(ERROR_PREFIX)) {
    p.inflight--;
    bump(errors, codeOf(text));
  } else {
    return;
  }
  if (setup!.ratePerSecond === 0) refill(p);
}

function startsWith(frame: Buffer, prefix: Buffer): boolean {
  return frame.length >= prefix.length && frame.compare(prefix, 0, prefix.length, 0, prefix.length) === 0;
}

function onSubscriberFrame(frame: Buffer): void {
  if (startsWith(frame, TOPIC_MESSAGE)) {
    if (!measuring) return;
    delivered++;
    if (!setup!.latency) return;
    const at = frame.lastIndexOf(PAYLOAD_FIELD);
    if (at < 0) return;
    const start = at + PAYLOAD_FIELD.length;
    latency.arrival(Buffer.from(frame.toString('latin1', start, start + STAMP_CHARS), 'base64url').readDoubleLE(0), performance.now());
    return;
  }
  const text = frame.toString('utf8');
  if (startsWith(frame, SUBSCRIPTION_ENDED)) bump(ended, codeOf(text));
  else if (text.startsWith(ERROR_PREFIX)) bump(errors, codeOf(text));
}

interface ConsumerState {
  readonly socket: DeviceSocket;
  readonly role: ConsumerRole;
  /** Offsets leased this turn, acknowledged together at its end. */
  pending: number[];
  /** Offsets of each settle awaiting its answer, by request id. */
  readonly settling: Map<number, number>;
}

const consumers: ConsumerState[] = [];

function onConsumerFrame(c: ConsumerState, frame: Buffer): void {
  if (startsWith(frame, LEASED)) {
    // The offset, without decoding the frame (its payload is most of it).
    const text = frame.toString('latin1', 0, Math.min(frame.length, 512));
    const at = text.indexOf(OFFSET_FIELD);
    if (at < 0) return;
    const offset = Number.parseInt(text.slice(at + OFFSET_FIELD.length), 10);
    if (c.pending.length === 0) setImmediate(() => ackPending(c));
    c.pending.push(offset);
    return;
  }
  const text = frame.toString('utf8');
  if (text.startsWith(SETTLED_PREFIX)) {
    const id = (JSON.parse(text) as { id: number }).id;
    const n = c.settling.get(id) ?? 0;
    c.settling.delete(id);
    if (measuring) acked += n;
  } else if (startsWith(frame, SUBSCRIPTION_ENDED)) bump(ended, codeOf(text));
  else if (text.startsWith(ERROR_PREFIX)) bump(errors, codeOf(text));
}

function ackPending(c: ConsumerState): void {
  const offsets = c.pending;
  c.pending = [];
  if (offsets.length === 0 || !c.socket.isOpen) return;
  const id = (requestId = (requestId + 1) >>> 0);
  c.settling.set(id, offsets.length);
  c.socket.sendText(JSON.stringify({ type: 'settle', id, topic: c.role.topic, group: c.role.group, action: 'ack', offsets }));
}

/** Joins a consumer group and waits for the answer; leases start coming at once. */
async function consume(role: ConsumerRole): Promise<void> {
  const socket = await DeviceSocket.connect(setup!.wsUrl, role.device);
  const c: ConsumerState = { socket, role, pending: [], settling: new Map() };
  const id = (requestId = (requestId + 1) >>> 0);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${role.device.userId}: no answer to consume within ${SUBSCRIBE_TIMEOUT_MS} ms`)), SUBSCRIBE_TIMEOUT_MS);
    socket.listen({
      onDeliver: () => undefined,
      onText: () => undefined,
      onTextFrame: (frame) => {
        if (startsWith(frame, LEASED)) return onConsumerFrame(c, frame);
        const f = JSON.parse(frame.toString('utf8')) as { type?: unknown; id?: unknown };
        if (f.id !== id) return onConsumerFrame(c, frame);
        clearTimeout(timer);
        socket.listen({ onDeliver: () => undefined, onText: () => undefined, onTextFrame: (fr) => onConsumerFrame(c, fr) });
        if (f.type === 'consuming') resolve();
        else reject(new Error(`consume ${role.topic}/${role.group}: ${frame.toString('utf8')}`));
      },
    });
    socket.sendText(JSON.stringify({ type: 'consume', id, topic: role.topic, group: role.group, prefetch: role.prefetch }));
  });
  consumers.push(c);
}

/** Subscribes from `latest` and waits for the answer. */
async function subscribe(socket: DeviceSocket, topic: string): Promise<void> {
  const id = (requestId = (requestId + 1) >>> 0);
  await new Promise<void>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${socket.device.userId}: no answer to subscribe within ${SUBSCRIBE_TIMEOUT_MS} ms`)), SUBSCRIBE_TIMEOUT_MS);
    socket.listen({
      onDeliver: () => undefined,
      onText: (text) => {
        const f = JSON.parse(text) as { type?: unknown; id?: unknown };
        if (f.id !== id) return;
        clearTimeout(timer);
        if (f.type === 'subscribed') resolve();
        else reject(new Error(`subscribe ${topic}: ${text}`));
      },
    });
    socket.sendText(JSON.stringify({ type: 'subscribe', id, topic, from: 'latest' }));
  });
  socket.listen({ onDeliver: () => undefined, onText: () => undefined, onTextFrame: onSubscriberFrame });
}

async function onSetup(s: TopicWorkerSetup): Promise<void> {
  setup = s;
  // Incompressible content, as ciphertext would be.
  payloadB64 = crypto.randomBytes(s.payloadBytes).toString('base64url');
  // Subscribers first, so every subscription is live before anything is published.
  const subs = await Promise.all(s.subscribers.map((r) => DeviceSocket.connect(s.wsUrl, r.device)));
  await Promise.all(subs.map((socket, i) => subscribe(socket, s.subscribers[i]!.topic)));
  subscribers.push(...subs);
  await Promise.all((s.consumers ?? []).map((r) => consume(r)));
  const pubs = await Promise.all(s.publishers.map((r) => DeviceSocket.connect(s.wsUrl, r.device)));
  pubs.forEach((socket, i) => {
    const idPrefix = Buffer.alloc(PUBLISH_ID_PREFIX_BYTES + 4);
    crypto.randomFillSync(idPrefix, 0, PUBLISH_ID_PREFIX_BYTES);
    // Ids starting with a zero byte are the relay's own (dead-letter copies).
    idPrefix[0] = idPrefix[0]! | 0x80;
    const p: PublisherState = { socket, head: `{"type":"publish","topic":${JSON.stringify(s.publishers[i]!.topic)},"id":`, idPrefix, counter: 0, inflight: 0 };
    socket.listen({ onDeliver: () => undefined, onText: (t) => onPublisherText(p, t) });
    publishers.push(p);
  });
}

function startPacing(): void {
  const s = setup!;
  if (publishers.length === 0) return;
  pace(s.ratePerSecond, publishers.length, () => sending, (lane, intended) => {
    const p = publishers[lane]!;
    if (p.inflight >= s.window || !p.socket.isOpen) {
      if (measuring) throttled++;
      return;
    }
    const t = performance.now();
    if (measuring) latency.sent(intended, t);
    publishOne(p, s.latency ? t : undefined);
  });
}

function report(): TopicWorkerReport {
  const elapsedMs = performance.now() - measureStart;
  const cpu = process.cpuUsage(cpuAtMeasure);
  return {
    type: 'report',
    elapsedMs,
    published,
    delivered,
    acked,
    sent,
    throttled,
    ended: Object.fromEntries(ended),
    errors: Object.fromEntries(errors),
    cpuMs: (cpu.user + cpu.system) / 1000,
    latency: latency.summary(),
  };
}

async function closeAll(): Promise<void> {
  sending = false;
  await Promise.all([...publishers.map((p) => p.socket.close()), ...subscribers.map((s) => s.close()), ...consumers.map((c) => c.socket.close())]);
}

serveWorker<TopicWorkerSetup, TopicWorkerReport>({
  setup: onSetup,
  start() {
    sending = true;
    if (setup!.ratePerSecond === 0) for (const p of publishers) refill(p);
    else startPacing();
  },
  measure() {
    published = delivered = acked = sent = throttled = 0;
    errors.clear();
    ended.clear();
    measuring = true;
    measureStart = performance.now();
    latency.reset(measureStart);
    cpuAtMeasure = process.cpuUsage();
  },
  stop() {
    const rep = report();
    measuring = false;
    sending = false;
    return rep;
  },
  close: closeAll,
});
