/**
 * The PGlite data-directory lock file. Two processes on one PGlite directory would
 * corrupt it, so the lock names its holder's pid: a live holder is refused, a dead one's
 * stale lock is taken over. (A second relay process on the same directory is tested
 * end to end in test/server/relay-process.test.ts.)
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DataDirLockedError, lockDataDir } from '../../server/storage/pglite.js';

const dirs: string[] = [];
function tempDir(): string {
  const d = fs.mkdtempSync(path.join(os.tmpdir(), 'hermetic-lock-'));
  dirs.push(d);
  return d;
}

afterAll(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

/** The pid of a process that has exited. */
function deadPid(): number {
  const r = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' });
  return Number(r.stdout);
}

describe('PGlite data directory lock', () => {
  it('writes a lock file with this pid and removes it on release', () => {
    const dir = tempDir();
    const release = lockDataDir(dir);
    const lockFile = path.join(dir, 'hermetic.lock');
    expect(fs.readFileSync(lockFile, 'utf8').trim()).toBe(String(process.pid));
    release();
    expect(fs.existsSync(lockFile)).toBe(false);
    release(); // idempotent
  });

  it('refuses a directory locked by another live process, naming the directory and its pid', () => {
    const dir = tempDir();
    const holder = process.ppid; // alive for as long as this test runs
    fs.writeFileSync(path.join(dir, 'hermetic.lock'), `${holder}\n`);
    let thrown: unknown;
    try {
      lockDataDir(dir);
    } catch (err) {
      thrown = err;
    }
    expect(thrown).toBeInstanceOf(DataDirLockedError);
    expect((thrown as DataDirLockedError).code).toBe('DATA_DIR_LOCKED');
    expect((thrown as Error).message).toContain(dir);
    expect((thrown as Error).message).toContain(`pid ${holder}`);
    // The holder's lock is left alone.
    expect(fs.readFileSync(path.join(dir, 'hermetic.lock'), 'utf8').trim()).toBe(String(holder));
  });

  it('takes over a stale lock left by a process that died', () => {
    const dir = tempDir();
    fs.writeFileSync(path.join(dir, 'hermetic.lock'), `${deadPid()}\n`);
    const release = lockDataDir(dir);
    expect(fs.readFileSync(path.join(dir, 'hermetic.lock'), 'utf8').trim()).toBe(String(process.pid));
    release();
  });

  it('release does not remove a lock that another process holds by then', () => {
    const dir = tempDir();
    const release = lockDataDir(dir);
    fs.writeFileSync(path.join(dir, 'hermetic.lock'), `${process.ppid}\n`);
    release();
    expect(fs.readFileSync(path.join(dir, 'hermetic.lock'), 'utf8').trim()).toBe(String(process.ppid));
  });
});
