/**
 * Prometheus metrics (prom-client), served as text on GET /metrics. Labels are bounded
 * sets (frame types and error codes known in advance), never user or device ids.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { openFdCount } from './fd-limit.js';

export interface RelayMetrics {
  readonly registry: Registry;
  readonly connectionsOpen: Gauge;
  readonly connectionsMax: Gauge;
  readonly connectionsUnauthenticated: Gauge;
  readonly connectionsRefused: Counter<'reason'>;
  readonly framesIn: Counter<'type'>;
  readonly framesOut: Counter<'type'>;
  readonly errors: Counter<'code'>;
  /** The same three counters for the WebSocket hot path: counted in plain numbers,
   * added to the counters on scrape (Tally). */
  readonly tallies: { readonly framesIn: Tally<'type'>; readonly framesOut: Tally<'type'>; readonly errors: Tally<'code'> };
  readonly dbQuerySeconds: Histogram;
  readonly httpRequests: Counter<'route' | 'status'>;
  readonly httpInFlight: Gauge;
  readonly sendBatchSize: Histogram;
  readonly notices: Counter;
  readonly catchupRuns: Counter<'reason'>;
  readonly catchupChecked: Counter;
  readonly catchupFound: Counter;
  readonly oneTimePrekeysWithheld: Counter<'kind' | 'reason'>;
  readonly listenReconnects: Counter;
  readonly retired: Counter<'kind'>;
  readonly topicDenied: Counter<'action' | 'reason'>;
  readonly topicSlicesRetired: Counter<'kind'>;
  readonly topicSubscriberPauses: Counter;
  readonly groupDeadLettered: Counter;
  readonly groupSkipped: Counter;
  readonly noticesPublished: Counter<'notifier' | 'kind'>;
  readonly noticesReceived: Counter<'notifier' | 'kind'>;
  readonly noticesMalformed: Counter<'notifier'>;
  readonly notifierResubscriptions: Counter<'notifier'>;
  readonly pendingSendBytes: Gauge;
  readonly topicSubscriptions: Gauge;
  readonly topicPendingPublishes: Gauge;
  /** Where the pending SEND bytes are read from when scraped (not set per SEND). */
  setPendingSendBytes(source: () => number): void;
  /** Where the topic gauges are read from when scraped: open subscriptions and
   * publishes awaiting their commit on this relay. */
  setTopicGauges(source: () => { subscriptions: number; pendingPublishes: number }): void;
  readonly logReceiptsAppended: Counter;
  readonly logSubmissionsRefused: Counter<'code'>;
  readonly logTreeSize: Gauge;
  readonly logCheckpointAge: Gauge;
  /** Where the checkpoint age (seconds) is read from when scraped; undefined: none yet. */
  setLogCheckpointAge(source: () => number | undefined): void;
}

/** One label value's count in a Tally. */
export interface TallyChild {
  inc(): void;
}

/**
 * Counts of a one-label counter kept in plain numbers and added to the counter when it is
 * scraped (its `collect`). prom-client hashes and validates the label object on every
 * `inc`, even through `labels()`, and counting every frame that way was a measurable
 * share of the relay's CPU per SEND. For labels with a bounded set of values only.
 */
export class Tally<L extends string> {
  private readonly children = new Map<string, { n: number; inc(): void }>();

  constructor(
    private readonly counter: Counter<L>,
    private readonly label: L,
  ) {}

  /** The count for one label value (the same object every time: keep it). */
  child(value: string): TallyChild {
    let c = this.children.get(value);
    if (c === undefined) {
      const made = { n: 0, inc: () => void made.n++ };
      this.children.set(value, (c = made));
    }
    return c;
  }

  /** Adds what was counted since the last flush to the counter (on scrape). */
  flush(): void {
    for (const [value, c] of this.children) {
      if (c.n === 0) continue;
      this.counter.inc({ [this.label]: value } as Partial<Record<L, string>>, c.n);
      c.n = 0;
    }
  }
}

const OPEN_FDS = 'hermetic_process_open_fds';

export function createMetrics(): RelayMetrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'hermetic_' });
  // The default collector of this one reads one directory entry per socket, on the event
  // loop, every scrape: replaced by one that does not (fd-limit.ts openFdCount).
  registry.removeSingleMetric(OPEN_FDS);
  new Gauge({
    name: OPEN_FDS,
    help: 'Number of open file descriptors.',
    registers: [registry],
    async collect() {
      const n = await openFdCount();
      if (n !== undefined) this.set(n);
    },
  });
  let checkpointAge: () => number | undefined = () => undefined;
  let pendingBytes: () => number = () => 0;
  let topicGauges: () => { subscriptions: number; pendingPublishes: number } = () => ({ subscriptions: 0, pendingPublishes: 0 });
  /** A one-label counter with its Tally, flushed into it on scrape. */
  const tallied = <L extends string>(name: string, help: string, label: L): [Counter<L>, Tally<L>] => {
    let tally: Tally<L> | undefined;
    const counter = new Counter<L>({ name, help, labelNames: [label], registers: [registry], collect: () => tally?.flush() });
    tally = new Tally(counter, label);
    return [counter, tally];
  };
  const [framesIn, framesInTally] = tallied('hermetic_frames_in_total', 'WebSocket frames received, by type', 'type');
  const [framesOut, framesOutTally] = tallied('hermetic_frames_out_total', 'WebSocket frames sent, by type', 'type');
  const [errors, errorsTally] = tallied('hermetic_errors_total', 'Errors returned to peers, by code', 'code');
  const tallies = { framesIn: framesInTally, framesOut: framesOutTally, errors: errorsTally };
  return {
    topicDenied: new Counter({
      name: 'hermetic_topic_denied_total',
      help: 'Topic requests refused by the topic claim of the token (FORBIDDEN), by action and reason',
      labelNames: ['action', 'reason'],
      registers: [registry],
    }),
    groupDeadLettered: new Counter({
      name: 'hermetic_group_dead_lettered_total',
      help: 'Messages consumer groups moved to their dead-letter topic after the maximum deliveries',
      registers: [registry],
    }),
    groupSkipped: new Counter({
      name: 'hermetic_group_skipped_total',
      help: 'Messages retention removed before a consumer group leased them (each group counts its own)',
      registers: [registry],
    }),
    topicSubscriberPauses: new Counter({
      name: 'hermetic_topic_subscriber_pauses_total',
      help: 'Topic subscriptions paused because their socket stopped draining (each resumes from the database on drain)',
      registers: [registry],
    }),
    topicSlicesRetired: new Counter({
      name: 'hermetic_topic_slices_retired_total',
      help: 'Topic slices dropped by retention (kind="dropped"), or left for the next pass because their lock was busy (kind="deferred")',
      labelNames: ['kind'],
      registers: [registry],
    }),
    logReceiptsAppended: new Counter({ name: 'hermetic_log_receipts_appended_total', help: 'Receipts appended to the receipt log by this relay (resubmissions not counted)', registers: [registry] }),
    logSubmissionsRefused: new Counter({
      name: 'hermetic_log_submissions_refused_total',
      help: 'Receipt log submissions refused, by error code',
      labelNames: ['code'],
      registers: [registry],
    }),
    logTreeSize: new Gauge({ name: 'hermetic_log_tree_size', help: 'Leaves in the receipt log, as this relay last saw it', registers: [registry] }),
    logCheckpointAge: new Gauge({
      name: 'hermetic_log_checkpoint_age_seconds',
      help: 'Seconds since the newest receipt log checkpoint (signed by any relay on the database) was signed; checkpoints are signed only when the log grew, so read it with the tree size',
      registers: [registry],
      collect() {
        const v = checkpointAge();
        if (v !== undefined) this.set(v);
      },
    }),
    setLogCheckpointAge: (source) => {
      checkpointAge = source;
    },
    registry,
    connectionsOpen: new Gauge({ name: 'hermetic_connections_open', help: 'Open WebSocket connections', registers: [registry] }),
    connectionsMax: new Gauge({ name: 'hermetic_connections_max', help: 'Open WebSocket connections allowed (HERMETIC_MAX_CONNECTIONS or derived from the file descriptor limit)', registers: [registry] }),
    connectionsUnauthenticated: new Gauge({ name: 'hermetic_connections_unauthenticated', help: 'Open WebSocket connections not yet authenticated', registers: [registry] }),
    connectionsRefused: new Counter({
      name: 'hermetic_connections_refused_total',
      help: 'WebSocket upgrades refused: capacity (the connection cap), unauthenticated_per_address, draining',
      labelNames: ['reason'],
      registers: [registry],
    }),
    framesIn,
    framesOut,
    errors,
    tallies,
    dbQuerySeconds: new Histogram({
      name: 'hermetic_db_query_seconds',
      help: 'Database statement latency',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5],
      registers: [registry],
    }),
    sendBatchSize: new Histogram({
      name: 'hermetic_send_batch_size',
      help: 'SEND frames per group-commit transaction',
      buckets: [1, 2, 4, 8, 16, 32, 64, 128, 256, 512],
      registers: [registry],
    }),
    notices: new Counter({ name: 'hermetic_notices_total', help: 'Mailbox notices heard from other relays (on either notifier)', registers: [registry] }),
    noticesPublished: new Counter({
      name: 'hermetic_notifier_published_total',
      help: 'Mailbox notices this relay published, by notifier (pg, nats) and kind (tails, all, connected, revoked); with pg, the tails and all notices the store function sends are not counted',
      labelNames: ['notifier', 'kind'],
      registers: [registry],
    }),
    noticesReceived: new Counter({
      name: 'hermetic_notifier_received_total',
      help: 'Well-formed mailbox notices received, its own included, by notifier and kind',
      labelNames: ['notifier', 'kind'],
      registers: [registry],
    }),
    noticesMalformed: new Counter({
      name: 'hermetic_notifier_malformed_total',
      help: 'Messages on the notice channel or subject that were not well-formed notices (ignored), by notifier',
      labelNames: ['notifier'],
      registers: [registry],
    }),
    notifierResubscriptions: new Counter({
      name: 'hermetic_notifier_resubscriptions_total',
      help: 'Times the notifier lost its subscription (its connection) and had it back, by notifier',
      labelNames: ['notifier'],
      registers: [registry],
    }),
    catchupRuns: new Counter({
      name: 'hermetic_catchup_runs_total',
      help: 'Catch-up scans of connected mailboxes run, by what asked for them: notice (an "all" notice from another relay), interval, resubscribed',
      labelNames: ['reason'],
      registers: [registry],
    }),
    catchupChecked: new Counter({
      name: 'hermetic_catchup_mailboxes_checked_total',
      help: 'Connected mailboxes whose tail catch-up scans compared with the database',
      registers: [registry],
    }),
    catchupFound: new Counter({
      name: 'hermetic_catchup_mailboxes_found_total',
      help: 'Mailboxes catch-up scans found with envelopes their connection had not heard of (a lost notice) or gone (a revocation whose notice was missed): the rows their statements returned',
      registers: [registry],
    }),
    oneTimePrekeysWithheld: new Counter({
      name: 'hermetic_one_time_prekeys_withheld_total',
      help: 'One-time prekeys a served bundle went without, by kind (x25519, mlkem) and reason: target_budget (the target device\'s hand-out budget is spent: a drain attempt, alert on it) or exhausted (none left stored)',
      labelNames: ['kind', 'reason'],
      registers: [registry],
    }),
    listenReconnects: new Counter({
      name: 'hermetic_listen_reconnects_total',
      help: 'Times the notice subscription (LISTEN, or NATS with HERMETIC_NATS_URL) was lost and restored',
      registers: [registry],
    }),
    retired: new Counter({
      name: 'hermetic_retired_total',
      help: 'Mailbox log retirement: partitions dropped (kind="partition"), unacknowledged entries carried forward (kind="carried"), expired unacknowledged entries dropped (kind="expired"), partition drops left for the next pass because their table lock was not free in time (kind="drop_deferred"), drains that failed and are left for the next pass (kind="drain_failed")',
      labelNames: ['kind'],
      registers: [registry],
    }),
    pendingSendBytes: new Gauge({
      name: 'hermetic_pending_send_bytes',
      help: 'Bytes of SEND frames accepted and not yet answered, all devices (at most HERMETIC_MAX_PENDING_SEND_BYTES)',
      registers: [registry],
      collect() {
        this.set(pendingBytes());
      },
    }),
    setPendingSendBytes: (source) => {
      pendingBytes = source;
    },
    setTopicGauges: (source) => {
      topicGauges = source;
    },
    topicSubscriptions: new Gauge({
      name: 'hermetic_topic_subscriptions',
      help: 'Topic subscriptions open on this relay',
      registers: [registry],
      collect() {
        this.set(topicGauges().subscriptions);
      },
    }),
    topicPendingPublishes: new Gauge({
      name: 'hermetic_topic_pending_publishes',
      help: 'Topic publishes on this relay queued or being committed',
      registers: [registry],
      collect() {
        this.set(topicGauges().pendingPublishes);
      },
    }),
    httpRequests: new Counter({ name: 'hermetic_http_requests_total', help: 'HTTP requests, by route and status', labelNames: ['route', 'status'], registers: [registry] }),
    httpInFlight: new Gauge({ name: 'hermetic_http_requests_in_flight', help: 'HTTP requests being handled (at most MAX_INFLIGHT_HTTP)', registers: [registry] }),
  };
}
