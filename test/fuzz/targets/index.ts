/**
 * The registry of fuzz targets: `npm run fuzz` runs every one of them at its `runs`
 * count, and `npm test` (test/fuzz/seeded.ts) runs each at `testRuns` from a fixed
 * seed. A decoder reachable from untrusted bytes gets its target here, in the file of
 * its area, and nowhere else.
 *
 * To add one, define it with defineTarget (test/fuzz/harness.ts) next to its kind:
 *   - `name`: `area/decoder`, stable (replay strings name it);
 *   - `layer` and `codes`: the typed error class and the codes the decoder documents;
 *     anything else it throws is a finding;
 *   - `setup`: the corpus of valid encodings, made with the real encoders and a fixed
 *     seed (seededRandom), so every process fuzzes the same inputs;
 *   - `inputs`: usually bytesFrom(corpus) or jsonTextFrom(corpus) (test/fuzz/mutate.ts),
 *     mixing the corpus, mutations of it and random input;
 *   - `check`: decode, then assert with must() what an accepted value guarantees: that
 *     it re-encodes to the same bytes where the codec is canonical, sizes within the
 *     named limits, state unchanged when a decrypt fails;
 *   - `runs`: its share of the full run (the registry must add up to 1,000,000 or more).
 */
import type { FuzzTarget } from '../harness.js';
import { CLIENT_TARGETS } from './client.js';
import { CRYPTO_TARGETS } from './crypto.js';
import { PROTOCOL_TARGETS } from './protocol.js';
import { SENDER_KEY_TARGETS } from './sender-keys.js';
import { SERVER_TARGETS } from './server.js';

export const FUZZ_TARGETS: readonly FuzzTarget[] = [...PROTOCOL_TARGETS, ...SERVER_TARGETS, ...CRYPTO_TARGETS, ...SENDER_KEY_TARGETS, ...CLIENT_TARGETS];

/** Inputs a full `npm run fuzz` generates at least. */
export const MIN_FULL_RUN_INPUTS = 1_000_000;
