/**
 * The relay's Node flags: `npm start` passes every one of them (the benchmark takes them
 * from the same list), and this Node accepts them.
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { describe, expect, it } from 'vitest';
import { RELAY_NODE_FLAGS } from '../../server/runtime.js';

describe('relay Node flags', () => {
  it('npm start runs the relay with every flag in RELAY_NODE_FLAGS', () => {
    const pkg = JSON.parse(fs.readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { scripts: Record<string, string> };
    const start = pkg.scripts.start!.split(/\s+/);
    expect(start.slice(0, 1)).toEqual(['node']);
    for (const flag of RELAY_NODE_FLAGS) expect(start).toContain(flag);
    expect(start.indexOf('bin/hermetic.js')).toBeGreaterThan(Math.max(...RELAY_NODE_FLAGS.map((f) => start.indexOf(f))));
  });

  it('this Node accepts them', () => {
    const r = spawnSync(process.execPath, [...RELAY_NODE_FLAGS, '-e', 'process.exit(0)'], { encoding: 'utf8' });
    expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 0, stderr: '' });
  });
});
