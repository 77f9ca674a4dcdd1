/**
 * A paced stream of SENDs from one device to another, kept running across a fault, and
 * the check of what the recipient got afterwards. The stream sends a few SENDs every
 * few milliseconds (never more than a window of them unanswered, as a client does) until
 * stopped, and remembers what it sent under each request id; the answers (STORED or an
 * error) are read from the sender's frames.
 */
import { expect } from 'vitest';
import type { DeliverFrame } from '../../protocol/envelopes.js';
import type { JsonFrame, RawClient } from '../mailbox/raw-client.js';
import { type TestUser, firstDevice, hex, payload, text } from '../mailbox/world.js';

export interface StreamOptions {
  /** SENDs per tick, ticks apart (ms), and the most left unanswered. */
  readonly perTick?: number;
  readonly tickMs?: number;
  readonly window?: number;
  /** Payload size in bytes. */
  readonly size?: number;
}

export interface StoredSend {
  readonly envelopeId: string;
  readonly label: string;
  readonly seq: number;
}

export class SendStream {
  /** What was sent, by request id. */
  private readonly sent = new Map<number, { envelopeId: string; label: string; bytes: Uint8Array }>();
  private timer: NodeJS.Timeout | undefined;
  private count = 0;

  constructor(
    private readonly sender: RawClient,
    private readonly to: TestUser,
    private readonly label: string,
    private readonly opts: StreamOptions = {},
  ) {}

  start(): void {
    const perTick = this.opts.perTick ?? 2;
    const window = this.opts.window ?? 64;
    const device = firstDevice(this.to).deviceId;
    this.timer = setInterval(() => {
      for (let k = 0; k < perTick; k++) {
        if (this.sender.closeCode !== undefined || this.count - this.sender.answeredCount() >= window) return;
        const label = `${this.label} ${this.count++}`;
        const { id, envelopeId } = this.sender.send(this.to.userId, [{ deviceId: device, payload: payload(label, this.opts.size) }]);
        this.sent.set(id, { envelopeId: hex(envelopeId), label, bytes: envelopeId });
      }
    }, this.opts.tickMs ?? 5);
  }

  /** Stops sending and waits for the answer to every SEND sent. */
  async stop(): Promise<void> {
    clearInterval(this.timer);
    await this.sender.until(() => this.sender.answeredCount() >= this.count, `answers to ${this.count} SENDs`, 60_000);
  }

  get sentCount(): number {
    return this.count;
  }

  /** SENDs answered STORED so far, with the sequence the answer named. */
  stored(): StoredSend[] {
    const out: StoredSend[] = [];
    for (const f of this.answers()) {
      if (f.type !== 'stored') continue;
      const s = this.sent.get(f.id as number)!;
      out.push({ envelopeId: s.envelopeId, label: s.label, seq: (f.recipients as Array<{ seq: number }>)[0]!.seq });
    }
    return out;
  }

  /** Error answers so far. */
  errors(): JsonFrame[] {
    return this.answers().filter((f) => f.type === 'error');
  }

  /** Envelope ids whose SEND was answered with an error. */
  failedIds(): Set<string> {
    return new Set(this.errors().map((f) => this.sent.get(f.id as number)!.envelopeId));
  }

  /** Resolves once `n` more SENDs than now have been answered STORED. */
  async waitMoreStored(n: number, timeoutMs = 30_000): Promise<void> {
    const want = this.stored().length + n;
    await this.sender.until(() => this.stored().length >= want, `${want} STOREDs`, timeoutMs);
  }

  /** Resolves once `n` more SENDs than now have been answered with an error. */
  async waitMoreErrors(n: number, timeoutMs = 30_000): Promise<void> {
    const want = this.errors().length + n;
    await this.sender.until(() => this.errors().length >= want, `${want} errors`, timeoutMs);
  }

  /**
   * Sends again, with the same envelope ids and bytes, every SEND that was answered with
   * an error (as a client does after UNAVAILABLE), on `client`, and waits for the
   * answers: those whose first try was committed after all come back `duplicate`.
   */
  async resendFailed(client: RawClient): Promise<JsonFrame[]> {
    const failed = new Set(this.errors().map((f) => f.id as number));
    const again = [...this.sent.entries()].filter(([id]) => failed.has(id)).map(([, s]) => s);
    const device = firstDevice(this.to).deviceId;
    const ids = new Set<number>();
    await client.sendWindowed(
      again.length,
      (i) => ({ recipientUserId: this.to.userId, targets: [{ deviceId: device, payload: payload(again[i]!.label, this.opts.size) }], opts: { envelopeId: again[i]!.bytes } }),
      64,
      (_, sent) => ids.add(sent.id),
    );
    const answers = (): JsonFrame[] => client.json.filter((f) => (f.type === 'stored' || f.type === 'error') && ids.has(f.id as number));
    await client.until(() => answers().length === again.length, `answers to ${again.length} resends`, 60_000);
    return answers();
  }

  /** Labels sent, by envelope id. */
  labels(): Map<string, string> {
    return new Map([...this.sent.values()].map((s) => [s.envelopeId, s.label]));
  }

  private answers(): JsonFrame[] {
    return this.sender.json.filter((f) => (f.type === 'stored' || f.type === 'error') && this.sent.has(f.id as number));
  }
}

export interface DeliveryReport {
  /** Distinct sequences delivered. */
  readonly delivered: number;
  /** Deliveries of a sequence already delivered (at-least-once). */
  readonly redelivered: number;
  /** Envelopes delivered whose SEND was answered with an error: committed, but the
   * answer was lost with the connection (the client's resend gets `duplicate`). */
  readonly committedUnanswered: number;
}

/**
 * Waits until `reader` has everything `stream` got STORED, then checks: sequences
 * 1..tail, gap-free, none expired; each sequence always the same envelope; every
 * envelope one the stream sent, with its bytes; every STORED envelope at the sequence
 * its STORED named, with the bytes sent for its id. `tail` is the reader's mailbox tail
 * if known (so that envelopes committed without a STORED are waited for too).
 */
export async function expectAllStoredDelivered(reader: RawClient, stream: SendStream, tail?: number): Promise<DeliveryReport> {
  const stored = stream.stored();
  const top = Math.max(tail ?? 0, ...stored.map((s) => s.seq));
  await reader.until(() => reader.delivered.some((d) => d.seq >= top) && distinctSeqs(reader.delivered) >= top, `delivery through seq ${top}`, 60_000);
  expect(reader.stream().filter((s) => s.startsWith('expired'))).toEqual([]);
  const bySeq = new Map<number, DeliverFrame>();
  let redelivered = 0;
  const labels = stream.labels();
  for (const d of reader.delivered) {
    const first = bySeq.get(d.seq);
    if (first) {
      redelivered++;
      expect(hex(d.envelopeId), `seq ${d.seq} delivered twice with different envelopes`).toBe(hex(first.envelopeId));
      continue;
    }
    bySeq.set(d.seq, d);
    const label = labels.get(hex(d.envelopeId));
    expect(label, `delivered envelope ${hex(d.envelopeId)} at seq ${d.seq} was sent`).toBeDefined();
    expect(text(d.payload), `payload at seq ${d.seq}`).toBe(label);
  }
  const seqs = [...bySeq.keys()].sort((a, b) => a - b);
  expect(seqs, 'sequences gap-free from 1').toEqual(Array.from({ length: seqs.length }, (_, i) => i + 1));
  const lost = stored.filter((s) => {
    const d = bySeq.get(s.seq);
    return !d || hex(d.envelopeId) !== s.envelopeId;
  });
  expect(lost, `${lost.length} STORED envelopes missing or misplaced`).toEqual([]);
  const failed = stream.failedIds();
  const committedUnanswered = [...bySeq.values()].filter((d) => failed.has(hex(d.envelopeId))).length;
  return { delivered: bySeq.size, redelivered, committedUnanswered };
}

function distinctSeqs(frames: readonly DeliverFrame[]): number {
  return new Set(frames.map((f) => f.seq)).size;
}
