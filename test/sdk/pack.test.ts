/**
 * The published package, not the source tree: `npm pack` (whose prepare script builds
 * dist/ with tsc), then the tarball installed with npm into an empty project, offline.
 * Its dependencies are this checkout's, linked into the project before the install (npm
 * keeps links that satisfy the package's dependencies); the hermetic package itself comes
 * from the tarball. In that project:
 *   - the relay is started from the installed package's `hermetic` executable (its
 *     compiled server and its migrations),
 *   - a program importing "hermetic/client" is type-checked with tsc against the
 *     package's declarations, compiled, and run by plain Node: two clients, one on the
 *     file store, exchange a message through that relay,
 *   - the browser side of the exports map is bundled with esbuild for the browser
 *     platform, refusing any Node-only module.
 */
import { execFile } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { promisify } from 'node:util';
import { afterAll, describe, expect, it } from 'vitest';
import { limits } from '../../client-sdk/index.js';
import { bundleForBrowser } from '../../examples/bundle.js';
import { createTestIssuer } from '../helpers/jwt.js';
import { REPO_ROOT, killAllRelays, makeTempDir, startRelay } from '../helpers/relay.js';

const run = promisify(execFile);
const NPM = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const TSC = path.join(REPO_ROOT, 'node_modules', 'typescript', 'bin', 'tsc');

interface PackManifest {
  readonly filename: string;
  readonly files: ReadonlyArray<{ readonly path: string }>;
}

const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { name: string; dependencies: Record<string, string> };

/** What the program in the empty project does with the installed package. */
const PROGRAM = `import { FileStore, MemoryStore, SdkError, createClient, limits } from 'hermetic/client';

const [url, aliceToken, bobToken, storeDir] = process.argv.slice(2) as [string, string, string, string];
const alice = await createClient({ url, userId: 'pack-alice', token: aliceToken, store: new MemoryStore() });
const bob = await createClient({ url, userId: 'pack-bob', token: () => bobToken, store: await FileStore.open(storeDir), storeKey: { passphrase: 'pack test' } });
const sent = await alice.send('pack-bob', { text: 'from the tarball', max: limits.MAX_BODY_BYTES });
let body: unknown;
let sameEnvelope = false;
for await (const m of bob.messages()) {
  body = m.body;
  sameEnvelope = m.envelopeId === sent.envelopeId && m.from.userId === 'pack-alice';
  await m.done();
  break;
}
const misuse = await alice.send('pack-bob', new Uint8Array(limits.MAX_BODY_BYTES + 1)).then(() => 'sent', (e: unknown) => (e instanceof SdkError ? e.code : String(e)));
await alice.close();
await bob.close();
console.log(JSON.stringify({ body, sameEnvelope, misuse }));
`;

const BROWSER_ENTRY = `export { IndexedDbStore, MemoryStore, createClient } from 'hermetic/client';\n`;

afterAll(async () => {
  await killAllRelays();
});

describe('the npm package', () => {
  it('packs, installs offline into an empty project, type-checks and runs a program against a relay from the tarball', async () => {
    const work = makeTempDir('hermetic-pack-');

    // npm pack runs prepare (the build) first; its output goes to stderr, the manifest to stdout.
    const packed = await run(NPM, ['pack', '--json', '--no-update-notifier', '--pack-destination', work], { cwd: REPO_ROOT, maxBuffer: 64 * 1024 * 1024 });
    const [manifest] = JSON.parse(packed.stdout) as PackManifest[];
    const files = manifest!.files.map((f) => f.path);
    for (const needed of ['bin/hermetic.js', 'dist/client-sdk/node.js', 'dist/client-sdk/node.d.ts', 'dist/client-sdk/index.js', 'dist/client-sdk/index.d.ts', 'dist/server/cli.js', 'docs/SDK.md', 'README.md', 'package.json']) {
      expect(files, needed).toContain(needed);
    }
    const migrations = fs.readdirSync(path.join(REPO_ROOT, 'migrations'));
    expect(migrations.length).toBeGreaterThan(0);
    for (const m of migrations) expect(files).toContain(`migrations/${m}`);
    // No tests, benchmarks, examples, sources or build settings.
    expect(files.filter((f) => /(^|\/)(test|bench|examples)\//.test(f) || /\.test\.|\.ts$/.test(f.replace(/\.d\.ts$/, '')) || f.startsWith('tsconfig'))).toEqual([]);

    // An empty project; the dependencies linked from this checkout, then the tarball installed.
    const project = path.join(work, 'app');
    fs.mkdirSync(path.join(project, 'node_modules'), { recursive: true });
    fs.writeFileSync(path.join(project, 'package.json'), JSON.stringify({ name: 'pack-smoke', private: true, type: 'module' }));
    const linkDependency = (dep: string): void => {
      const link = path.join(project, 'node_modules', dep);
      fs.mkdirSync(path.dirname(link), { recursive: true });
      fs.symlinkSync(fs.realpathSync(path.join(REPO_ROOT, 'node_modules', dep)), link, 'dir');
    };
    for (const dep of Object.keys(pkg.dependencies)) linkDependency(dep);
    const tarball = path.join(work, manifest!.filename);
    await run(NPM, ['install', '--offline', '--no-update-notifier', '--no-audit', '--no-fund', '--no-package-lock', '--ignore-scripts', tarball], { cwd: project });
    // The app's own dev dependency for the type check (npm prunes what the project does not declare).
    linkDependency('@types/node');
    const installed = path.join(project, 'node_modules', pkg.name);
    expect(fs.lstatSync(installed).isSymbolicLink()).toBe(false);
    expect(fs.existsSync(path.join(installed, 'test'))).toBe(false);

    // The relay from the installed package, started while a program against "hermetic/client"
    // is type-checked with the package's declarations (and compiled).
    const issuer = await createTestIssuer(makeTempDir('hermetic-pack-idp-'));
    fs.writeFileSync(path.join(project, 'main.ts'), PROGRAM);
    fs.writeFileSync(
      path.join(project, 'tsconfig.json'),
      JSON.stringify({ compilerOptions: { target: 'ES2022', module: 'NodeNext', moduleResolution: 'NodeNext', strict: true, types: ['node'], outDir: 'out' }, files: ['main.ts'] }),
    );
    const [relay, tsc] = await Promise.all([
      startRelay({ env: issuer.env, bin: path.join(installed, 'bin', 'hermetic.js') }),
      run(process.execPath, [TSC, '-p', project], { cwd: project }).catch((e: { stdout?: string; message: string }) => ({ stdout: e.stdout ?? e.message })),
    ]);
    expect(tsc.stdout).toBe('');
    const [aliceToken, bobToken] = await Promise.all([issuer.mint('pack-alice'), issuer.mint('pack-bob')]);
    const out = await run(process.execPath, [path.join(project, 'out', 'main.js'), relay.baseUrl, aliceToken, bobToken, path.join(work, 'bob-store')], { cwd: project, timeout: 60_000 });
    expect(JSON.parse(out.stdout.trim())).toEqual({ body: { text: 'from the tarball', max: limits.MAX_BODY_BYTES }, sameEnvelope: true, misuse: 'BODY_TOO_LARGE' });

    // The browser side of the exports map: bundled for the browser platform, nothing Node-only.
    fs.writeFileSync(path.join(project, 'browser.js'), BROWSER_ENTRY);
    const bundle = await bundleForBrowser({ app: path.join(project, 'browser.js') }, path.join(work, 'browser-build'));
    const fromPackage = bundle.inputs.filter((i) => i.includes(`node_modules/${pkg.name}/`)).map((i) => i.slice(i.indexOf(`node_modules/${pkg.name}/`)));
    expect(fromPackage).toContain(`node_modules/${pkg.name}/dist/client-sdk/index.js`);
    expect(fromPackage.filter((i) => /client-sdk\/(node|stores\/file)\.js$|dist\/server\//.test(i))).toEqual([]);
    expect(bundle.externalImports).toEqual([]);
  }, 240_000);
});
