/**
 * `npm run demo`: end-to-end encrypted chat between browser tabs, on hermetic/client.
 *
 * DEVELOPMENT ONLY. It runs a relay in dev mode (the relay issues its own tokens) and its
 * GET /demo/token?user=<name> hands a token for any user name to anyone who asks. A real
 * application issues tokens from its own login, for the user who logged in.
 *
 * What it does: bundles hermetic/client's browser entry with esbuild into examples/build/,
 * starts a relay in this process (dev mode, embedded storage in ./data-demo unless
 * --data-dir says otherwise, listening on 127.0.0.1 only), and serves examples/chat/ at
 * http://127.0.0.1:8090, forwarding /v1/ to the relay so the page and the relay share one
 * origin (examples/dev-server.ts says why).
 *
 * Options: --port <n> (0: any free port), --data-dir <dir>.
 */
import path from 'node:path';
import { parseArgs } from 'node:util';
import { MAX_USER_ID_LENGTH, USER_ID_PATTERN } from '../protocol/limits.js';
import { openDevIssuer } from '../server/auth/dev-issuer.js';
import { createLogger, loadConfig, startRelay } from '../server/index.js';
import { BROWSER_CLIENT_ENTRY, REPO_ROOT, bundleForBrowser } from './bundle.js';
import { startDevServer } from './dev-server.js';

const DEFAULT_PORT = 8090;
/** Lifetime of a demo token; the page asks for a fresh one when it expires. */
const TOKEN_TTL_S = 3600;

function fail(message: string): never {
  console.error(`hermetic demo: ${message}`);
  process.exit(2);
}

async function main(): Promise<void> {
  if (process.env.NODE_ENV === 'production') fail('refused with NODE_ENV=production: the demo hands out tokens to anyone');
  let args;
  try {
    args = parseArgs({ options: { port: { type: 'string' }, 'data-dir': { type: 'string' } } }).values;
  } catch (err) {
    fail(`${(err as Error).message}\nusage: npm run demo -- [--port <n>] [--data-dir <dir>]`);
  }
  const port = args.port === undefined ? DEFAULT_PORT : Number(args.port);
  if (!Number.isInteger(port) || port < 0 || port > 65535) fail('--port must be 0..65535');
  const dataDir = path.resolve(args['data-dir'] ?? path.join(REPO_ROOT, 'data-demo'));

  const outdir = path.join(REPO_ROOT, 'examples', 'build');
  const bundle = await bundleForBrowser({ 'hermetic-client': BROWSER_CLIENT_ENTRY }, outdir);
  const clientFile = bundle.files['hermetic-client'] as string;

  // Only the variables named here: dev mode, whatever JWKS or database the shell has set.
  const config = loadConfig({ PORT: '0', HERMETIC_HOST: '127.0.0.1', HERMETIC_DATA_DIR: dataDir, HERMETIC_LOG_LEVEL: 'warn' });
  const relay = await startRelay(config, createLogger(config.logLevel));
  const issuer = await openDevIssuer(dataDir);

  const chat = path.join(REPO_ROOT, 'examples', 'chat');
  const server = await startDevServer({
    relay: `http://127.0.0.1:${relay.port}`,
    port,
    files: {
      '/': path.join(chat, 'index.html'),
      '/chat.js': path.join(chat, 'chat.js'),
      '/hermetic-client.js': clientFile,
      '/hermetic-client.js.map': `${clientFile}.map`,
    },
    routes: {
      // Development only: a token for whoever asks (see the file header).
      '/demo/token': async (query) => {
        const user = query.get('user') ?? '';
        if (user.length === 0 || user.length > MAX_USER_ID_LENGTH || !USER_ID_PATTERN.test(user)) {
          return { status: 400, body: { error: `user must be 1..${MAX_USER_ID_LENGTH} printable ASCII characters` } };
        }
        return { status: 200, body: { token: await issuer.mint(user, TOKEN_TTL_S) } };
      },
    },
  });

  let stopping = false;
  const stop = (): void => {
    if (stopping) process.exit(1);
    stopping = true;
    void Promise.all([server.close(), relay.stop()]).then(
      () => process.exit(0),
      (err: unknown) => {
        console.error(`hermetic demo: shutdown failed: ${(err as Error).message}`);
        process.exit(1);
      },
    );
  };
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);

  const kib = (n: number): string => `${(n / 1024).toFixed(1)} KiB`;
  console.log(
    [
      'hermetic demo: DEVELOPMENT ONLY, this server gives a token for any user name to anyone who asks',
      `  relay: dev mode, embedded storage in ${dataDir}`,
      `  SDK for the browser: ${path.relative(REPO_ROOT, clientFile)} (${kib(bundle.sizes[clientFile] ?? 0)}, minified)`,
      `  open ${server.url}/?user=alice and ${server.url}/?user=bob in two tabs; Ctrl-C stops`,
    ].join('\n'),
  );
}

main().catch((err: unknown) => {
  console.error(`hermetic demo: ${err instanceof Error ? err.message : String(err)}`);
  process.exit(1);
});
