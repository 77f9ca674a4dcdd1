/**
 * Messages between the benchmark and its load generator processes (plain data: they
 * cross process boundaries as JSON).
 */
import type { BenchDevice } from './device-socket.js';

export interface DevicePair {
  readonly sender: BenchDevice;
  readonly recipient: BenchDevice;
}

export interface GeneratorSetup {
  readonly wsUrl: string;
  readonly mode: 'throughput' | 'latency';
  readonly pairs: readonly DevicePair[];
  readonly payloadBytes: number;
  /** SENDs without a STORED answer allowed per sender (latency mode: a safety cap). */
  readonly window: number;
  /** A recipient acknowledges after this many envelopes ... */
  readonly ackEvery: number;
  /** ... or this long after the first unacknowledged one. */
  readonly ackDelayMs: number;
  /** Latency mode: envelopes per second offered by all of this generator's senders. */
  readonly ratePerSecond: number;
  /** TTL of every SEND (default 3600 s). */
  readonly ttlSeconds?: number;
}

export type ParentMessage =
  | { readonly type: 'setup'; readonly setup: GeneratorSetup }
  | { readonly type: 'start' }
  | { readonly type: 'measure' }
  | { readonly type: 'stop' }
  | { readonly type: 'close' };

export interface LatencySummary {
  readonly count: number;
  readonly p50: number;
  readonly p90: number;
  readonly p99: number;
  readonly p999: number;
  readonly max: number;
  /** How late the generator wrote SENDs against the open-loop schedule (its own health). */
  readonly sendLagP99: number;
  /** The worst latency in each second of the window, ms. */
  readonly maxBySecond: readonly number[];
}

export interface GeneratorReport {
  readonly type: 'report';
  readonly elapsedMs: number;
  /** Envelopes acknowledged by recipients in the window. */
  readonly acked: number;
  readonly stored: number;
  readonly sent: number;
  /** Latency mode: scheduled sends skipped because a sender's safety cap was full. */
  readonly throttled: number;
  readonly errors: Readonly<Record<string, number>>;
  /** CPU time this process used in the window. */
  readonly cpuMs: number;
  readonly latency: LatencySummary | undefined;
}

export type ChildMessage = GeneratorReport | { readonly type: 'ready' } | { readonly type: 'fatal'; readonly message: string };
