/**
 * The receipt log's checkpoint signing key: a C2SP signed-note Ed25519 key. From
 * HERMETIC_LOG_KEY (a `PRIVATE+KEY+<name>+<id>+<key>` string) when set; otherwise, in
 * development, generated once and kept in the data directory (mode 0600), so that a
 * relay's checkpoints stay verifiable across restarts. A production relay on external
 * PostgreSQL must be given the key (loadConfig refuses to start without one): relays
 * sharing a database must all sign with the same key.
 */
import fs from 'node:fs';
import path from 'node:path';
import { NoteSigner } from '../../crypto/tlog/note.js';
import { ConfigError } from '../config.js';

const KEY_FILE = 'log-signer.key';

export interface LogKey {
  readonly signer: NoteSigner;
  /** The checkpoint origin line (HERMETIC_LOG_ORIGIN, else the key's name). */
  readonly origin: string;
  /** Where the key came from, for the startup log line (never the key itself). */
  readonly source: 'config' | 'generated' | 'data-dir';
  readonly keyFile?: string;
}

/** The key name a generated key gets: the origin when one is set. */
const DEFAULT_LOG_NAME = 'hermetic.localhost/log';

function parseSigner(skey: string, what: string): NoteSigner {
  try {
    return NoteSigner.parse(skey.trim());
  } catch {
    // Never echo the value: it is a secret.
    throw new ConfigError(`${what} is not a signed-note signer key (PRIVATE+KEY+<name>+<key id>+<base64 key>)`);
  }
}

export function loadLogKey(opts: { signerKey: string | undefined; origin: string | undefined; dataDir: string }): LogKey {
  if (opts.signerKey !== undefined) {
    const signer = parseSigner(opts.signerKey, 'HERMETIC_LOG_KEY');
    return { signer, origin: opts.origin ?? signer.name, source: 'config' };
  }
  fs.mkdirSync(opts.dataDir, { recursive: true });
  const file = path.join(opts.dataDir, KEY_FILE);
  if (fs.existsSync(file)) {
    const signer = parseSigner(fs.readFileSync(file, 'utf8'), `the log key file ${file}`);
    return { signer, origin: opts.origin ?? signer.name, source: 'data-dir', keyFile: file };
  }
  const signer = NoteSigner.generate(opts.origin ?? DEFAULT_LOG_NAME);
  // 'wx': never overwrite a key another process created meanwhile; 0600: it is a secret.
  try {
    fs.writeFileSync(file, `${signer.exportSignerKey()}\n`, { mode: 0o600, flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const existing = parseSigner(fs.readFileSync(file, 'utf8'), `the log key file ${file}`);
    return { signer: existing, origin: opts.origin ?? existing.name, source: 'data-dir', keyFile: file };
  }
  return { signer, origin: opts.origin ?? signer.name, source: 'generated', keyFile: file };
}
