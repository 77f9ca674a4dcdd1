/**
 * A real browser for tests: the system's Chromium (`chromium` on PATH, as Debian installs
 * it) driven by playwright-core, headless, in a fresh profile directory that is removed
 * afterwards. IndexedDB lives in that profile on disk, so a page reload reads back what
 * was committed.
 *
 * Without Chromium the browser suites are skipped with a visible reason, unless
 * HERMETIC_TEST_REQUIRE_BROWSER=1 (as in CI), in which case they fail.
 */
import fs from 'node:fs';
import path from 'node:path';
import { type BrowserContext, type Page, chromium } from 'playwright-core';
import { describe, it } from 'vitest';
import { makeTempDir } from './relay.js';

/**
 * No background networking (updates, safe browsing, sync, QUIC probes): the tests' network
 * is loopback only, and Chromium's own connections elsewhere are refused.
 */
const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

function findChromium(): string | undefined {
  for (const dir of (process.env.PATH ?? '').split(path.delimiter)) {
    if (!dir) continue;
    const file = path.join(dir, 'chromium');
    try {
      fs.accessSync(file, fs.constants.X_OK);
      return file;
    } catch {
      /* not here */
    }
  }
  return undefined;
}

export const chromiumPath: string | undefined = findChromium();
export const browserRequired = process.env.HERMETIC_TEST_REQUIRE_BROWSER === '1';

/** A describe block that runs only with Chromium: skipped with the reason, or failing when required. */
export function describeBrowser(name: string, fn: () => void): void {
  if (chromiumPath) {
    describe(name, fn);
    return;
  }
  const msg = `${name} requires Chromium: no "chromium" on PATH (Debian: apt-get install chromium)`;
  describe(`${name} (requires Chromium)`, () => {
    if (browserRequired) {
      it(`${name}: Chromium is installed (HERMETIC_TEST_REQUIRE_BROWSER=1)`, () => {
        throw new Error(msg);
      });
    } else {
      it.skip(msg, () => undefined);
    }
  });
}

export interface TestBrowser {
  readonly context: BrowserContext;
  /** A new tab; its console errors and uncaught exceptions are kept in `problems`. */
  newPage(): Promise<Page>;
  /** Console errors and uncaught page exceptions, from every tab. */
  readonly problems: string[];
  close(): Promise<void>;
}

export async function launchBrowser(): Promise<TestBrowser> {
  if (!chromiumPath) throw new Error('no chromium on PATH');
  const profile = makeTempDir('hermetic-chromium-');
  // playwright adds --headless and passes the profile as --user-data-dir.
  const context = await chromium.launchPersistentContext(profile, { executablePath: chromiumPath, headless: true, args: CHROMIUM_ARGS });
  const problems: string[] = [];
  const watch = (page: Page): Page => {
    page.on('pageerror', (err) => problems.push(`pageerror: ${err.message}`));
    page.on('console', (m) => {
      if (m.type() === 'error') problems.push(`console: ${m.text()}`);
    });
    return page;
  };
  for (const p of context.pages()) watch(p);
  return {
    context,
    problems,
    newPage: async () => watch(await context.newPage()),
    close: async () => {
      await context.close();
      fs.rmSync(profile, { recursive: true, force: true });
    },
  };
}
