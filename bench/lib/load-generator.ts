/**
 * A load generator process (forked by bench/lib/load.ts). It owns a set of device
 * pairs: a sender connection that sends 1 KiB envelopes to its own recipient device, and
 * that recipient's connection, which acknowledges cumulatively.
 *
 * - throughput: each sender keeps `window` SENDs without a STORED answer in flight and
 *   sends the next one when an answer comes (pipelining). An envelope counts when its
 *   recipient acknowledges it.
 * - latency: the senders together send at a fixed rate, open loop (the schedule never
 *   waits for answers), each payload carrying the time it was written; the recipient
 *   takes the difference on DELIVER. Sender and recipient share this process, so one
 *   clock measures both ends.
 *
 * Control (parent → child): setup, start (begin sending: warm-up), measure (zero the
 * counters), stop (report and stop sending), close (disconnect and exit).
 */
import { performance } from 'node:perf_hooks';
import { type BenchDevice, DeviceSocket, SendFrames, deliverPayloadOffset, deliverSeq } from './device-socket.js';
import { LatencyRecorder } from './latency.js';
import type { GeneratorReport, GeneratorSetup } from './load-protocol.js';
import { pace } from './pacing.js';
import { serveWorker } from './worker-control.js';

const STORED_PREFIX = '{"type":"stored"';

interface SenderState {
  readonly socket: DeviceSocket;
  readonly frames: SendFrames;
  inflight: number;
}

interface RecipientState {
  readonly socket: DeviceSocket;
  lastSeq: number;
  ackedSeq: number;
  ackTimer: NodeJS.Timeout | undefined;
}

let setup: GeneratorSetup | undefined;
const senders: SenderState[] = [];
const recipients: RecipientState[] = [];
let sending = false;
let measuring = false;
let measureStart = 0;
let cpuAtMeasure: NodeJS.CpuUsage | undefined;

// Counters of the measurement window.
let acked = 0;
let stored = 0;
let sent = 0;
const errors = new Map<string, number>();
const latency = new LatencyRecorder();
let throttled = 0;

function noteError(text: string): void {
  let code = 'unparsable';
  try {
    const f = JSON.parse(text) as { code?: unknown };
    if (typeof f.code === 'string') code = f.code;
  } catch {
    /* keep 'unparsable' */
  }
  errors.set(code, (errors.get(code) ?? 0) + 1);
}

function sendAck(r: RecipientState): void {
  if (r.ackTimer) {
    clearTimeout(r.ackTimer);
    r.ackTimer = undefined;
  }
  if (r.lastSeq <= r.ackedSeq || !r.socket.isOpen) return;
  r.socket.sendText(`{"type":"ack","seq":${r.lastSeq}}`);
  if (measuring) acked += r.lastSeq - r.ackedSeq;
  r.ackedSeq = r.lastSeq;
}

function onDeliver(r: RecipientState, frame: Buffer): void {
  const s = setup!;
  const seq = deliverSeq(frame);
  if (seq > r.lastSeq) r.lastSeq = seq;
  if (s.mode === 'latency' && measuring) {
    latency.arrival(frame.readDoubleLE(deliverPayloadOffset(frame)), performance.now());
  }
  if (r.lastSeq - r.ackedSeq >= s.ackEvery) sendAck(r);
  else r.ackTimer ??= setTimeout(() => sendAck(r), s.ackDelayMs);
}

function sendOne(st: SenderState, timestampMs?: number): void {
  st.socket.sendBinary(st.frames.next(timestampMs));
  st.inflight++;
  if (measuring) sent++;
}

function refill(st: SenderState): void {
  const w = setup!.window;
  while (sending && st.inflight < w && st.socket.isOpen) sendOne(st);
}

function onStoredBatch(st: SenderState, count: number): void {
  st.inflight -= count;
  if (measuring) stored += count;
  if (setup!.mode === 'throughput') refill(st);
}

function onSenderText(st: SenderState, text: string): void {
  if (text.startsWith(STORED_PREFIX)) {
    st.inflight--;
    if (measuring) stored++;
  } else if (text.startsWith('{"type":"error"')) {
    st.inflight--;
    noteError(text);
  } else {
    return; // queue_empty, pong, ...
  }
  if (setup!.mode === 'throughput') refill(st);
}

/** Open-loop pacing: the schedule never waits for answers. */
function startPacing(): void {
  const s = setup!;
  pace(s.ratePerSecond, senders.length, () => sending, (lane, intended) => {
    const st = senders[lane]!;
    if (st.inflight >= s.window || !st.socket.isOpen) {
      if (measuring) throttled++;
      return;
    }
    const t = performance.now();
    if (measuring) latency.sent(intended, t);
    sendOne(st, t);
  });
}

async function onSetup(s: GeneratorSetup): Promise<void> {
  setup = s;
  // Recipients first, so every recipient's stream is attached before anything is sent.
  const rs = await Promise.all(s.pairs.map((p) => DeviceSocket.connect(s.wsUrl, p.recipient)));
  const ss = await Promise.all(s.pairs.map((p) => DeviceSocket.connect(s.wsUrl, p.sender)));
  rs.forEach((socket) => {
    const r: RecipientState = { socket, lastSeq: 0, ackedSeq: 0, ackTimer: undefined };
    socket.listen({ onDeliver: (f) => onDeliver(r, f), onText: (t) => (t.startsWith('{"type":"error"') ? noteError(t) : undefined) });
    recipients.push(r);
  });
  ss.forEach((socket, i) => {
    const st: SenderState = { socket, frames: new SendFrames(s.pairs[i]!.recipient as BenchDevice, s.payloadBytes, s.ttlSeconds), inflight: 0 };
    socket.listen({ onDeliver: () => undefined, onStoredBatch: (n) => onStoredBatch(st, n), onText: (t) => onSenderText(st, t) });
    senders.push(st);
  });
}

function report(): GeneratorReport {
  const elapsedMs = performance.now() - measureStart;
  const cpu = process.cpuUsage(cpuAtMeasure);
  return {
    type: 'report',
    elapsedMs,
    acked,
    stored,
    sent,
    throttled,
    errors: Object.fromEntries(errors),
    cpuMs: (cpu.user + cpu.system) / 1000,
    latency: latency.summary(),
  };
}

async function closeAll(): Promise<void> {
  sending = false;
  for (const r of recipients) if (r.ackTimer) clearTimeout(r.ackTimer);
  await Promise.all([...senders.map((s) => s.socket.close()), ...recipients.map((r) => r.socket.close())]);
}

serveWorker<GeneratorSetup, GeneratorReport>({
  setup: onSetup,
  start() {
    sending = true;
    if (setup!.mode === 'throughput') for (const st of senders) refill(st);
    else startPacing();
  },
  measure() {
    acked = stored = sent = throttled = 0;
    errors.clear();
    measuring = true;
    measureStart = performance.now();
    latency.reset(measureStart);
    cpuAtMeasure = process.cpuUsage();
  },
  stop() {
    // Acknowledge what has arrived so the window ends on an exact count.
    for (const r of recipients) sendAck(r);
    const rep = report();
    measuring = false;
    sending = false;
    return rep;
  },
  close: closeAll,
});
