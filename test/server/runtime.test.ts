/**
 * The relay's runtime: the Node flags `npm start` passes (the benchmark takes them from
 * the same list) and that this Node accepts; and the refusal to start anywhere but on
 * the runtimes the relay supports (Node 20.16+ with uWebSockets.js's native binding).
 */
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { RELAY_NODE_FLAGS, SUPPORTED_RELAY_RUNTIME, relayRuntimeProblem } from '../../server/runtime.js';
import { currentRelayRuntime } from '../../server/uws.js';
import { killAllRelays, makeTempDir, relayEnv, runCli } from '../helpers/relay.js';

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

describe('relay runtime check', () => {
  afterAll(async () => {
    await killAllRelays();
  });

  it('refuses to start on the JS fallback of uWebSockets.js, naming the supported Node versions', async () => {
    // UWS_USE_FALLBACK makes the package load its JS implementation, as it does on a
    // runtime it ships no binary for (Node 22+, musl). That implementation throws on the
    // relay's upgrade handler: one WebSocket upgrade would kill the process.
    const r = await runCli(['serve'], { ...relayEnv({}, makeTempDir()), UWS_USE_FALLBACK: '1' });
    expect(r.code).toBe(2);
    expect(r.stderr).toContain('uWebSockets.js');
    expect(r.stderr).toContain(SUPPORTED_RELAY_RUNTIME);
    expect(r.stdout).not.toContain('relay listening');
  });

  it('accepts Node 20.16+ with the native binding and refuses everything else', () => {
    const ok = { native: true, bindingDetail: 'uws_linux_x64_115.node', nodeVersion: '20.16.0', hasGetBuiltinModule: true };
    expect(relayRuntimeProblem(ok)).toBeUndefined();
    expect(relayRuntimeProblem({ ...ok, nodeVersion: '20.20.2' })).toBeUndefined();
    // Node 22: no binary for its ABI.
    expect(relayRuntimeProblem({ ...ok, native: false, bindingDetail: 'no uws_linux_x64_127.node', nodeVersion: '22.11.0' })).toContain(
      SUPPORTED_RELAY_RUNTIME,
    );
    // Node 18 and Node 20 before 20.16: a binary, but no process.getBuiltinModule.
    expect(relayRuntimeProblem({ ...ok, nodeVersion: '18.20.4', hasGetBuiltinModule: false })).toContain('process.getBuiltinModule');
    expect(relayRuntimeProblem({ ...ok, nodeVersion: '20.15.1', hasGetBuiltinModule: false })).toContain(SUPPORTED_RELAY_RUNTIME);
  });

  it('this test runner runs the relay on the native binding', () => {
    expect(relayRuntimeProblem(currentRelayRuntime())).toBeUndefined();
  });
});
