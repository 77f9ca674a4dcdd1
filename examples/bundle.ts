/**
 * Bundles code that imports hermetic/client for a browser page, with esbuild: ESM,
 * minified, with source maps. The browser entry of hermetic/client (client-sdk/index.ts,
 * what package.json's exports map serves outside Node) must run on the web platform
 * alone, so a bundle that would pull a Node-only module (a Node builtin, `node:*`, the
 * `ws` package) is refused with the importing file named, instead of shipping a module
 * that throws when the page loads it.
 */
import fs from 'node:fs';
import { builtinModules } from 'node:module';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as esbuild from 'esbuild';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

/** The source of hermetic/client's browser entry (exports map, condition "default"). */
export const BROWSER_CLIENT_ENTRY = path.join(REPO_ROOT, 'client-sdk', 'index.ts');

/** Packages that only run in Node (the `ws` transport is what client-sdk/node.ts adds). */
const NODE_ONLY_PACKAGES = new Set(['ws']);
const NODE_BUILTINS = new Set(builtinModules);

function nodeOnly(specifier: string): boolean {
  if (specifier.startsWith('node:')) return true;
  const pkg = specifier.startsWith('@') ? specifier.split('/').slice(0, 2).join('/') : (specifier.split('/')[0] ?? '');
  return NODE_BUILTINS.has(pkg) || NODE_ONLY_PACKAGES.has(pkg);
}

/**
 * Whether the package `importer` belongs to maps `specifier` to `false` in its
 * package.json "browser" field: the package itself says that code path never runs in a
 * browser (libsodium's Node-only random-number fallback), and esbuild replaces the
 * module with an empty one.
 */
function disabledForBrowsers(importer: string, specifier: string): boolean {
  const at = importer.lastIndexOf(`${path.sep}node_modules${path.sep}`);
  if (at < 0) return false;
  const rest = importer.slice(at + 14).split(path.sep);
  const pkgDir = importer.slice(0, at + 14) + rest.slice(0, rest[0]?.startsWith('@') ? 2 : 1).join(path.sep);
  try {
    const pkg = JSON.parse(fs.readFileSync(path.join(pkgDir, 'package.json'), 'utf8')) as { browser?: unknown };
    const browser = pkg.browser;
    return typeof browser === 'object' && browser !== null && (browser as Record<string, unknown>)[specifier] === false;
  } catch {
    return false;
  }
}

/** Fails the build on any import of a Node-only module, naming the importer. */
const refuseNodeOnly: esbuild.Plugin = {
  name: 'refuse-node-only',
  setup(build) {
    build.onResolve({ filter: /.*/ }, (args) => {
      if (args.kind === 'entry-point' || !nodeOnly(args.path)) return undefined;
      if (disabledForBrowsers(args.importer, args.path)) return undefined;
      const importer = path.relative(REPO_ROOT, args.importer);
      return { errors: [{ text: `"${args.path}" is a Node-only module, imported by ${importer}: code bundled for browsers must not import it` }] };
    });
  },
};

export interface BrowserBundle {
  /** Absolute path of each entry's output file, by entry name. */
  readonly files: Readonly<Record<string, string>>;
  /** Size in bytes of each JavaScript file written (entries and shared chunks), by absolute path. */
  readonly sizes: Readonly<Record<string, number>>;
  /** Every source file in the bundle, relative to the repository. */
  readonly inputs: readonly string[];
  /** Modules the output still imports from outside itself (none: the page loads nothing else). */
  readonly externalImports: readonly string[];
}

/**
 * Bundles `entries` (output name -> source file) into `outdir`. With several entries the
 * code they share goes into shared chunks, so each module (the crypto backend chosen, say)
 * exists once on the page. Throws esbuild's error for a Node-only import.
 */
export async function bundleForBrowser(entries: Readonly<Record<string, string>>, outdir: string): Promise<BrowserBundle> {
  const result = await esbuild.build({
    entryPoints: { ...entries },
    outdir,
    absWorkingDir: REPO_ROOT,
    bundle: true,
    splitting: Object.keys(entries).length > 1,
    format: 'esm',
    platform: 'browser',
    target: 'es2022',
    minify: true,
    sourcemap: true,
    metafile: true,
    logLevel: 'silent',
    plugins: [refuseNodeOnly],
  });
  const files: Record<string, string> = {};
  const sizes: Record<string, number> = {};
  const externalImports: string[] = [];
  for (const [out, meta] of Object.entries(result.metafile.outputs)) {
    if (!out.endsWith('.js')) continue;
    for (const i of meta.imports) if (i.external) externalImports.push(i.path);
    const abs = path.resolve(REPO_ROOT, out);
    sizes[abs] = meta.bytes;
    if (meta.entryPoint !== undefined) {
      const name = Object.keys(entries).find((k) => path.resolve(REPO_ROOT, entries[k] as string) === path.resolve(REPO_ROOT, meta.entryPoint as string));
      if (name !== undefined) files[name] = abs;
    }
  }
  const inputs = Object.keys(result.metafile.inputs).map((i) => path.relative(REPO_ROOT, path.resolve(REPO_ROOT, i)));
  return { files, sizes, inputs, externalImports };
}
