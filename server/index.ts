/**
 * Public surface of hermetic/server: embed the relay in a Node process, or use its
 * storage layer. The `hermetic` command (server/cli.ts) is built on these.
 */
export { startRelay, openDatabase } from './relay.js';
export type { Relay } from './relay.js';
export { ConfigError, loadConfig } from './config.js';
export { SUPPORTED_RELAY_RUNTIME, UnsupportedRuntimeError } from './runtime.js';
export type { AuthConfig, Config, LogConfig } from './config.js';
export { createLogger } from './log.js';
export { migrate, loadMigrations } from './storage/migrate.js';
export type { Database, DriverName, SqlExecutor } from './storage/database.js';
export { openPg } from './storage/pg.js';
export { DataDirLockedError, openPglite } from './storage/pglite.js';
