/**
 * Configuration from the environment: defaults, and fail-fast errors that name the
 * variable at fault.
 */
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { ConfigError, DEV_AUDIENCE, DEV_ISSUER, loadConfig } from '../../server/config.js';

function configError(env: Record<string, string>): ConfigError {
  try {
    loadConfig(env);
  } catch (err) {
    if (err instanceof ConfigError) return err;
    throw err;
  }
  throw new Error(`loadConfig accepted ${JSON.stringify(env)}`);
}

const jwks = { HERMETIC_JWKS_FILE: '/keys/jwks.json', HERMETIC_JWT_ISSUER: 'https://idp.example', HERMETIC_JWT_AUDIENCE: 'chat' };

describe('loadConfig', () => {
  it('has defaults for everything (dev-mode auth, PGlite in ./data)', () => {
    const c = loadConfig({});
    expect(c).toEqual({
      host: '0.0.0.0',
      port: 8080,
      databaseUrl: undefined,
      dataDir: path.resolve('data'),
      dbPoolMax: 10,
      dbTimeoutMs: 10_000,
      logLevel: 'info',
      production: false,
      auth: { mode: 'dev', issuer: DEV_ISSUER, audience: DEV_AUDIENCE, clockToleranceSec: 30 },
      shutdownGraceMs: 10_000,
      publicOrigin: undefined,
      wsIdleTimeoutSec: 120,
    });
  });

  it('reads every variable', () => {
    const c = loadConfig({
      ...jwks,
      HERMETIC_HOST: '127.0.0.1',
      PORT: '0',
      DATABASE_URL: 'postgresql://u@db:5432/hermetic',
      HERMETIC_DATA_DIR: 'relative/dir',
      HERMETIC_DB_POOL_MAX: '3',
      HERMETIC_DB_TIMEOUT_MS: '1500',
      HERMETIC_LOG_LEVEL: 'warn',
      HERMETIC_JWT_CLOCK_TOLERANCE: '5',
      HERMETIC_SHUTDOWN_GRACE_MS: '250',
      HERMETIC_PUBLIC_URL: 'https://Relay.Example.com:443/v1/ws',
      HERMETIC_WS_IDLE_TIMEOUT_S: '16',
      NODE_ENV: 'production',
    });
    expect(c).toEqual({
      host: '127.0.0.1',
      port: 0,
      databaseUrl: 'postgresql://u@db:5432/hermetic',
      dataDir: path.resolve('relative/dir'),
      dbPoolMax: 3,
      dbTimeoutMs: 1500,
      logLevel: 'warn',
      production: true,
      auth: { mode: 'jwks', jwksFile: '/keys/jwks.json', issuer: 'https://idp.example', audience: 'chat', clockToleranceSec: 5 },
      shutdownGraceMs: 250,
      publicOrigin: 'wss://relay.example.com',
      wsIdleTimeoutSec: 16,
    });
  });

  it.each(['abc', '-1', '65536', '80.5', '0x50', ' 80'])('refuses PORT=%j, naming PORT', (port) => {
    expect(configError({ PORT: port }).message).toMatch(/^PORT /);
  });

  it.each(['not a url', 'mysql://u@h/db', 'http://h/db'])('refuses DATABASE_URL=%j, naming DATABASE_URL', (url) => {
    expect(configError({ DATABASE_URL: url }).message).toMatch(/^DATABASE_URL /);
  });

  it('does not echo a malformed DATABASE_URL (it may hold a password)', () => {
    expect(configError({ DATABASE_URL: 'postgres://u:s3cret@[bad' }).message).not.toContain('s3cret');
  });

  it.each(['verbose', 'INFO', 'warning'])('refuses HERMETIC_LOG_LEVEL=%j, naming the variable', (level) => {
    expect(configError({ HERMETIC_LOG_LEVEL: level }).message).toMatch(/^HERMETIC_LOG_LEVEL /);
  });

  it('refuses out-of-range numbers, naming the variable', () => {
    expect(configError({ HERMETIC_DB_POOL_MAX: '0' }).message).toMatch(/^HERMETIC_DB_POOL_MAX /);
    expect(configError({ HERMETIC_JWT_CLOCK_TOLERANCE: '601' }).message).toMatch(/^HERMETIC_JWT_CLOCK_TOLERANCE /);
    expect(configError({ HERMETIC_SHUTDOWN_GRACE_MS: 'soon' }).message).toMatch(/^HERMETIC_SHUTDOWN_GRACE_MS /);
    expect(configError({ HERMETIC_DB_TIMEOUT_MS: '99' }).message).toMatch(/^HERMETIC_DB_TIMEOUT_MS /);
    expect(configError({ HERMETIC_WS_IDLE_TIMEOUT_S: '4' }).message).toMatch(/^HERMETIC_WS_IDLE_TIMEOUT_S /);
  });

  it('requires an issuer and an audience with a JWKS', () => {
    expect(configError({ HERMETIC_JWKS_FILE: '/k.json', HERMETIC_JWT_AUDIENCE: 'a' }).message).toContain('HERMETIC_JWT_ISSUER');
    expect(configError({ HERMETIC_JWKS_URL: 'https://idp.example/jwks', HERMETIC_JWT_ISSUER: 'i' }).message).toContain('HERMETIC_JWT_AUDIENCE');
  });

  it('refuses both a JWKS URL and a JWKS file, and a JWKS URL that is not http(s)', () => {
    const both = configError({ ...jwks, HERMETIC_JWKS_URL: 'https://idp.example/jwks' }).message;
    expect(both).toContain('HERMETIC_JWKS_URL');
    expect(both).toContain('HERMETIC_JWKS_FILE');
    expect(configError({ HERMETIC_JWKS_URL: 'file:///etc/jwks', HERMETIC_JWT_ISSUER: 'i', HERMETIC_JWT_AUDIENCE: 'a' }).message).toMatch(
      /^HERMETIC_JWKS_URL /,
    );
  });

  it('refuses dev mode in production, naming the JWKS variables', () => {
    const msg = configError({ NODE_ENV: 'production' }).message;
    expect(msg).toContain('HERMETIC_JWKS_URL');
    expect(msg).toContain('HERMETIC_JWKS_FILE');
    expect(msg).toContain('NODE_ENV=production');
    expect(loadConfig({ NODE_ENV: 'production', HERMETIC_PUBLIC_URL: 'wss://relay.example', ...jwks }).auth.mode).toBe('jwks');
  });

  it('requires the public URL in production (devices sign the relay origin), and refuses one that is not a relay URL', () => {
    expect(configError({ NODE_ENV: 'production', ...jwks }).message).toMatch(/^HERMETIC_PUBLIC_URL /);
    for (const bad of ['relay.example', 'ftp://relay.example', 'wss://user:pw@relay.example']) {
      expect(configError({ HERMETIC_PUBLIC_URL: bad }).message, bad).toMatch(/^HERMETIC_PUBLIC_URL /);
    }
    expect(loadConfig({ HERMETIC_PUBLIC_URL: 'ws://127.0.0.1:8080' }).publicOrigin).toBe('ws://127.0.0.1:8080');
  });
});
