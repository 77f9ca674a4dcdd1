/**
 * hermetic/client in a real browser: the browser entry bundled with esbuild (no Node-only
 * module may get in), loaded by a page in headless Chromium, talking to a real relay
 * process through a same-origin dev server. Two tabs (two users) exchange messages on
 * IndexedDB stores; one tab reloads and its device and sessions come back from IndexedDB.
 * IndexedDbStore's contract (atomic commits, prefix listing in key order, values intact,
 * durable across a reload) is checked in the page against a plain-JS reference.
 */
import fs from 'node:fs';
import path from 'node:path';
import type { Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { BROWSER_CLIENT_ENTRY, REPO_ROOT, bundleForBrowser } from '../../examples/bundle.js';
import { type DevServer, startDevServer } from '../../examples/dev-server.js';
import { parseJsonObject } from '../../protocol/decode.js';
import { decodeDeviceListAnswer } from '../../protocol/directory.js';
import { type TestBrowser, describeBrowser, launchBrowser } from '../helpers/browser.js';
import { killAllRelays, makeTempDir } from '../helpers/relay.js';
import type { Harness } from './browser/harness.js';
import { type SdkWorld, startWorld } from './helpers.js';

type PageGlobals = { harness: Harness };

afterAll(async () => {
  await killAllRelays();
});

describe("hermetic/client's browser entry", () => {
  it('bundles for browsers with no Node-only module: libsodium and the noble primitives, no ws, no node:*', async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { exports: Record<string, Record<string, unknown>> };
    // The exports map's browser condition is the build of the file bundled here.
    expect(pkg.exports['./client']?.default).toBe('./dist/client-sdk/index.js');
    expect(path.relative(REPO_ROOT, BROWSER_CLIENT_ENTRY)).toBe(path.join('client-sdk', 'index.ts'));

    const bundle = await bundleForBrowser({ 'hermetic-client': BROWSER_CLIENT_ENTRY }, makeTempDir('hermetic-bundle-'));
    const packages = new Set(bundle.inputs.filter((i) => i.includes('node_modules/')).map((i) => i.split('node_modules/')[1]!.split('/').slice(0, 2).join('/')));
    expect([...packages].sort()).toEqual(['@noble/ciphers', '@noble/curves', '@noble/hashes', '@noble/post-quantum', 'libsodium-sumo/dist', 'libsodium-wrappers-sumo/dist']);
    expect(bundle.inputs).toContain(path.join('crypto', 'primitives', 'noble.ts'));
    expect(bundle.inputs).toContain(path.join('crypto', 'primitives', 'sodium.ts'));
    expect(bundle.inputs.filter((i) => i.startsWith('server') || i.endsWith(path.join('stores', 'file.ts')) || i.endsWith(path.join('client-sdk', 'node.ts')))).toEqual([]);
    // Self-contained: nothing left to import at run time, and no CommonJS require shim.
    expect(bundle.externalImports).toEqual([]);
    expect(fs.readFileSync(bundle.files['hermetic-client']!, 'utf8')).not.toMatch(/\brequire\(/);
  });

  it("refuses to bundle the Node entry (ws, node:crypto) for browsers, naming the importer", async () => {
    const err = await bundleForBrowser({ node: path.join(REPO_ROOT, 'client-sdk', 'node.ts') }, makeTempDir('hermetic-bundle-')).then(
      () => undefined,
      (e: unknown) => e as Error,
    );
    expect(err?.message).toMatch(/"ws" is a Node-only module, imported by client-sdk\/node\.ts/);
    expect(err?.message).toMatch(/"node:crypto" is a Node-only module, imported by client-sdk\/stores\/file\.ts/);
  });
});

describeBrowser('hermetic/client in Chromium', () => {
  let world: SdkWorld;
  let browser: TestBrowser;
  let server: DevServer;

  beforeAll(async () => {
    const outdir = makeTempDir('hermetic-page-');
    const [, w, b] = await Promise.all([
      bundleForBrowser({ harness: path.join(REPO_ROOT, 'test', 'sdk', 'browser', 'harness.ts') }, outdir),
      startWorld(),
      launchBrowser(),
    ]);
    world = w;
    browser = b;
    fs.writeFileSync(path.join(outdir, 'index.html'), '<!doctype html>\n<meta charset="utf-8">\n<link rel="icon" href="data:,">\n<title>hermetic browser test</title>\n<script type="module" src="/harness.js"></script>\n');
    // The same page under a Content-Security-Policy that does not allow WebAssembly.
    fs.writeFileSync(
      path.join(outdir, 'no-wasm.html'),
      '<!doctype html>\n<meta charset="utf-8">\n<meta http-equiv="Content-Security-Policy" content="script-src \'self\'">\n<link rel="icon" href="data:,">\n<title>hermetic browser test</title>\n<script type="module" src="/harness.js"></script>\n',
    );
    const files: Record<string, string> = { '/': path.join(outdir, 'index.html') };
    for (const f of fs.readdirSync(outdir)) files[`/${f}`] = path.join(outdir, f);
    server = await startDevServer({ relay: world.relay.baseUrl, files });
  }, 120_000);

  afterAll(async () => {
    await browser?.close();
    await server?.close();
  });

  /** A tab with the harness loaded, tokens minted here for whoever it asks. */
  async function openPage(file = ''): Promise<Page> {
    const page = await browser.newPage();
    await page.exposeFunction('mintToken', (userId: string) => world.issuer.mint(userId));
    await page.goto(`${server.url}/${file}`);
    await page.waitForFunction(() => 'harness' in globalThis);
    return page;
  }

  it('runs libsodium (WebAssembly) for every primitive: no node:crypto, no process object', async () => {
    const page = await openPage();
    const seen = await page.evaluate(async () => {
      const h = (globalThis as unknown as PageGlobals).harness;
      return { backend: h.backend, crypto: await h.crypto(), process: typeof (globalThis as { process?: unknown }).process };
    });
    expect(seen).toEqual({
      backend: { name: 'default', native: false },
      crypto: {
        sodium: 'ready',
        primitives: { sha2: 'sodium', hmac: 'sodium', hkdf: 'sodium', x25519: 'sodium', ed25519: 'sodium', aead: 'sodium', mlkem: 'sodium' },
        preferences: Object.fromEntries(['sha2', 'hmac', 'hkdf', 'x25519', 'ed25519', 'aead', 'mlkem'].map((p) => [p, ['sodium', 'noble']])),
      },
      process: 'undefined',
    });
    await page.close();
  });

  it('where the page forbids WebAssembly, stays on noble, says why once, and still runs a client', async () => {
    const page = await openPage('no-wasm.html');
    const warnings: string[] = [];
    page.on('console', (m) => {
      if (m.type() === 'warning') warnings.push(m.text());
    });
    const seen = await page.evaluate(async () => {
      const h = (globalThis as unknown as PageGlobals).harness;
      return h.crypto();
    });
    expect(seen.sodium).toBe('failed');
    expect(seen.sodiumError).toMatch(/WebAssembly|Content Security Policy|wasm/i);
    expect(Object.values(seen.primitives)).toEqual(new Array(7).fill('noble'));
    const started = await page.evaluate(async (url) => (globalThis as unknown as PageGlobals).harness.start(url, 'no-wasm-user', 'no-wasm'), server.url);
    expect(started.state).toMatch(/online|connecting/);
    expect(warnings.filter((w) => w.includes('libsodium unavailable'))).toHaveLength(1);
    await page.close();
  });

  describe('IndexedDbStore', () => {
    it('gives back every value byte for byte, as copies', async () => {
      const page = await openPage();
      const result = await page.evaluate(async () => {
        const h = (globalThis as unknown as PageGlobals).harness;
        const store = await h.IndexedDbStore.open('roundtrip');
        const sizes = [0, 1, 31, 1000, 70_000, 300_000];
        const values = sizes.map((n, i) => {
          const v = new Uint8Array(n);
          for (let o = 0; o < n; o += 65_536) crypto.getRandomValues(v.subarray(o, Math.min(n, o + 65_536)));
          if (n > 0) v[0] = i; // distinct even where random bytes are few
          return v;
        });
        // A view into the middle of a larger buffer stores only the view's bytes.
        const backing = new Uint8Array(64).map((_, i) => i);
        const view = backing.subarray(10, 20);
        await store.commit([...values.map((value, i) => ({ ns: 'v', key: `k${i}`, value })), { ns: 'v', key: 'view', value: view }]);
        backing.fill(0xff); // changing the caller's bytes after the commit changes nothing stored
        const same = (a: Uint8Array | undefined, b: Uint8Array): boolean => a !== undefined && a.length === b.length && a.every((x, i) => x === b[i]);
        const checks: Record<string, boolean> = {};
        for (let i = 0; i < values.length; i++) checks[`k${i}`] = same(await store.get('v', `k${i}`), values[i]!);
        const got = await store.get('v', 'view');
        checks.view = same(got, new Uint8Array([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]));
        checks.viewIsPlainArray = got instanceof Uint8Array && got.byteOffset === 0 && got.buffer.byteLength === 10;
        got?.fill(0);
        checks.readIsCopy = same(await store.get('v', 'view'), new Uint8Array([10, 11, 12, 13, 14, 15, 16, 17, 18, 19]));
        checks.missingIsUndefined = (await store.get('v', 'nothing')) === undefined && (await store.get('w', 'k0')) === undefined;
        const listed = await store.list('v');
        checks.listSame = listed.length === values.length + 1 && values.every((v, i) => same(listed.find(([k]) => k === `k${i}`)?.[1], v));
        await store.close();
        return checks;
      });
      expect(result).toEqual({
        k0: true, k1: true, k2: true, k3: true, k4: true, k5: true,
        view: true, viewIsPlainArray: true, readIsCopy: true, missingIsUndefined: true, listSame: true,
      });
      await page.close();
    });

    it('lists a namespace by prefix in key order (UTF-16 code units), other namespaces apart', async () => {
      const keys = ['', 'a', 'a:1', 'a:10', 'a:2', 'a:\u00e9', 'a:\u{1f600}', 'a:\uffe0', 'a:\uffff', 'a:\uffffz', 'a\uffff', 'a;', 'ab', 'b', 'B', '\uffff', '\uffff\uffff'];
      const prefixes = ['', 'a', 'a:', 'a:1', 'a:\uffff', '\uffff', 'zz'];
      const page = await openPage();
      const listed = await page.evaluate(
        async ({ keys, prefixes }) => {
          const h = (globalThis as unknown as PageGlobals).harness;
          const store = await h.IndexedDbStore.open('listing');
          const enc = new TextEncoder();
          // The same keys in neighbouring namespaces must not show up.
          await store.commit(['m', 'n', 'n\u0000', 'na'].flatMap((ns) => [...keys].reverse().map((key) => ({ ns, key, value: enc.encode(`${ns}|${key}`) }))));
          const out: Array<Array<[string, string]>> = [];
          const dec = new TextDecoder();
          for (const prefix of prefixes) out.push((await store.list('n', prefix)).map(([k, v]) => [k, dec.decode(v)]));
          await store.close();
          return out;
        },
        { keys, prefixes },
      );
      const expected = prefixes.map((prefix) =>
        keys
          .filter((k) => k.startsWith(prefix))
          .sort() // default sort: by UTF-16 code unit, the store contract's order
          .map((k) => [k, `n|${k}`]),
      );
      expect(listed).toEqual(expected);
      await page.close();
    });

    it('commits all writes or none, applies them in order, and keeps them across a reload', async () => {
      const page = await openPage();
      const before = await page.evaluate(async () => {
        const h = (globalThis as unknown as PageGlobals).harness;
        const store = await h.IndexedDbStore.open('atomic');
        const enc = new TextEncoder();
        await store.commit([{ ns: 'a', key: 'kept', value: enc.encode('v1') }]);
        // The second write cannot be stored (its bytes are not cloneable): the first,
        // already handed to IndexedDB, must not land either.
        const poisoned = { slice: () => () => undefined } as unknown as Uint8Array;
        let refused = '';
        try {
          await store.commit([
            { ns: 'a', key: 'kept', value: enc.encode('v2') },
            { ns: 'a', key: 'first', value: enc.encode('x') },
            { ns: 'a', key: 'second', value: poisoned },
          ]);
        } catch (err) {
          refused = (err as Error).name;
        }
        await store.commit([
          { ns: 'o', key: 'put-then-delete', value: enc.encode('1') },
          { ns: 'o', key: 'put-then-delete', delete: true },
          { ns: 'o', key: 'delete-then-put', delete: true },
          { ns: 'o', key: 'delete-then-put', value: enc.encode('2') },
          { ns: 'o', key: 'twice', value: enc.encode('3') },
          { ns: 'o', key: 'twice', value: enc.encode('4') },
          { ns: 'o', key: 'never-there', delete: true },
        ]);
        await store.close();
        return refused;
      });
      expect(before).not.toBe('');
      await page.reload();
      await page.waitForFunction(() => 'harness' in globalThis);
      const after = await page.evaluate(async () => {
        const h = (globalThis as unknown as PageGlobals).harness;
        const store = await h.IndexedDbStore.open('atomic');
        const dec = new TextDecoder();
        const all = async (ns: string): Promise<Array<[string, string]>> => (await store.list(ns)).map(([k, v]) => [k, dec.decode(v)]);
        const out = { a: await all('a'), o: await all('o') };
        await store.close();
        return out;
      });
      expect(after).toEqual({
        a: [['kept', 'v1']],
        o: [
          ['delete-then-put', '2'],
          ['twice', '4'],
        ],
      });
      await page.close();
    });
  });

  it('two tabs chat through the relay on IndexedDB stores; a reloaded tab restores its device and sessions and goes on both ways', async () => {
    const alice = await openPage();
    const bob = await openPage();
    const start = (page: Page, userId: string) =>
      page.evaluate(([url, u]) => (globalThis as unknown as PageGlobals).harness.start(url, u, `chat-${u}`), [server.url, userId] as const);
    const send = (page: Page, to: string, body: unknown) =>
      page.evaluate(async ([t, b]) => {
        await (globalThis as unknown as PageGlobals).harness.client!.send(t, b);
      }, [to, body] as const);
    const received = async (page: Page, n: number) => {
      await page.waitForFunction((k) => (globalThis as unknown as PageGlobals).harness.received.length >= k, n, { timeout: 30_000 });
      return page.evaluate(() => (globalThis as unknown as PageGlobals).harness.received.map((m) => ({ from: m.from, kind: m.kind, body: m.body, flags: m.flags })));
    };
    const flags = (page: Page) => page.evaluate(() => (globalThis as unknown as PageGlobals).harness.flags.map((f) => `${f.code} ${f.userId}`));
    const online = (page: Page) => page.waitForFunction(() => (globalThis as unknown as PageGlobals).harness.client?.state.state === 'online', undefined, { timeout: 30_000 });

    const a1 = await start(alice, 'br-alice');
    const b1 = await start(bob, 'br-bob');
    await Promise.all([online(alice), online(bob)]);
    await send(alice, 'br-bob', 'hello bob, from a browser');
    await send(alice, 'br-bob', { n: 1, list: ['x', 'y'] });
    expect(await received(bob, 2)).toEqual([
      { from: 'br-alice', kind: 'text', body: 'hello bob, from a browser', flags: [] },
      { from: 'br-alice', kind: 'json', body: { n: 1, list: ['x', 'y'] }, flags: [] },
    ]);
    await send(bob, 'br-alice', 'hello alice');
    expect(await received(alice, 1)).toEqual([{ from: 'br-bob', kind: 'text', body: 'hello alice', flags: [] }]);

    // Alice's tab reloads: the page starts from nothing but IndexedDB. Bob writes meanwhile,
    // on the session he has; only alice's restored session state can open it.
    await alice.reload();
    await alice.waitForFunction(() => 'harness' in globalThis);
    await send(bob, 'br-alice', 'sent while alice reloaded');
    const a2 = await start(alice, 'br-alice');
    expect(a2.deviceId).toBe(a1.deviceId);
    await online(alice);
    // Exactly the new message: the ones marked done before the reload are not offered again.
    expect(await received(alice, 1)).toEqual([{ from: 'br-bob', kind: 'text', body: 'sent while alice reloaded', flags: [] }]);
    await send(alice, 'br-bob', 'back after a reload');
    await send(bob, 'br-alice', 'welcome back');
    expect((await received(bob, 3))[2]).toEqual({ from: 'br-alice', kind: 'text', body: 'back after a reload', flags: [] });
    expect((await received(alice, 2))[1]).toEqual({ from: 'br-bob', kind: 'text', body: 'welcome back', flags: [] });

    // No new enrolment: alice's list at the relay is still her one root device.
    const res = await fetch(`${world.relay.baseUrl}/v1/users/br-alice/devices`, { headers: { authorization: `Bearer ${await world.issuer.mint('br-bob')}` } });
    const list = decodeDeviceListAnswer(parseJsonObject(await res.text(), 'answer'));
    expect({ length: list.length, devices: list.devices.map((d) => d.deviceId) }).toEqual({ length: 1, devices: [a1.deviceId] });
    expect(b1.deviceId).not.toBe(a1.deviceId);
    // Nothing was flagged on either side: no changed identity, no failed decryption, no healing.
    expect(await flags(alice)).toEqual([]);
    expect(await flags(bob)).toEqual([]);
    expect(browser.problems).toEqual([]);
    await alice.close();
    await bob.close();
  });
});
