/**
 * `hermetic <command>`: serve (the relay), migrate (apply migrations and exit), token
 * (mint a dev-mode token), audit (export and verify a relay's receipt log). Exit codes:
 * 0 success, 1 runtime failure, 2 usage or configuration error.
 */
import { ConfigError, loadConfig } from './config.js';
import { MAX_USER_ID_LENGTH } from '../protocol/limits.js';

// The relay's modules (uWebSockets.js, the database drivers) are loaded by the commands
// that need them, so that `hermetic audit` and `hermetic token` start quickly.

const USAGE = `usage: hermetic <command>

commands:
  serve                         run the relay (PORT, DATABASE_URL, ... see README)
  migrate                       apply database migrations and exit
  token <user> [--ttl <secs>] [--auditor]
                                mint a dev-mode token for <user> (default ttl 3600);
                                --auditor adds the receipt log's auditor claim
  audit export|verify ...       export a relay's receipt log, or verify one (offline or
                                live); \`hermetic audit\` alone shows its options
`;

/** Longest dev token lifetime: dev tokens are for local work, not long-lived sessions. */
const MAX_DEV_TOKEN_TTL_S = 30 * 24 * 3600;

async function serve(): Promise<void> {
  const [{ createLogger }, { startRelay }] = await Promise.all([import('./log.js'), import('./relay.js')]);
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const relay = await startRelay(config, logger);
  let signals = 0;
  const onSignal = (signal: NodeJS.Signals): void => {
    signals++;
    if (signals > 1) {
      logger.warn({ signal }, 'second signal: exiting now');
      process.exit(1);
    }
    logger.info({ signal }, 'shutting down');
    relay.stop().then(
      () => process.exit(0),
      (err: unknown) => {
        logger.error({ err: { message: (err as Error).message } }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

async function runMigrate(): Promise<void> {
  const [{ createLogger }, { openDatabase }, { migrate }] = await Promise.all([import('./log.js'), import('./relay.js'), import('./storage/migrate.js')]);
  const config = loadConfig();
  const logger = createLogger(config.logLevel);
  const db = await openDatabase(config, logger);
  try {
    const r = await migrate(db);
    console.log(r.applied.length ? `applied: ${r.applied.join(', ')}` : `up to date (version ${r.current})`);
  } finally {
    await db.close();
  }
}

async function token(args: readonly string[]): Promise<void> {
  const user = args[0];
  if (!user || user.startsWith('--') || user.length > MAX_USER_ID_LENGTH) throw new UsageError('token needs a <user>');
  let ttl = 3600;
  const i = args.indexOf('--ttl');
  if (i >= 0) {
    const raw = args[i + 1] ?? '';
    if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_DEV_TOKEN_TTL_S) {
      throw new UsageError(`--ttl must be 1..${MAX_DEV_TOKEN_TTL_S} seconds`);
    }
    ttl = Number(raw);
  }
  const auditor = args.includes('--auditor');
  for (const [j, a] of args.entries()) {
    if (j === 0 || a === '--auditor' || a === '--ttl' || args[j - 1] === '--ttl') continue;
    throw new UsageError(`unknown token option ${a.slice(0, 32)}`);
  }
  const config = loadConfig();
  if (config.auth.mode !== 'dev') throw new UsageError('token only works in dev mode (no HERMETIC_JWKS_URL/FILE set)');
  const { openDevIssuer } = await import('./auth/dev-issuer.js');
  const issuer = await openDevIssuer(config.dataDir);
  console.log(await issuer.mint(user, ttl, { auditor }));
}

class UsageError extends Error {}

async function main(argv: readonly string[]): Promise<void> {
  const [cmd, ...rest] = argv;
  switch (cmd) {
    case 'serve':
      return serve();
    case 'migrate':
      return runMigrate();
    case 'token':
      return token(rest);
    case 'audit': {
      const { runAudit } = await import('./audit/command.js');
      const code = await runAudit(rest, { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s), errIsTty: process.stderr.isTTY === true });
      process.exitCode = code;
      return;
    }
    default:
      throw new UsageError(cmd ? `unknown command ${cmd}` : 'no command given');
  }
}

main(process.argv.slice(2)).catch((err: unknown) => {
  if (err instanceof UsageError) {
    console.error(`hermetic: ${err.message}\n\n${USAGE}`);
    process.exit(2);
  }
  // By name: their modules are loaded only by the commands that throw them.
  if (err instanceof ConfigError || (err instanceof Error && (err.name === 'DataDirLockedError' || err.name === 'UnsupportedRuntimeError'))) {
    console.error(`hermetic: ${err.message}`);
    process.exit(2);
  }
  console.error('hermetic: fatal:', err instanceof Error ? err.message : err);
  process.exit(1);
});
