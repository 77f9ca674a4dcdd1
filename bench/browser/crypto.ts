/**
 * `npm run bench -- crypto --browser`: the crypto suite in headless Chromium (the system's
 * `chromium`, through playwright-core), bundled with esbuild exactly as an application
 * bundles hermetic/client, served from a local HTTP server. Results are named as in Node
 * (`noble_*`, `sodium_*`, `default_*`), plus the browser's version.
 */
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { chromium } from 'playwright-core';
import { REPO_ROOT, bundleForBrowser } from '../../examples/bundle.js';
import { startDevServer } from '../../examples/dev-server.js';
import type { BenchResults } from '../run.js';

/** Upper bound on one in-page run (the suite takes about 30 s per second of --seconds). */
const PAGE_RUN_TIMEOUT_MS = 30 * 60_000;

function chromiumPath(): string {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    const file = path.join(dir, 'chromium');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      /* not here */
    }
  }
  throw new Error('the --browser mode needs "chromium" on PATH');
}

export async function runInBrowser(args: readonly string[]): Promise<BenchResults> {
  const outdir = fs.mkdtempSync(path.join(os.tmpdir(), 'hermetic-bench-'));
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'hermetic-bench-profile-'));
  try {
    const bundle = await bundleForBrowser({ bench: path.join(REPO_ROOT, 'bench', 'browser', 'crypto-page.ts') }, outdir);
    fs.writeFileSync(path.join(outdir, 'index.html'), '<!doctype html>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n<script type="module" src="/bench.js"></script>\n');
    const files: Record<string, string> = { '/': path.join(outdir, 'index.html') };
    for (const f of fs.readdirSync(outdir)) files[`/${f}`] = path.join(outdir, f);
    // No relay behind it: the page only loads its files.
    const server = await startDevServer({ relay: 'http://127.0.0.1:9', files });
    const context = await chromium.launchPersistentContext(profile, {
      executablePath: chromiumPath(),
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--disable-component-update'],
    });
    try {
      const page = await context.newPage();
      page.setDefaultTimeout(PAGE_RUN_TIMEOUT_MS);
      await page.goto(`${server.url}/`);
      await page.waitForFunction(() => 'runCryptoBench' in globalThis);
      const results = await page.evaluate(
        (a) => (globalThis as unknown as { runCryptoBench(args: readonly string[]): Promise<BenchResults> }).runCryptoBench(a),
        [...args],
      );
      const bundleBytes = Object.values(bundle.sizes).reduce((a, b) => a + b, 0);
      const userAgent = await page.evaluate(() => (globalThis as unknown as { navigator: { userAgent: string } }).navigator.userAgent);
      return { browser: userAgent.match(/(HeadlessChrome|Chrome)\/[\d.]+/)?.[0] ?? userAgent, bench_bundle_bytes: bundleBytes, ...results };
    } finally {
      await context.close();
      await server.close();
    }
  } finally {
    fs.rmSync(outdir, { recursive: true, force: true });
    fs.rmSync(profile, { recursive: true, force: true });
  }
}
