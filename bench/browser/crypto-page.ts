/**
 * The page side of `npm run bench -- crypto --browser`: bench/crypto.ts's suite bundled
 * for the browser, run on the default backend, libsodium and noble. The Node side
 * (crypto.ts here) calls `runCryptoBench` through page.evaluate.
 */
import { benchBackends, runSuite } from '../crypto.js';
import type { BenchResults } from '../run.js';

type PageGlobals = { runCryptoBench(args: readonly string[]): Promise<BenchResults> };

(globalThis as unknown as PageGlobals).runCryptoBench = async (args) => runSuite(await benchBackends(), args);
