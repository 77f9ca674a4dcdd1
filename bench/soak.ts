/**
 * Soak benchmark: `npm run bench -- soak [--json] [--minutes <m>] [--age <s>] [--window <s>]`
 * (`--window`: the receipt window, HERMETIC_RECEIPT_WINDOW_S, default the relay's 120 s).
 *
 * One relay on a fresh PostgreSQL database, driven at full speed by the relay suite's
 * throughput load (online recipients acknowledging as they receive) for `--minutes`
 * (default 10). Every minute it records the envelopes delivered in that minute (the
 * relay's DELIVER counter) and the size of the envelope log (every partition, with
 * indexes and TOAST). Results:
 * - `soak_ratio`: envelopes/s in the last minute / in the first: does throughput decay?
 * - `soak_table_bytes_end`, `soak_table_bytes_max`, `soak_rows_end`: the log's size,
 *   which retirement bounds by the retirement age (`--age`, seconds, default the relay's
 *   120), not by the run's length;
 * - per-minute rates and sizes, and the retirement counters.
 */
import { Cleanup } from './lib/cleanup.js';
import { createIssuer } from './lib/issuer.js';
import { LoadGenerators } from './lib/load.js';
import type { GeneratorSetup } from './lib/load-protocol.js';
import { readOptions } from './lib/options.js';
import { createDatabase, findPgServer, withClient } from './lib/postgres.js';
import { counterDelta, parseSamples } from './lib/prometheus.js';
import { fetchMetrics } from './lib/relay-process.js';
import { THROUGHPUT_DEFAULTS, makeDevices, registerAll, round, sleep, split, startRelayFor } from './relay.js';
import type { BenchResults } from './run.js';

const PAYLOAD_BYTES = 1024;

function log(msg: string): void {
  process.stderr.write(`[soak] ${msg}\n`);
}

export async function run(args: readonly string[]): Promise<BenchResults> {
  const { num } = readOptions(args, ['--minutes', '--age', '--window', '--quick']);
  const quick = args.includes('--quick');
  const minutes = num('--minutes', quick ? 2 : 10, 1, 24 * 60);
  const ageS = num('--age', 120, 1, 7 * 24 * 3600);
  const windowS = num('--window', 120, 0, 7 * 24 * 3600);
  const cleanup = new Cleanup();
  const tmp = cleanup.tempDir('soak');
  try {
    const server = await findPgServer();
    const issuer = await createIssuer(tmp);
    const db = await createDatabase(server, 'soak');
    cleanup.add(`drop database ${db.name}`, () => db.drop());
    const { relay } = await startRelayFor(cleanup, tmp, 'relay-soak', { env: { ...issuer.env, HERMETIC_RETIREMENT_AGE_S: String(ageS), HERMETIC_RECEIPT_WINDOW_S: String(windowS) }, mint: (u) => issuer.mint(u) }, db.url);
    const pairs = await makeDevices(issuer, 'soak-', THROUGHPUT_DEFAULTS.pairs);
    await registerAll(relay, pairs);
    const setups: GeneratorSetup[] = split(pairs, THROUGHPUT_DEFAULTS.generators).map((ps) => ({
      wsUrl: relay.wsUrl,
      mode: 'throughput',
      pairs: ps,
      payloadBytes: PAYLOAD_BYTES,
      window: THROUGHPUT_DEFAULTS.window,
      ackEvery: THROUGHPUT_DEFAULTS.ackEvery,
      ackDelayMs: THROUGHPUT_DEFAULTS.ackDelayMs,
      ratePerSecond: 0,
    }));
    const gens = await LoadGenerators.start(setups, (close) => cleanup.add('load generators', close));
    // The log's size from the catalogue only: counting its rows reads every partition (a
    // parallel scan of GiBs taking seconds), which holds the table against retirement's
    // drops and takes CPU from the relay under test. Rows are counted once, at the end.
    const size = (): Promise<{ bytes: number; partitions: number }> =>
      withClient(db.url, async (c) => {
        const r = await c.query<{ b: string; p: string }>(
          'SELECT coalesce(sum(pg_total_relation_size(quote_ident(name))), 0) AS b, count(*) AS p FROM envelope_partitions',
        );
        return { bytes: Number(r.rows[0]!.b), partitions: Number(r.rows[0]!.p) };
      });
    const rowCount = (): Promise<number> =>
      withClient(db.url, async (c) => Number((await c.query<{ n: string }>('SELECT count(*) AS n FROM envelopes')).rows[0]!.n));
    const delivered = async (): Promise<{ n: number; at: number }> => {
      const text = await fetchMetrics(relay.baseUrl);
      return { n: counterDelta(parseSamples(''), parseSamples(text), 'hermetic_frames_out_total{type="deliver"}'), at: performance.now() };
    };
    gens.startSending();
    // Past the first partitions' creation and the connections' start.
    await sleep(5_000);
    gens.beginMeasure();
    const rates: number[] = [];
    const sizes: number[] = [];
    let prev = await delivered();
    for (let m = 0; m < minutes; m++) {
      await sleep(60_000);
      const cur = await delivered();
      const rate = Math.round(((cur.n - prev.n) * 1000) / (cur.at - prev.at));
      const s = await size();
      rates.push(rate);
      sizes.push(s.bytes);
      log(`minute ${m + 1}: ${rate} envelopes/s, log ${Math.round(s.bytes / 1048576)} MiB in ${s.partitions} partitions`);
      prev = cur;
    }
    const reports = await gens.stop();
    for (const r of reports) {
      const errors = Object.entries(r.errors).filter(([, n]) => n > 0);
      if (errors.length > 0) throw new Error(`load generator errors: ${JSON.stringify(Object.fromEntries(errors))}`);
    }
    const end = { ...(await size()), rows: await rowCount() };
    const m = parseSamples(await fetchMetrics(relay.baseUrl));
    const retired = (kind: string): number => counterDelta(parseSamples(''), m, `hermetic_retired_total{kind="${kind}"}`);
    return {
      soak_ratio: round(rates[rates.length - 1]! / rates[0]!, 3),
      soak_first_minute_per_s: rates[0]!,
      soak_last_minute_per_s: rates[rates.length - 1]!,
      soak_table_bytes_end: end.bytes,
      soak_table_bytes_max: Math.max(...sizes),
      soak_rows_end: end.rows,
      soak_partitions_end: end.partitions,
      soak_retired_partitions: retired('partition'),
      soak_retired_carried: retired('carried'),
      soak_drops_deferred: retired('drop_deferred'),
      soak_per_minute: rates.join(' '),
      soak_bytes_per_minute: sizes.map((b) => Math.round(b / 1048576)).join(' '),
      retirement_age_s: ageS,
      receipt_window_s: windowS,
      minutes,
      pairs: THROUGHPUT_DEFAULTS.pairs,
      payload_bytes: PAYLOAD_BYTES,
    };
  } finally {
    await cleanup.run();
  }
}
