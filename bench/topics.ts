/**
 * Topic benchmarks: `npm run bench -- topics [--json] [options]`.
 *
 * One run measures, side by side:
 *
 * 1. `pg_raw_per_s` — the database's ceiling, as the relay suite measures it
 *    (bench/lib/pg-raw.ts): 1 KiB rows into a fresh database's `envelopes` table, one
 *    commit per multi-row INSERT, several connections. One fixed setting, the one the
 *    relay suite's sweep found fastest on a 2-core machine (docs/PERFORMANCE.md):
 *    payloads packed into one binary parameter, 1024 rows per batch, 4 connections.
 * 2. `p50_ms` / `p99_ms` — publish-to-receipt latency at an offered, open-loop 2,000
 *    publishes/s to one topic (4 publisher connections), received by one subscriber in
 *    the same load generator process (one clock), the time stamp inside the payload.
 * 3. `publish_per_s` — durable 1 KiB publishes answered after commit (`published`
 *    frames counted): `--publishers` connections over `--generators` processes, each
 *    keeping `--window` publishes without an answer in flight, to `--topics` topics.
 * 4. `fanout_deliveries_per_s` — one topic, `--subscribers` subscribers (from `latest`)
 *    over `--generators` processes, publishers in another process at a steady
 *    `--fanout-rate` publishes/s (open loop, each publisher at most 1,024 unanswered);
 *    `topic_message` frames received per second by all subscribers together.
 * 5. `consumer_group_per_s` — one topic filled by 8 publishers (closed loop, `--window`
 *    each) for twice the phase's warm-up and window (at least 8 s), then a consumer group of 4 members (over the generators, prefetch
 *    64 each) acknowledging every message as it is leased (the offsets of one turn in one
 *    `settle`): messages acknowledged per second. Beside it, `group_backlog_at_end`
 *    (whether the backlog lasted) and
 *    `group_rows_written_per_msg`: rows the group tables took (inserts, updates, deletes,
 *    from PostgreSQL's table counters) per message the group finished.
 *
 * Phases 2–5 share one relay child (compiled as `npm start` runs it, bench/lib/relay-
 * process.ts) on a fresh PostgreSQL database; every user's token grants the `bench.>`
 * topics. Each phase warms up before it measures and reports the CPU split of its window
 * (relay, PostgreSQL, load generators, the rest of the machine) and the relay's frame
 * counters. Databases, processes and temporary directories are removed at the end, also
 * on failure or interrupt. The goals are printed beside the numbers (`goal_*`).
 *
 * Options:
 *   --duration <s>          measured seconds per phase (default 10; --quick: 2)
 *   --quick                 short warm-ups: a smoke check
 *   --only <phases>         comma list of pg_raw, latency, publish, fanout, group
 *   --profile               run the relay under node --cpu-prof and print where its CPU
 *                           went in each measured window
 *   --publishers <n> / --generators <n> / --window <n> / --topics <n>
 *                           publish load shape (16 / 2 / 64 / 4)
 *   --subscribers <n> / --fanout-rate <n>   fan-out load shape (100 / 10000)
 */
import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { Cleanup } from './lib/cleanup.js';
import { loadAverage } from './lib/machine.js';
import { type CpuSample, cpuSplit, sampleCpu, usPer } from './lib/cpu.js';
import type { BenchDevice } from './lib/device-socket.js';
import { type BenchIssuer, createIssuer } from './lib/issuer.js';
import { LoadGenerators } from './lib/load.js';
import { readOptions } from './lib/options.js';
import { type PgServer, counterDelta, createDatabase, findPgServer, readCounters, serverSettings, withClient } from './lib/postgres.js';
import { type RawConfig, rawInsertRun } from './lib/pg-raw.js';
import { counterDelta as promDelta, parseSamples } from './lib/prometheus.js';
import { type RelayChild, fetchMetrics, migrateDatabase, registerDevice } from './lib/relay-process.js';
import type { ConsumerRole, TopicRole, TopicWorkerReport, TopicWorkerSetup } from './lib/topic-worker.js';
import { checkpoint, hrMicros, round, sleep, sourceVersion, split, startRelayFor } from './relay.js';
import { printProfile, summarizeProfile } from './lib/cpu-profile.js';
import { tsxSourceResolver } from './lib/source-maps.js';
import type { BenchResults } from './run.js';

const PAYLOAD_BYTES = 1024;
const TOPIC_WORKER = new URL('./lib/topic-worker.ts', import.meta.url);

/** What every benchmark user's token grants (docs/PROTOCOL.md, "Topic access"). */
const TOPIC_CLAIMS = { hermetic_topics: { create: ['bench.>'], publish: ['bench.>'], subscribe: ['bench.>'], consume: ['bench.>'] } };

/** The relay suite's fastest setting on a 2-core machine (see the file header). */
const RAW_CONFIG: RawConfig = { batch: 1024, connections: 4 };
const RAW_MAILBOXES = 32;

/** The goals set for topics, printed beside the numbers. */
const GOALS = { publishVsRaw: 0.5, fanoutPerSecond: 200_000, p99Ms: 10, groupVsRaw: 0.3 } as const;

const PHASES = ['pg_raw', 'latency', 'publish', 'fanout', 'group'] as const;

/** The consumer group phase: members (spread over the generators), each's prefetch, and
 * the publishers that fill the topic beforehand. */
const GROUP_MEMBERS = 4;
const GROUP_PREFETCH = 64;
const GROUP_PUBLISHERS = 8;
/** Seconds the publishers fill the group's topic before the members start. */
/** The group phase's backlog is published for this long (at least), and for twice the
 * phase's warm-up and window: publishing runs at about the rate the group consumes, so the
 * members never run dry before the window ends (group_backlog_at_end says if they did). */
const GROUP_FILL_MIN_SECONDS = 8;
/** PostgreSQL publishes a busy backend's table counters at most every second and an idle
 * one's after 10 s: the row counts are read this long after the window. */
const PG_STATS_SETTLE_MS = 11_000;
const GROUP_TABLES = ['consumer_groups', 'group_leases', 'group_redeliveries'] as const;
type Phase = (typeof PHASES)[number];

interface Options {
  readonly duration: number;
  readonly warmup: number;
  readonly phases: ReadonlySet<Phase>;
  readonly publishers: number;
  readonly generators: number;
  readonly window: number;
  readonly profile: boolean;
  readonly topics: number;
  readonly subscribers: number;
  readonly fanoutRate: number;
  /** Publisher connections of the fan-out phase (sharing `fanoutRate`). */
  readonly fanoutPublishers: number;
  readonly latencyRate: number;
  readonly latencyPublishers: number;
}

function parseOptions(args: readonly string[]): Options {
  const { num, phases } = readOptions(args, ['--duration', '--quick', '--profile', '--only', '--publishers', '--generators', '--window', '--topics', '--subscribers', '--fanout-rate']);
  const quick = args.includes('--quick');
  return {
    duration: num('--duration', quick ? 2 : 10, 0.5, 600),
    warmup: quick ? 1 : 3,
    phases: phases(PHASES),
    publishers: num('--publishers', 16, 1, 1024),
    generators: num('--generators', 2, 1, 16),
    // The relay's pending budget per device is MAX_PENDING_SENDS (1024).
    window: num('--window', 64, 1, 1024),
    profile: args.includes('--profile'),
    topics: num('--topics', 4, 1, 64),
    subscribers: num('--subscribers', 100, 1, 8000),
    // Above what one topic with 100 subscribers takes on a 2-core machine (about 9,000/s,
    // docs/PERFORMANCE.md): the publishers are held back by their window (fanout_skipped),
    // so the deliveries measure the relay and its clients, not the offered rate.
    fanoutRate: num('--fanout-rate', 10_000, 1, 100_000),
    fanoutPublishers: 2,
    latencyRate: 2000,
    latencyPublishers: 4,
  };
}

function log(msg: string): void {
  console.error(`[topics bench] ${msg}`);
}

// ---------------------------------------------------------------- setup

async function makeDevices(issuer: BenchIssuer, prefix: string, n: number): Promise<BenchDevice[]> {
  return Promise.all(
    Array.from({ length: n }, async (_, i) => {
      const userId = `${prefix}-${i}`;
      return { userId, deviceId: 'dev-1', seed: crypto.randomBytes(32).toString('hex'), token: await issuer.mint(userId, TOPIC_CLAIMS) };
    }),
  );
}

async function registerAll(relay: RelayChild, devices: readonly BenchDevice[]): Promise<void> {
  // A few at a time: registration is setup, not what is measured.
  for (let i = 0; i < devices.length; i += 8) await Promise.all(devices.slice(i, i + 8).map((d) => registerDevice(relay.baseUrl, d)));
}

async function createTopic(relay: RelayChild, token: string, name: string): Promise<void> {
  const res = await fetch(`${relay.baseUrl}/v1/topics`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name }),
  });
  if (res.status !== 201) throw new Error(`create topic ${name}: ${res.status} ${await res.text()}`);
}

// ---------------------------------------------------------------- measurement

interface Window {
  readonly reports: readonly TopicWorkerReport[];
  readonly seconds: number;
  readonly cpu: Record<string, number>;
  readonly metrics: { readonly before: string; readonly after: string };
  readonly pg: ReturnType<typeof counterDelta> | undefined;
}

function sum(reports: readonly TopicWorkerReport[], f: (r: TopicWorkerReport) => number): number {
  return reports.reduce((s, r) => s + f(r), 0);
}

function merged(reports: readonly TopicWorkerReport[], f: (r: TopicWorkerReport) => Readonly<Record<string, number>>): Record<string, number> {
  const out: Record<string, number> = {};
  for (const r of reports) for (const [k, v] of Object.entries(f(r))) out[k] = (out[k] ?? 0) + v;
  return out;
}

/** Starts workers, warms up, measures `duration` seconds with the CPU split, stops them. */
/** The measured windows, for --profile. */
const profiled: Array<{ what: string; fromUs: number; toUs: number }> = [];

async function measure(cleanup: Cleanup, relay: RelayChild, setups: readonly TopicWorkerSetup[], opts: Options, what: string, db?: { url: string; name: string }): Promise<Window> {
  let close: (() => Promise<void>) | undefined;
  const gens = await LoadGenerators.start<TopicWorkerSetup, TopicWorkerReport>(setups, (c) => (close = cleanup.add(`${what} workers`, c)), { module: TOPIC_WORKER });
  try {
    gens.startSending();
    await sleep(opts.warmup * 1000);
    const before = await fetchMetrics(relay.baseUrl);
    const pg0 = db ? await withClient(db.url, (c) => readCounters(c, db.name)) : undefined;
    const cpu0: CpuSample = sampleCpu({ relay: [relay.pid], loadgen: gens.pids });
    gens.beginMeasure();
    const fromUs = hrMicros();
    await sleep(opts.duration * 1000);
    profiled.push({ what, fromUs, toUs: hrMicros() });
    const reports = await gens.stop();
    const cpu1 = sampleCpu({ relay: [relay.pid], loadgen: gens.pids });
    const pg1 = db ? await withClient(db.url, (c) => readCounters(c, db.name)) : undefined;
    const after = await fetchMetrics(relay.baseUrl);
    const errors = merged(reports, (r) => r.errors);
    if (Object.keys(errors).length > 0) throw new Error(`${what}: the relay answered with errors ${JSON.stringify(errors)}`);
    return { reports, seconds: (cpu1.atMs - cpu0.atMs) / 1000, cpu: cpuSplit(cpu0, cpu1), metrics: { before, after }, pg: pg0 && pg1 ? counterDelta(pg0, pg1) : undefined };
  } finally {
    await close?.();
  }
}

function prefixed(prefix: string, rec: Readonly<Record<string, number>>): BenchResults {
  const out: BenchResults = {};
  for (const [k, v] of Object.entries(rec)) out[`${prefix}${k}`] = v;
  return out;
}

function frameRate(w: Window, series: string): number {
  return Math.round(promDelta(parseSamples(w.metrics.before), parseSamples(w.metrics.after), series) / w.seconds);
}

// ---------------------------------------------------------------- phases

async function rawPhase(cleanup: Cleanup, server: PgServer, tmp: string, opts: Options): Promise<BenchResults> {
  const db = await createDatabase(server, 'topics_raw');
  const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
  try {
    await migrateDatabase(db.url, path.join(tmp, 'raw'));
    await checkpoint(server);
    let cpu0 = sampleCpu({});
    let cpu1 = cpu0;
    const run = await rawInsertRun(db.url, RAW_CONFIG, {
      seconds: opts.duration,
      warmupMs: 500,
      mailboxes: RAW_MAILBOXES,
      payloadBytes: PAYLOAD_BYTES,
      encoding: 'concatenated',
      onWindow: (edge) => {
        if (edge === 'start') cpu0 = sampleCpu({ client: [process.pid] });
        else cpu1 = sampleCpu({ client: [process.pid] });
      },
    });
    log(`pg_raw: packed, batch ${RAW_CONFIG.batch} × ${RAW_CONFIG.connections} connections: ${run.rowsPerSecond} rows/s`);
    return {
      pg_raw_per_s: run.rowsPerSecond,
      pg_raw_setting: `packed ${RAW_CONFIG.batch}x${RAW_CONFIG.connections}`,
      pg_raw_commits_per_s: run.commitsPerSecond,
      ...prefixed('pg_raw_', cpuSplit(cpu0, cpu1)),
    };
  } finally {
    await drop();
  }
}

async function latencyPhase(cleanup: Cleanup, relay: RelayChild, publishers: readonly BenchDevice[], subscriber: BenchDevice, opts: Options): Promise<BenchResults> {
  const topic = 'bench.latency';
  const setup: TopicWorkerSetup = {
    wsUrl: relay.wsUrl,
    publishers: publishers.map((device) => ({ device, topic })),
    subscribers: [{ device: subscriber, topic }],
    payloadBytes: PAYLOAD_BYTES,
    // Open loop: this only stops a stalled relay from buffering without bound.
    window: 1024,
    ratePerSecond: opts.latencyRate,
    latency: true,
  };
  const w = await measure(cleanup, relay, [setup], { ...opts, warmup: Math.min(2, opts.warmup) }, 'latency');
  const rep = w.reports[0]!;
  const l = rep.latency;
  if (!l) throw new Error('latency: no message was received in the window');
  return {
    p50_ms: round(l.p50, 3),
    p99_ms: round(l.p99, 3),
    latency_p90_ms: round(l.p90, 3),
    latency_p999_ms: round(l.p999, 3),
    latency_max_ms: round(l.max, 3),
    latency_offered_per_s: opts.latencyRate,
    latency_published_per_s: Math.round((rep.published * 1000) / rep.elapsedMs),
    latency_received_per_s: Math.round((l.count * 1000) / rep.elapsedMs),
    latency_skipped: rep.throttled,
    latency_send_lag_p99_ms: round(l.sendLagP99, 3),
    latency_max_by_second_ms: l.maxBySecond.join(' '),
    ...prefixed('latency_', w.cpu),
  };
}

async function publishPhase(cleanup: Cleanup, server: PgServer, relay: RelayChild, db: { url: string; name: string }, publishers: readonly BenchDevice[], topics: readonly string[], opts: Options): Promise<BenchResults> {
  const roles: TopicRole[] = publishers.map((device, i) => ({ device, topic: topics[i % topics.length]! }));
  const setups = split(roles, opts.generators).map(
    (ps): TopicWorkerSetup => ({ wsUrl: relay.wsUrl, publishers: ps, subscribers: [], payloadBytes: PAYLOAD_BYTES, window: opts.window, ratePerSecond: 0, latency: false }),
  );
  await checkpoint(server);
  const w = await measure(cleanup, relay, setups, opts, 'publish', db);
  const perSecond = Math.round(sum(w.reports, (r) => (r.published * 1000) / r.elapsedMs));
  const published = sum(w.reports, (r) => r.published);
  log(`publish: ${perSecond} published/s`);
  const out: BenchResults = {
    publish_per_s: perSecond,
    publish_messages: published,
    publish_frames_in_per_s: frameRate(w, 'hermetic_frames_in_total{type="publish"}'),
    ...prefixed('publish_', w.cpu),
  };
  if (w.pg) {
    out.publish_pg_commits_per_s = Math.round(w.pg.commits / w.seconds);
    out.publish_pg_wal_syncs_per_s = Math.round(w.pg.walSyncs / w.seconds);
    out.publish_pg_wal_bytes_per_msg = published > 0 ? Math.round(w.pg.walBytes / published) : 0;
    out.publish_msgs_per_commit = w.pg.commits > 0 ? round(published / w.pg.commits, 1) : 0;
  }
  return out;
}

async function fanoutPhase(cleanup: Cleanup, relay: RelayChild, publishers: readonly BenchDevice[], subscribers: readonly BenchDevice[], opts: Options): Promise<BenchResults> {
  const topic = 'bench.fanout';
  const base = { wsUrl: relay.wsUrl, payloadBytes: PAYLOAD_BYTES, latency: false } as const;
  const setups: TopicWorkerSetup[] = split(subscribers, opts.generators).map((ss) => ({ ...base, publishers: [], subscribers: ss.map((device) => ({ device, topic })), window: 1, ratePerSecond: 0 }));
  // The publishers in a process of their own, open loop at a steady rate (the window only
  // a safety cap).
  setups.push({ ...base, publishers: publishers.map((device) => ({ device, topic })), subscribers: [], window: 1024, ratePerSecond: opts.fanoutRate });
  const w = await measure(cleanup, relay, setups, opts, 'fanout');
  const perSecond = Math.round(sum(w.reports, (r) => (r.delivered * 1000) / r.elapsedMs));
  const publishedPerSecond = Math.round(sum(w.reports, (r) => (r.published * 1000) / r.elapsedMs));
  const ended = merged(w.reports, (r) => r.ended);
  log(`fanout: ${perSecond} deliveries/s (${publishedPerSecond} published/s × ${subscribers.length} subscribers offered ${publishedPerSecond * subscribers.length})`);
  const samples = [parseSamples(w.metrics.before), parseSamples(w.metrics.after)] as const;
  return {
    fanout_deliveries_per_s: perSecond,
    fanout_subscribers: subscribers.length,
    fanout_offered_publish_per_s: opts.fanoutRate,
    fanout_published_per_s: publishedPerSecond,
    fanout_skipped: sum(w.reports, (r) => r.throttled),
    fanout_delivered_vs_published: publishedPerSecond > 0 ? round(perSecond / (publishedPerSecond * subscribers.length), 3) : 0,
    // Pauses: subscribers whose socket stopped draining, moved to database reads.
    fanout_subscriber_pauses: promDelta(samples[0], samples[1], 'hermetic_topic_subscriber_pauses_total'),
    fanout_db_read_messages_per_s: frameRate(w, 'hermetic_frames_out_total{type="topic_message"}'),
    fanout_subscriptions_ended: Object.entries(ended).map(([k, v]) => `${k}=${v}`).join(' ') || 'none',
    ...prefixed('fanout_', w.cpu),
  };
}

/** Rows inserted, updated and deleted so far in the consumer group tables. */
async function groupRowWrites(url: string): Promise<number> {
  const r = await withClient(url, (c) =>
    c.query<{ n: string | null }>('SELECT sum(n_tup_ins + n_tup_upd + n_tup_del) AS n FROM pg_stat_user_tables WHERE relname = ANY ($1)', [[...GROUP_TABLES]]),
  );
  return Number(r.rows[0]?.n ?? 0);
}

async function groupPhase(cleanup: Cleanup, relay: RelayChild, db: { url: string; name: string }, publishers: readonly BenchDevice[], members: readonly BenchDevice[], opts: Options): Promise<BenchResults> {
  const topic = 'bench.group';
  const token = members[0]!.token;
  await createTopic(relay, token, `${topic}.dead-letter`);
  const res = await fetch(`${relay.baseUrl}/v1/topics/${topic}/groups`, {
    method: 'POST',
    headers: { authorization: `Bearer ${token}`, 'content-type': 'application/json' },
    body: JSON.stringify({ name: 'workers', deadLetterTopic: `${topic}.dead-letter` }),
  });
  if (res.status !== 201) throw new Error(`create group: ${res.status} ${await res.text()}`);
  const roles: ConsumerRole[] = members.map((device) => ({ device, topic, group: 'workers', prefetch: GROUP_PREFETCH }));
  const base = { wsUrl: relay.wsUrl, payloadBytes: PAYLOAD_BYTES, latency: false, ratePerSecond: 0 } as const;
  // A backlog first (the publishers alone), then the members alone: their rate is the
  // group's, not what publishing leaves of the machine.
  const fill = await measure(cleanup, relay, [{ ...base, publishers: publishers.map((device) => ({ device, topic })), subscribers: [], window: opts.window }], { ...opts, warmup: 0, duration: Math.max(GROUP_FILL_MIN_SECONDS, 2 * (opts.warmup + opts.duration)) }, 'group fill');
  const backlog = sum(fill.reports, (r) => r.published);
  const setups: TopicWorkerSetup[] = split(roles, opts.generators).map((cs) => ({ ...base, publishers: [], subscribers: [], consumers: cs, window: 1 }));
  const rows0 = await groupRowWrites(db.url);
  const w = await measure(cleanup, relay, setups, opts, 'group');
  const acked = sum(w.reports, (r) => r.acked);
  const perSecond = Math.round(sum(w.reports, (r) => (r.acked * 1000) / r.elapsedMs));
  // Rows written from the phase's start (warm-up included) per message the group
  // finished by its end (its committed offset), read once the counters settle.
  await sleep(PG_STATS_SETTLE_MS / 1000);
  const rows1 = await groupRowWrites(db.url);
  const info = (await (await fetch(`${relay.baseUrl}/v1/topics/${topic}/groups/workers`, { headers: { authorization: `Bearer ${token}` } })).json()) as { committedOffset: number; nextOffset: number; inFlight: number; redeliveries: number };
  const done = info.committedOffset - 1;
  const head = await (await fetch(`${relay.baseUrl}/v1/topics/${topic}`, { headers: { authorization: `Bearer ${token}` } })).json() as { nextOffset: number };
  log(`group: ${perSecond} acknowledged/s from a backlog of about ${backlog}, ${done} done, ${rows1 - rows0} group rows written`);
  return {
    consumer_group_per_s: perSecond,
    group_backlog_filled: backlog,
    group_acked_messages: acked,
    group_members: members.length,
    group_prefetch: GROUP_PREFETCH,
    // Messages not yet done when the phase ended (0: the backlog ran out, and the rate is
    // a lower bound).
    group_backlog_at_end: head.nextOffset - info.committedOffset,
    group_rows_written_per_msg: done > 0 ? round((rows1 - rows0) / done, 3) : 0,
    ...prefixed('group_', w.cpu),
  };
}

// ---------------------------------------------------------------- entry

function goal(met: boolean | undefined, text: string): string {
  return `${text}: ${met === undefined ? 'not measured' : met ? 'met' : 'missed'}`;
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const opts = parseOptions(args);
  const cleanup = new Cleanup();
  const tmp = cleanup.tempDir('topics');
  try {
    const server = await findPgServer();
    const issuer = await createIssuer(tmp);
    const load = loadAverage();
    log(`load average before: ${load}`);
    const out: BenchResults = {};
    if (opts.phases.has('pg_raw')) Object.assign(out, await rawPhase(cleanup, server, tmp, opts));

    if (opts.phases.has('latency') || opts.phases.has('publish') || opts.phases.has('fanout') || opts.phases.has('group')) {
      const db = await createDatabase(server, 'topics');
      const drop = cleanup.add(`drop database ${db.name}`, () => db.drop());
      try {
        const profileDir = opts.profile ? path.join(tmp, 'cpu-profile') : undefined;
        if (profileDir) fs.mkdirSync(profileDir, { recursive: true });
        const { relay, stop } = await startRelayFor(cleanup, tmp, 'relay-topics', issuer, db.url, profileDir);
        const latPub = opts.phases.has('latency') ? await makeDevices(issuer, 'lat-pub', opts.latencyPublishers) : [];
        const latSub = opts.phases.has('latency') ? await makeDevices(issuer, 'lat-sub', 1) : [];
        const pubs = opts.phases.has('publish') ? await makeDevices(issuer, 'pub', opts.publishers) : [];
        const fanPub = opts.phases.has('fanout') ? await makeDevices(issuer, 'fan-pub', opts.fanoutPublishers) : [];
        const fanSubs = opts.phases.has('fanout') ? await makeDevices(issuer, 'fan-sub', opts.subscribers) : [];
        const groupPubs = opts.phases.has('group') ? await makeDevices(issuer, 'group-pub', GROUP_PUBLISHERS) : [];
        const groupMembers = opts.phases.has('group') ? await makeDevices(issuer, 'group-member', GROUP_MEMBERS) : [];
        const all = [...latPub, ...latSub, ...pubs, ...fanPub, ...fanSubs, ...groupPubs, ...groupMembers];
        await registerAll(relay, all);
        const topics = Array.from({ length: opts.topics }, (_, i) => `bench.publish.t${i}`);
        for (const name of ['bench.latency', 'bench.fanout', 'bench.group', ...topics]) await createTopic(relay, all[0]!.token, name);
        // Latency first, on a relay whose topic log is still small.
        if (opts.phases.has('latency')) {
          Object.assign(out, await latencyPhase(cleanup, relay, latPub, latSub[0]!, opts));
          log(`latency at ${opts.latencyRate}/s: p50 ${out.p50_ms} ms, p99 ${out.p99_ms} ms`);
        }
        if (opts.phases.has('publish')) Object.assign(out, await publishPhase(cleanup, server, relay, { url: db.url, name: db.name }, pubs, topics, opts));
        if (opts.phases.has('fanout')) Object.assign(out, await fanoutPhase(cleanup, relay, fanPub, fanSubs, opts));
        if (opts.phases.has('group')) Object.assign(out, await groupPhase(cleanup, relay, { url: db.url, name: db.name }, groupPubs, groupMembers, opts));
        await stop();
        const file = profileDir && fs.readdirSync(profileDir).find((f) => f.endsWith('.cpuprofile'));
        if (file) for (const w of profiled) printProfile(`relay CPU profile, ${w.what}`, summarizeProfile(path.join(profileDir!, file), w.fromUs, w.toUs, { top: 25, resolve: tsxSourceResolver() }));
      } finally {
        await drop();
      }
    }

    // The headline numbers and the goals first, then the details that explain them.
    const num = (k: string): number | undefined => (typeof out[k] === 'number' ? (out[k] as number) : undefined);
    const raw = num('pg_raw_per_s');
    const pub = num('publish_per_s');
    const fan = num('fanout_deliveries_per_s');
    const p99 = num('p99_ms');
    const ratio = raw !== undefined && pub !== undefined ? round(pub / raw, 3) : undefined;
    const head: BenchResults = {};
    if (raw !== undefined) head.pg_raw_per_s = raw;
    if (pub !== undefined) head.publish_per_s = pub;
    if (ratio !== undefined) head.publish_vs_raw = ratio;
    if (fan !== undefined) head.fanout_deliveries_per_s = fan;
    if (out.p50_ms !== undefined) head.p50_ms = out.p50_ms;
    if (p99 !== undefined) head.p99_ms = p99;
    const group = num('consumer_group_per_s');
    const groupRatio = raw !== undefined && group !== undefined ? round(group / raw, 3) : undefined;
    if (group !== undefined) head.consumer_group_per_s = group;
    if (groupRatio !== undefined) head.group_vs_raw = groupRatio;
    head.goal_publish = goal(ratio === undefined ? undefined : ratio >= GOALS.publishVsRaw, `publish_vs_raw >= ${GOALS.publishVsRaw}`);
    head.goal_fanout = goal(fan === undefined ? undefined : fan >= GOALS.fanoutPerSecond, `fanout >= ${GOALS.fanoutPerSecond.toLocaleString('en-US')}/s`);
    head.goal_p99 = goal(p99 === undefined ? undefined : p99 <= GOALS.p99Ms, `p99 <= ${GOALS.p99Ms} ms at ${opts.latencyRate}/s`);
    head.goal_consumer_group = goal(groupRatio === undefined ? undefined : groupRatio >= GOALS.groupVsRaw, `consumer_group_vs_raw >= ${GOALS.groupVsRaw}`);
    // CPU per message, from the same run's CPU split (percent of one core / rate).
    const cpuPer: Array<[string, number | undefined]> = [
      ['pg_raw_db_cpu_us_per_row', usPer(num('pg_raw_postgres_cpu_pct'), raw)],
      ['publish_db_cpu_us_per_msg', usPer(num('publish_postgres_cpu_pct'), pub)],
      ['publish_relay_cpu_us_per_msg', usPer(num('publish_relay_cpu_pct'), pub)],
      ['publish_loadgen_cpu_us_per_msg', usPer(num('publish_loadgen_cpu_pct'), pub)],
      ['fanout_relay_cpu_us_per_delivery', usPer(num('fanout_relay_cpu_pct'), fan)],
      ['fanout_loadgen_cpu_us_per_delivery', usPer(num('fanout_loadgen_cpu_pct'), fan)],
      ['group_db_cpu_us_per_msg', usPer(num('group_postgres_cpu_pct'), group)],
      ['group_relay_cpu_us_per_msg', usPer(num('group_relay_cpu_pct'), group)],
    ];
    for (const [k, v] of cpuPer) if (v !== undefined) head[k] = v;
    head.payload_bytes = PAYLOAD_BYTES;
    const settings = await serverSettings(server);
    const version = sourceVersion();
    const tail: BenchResults = {
      commit: version.commit,
      relay_code_modified: version.relayModified,
      duration_s: opts.duration,
      warmup_s: opts.warmup,
      publishers: opts.publishers,
      generators: opts.generators,
      publish_window: opts.window,
      topics: opts.topics,
      load_avg_before: load,
      load_avg_after: loadAverage(),
      postgres: settings.server_version ?? 'unknown',
      synchronous_commit: settings.synchronous_commit ?? 'unknown',
      fsync: settings.fsync ?? 'unknown',
    };
    return { ...head, ...out, ...tail };
  } finally {
    await cleanup.run();
  }
}
