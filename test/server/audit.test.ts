/**
 * `hermetic audit` as a real process against a real relay (PGlite): receipts for
 * envelopes really sent and delivered are exported and verified offline (relay stopped)
 * and live; tampering with the export is caught with the right failure kinds (a flipped
 * receipt byte, a removed proof hash, a checkpoint with a bad signature, a forked
 * checkpoint signed with the log's own key, garbage files); a relay that rewrites its
 * history (or rolls it back) is caught through the state file.
 */
import { createHash, randomBytes } from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signReceipt } from '../../crypto/evidence/receipt.js';
import { signCheckpoint } from '../../crypto/tlog/checkpoint.js';
import { NoteSigner } from '../../crypto/tlog/note.js';
import { runAudit } from '../../server/audit/command.js';
import { exportLog } from '../../server/audit/export.js';
import { RelayClient } from '../../server/audit/relay-client.js';
import type { DeliverFrame } from '../../protocol/envelopes.js';
import type { TestDevice } from '../helpers/device.js';
import { killAllRelays, makeTempDir, runCli } from '../helpers/relay.js';
import { type LogIdentity, logIdentity, receiptPayload, signedReceipt, submitOk } from '../helpers/receipt-log.js';
import { PGLITE, type TestUser, World, firstDevice, sendMany } from '../mailbox/world.js';

afterAll(async () => {
  await killAllRelays();
});

interface Report {
  ok: boolean;
  key: { pinned: boolean } | null;
  head: { size: number; root: string } | null;
  checkpoints: { seen: number; verified: number };
  consistency: { checked: number; verified: number };
  receipts: { seen: number; verified: number; entries: number; rejectedEntries: number };
  anomalies: Record<string, number>;
  failures: { total: number; byKind: Record<string, number>; items: Array<{ kind: string; where: string; message: string; evidence?: { older: { size: number; root: string; note: string }; newer: { size: number; root: string; note: string } } }> };
  warnings: string[];
}

const FILES = ['key.json', 'checkpoints.jsonl', 'consistency.jsonl', 'receipts.jsonl', 'jwks.jsonl'];

function readLines(file: string): Array<Record<string, any>> {
  return fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .filter((l) => l.length > 0)
    .map((l) => JSON.parse(l) as Record<string, any>);
}

function writeLines(file: string, lines: ReadonlyArray<unknown>): void {
  fs.writeFileSync(file, lines.map((l) => `${JSON.stringify(l)}\n`).join(''));
}

/** Recomputes the manifest's file hashes, so that only the tampering itself is left to find. */
function reseal(dir: string): void {
  const m = JSON.parse(fs.readFileSync(path.join(dir, 'manifest.json'), 'utf8'));
  for (const f of FILES) {
    const bytes = fs.readFileSync(path.join(dir, f));
    m.files[f] = { sha256: createHash('sha256').update(bytes).digest('hex'), bytes: bytes.length };
  }
  fs.writeFileSync(path.join(dir, 'manifest.json'), JSON.stringify(m));
}

/** A copy of the export to tamper with. */
function copyOf(dir: string): string {
  const copy = path.join(makeTempDir('hermetic-audit-tamper-'), 'export');
  fs.cpSync(dir, copy, { recursive: true });
  return copy;
}

async function verify(args: readonly string[]): Promise<{ code: number | null; stdout: string; stderr: string; report: Report | undefined }> {
  const reportFile = path.join(makeTempDir('hermetic-audit-report-'), 'report.json');
  const r = await runCli(['audit', 'verify', ...args, '--report', reportFile], {});
  const report = fs.existsSync(reportFile) ? (JSON.parse(fs.readFileSync(reportFile, 'utf8')) as Report) : undefined;
  return { code: r.code, stdout: r.stdout, stderr: r.stderr, report };
}

const kinds = (r: Report | undefined): string[] => Object.keys(r?.failures.byKind ?? {}).sort();

describe('hermetic audit', () => {
  let world: World;
  let id: LogIdentity;
  let alice: TestUser;
  let bob: TestUser;
  let carol: TestUser;
  let bobPhone: TestDevice;
  let toBob: DeliverFrame[];
  let auditorToken: string;
  let tokenFile: string;
  let exportDir: string;
  let stateFile: string;
  /** Receipts submitted (distinct), and the flags they carry. */
  const submitted: string[] = [];

  beforeAll(async () => {
    world = await World.start(PGLITE, { env: { HERMETIC_LOG_CHECKPOINT_INTERVAL_MS: '100' } });
    alice = await world.user('alice');
    bob = await world.user('bob');
    carol = await world.user('carol');
    bobPhone = firstDevice(bob);
    const sender = await world.connect(alice);
    await sendMany(sender, bob, 6, 'to bob');
    await sendMany(sender, carol, 1, 'to carol');
    toBob = [...(await (await world.connect(bob, bobPhone)).waitDelivered(6))];
    const toCarol = [...(await (await world.connect(carol)).waitDelivered(1))];
    world.closeClients();
    id = await logIdentity(world.relay.baseUrl);

    // Several submissions, each with a checkpoint: a history of several sizes.
    const flagged = receiptPayload(bobPhone, toBob.slice(4, 6));
    const withFlags = signReceipt(bobPhone.identity, {
      ...flagged,
      entries: [
        { ...flagged.entries[0]!, flags: ['DUPLICATE', 'LATE'] },
        { ...flagged.entries[1]!, flags: ['GAP'], disposition: 'rejected', reason: 'DECRYPT_FAILED' },
      ],
    });
    const batches = [
      [signedReceipt(bobPhone, toBob.slice(0, 2))],
      [signedReceipt(bobPhone, toBob.slice(2, 3)), signedReceipt(bobPhone, toBob.slice(3, 4))],
      [signedReceipt(firstDevice(carol), toCarol)],
      [withFlags],
    ];
    for (const [i, b] of batches.entries()) {
      await submitOk(world.relay.baseUrl, i === 2 ? carol.token : bob.token, b, true);
      submitted.push(...b);
    }
    auditorToken = await world.issuer.mint('auditor', { claims: { hermetic_auditor: true } });
    tokenFile = path.join(makeTempDir('hermetic-audit-token-'), 'token');
    fs.writeFileSync(tokenFile, `${auditorToken}\n`, { mode: 0o600 });
    exportDir = path.join(makeTempDir('hermetic-audit-'), 'export');
    stateFile = path.join(makeTempDir('hermetic-audit-state-'), 'state.json');
  });

  afterAll(async () => {
    await world?.stop();
  });

  it('exports the log; verifies it live, with the pinned key, remembering the head in a state file', async () => {
    const exp = await runCli(['audit', 'export', '--relay', world.relay.baseUrl, '--token', `@${tokenFile}`, '--out', exportDir], {});
    expect(exp.code, exp.stderr).toBe(0);
    const manifest = JSON.parse(fs.readFileSync(path.join(exportDir, 'manifest.json'), 'utf8'));
    expect(manifest.format).toBe('hermetic-audit-export');
    expect(manifest.version).toBe(1);
    expect(manifest.counts.receipts).toBe(submitted.length);
    expect(manifest.counts.jwks).toBe(2);
    expect(readLines(path.join(exportDir, 'receipts.jsonl')).map((l) => l.receipt)).toEqual(submitted);
    const cps = readLines(path.join(exportDir, 'checkpoints.jsonl'));
    expect(cps.length).toBeGreaterThanOrEqual(4);
    expect(cps.at(-1)!.size).toBe(manifest.head.size);
    expect(readLines(path.join(exportDir, 'consistency.jsonl'))).toHaveLength(cps.length - 1);
    for (const f of FILES) {
      expect(createHash('sha256').update(fs.readFileSync(path.join(exportDir, f))).digest('hex'), f).toBe(manifest.files[f].sha256);
    }

    const live = await verify(['--relay', world.relay.baseUrl, '--token', auditorToken, '--key', id.verifier.toString(), '--state', stateFile]);
    expect(live.code, live.stdout + live.stderr).toBe(0);
    expect(live.report!.ok).toBe(true);
    expect(live.report!.key!.pinned).toBe(true);
    expect(live.report!.receipts.verified).toBeGreaterThanOrEqual(submitted.length);
    expect(live.stdout).toContain('RESULT: everything verified');
    const state = JSON.parse(fs.readFileSync(stateFile, 'utf8'));
    expect(state.checkpoints.at(-1).size).toBe(live.report!.head!.size);

    // Ranges: one party's receipts; an index range. Each verifies on its own.
    const all = readLines(path.join(exportDir, 'receipts.jsonl'));
    const partyDir = path.join(makeTempDir('hermetic-audit-'), 'party');
    const rangeDir = path.join(makeTempDir('hermetic-audit-'), 'range');
    const [party, range] = await Promise.all([
      runCli(['audit', 'export', '--relay', world.relay.baseUrl, '--token', auditorToken, '--out', partyDir, '--party', carol.userId], {}),
      runCli(['audit', 'export', '--relay', world.relay.baseUrl, '--token', auditorToken, '--out', rangeDir, '--from', String(all[1]!.index), '--to', String(all[2]!.index)], {}),
    ]);
    expect(party.code, party.stderr).toBe(0);
    expect(range.code, range.stderr).toBe(0);
    expect(readLines(path.join(partyDir, 'receipts.jsonl')).map((l) => l.receipt)).toEqual([submitted[3]]);
    expect(readLines(path.join(rangeDir, 'receipts.jsonl')).map((l) => l.index)).toEqual([all[1]!.index, all[2]!.index]);
    const [pv, rv] = await Promise.all([verify(['--in', partyDir, '--key', id.verifier.toString()]), verify(['--in', rangeDir, '--key', id.verifier.toString()])]);
    expect([pv.code, pv.report!.receipts.verified]).toEqual([0, 1]);
    expect([rv.code, rv.report!.receipts.verified]).toEqual([0, 2]);
    // A time range, in process: receipts submitted at or after the third one's time.
    const since = all[2]!.submittedAt as number;
    const timeDir = path.join(makeTempDir('hermetic-audit-'), 'time');
    const byTime = await exportLog({ client: new RelayClient(world.relay.baseUrl, auditorToken), out: timeDir, range: { from: { time: since } } });
    expect(byTime.auditor).toBe(true);
    expect(byTime.manifest.range).toEqual({ from: { time: since } });
    expect(readLines(path.join(timeDir, 'receipts.jsonl')).map((l) => l.index)).toEqual(all.filter((l) => l.submittedAt >= since).map((l) => l.index));
    // An export never overwrites.
    const again = await runCli(['audit', 'export', '--relay', world.relay.baseUrl, '--token', auditorToken, '--out', partyDir], {});
    expect(again.code).toBe(1);
    expect(again.stderr).toMatch(/not empty/);
  });

  it('a log that does not extend what the state file remembers is a FORK (rewritten or rolled back), and is not remembered', async () => {
    // What an earlier run would have remembered had the relay shown it another history:
    // checkpoints signed with the log's own key (from the relay's data directory), one
    // smaller than the log with another root, one larger than the log.
    const signer = NoteSigner.parse(fs.readFileSync(path.join(world.dataDir, 'log-signer.key'), 'utf8').trim());
    const head = JSON.parse(fs.readFileSync(stateFile, 'utf8')).checkpoints.at(-1);
    const forged = (size: number): { size: number; root: string; note: string } => {
      const root = randomBytes(32);
      return { size, root: root.toString('base64'), note: signCheckpoint({ origin: id.origin, size, rootHash: root, extensions: [] }, signer) };
    };
    // A size between two of the log's checkpoints, so that only a consistency proof can tell.
    const sizes = new Set(readLines(path.join(exportDir, 'checkpoints.jsonl')).map((c) => c.size as number));
    const between = Array.from({ length: head.size }, (_, i) => i).find((n) => n > 0 && !sizes.has(n)) ?? head.size - 1;
    const rewritten = forged(between);
    const ahead = forged(head.size + 10);
    const state = path.join(makeTempDir('hermetic-audit-state-'), 'state.json');
    const body = JSON.stringify({ format: 'hermetic-audit-state', version: 1, origin: id.origin, verifierKey: id.verifier.toString(), checkpoints: [rewritten, ahead] });
    fs.writeFileSync(state, body);
    const r = await verify(['--relay', world.relay.baseUrl, '--token', auditorToken, '--key', id.verifier.toString(), '--state', state]);
    expect(r.code, r.stdout + r.stderr).toBe(1);
    expect(r.report!.failures.byKind).toEqual({ FORK: 2 });
    const [first, second] = r.report!.failures.items;
    expect(first!.evidence!.older.note).toBe(rewritten.note);
    expect(first!.message).toMatch(sizes.has(between) ? /another root/ : /does not provably extend/);
    expect(second!.evidence!.older.note).toBe(ahead.note);
    expect(second!.message).toMatch(/rolled back/);
    expect(first!.evidence!.newer.size).toBe(r.report!.head!.size);
    // Receipts still verified; the forked head is not remembered.
    expect(r.report!.receipts.verified).toBeGreaterThanOrEqual(submitted.length);
    expect(fs.readFileSync(state, 'utf8')).toBe(body);

    // A token without the auditor claim: what it sees verifies, with a warning that it is not the whole log.
    const party = await verify(['--relay', world.relay.baseUrl, '--token', bob.token, '--key', id.verifier.toString()]);
    expect(party.code, party.stdout).toBe(0);
    expect(party.report!.warnings.join('\n')).toMatch(/no auditor claim/);
    expect(party.report!.receipts.verified).toBe(submitted.length - 1);

    // A state file that is not one: refused, exit 1.
    fs.writeFileSync(state, '{"format":"something else"}');
    const bad = await verify(['--relay', world.relay.baseUrl, '--token', auditorToken, '--state', state]);
    expect(bad.code).toBe(1);
    expect(bad.stderr).toMatch(/state file/);
  });

  it('verifies the export offline with the relay stopped: counts match, flags are tallied', async () => {
    await world.relay.stop();
    const r = await verify(['--in', exportDir, '--key', id.verifier.toString()]);
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const report = r.report!;
    expect(report.ok).toBe(true);
    expect(report.failures.total).toBe(0);
    expect(report.receipts).toEqual({ seen: submitted.length, verified: submitted.length, entries: 7, rejectedEntries: 1 });
    expect(report.anomalies).toMatchObject({ DUPLICATE: 1, LATE: 1, GAP: 1, REPLAY: 0 });
    expect(report.checkpoints.verified).toBe(report.checkpoints.seen);
    expect(report.consistency.verified).toBe(report.checkpoints.seen - 1);
    expect(r.stdout).toMatch(/DUPLICATE\s+1/);

    // Without --key: still verified, with a warning that the key is not pinned.
    const unpinned = await verify(['--in', exportDir, '--progress']);
    expect(unpinned.code).toBe(0);
    expect(unpinned.stderr).toContain(`verifying receipts [${'#'.repeat(30)}] ${submitted.length}/`);
    expect(unpinned.report!.key!.pinned).toBe(false);
    expect(unpinned.report!.warnings.join('\n')).toMatch(/not pinned/);

    // A pinned key that is not the log's: every checkpoint fails.
    const other = NoteSigner.generate(id.origin).verifier.toString();
    const wrong = await verify(['--in', exportDir, '--key', other]);
    expect(wrong.code).toBe(1);
    expect(kinds(wrong.report)).toEqual(['INVALID_NOTE', 'NO_CHECKPOINT']);
  });

  it('catches tampering: a flipped receipt byte, a removed proof hash, a checkpoint with a bad signature, a forked checkpoint, garbage', async () => {
    const receiptsOf = (dir: string): string => path.join(dir, 'receipts.jsonl');
    const checkpointsOf = (dir: string): string => path.join(dir, 'checkpoints.jsonl');

    // 1. One byte of a receipt's signature flipped.
    const flipped = copyOf(exportDir);
    const rl = readLines(receiptsOf(flipped));
    const jws = rl[1]!.receipt as string;
    const at = jws.lastIndexOf('.') + 10;
    rl[1]!.receipt = `${jws.slice(0, at)}${jws[at] === 'A' ? 'B' : 'A'}${jws.slice(at + 1)}`;
    writeLines(receiptsOf(flipped), rl);
    reseal(flipped);

    // 2. One hash removed from an inclusion proof.
    const shortProof = copyOf(exportDir);
    const sl = readLines(receiptsOf(shortProof));
    expect(sl[0]!.inclusion.length).toBeGreaterThan(0);
    sl[0]!.inclusion = sl[0]!.inclusion.slice(1);
    writeLines(receiptsOf(shortProof), sl);
    reseal(shortProof);

    // 3. A checkpoint whose signature does not verify.
    const badSig = copyOf(exportDir);
    const bl = readLines(checkpointsOf(badSig));
    const note = bl[2]!.note as string;
    const sigStart = note.lastIndexOf(' ') + 8;
    bl[2]!.note = `${note.slice(0, sigStart)}${note[sigStart] === 'A' ? 'B' : 'A'}${note.slice(sigStart + 1)}`;
    writeLines(checkpointsOf(badSig), bl);
    reseal(badSig);

    // 4. A checkpoint signed with the log's own key (from the relay's data directory)
    //    for a history that is not the log's: same size, another root.
    const forked = copyOf(exportDir);
    const signer = NoteSigner.parse(fs.readFileSync(path.join(world.dataDir, 'log-signer.key'), 'utf8').trim());
    const fl = readLines(checkpointsOf(forked));
    const victim = fl[2]!;
    const root = randomBytes(32);
    const forgedNote = signCheckpoint({ origin: id.origin, size: victim.size, rootHash: root, extensions: [] }, signer);
    fl[2] = { size: victim.size, root: root.toString('base64'), signedAt: victim.signedAt, note: forgedNote };
    writeLines(checkpointsOf(forked), fl);
    reseal(forked);

    // 5. Garbage in place of the receipts; 6. changed without resealing the manifest.
    const garbage = copyOf(exportDir);
    fs.writeFileSync(receiptsOf(garbage), randomBytes(3000));
    const unsealed = copyOf(exportDir);
    writeLines(receiptsOf(unsealed), readLines(receiptsOf(unsealed)).slice(1));

    const key = ['--key', id.verifier.toString()];
    const [r1, r2, r3, r4, r5, r6] = await Promise.all([flipped, shortProof, badSig, forked, garbage, unsealed].map((d) => verify(['--in', d, ...key])));

    expect(r1!.code).toBe(1);
    // The signature fails; the receipt's bytes no longer hash to the listed leaf nor lead to the root.
    expect(kinds(r1!.report)).toEqual(['BAD_SIGNATURE', 'INVALID_EXPORT', 'INVALID_PROOF']);
    expect(r1!.report!.failures.items.every((f) => f.where === 'receipts.jsonl line 2')).toBe(true);
    expect(r1!.report!.receipts.verified).toBe(submitted.length - 1);

    expect(r2!.code).toBe(1);
    expect(kinds(r2!.report)).toEqual(['INVALID_PROOF']);
    expect(r2!.report!.receipts.verified).toBe(submitted.length - 1);

    expect(r3!.code).toBe(1);
    expect(kinds(r3!.report)).toEqual(['BAD_SIGNATURE']);
    expect(r3!.report!.failures.items[0]!.where).toBe('checkpoints.jsonl line 3');
    expect(r3!.report!.receipts.verified).toBe(submitted.length);

    expect(r4!.code).toBe(1);
    expect(kinds(r4!.report)).toEqual(['FORK']);
    const forks = r4!.report!.failures.items;
    expect(forks.length).toBe(2);
    expect(forks[0]!.evidence!.newer.note).toBe(forgedNote);
    expect(forks[1]!.evidence!.older.note).toBe(forgedNote);
    expect(forks[0]!.evidence!.older.note).toBe(fl[1]!.note);
    expect(r4!.stdout).toMatch(/FORK\s+2/);

    expect(r5!.code).toBe(1);
    expect(kinds(r5!.report)).toEqual(['INVALID_EXPORT']);
    expect(r5!.report!.receipts.verified).toBe(0);
    expect(r5!.stderr).not.toMatch(/\n\s+at /);

    expect(r6!.code).toBe(1);
    expect(kinds(r6!.report)).toEqual(['INVALID_EXPORT']);
    expect(r6!.report!.failures.items.map((f) => f.message).join('\n')).toMatch(/receipts\.jsonl: its SHA-256 is not the one in the manifest/);
  });

  it('refuses a garbage manifest and missing files as INVALID_EXPORT, with no stack trace', async () => {
    const dir = copyOf(exportDir);
    fs.writeFileSync(path.join(dir, 'manifest.json'), randomBytes(500));
    fs.rmSync(path.join(dir, 'jwks.jsonl'));
    const r = await verify(['--in', dir, '--key', id.verifier.toString()]);
    expect(r.code).toBe(1);
    expect(kinds(r.report)).toContain('INVALID_EXPORT');
    expect(kinds(r.report)).toContain('MISSING_KEY');
    expect(r.report!.receipts.verified).toBe(0);
    expect(r.stdout + r.stderr).not.toMatch(/\n\s+at /);

    const empty = await verify(['--in', makeTempDir('hermetic-audit-empty-')]);
    expect(empty.code).toBe(1);
    expect(kinds(empty.report)).toEqual(['INVALID_EXPORT']);
  });

  it('usage errors exit 2, as a process and in process', async () => {
    const proc = await runCli(['audit', 'verify', '--in', exportDir, '--relay', 'http://127.0.0.1:1', '--token', 't'], {});
    expect(proc.code).toBe(2);
    expect(proc.stderr).toContain('usage:');
    const cases = [
      [],
      ['verify'],
      ['verify', '--in', exportDir, '--key', 'not a key'],
      ['export', '--relay', 'ftp://x', '--token', 't', '--out', 'x'],
      ['export', '--relay', 'http://127.0.0.1:1', '--token', 't', '--out', 'x', '--from', 'yesterday'],
      ['export', '--relay', 'http://127.0.0.1:1', '--token', 'a b', '--out', 'x'],
      ['verify', '--in', exportDir, '--bogus', '1'],
      ['verify', '--in'],
    ];
    for (const c of cases) {
      let err = '';
      const code = await runAudit(c, { out: () => undefined, err: (s) => (err += s), errIsTty: false });
      expect(code, c.join(' ')).toBe(2);
      expect(err).toContain('usage:');
    }
  });
});
