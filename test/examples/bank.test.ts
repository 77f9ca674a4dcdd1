/**
 * `npm run bank` as a user runs it: bank A publishes signed payment events, bank B's two
 * workers consume them as a consumer group, one worker is killed after its ledger applied
 * a payment and before it acknowledged it, and every payment is applied exactly once.
 */
import { spawnSync } from 'node:child_process';
import { expect, it } from 'vitest';
import { REPO_ROOT } from '../helpers/relay.js';

it('applies every payment exactly once although a worker is killed mid-run', () => {
  const run = spawnSync('npm', ['run', '--silent', 'bank', '--', '--events', '48'], { cwd: REPO_ROOT, encoding: 'utf8', timeout: 240_000 });
  const out = `${run.stdout}${run.stderr}`;
  expect(run.status, out).toBe(0);
  expect(out).toMatch(/killed worker-1 \(SIGKILL\) after the ledger applied pay-\d{6}, before worker-1 could acknowledge it/);
  expect(out).toMatch(/published by bank A: +48 payment events/);
  expect(out).toMatch(/applied to bank B's ledger: +48 payments/);
  const killedAfter = /worker-1 killed after applying: +(pay-\d{6})/.exec(out)?.[1];
  expect(killedAfter).toBeDefined();
  // The payment applied but not acknowledged came again and the ledger refused it.
  expect(Number(/refused as repeats by the ledger: +(\d+)/.exec(out)?.[1])).toBeGreaterThanOrEqual(1);
  expect(Number(/delivered again after the kill: +(\d+)/.exec(out)?.[1])).toBeGreaterThanOrEqual(1);
  const [, w1, w2] = /\(worker-1 (\d+), worker-2 (\d+)\)/.exec(out) ?? [];
  expect(Number(w1)).toBeGreaterThan(0);
  expect(Number(w2)).toBeGreaterThan(0);
  expect(Number(w1) + Number(w2)).toBe(48);
  expect(out).toContain('balances sum to:                 0.00 EUR');
  expect(out).toContain('exactly once: yes');
}, 250_000);
