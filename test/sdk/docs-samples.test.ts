/**
 * docs/SDK.md stays true. Every ```ts sample block in it is type-checked against the SDK
 * and run, in order, against a real relay process; what a sample prints with console.log
 * must be what its `// → ` comments say. The reference tables must name every
 * createClient option, every event, every SdkError code and every flag in the source.
 * The README's SDK example is type-checked as well.
 *
 * A sample imports 'hermetic/client' as an application would; here that name is pointed
 * at the source of the Node entry (the packaging test covers the published name). The
 * application's `relayUrl` and `getToken(userId)` are globals the test provides.
 */
import fs from 'node:fs';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { format } from 'node:util';
import ts from 'typescript';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { FLAG_CODES, SDK_ERROR_CODES } from '../../client-sdk/index.js';
import { REPO_ROOT, killAllRelays } from '../helpers/relay.js';
import { type SdkWorld, startWorld } from './helpers.js';

const DOC = path.join(REPO_ROOT, 'docs', 'SDK.md');
const NODE_ENTRY = path.join(REPO_ROOT, 'client-sdk', 'node.js');
/** A sample that has not finished by then is stuck (waiting for a message that never comes). */
const SAMPLE_TIMEOUT_MS = 30_000;

interface Sample {
  /** Line of the opening fence in docs/SDK.md, for messages. */
  readonly line: number;
  readonly code: string;
  /** What the sample prints, from its `// → ` comments, in order. */
  readonly expected: string[];
}

function extractSamples(doc: string): Sample[] {
  const samples: Sample[] = [];
  const lines = doc.split('\n');
  for (let i = 0; i < lines.length; i++) {
    if (lines[i]!.trim() !== '```ts sample') continue;
    const start = i;
    const body: string[] = [];
    for (i++; i < lines.length && lines[i]!.trim() !== '```'; i++) body.push(lines[i]!);
    if (i === lines.length) throw new Error(`docs/SDK.md:${start + 1}: a sample block is not closed`);
    const expected = body.flatMap((l) => {
      const m = /\/\/ → (.*)$/.exec(l);
      return m ? [m[1]!.trimEnd()] : [];
    });
    samples.push({ line: start + 1, code: body.join('\n'), expected });
  }
  return samples;
}

/** The names declared in `export interface <name> ... { ... }` of a source file. */
function interfaceFields(file: string, name: string): string[] {
  const src = fs.readFileSync(path.join(REPO_ROOT, file), 'utf8');
  const start = src.indexOf(`export interface ${name} `);
  if (start < 0) throw new Error(`${file} has no interface ${name}`);
  const body = src.slice(src.indexOf('{', start) + 1, src.indexOf('\n}', start));
  return [...body.matchAll(/^ {2}(?:readonly )?([A-Za-z]+)\??:/gm)].map((m) => m[1]!);
}

/** The first cells (`code`) of the table rows in docs/SDK.md under `## <title>`. */
function tableKeys(doc: string, title: string): string[] {
  const start = doc.indexOf(`\n## ${title}\n`);
  if (start < 0) throw new Error(`docs/SDK.md has no section "${title}"`);
  const next = doc.indexOf('\n## ', start + 4);
  const body = doc.slice(start, next < 0 ? undefined : next);
  return [...body.matchAll(/^\| `([A-Za-z_]+)` \|/gm)].map((m) => m[1]!);
}

/** A sample as a module of its own, with 'hermetic/client' pointed at the source of the Node entry. */
function toLocalImport(code: string, dir: string): string {
  return `${code.replaceAll("from 'hermetic/client'", `from ${JSON.stringify(path.relative(dir, NODE_ENTRY))}`)}\nexport {};\n`;
}

const doc = fs.readFileSync(DOC, 'utf8');
const samples = extractSamples(doc);

describe('docs/SDK.md', () => {
  it('documents every createClient option, event, SdkError code and flag', () => {
    expect(tableKeys(doc, 'createClient options').sort()).toEqual(interfaceFields('client-sdk/client.ts', 'ClientOptions').sort());
    expect(tableKeys(doc, 'Events').sort()).toEqual(interfaceFields('client-sdk/client.ts', 'ClientEvents').sort());
    expect(tableKeys(doc, 'Errors').sort()).toEqual(Object.keys(SDK_ERROR_CODES).sort());
    expect(tableKeys(doc, 'Flags').sort()).toEqual([...FLAG_CODES].sort());
    expect(tableKeys(doc, 'Messages').sort()).toEqual(interfaceFields('client-sdk/client.ts', 'Message').sort());
  });

  describe('samples', () => {
    let world: SdkWorld;
    let dir: string;
    let files: string[];
    let readmeFiles: string[];

    beforeAll(async () => {
      expect(samples.length).toBeGreaterThan(0);
      // Inside the repository (ESM by its package.json, resolved by the test's own tooling).
      fs.mkdirSync(path.join(REPO_ROOT, '.tmp'), { recursive: true });
      dir = fs.mkdtempSync(path.join(REPO_ROOT, '.tmp', 'docs-samples-'));
      files = samples.map((s, i) => {
        const file = path.join(dir, `sample-${i + 1}-line-${s.line}.ts`);
        fs.writeFileSync(file, toLocalImport(s.code, dir));
        return file;
      });
      // The README's example is type-checked too (not run: it names a relay of its own).
      const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
      const readmeBlocks = [...readme.matchAll(/^```ts\n([\s\S]*?)^```$/gm)].map((m) => m[1]!);
      expect(readmeBlocks.length).toBeGreaterThan(0);
      readmeFiles = readmeBlocks.map((code, i) => {
        const file = path.join(dir, `readme-${i + 1}.ts`);
        fs.writeFileSync(file, toLocalImport(code, dir));
        return file;
      });
      fs.writeFileSync(
        path.join(dir, 'globals.d.ts'),
        'declare const relayUrl: string;\ndeclare function getToken(userId: string): Promise<string>;\ndeclare function fetchTokenFromYourBackend(): Promise<string>;\n',
      );
      world = await startWorld();
      // The samples' tokens allow topics under "orders." (the hermetic_topics claim, PROTOCOL.md).
      const orders = ['orders.>'];
      const claims = { hermetic_topics: { create: orders, publish: orders, subscribe: orders, consume: orders } };
      Object.assign(globalThis, { relayUrl: world.relay.baseUrl, getToken: (userId: string) => world.issuer.mint(userId, { claims }) });
    });

    afterAll(async () => {
      for (const k of ['relayUrl', 'getToken']) delete (globalThis as Record<string, unknown>)[k];
      if (dir) fs.rmSync(dir, { recursive: true, force: true });
      await killAllRelays();
    });

    it('type-check against the SDK (and the README example)', () => {
      const config = ts.readConfigFile(path.join(REPO_ROOT, 'tsconfig.json'), (f) => ts.sys.readFile(f));
      const parsed = ts.parseJsonConfigFileContent(config.config, ts.sys, REPO_ROOT);
      const program = ts.createProgram([path.join(dir, 'globals.d.ts'), ...files, ...readmeFiles], { ...parsed.options, noEmit: true, declaration: false, sourceMap: false });
      // Only the samples are checked (the SDK's own type check is `npm run typecheck`).
      const sources = [...files, ...readmeFiles].map((f) => program.getSourceFile(f)!);
      const diagnostics = [...program.getOptionsDiagnostics(), ...program.getGlobalDiagnostics(), ...sources.flatMap((sf) => [...program.getSyntacticDiagnostics(sf), ...program.getSemanticDiagnostics(sf)])];
      const problems = diagnostics.map((d) => {
        const where = d.file ? `${path.basename(d.file.fileName)}:${d.file.getLineAndCharacterOfPosition(d.start ?? 0).line + 1}` : '';
        return `${where} ${ts.flattenDiagnosticMessageText(d.messageText, '\n')}`;
      });
      expect(problems).toEqual([]);
    });

    it.each(samples.map((s, i) => [s.line, i] as const))('run: the sample at docs/SDK.md line %i', async (_line, i) => {
      const printed: string[] = [];
      const spy = vi.spyOn(console, 'log').mockImplementation((...args: unknown[]) => {
        printed.push(format(...args));
      });
      let timer: ReturnType<typeof setTimeout> | undefined;
      try {
        await Promise.race([
          import(pathToFileURL(files[i]!).href),
          new Promise((_, reject) => (timer = setTimeout(() => reject(new Error(`sample did not finish within ${SAMPLE_TIMEOUT_MS} ms; it printed: ${printed.join(' | ')}`)), SAMPLE_TIMEOUT_MS))),
        ]);
      } finally {
        clearTimeout(timer);
        spy.mockRestore();
      }
      expect(printed).toEqual(samples[i]!.expected);
    });
  });
});
