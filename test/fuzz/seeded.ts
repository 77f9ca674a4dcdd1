/**
 * The seeded short fuzz run of `npm test`: each target of the registry at its testRuns,
 * from one fixed seed, failing on any finding with its counterexample and replay
 * command. (`npm run fuzz` runs the same targets at a million inputs in all.)
 */
import { expect, it } from 'vitest';
import { type FuzzTarget, runTarget } from './harness.js';

export const SEED = 20_261_126;

export function fuzzSeeded(targets: readonly FuzzTarget[]): void {
  it.each(targets.map((t) => [t.name, t] as const))('%s', async (_name, target) => {
    const report = await runTarget(target, { runs: target.testRuns, seed: SEED });
    const findings = report.failures.map((f) => `${f.message}\n  input: ${f.counterexample}\n  reproduce: npm run fuzz -- --replay '${f.replay}'`);
    expect(findings).toEqual([]);
    expect(report.inputs).toBe(target.testRuns);
    // Structure-aware inputs reach both sides of the decoder: some pass every check,
    // others are refused.
    expect(report.accepted).toBeGreaterThan(0);
    expect(Object.values(report.rejected).reduce((a, b) => a + b, 0)).toBeGreaterThan(0);
  });
}
