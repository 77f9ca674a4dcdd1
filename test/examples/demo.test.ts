/**
 * `npm run demo` as a user meets it: the demo process (its own relay in dev mode, the SDK
 * bundled at start-up, the chat page) and tabs of headless Chromium typing into the page.
 * Two users chat both ways, see the same safety number, and a device linked in a third
 * tab shows up in the other user's flag list.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { type TestBrowser, describeBrowser, launchBrowser } from '../helpers/browser.js';
import { REPO_ROOT, killAllRelays, makeTempDir } from '../helpers/relay.js';

const WAIT = { timeout: 30_000 };

describeBrowser('npm run demo', () => {
  let demo: ChildProcess;
  let output = '';
  let exited: Promise<number | null>;
  let url: string;
  let browser: TestBrowser;

  beforeAll(async () => {
    demo = spawn(process.execPath, ['--import', 'tsx', 'examples/demo.ts', '--port', '0', '--data-dir', makeTempDir('hermetic-demo-')], {
      cwd: REPO_ROOT,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    exited = new Promise((resolve) => demo.on('exit', (code) => resolve(code)));
    process.once('exit', () => demo.kill('SIGKILL')); // should the test process die first
    demo.stdout?.setEncoding('utf8').on('data', (d: string) => (output += d));
    demo.stderr?.setEncoding('utf8').on('data', (d: string) => (output += d));
    const started = new Promise<string>((resolve, reject) => {
      const check = (): void => {
        const m = /open (http:\/\/[^\s/]+)\/\?user=/.exec(output);
        if (m) resolve(m[1]!);
      };
      demo.stdout?.on('data', check);
      void exited.then((code) => reject(new Error(`the demo exited (${code}) before serving:\n${output}`)));
      setTimeout(() => reject(new Error(`the demo did not start within 90 s:\n${output}`)), 90_000).unref();
    });
    [url, browser] = await Promise.all([started, launchBrowser()]);
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    if (demo && demo.exitCode === null && demo.signalCode === null) {
      demo.kill('SIGTERM');
      const hang = setTimeout(() => demo.kill('SIGKILL'), 20_000);
      await exited;
      clearTimeout(hang);
    }
    await killAllRelays(); // removes the temporary directories
  });

  async function tab(query: string): Promise<Page> {
    const page = await browser.newPage();
    await page.goto(`${url}/?${query}`);
    return page;
  }

  const state = (page: Page, s: string) => page.locator('#state', { hasText: new RegExp(`^${s}$`) }).waitFor(WAIT);

  async function send(page: Page, to: string, body: string): Promise<void> {
    await page.locator('#send input[name=to]').fill(to);
    await page.locator('#send input[name=body]').fill(body);
    await page.locator('#send button').click();
    await page.locator('#messages li.mine', { hasText: body }).waitFor(WAIT);
  }

  async function bodiesFrom(page: Page, from: string, n: number): Promise<string[]> {
    const items = page.locator(`#messages li[data-from="${from}"] .body`);
    await items.nth(n - 1).waitFor(WAIT);
    return items.allTextContents();
  }

  async function safetyNumber(page: Page, peer: string): Promise<string> {
    const code = page.locator(`#safety li[data-peer="${peer}"] code`, { hasText: /^\d{5}( \d{5}){11}$/ });
    await code.waitFor(WAIT);
    return (await code.textContent()) ?? '';
  }

  it('two tabs chat end to end and show the same safety number; a device linked in a third tab is flagged', { timeout: 120_000 }, async () => {
    const alice = await tab('user=demo-alice');
    const bob = await tab('user=demo-bob');
    await Promise.all([state(alice, 'online'), state(bob, 'online')]);
    expect(await alice.locator('#device').textContent()).not.toBe(await bob.locator('#device').textContent());
    // The page says which implementation serves each primitive: libsodium for all of them.
    expect(await alice.locator('#primitives li').allTextContents()).toEqual(
      ['sha2', 'hmac', 'hkdf', 'x25519', 'ed25519', 'aead', 'mlkem'].map((p) => `${p}: sodium`),
    );

    await send(alice, 'demo-bob', 'hi bob, this is alice');
    expect(await bodiesFrom(bob, 'demo-alice', 1)).toEqual(['hi bob, this is alice']);
    await send(bob, 'demo-alice', 'hello alice <b>not bold</b>');
    expect(await bodiesFrom(alice, 'demo-bob', 1)).toEqual(['hello alice <b>not bold</b>']);

    const seenByAlice = await safetyNumber(alice, 'demo-bob');
    expect(await safetyNumber(bob, 'demo-alice')).toBe(seenByAlice);

    // A second device for alice: its tab waits with a link code, her first tab links it.
    const alice2 = await tab('user=demo-alice&device=second');
    await state(alice2, 'awaiting-link');
    const code = (await alice2.locator('#link-code code').textContent()) ?? '';
    expect(code).toMatch(/^hermetic-link-1:/);
    await alice.locator('#link summary').click();
    await alice.locator('#link-form textarea').fill(code);
    await alice.locator('#link-form button').click();
    await alice.locator('#link-result', { hasText: 'linked device' }).waitFor(WAIT);
    expect(await alice.locator('#link-result').textContent()).toContain(`fingerprint ${await alice2.locator('#fingerprint').textContent()}`);
    await state(alice2, 'online');

    await send(bob, 'demo-alice', 'to both of your devices');
    expect(await bodiesFrom(alice, 'demo-bob', 2)).toEqual(['hello alice <b>not bold</b>', 'to both of your devices']);
    expect(await bodiesFrom(alice2, 'demo-bob', 1)).toEqual(['to both of your devices']);
    const flag = bob.locator('#flags li[data-code="DEVICE_ADDED"][data-user="demo-alice"]');
    await flag.waitFor(WAIT);
    expect(await flag.textContent()).toContain(`demo-alice/${await alice2.locator('#device').textContent()}`);
    expect(await alice.locator('#error').textContent()).toBe('');
    expect(await bob.locator('#error').textContent()).toBe('');
    expect(browser.problems).toEqual([]);
  });

  it('stops cleanly on SIGTERM (its relay closes the embedded storage)', async () => {
    demo.kill('SIGTERM');
    expect(await exited).toBe(0);
  });
});
