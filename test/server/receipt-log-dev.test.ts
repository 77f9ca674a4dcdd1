/**
 * The receipt log's key in development and production: without HERMETIC_LOG_KEY an
 * embedded-storage relay generates one in its data directory (mode 0600, never logged)
 * and keeps it across restarts; a new key signs the tree head again (the old checkpoints
 * stay in the history); a production relay on external PostgreSQL refuses to
 * start without one. `hermetic token --auditor` mints a token with the auditor claim.
 */
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { expectError, request } from '../helpers/http.js';
import { type RelayProcess, killAllRelays, makeTempDir, relayEnv, runCli, startRelay } from '../helpers/relay.js';
import { latestCheckpoint, logIdentity, verifyCheckpoint } from '../helpers/receipt-log.js';
import { decodeCheckpointsAnswer } from '../../protocol/log.js';
import { NoteSigner } from '../../crypto/tlog/note.js';
import { loadLogKey } from '../../server/log/log-key.js';

afterAll(async () => {
  await killAllRelays();
});

describe('receipt log key and auditor tokens (dev mode)', () => {
  /** The restarted relay of the first test, reused by the second (a fresh one is slow to set up). */
  let relay: RelayProcess;

  it('generates the log key in the data directory (0600, never logged), keeps it across restarts, and signs again with a new key', async () => {
    const dataDir = makeTempDir();
    const first0 = await startRelay({ dataDir });
    const keyFile = path.join(dataDir, 'log-signer.key');
    expect(fs.statSync(keyFile).mode & 0o777).toBe(0o600);
    const secret = fs.readFileSync(keyFile, 'utf8').trim();
    expect(secret).toMatch(/^PRIVATE\+KEY\+/);
    const id = await logIdentity(first0.baseUrl);
    const first = await latestCheckpoint(first0.baseUrl, id);
    expect(first.size).toBe(0);
    await first0.stop();
    expect(first0.stdout() + first0.stderr()).not.toContain(secret.split('+').pop());
    // Kept: the next load of the data directory gives the same key.
    expect(loadLogKey({ signerKey: undefined, origin: undefined, dataDir }).signer.verifier.toString()).toBe(id.verifier.toString());

    // A new key (rotation): the checkpoint served is signed by it, at the same size; the
    // old one stays in the history and still verifies with the old key.
    const rotated = NoteSigner.generate('rotated.hermetic.test/log');
    relay = await startRelay({ dataDir, env: { HERMETIC_LOG_KEY: rotated.exportSignerKey() } });
    const id3 = await logIdentity(relay.baseUrl);
    expect(id3.verifier.toString()).toBe(rotated.verifier.toString());
    expect((await latestCheckpoint(relay.baseUrl, id3)).size).toBe(0);
    const both = decodeCheckpointsAnswer((await request(relay.baseUrl, 'GET', '/v1/log/checkpoints')).body).checkpoints;
    expect(both).toHaveLength(2);
    expect(verifyCheckpoint(both[0]!.note, id).size).toBe(0);
    // The generated key stays where it was.
    expect(fs.readFileSync(keyFile, 'utf8').trim()).toBe(secret);
    expect(verifyCheckpoint(both[1]!.note, id3).size).toBe(0);
  });

  it('`hermetic token --auditor` mints a token that may read data tiles; a plain one may not', async () => {
    const plain = await runCli(['token', 'someone'], relay.env);
    const auditor = await runCli(['token', 'auditor', '--auditor'], relay.env);
    expect(plain.code, plain.stderr).toBe(0);
    expect(auditor.code, auditor.stderr).toBe(0);
    expectError(await request(relay.baseUrl, 'GET', '/v1/log/tile/entries/000.p/1', { token: plain.stdout.trim() }), 403, 'AUDITOR_ONLY');
    // Past the auditor check: the empty log has no such tile yet.
    expectError(await request(relay.baseUrl, 'GET', '/v1/log/tile/entries/000.p/1', { token: auditor.stdout.trim() }), 404, 'NOT_FOUND');
    const bad = await runCli(['token', 'someone', '--auditr'], relay.env);
    expect(bad.code).toBe(2);
    await relay.stop();
  });

  it('refuses to start in production on external PostgreSQL without HERMETIC_LOG_KEY (exit 2, naming it)', async () => {
    const dir = makeTempDir();
    const env = {
      NODE_ENV: 'production',
      HERMETIC_PUBLIC_URL: 'wss://relay.example.com',
      HERMETIC_JWKS_FILE: path.join(dir, 'jwks.json'),
      HERMETIC_JWT_ISSUER: 'https://idp.example',
      HERMETIC_JWT_AUDIENCE: 'hermetic',
    };
    const r = await runCli(['serve'], relayEnv({ databaseUrl: 'postgres://nobody@127.0.0.1:1/none', env }, dir));
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('HERMETIC_LOG_KEY is required');
    expect(r.stdout).not.toContain('relay listening');
  });
});
