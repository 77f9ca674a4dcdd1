/**
 * The SDK's stores: one contract for every store (memory, file, encrypted), the file
 * store's atomic commits (a commit cut short by a crash is wholly absent after a restart),
 * its lock, and encryption at rest (nothing readable on disk, a wrong key refused).
 * Also the payload codec and the arithmetic behind MAX_BODY_BYTES.
 */
import { fc, test as fcTest } from '@fast-check/vitest';
import fs from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { EncryptedStore, FileStore, MemoryStore, SdkError, type Store, limits } from '../../client-sdk/node.js';
import { decodePayload, encodePayload, type Payload } from '../../client-sdk/payload.js';
import { Transactor, decodeRecord, encodeRecord } from '../../client-sdk/stores/store.js';
import { paddedLength } from '../../crypto/padding.js';
import { CryptoError } from '../../crypto/errors.js';
import { MAX_ENVELOPE_BYTES } from '../../protocol/limits.js';
import { makeTempDir } from '../helpers/relay.js';

const te = new TextEncoder();
const b = (s: string) => te.encode(s);

async function storeError(p: Promise<unknown>): Promise<SdkError> {
  try {
    await p;
  } catch (err) {
    if (err instanceof SdkError) return err;
    throw err;
  }
  throw new Error('expected an SdkError');
}

const STORES: Array<[string, () => Promise<Store>]> = [
  ['memory', async () => new MemoryStore()],
  ['file', () => FileStore.open(makeTempDir('hermetic-store-'))],
  ['encrypted memory', () => EncryptedStore.open(new MemoryStore(), { key: new Uint8Array(32).fill(3) })],
];

describe.each(STORES)('store contract: %s', (_name, open) => {
  it('gets, lists by prefix in key order, and applies a commit in order', async () => {
    const s = await open();
    await s.commit([
      { ns: 'a', key: 'k2', value: b('two') },
      { ns: 'a', key: 'k1', value: b('one') },
      { ns: 'a', key: 'x', value: b('other') },
      { ns: 'b', key: 'k1', value: b('elsewhere') },
      { ns: 'a', key: 'k3', value: b('gone soon') },
      { ns: 'a', key: 'k3', delete: true },
    ]);
    expect(await s.get('a', 'k1')).toEqual(b('one'));
    expect(await s.get('a', 'k3')).toBeUndefined();
    expect((await s.list('a', 'k')).map(([k, v]) => [k, new TextDecoder().decode(v)])).toEqual([
      ['k1', 'one'],
      ['k2', 'two'],
    ]);
    expect((await s.list('a')).map(([k]) => k)).toEqual(['k1', 'k2', 'x']);
    // Returned values are copies.
    const v = (await s.get('a', 'k1'))!;
    v[0] = 0;
    expect(await s.get('a', 'k1')).toEqual(b('one'));
    await s.close();
  });

  it('transactions read their own writes and commit once', async () => {
    const s = await open();
    const db = new Transactor(s);
    const seen = await db.run(async (tx) => {
      tx.put('n', 'a', b('1'));
      tx.delete('n', 'missing');
      return [await tx.get('n', 'a'), (await tx.list('n')).length];
    });
    expect(seen).toEqual([b('1'), 1]);
    await expect(db.run(async (tx) => {
      tx.put('n', 'b', b('2'));
      throw new Error('abort');
    })).rejects.toThrow('abort');
    expect(await s.get('n', 'b')).toBeUndefined();
    await s.close();
  });
});

describe('file store', () => {
  it('never reports a commit durable that a short write cut off, and keeps later commits readable', async () => {
    // A file-size limit makes the kernel write part of a record and return a short count
    // (then EFBIG): the situation of a disk that fills up mid-write.
    const dir = makeTempDir('hermetic-store-torn-');
    const script = path.join(dir, 'writer.mts');
    const storeModule = path.resolve('client-sdk/stores/file.ts');
    fs.writeFileSync(
      script,
      `import { FileStore } from ${JSON.stringify(storeModule)};
const s = await FileStore.open(process.argv[2]);
const out = [];
await s.commit([{ ns: 'inbox', key: 'a', value: new Uint8Array(100) }]);
for (const [key, n] of [['b', 20000], ['c', 10]]) {
  try { await s.commit([{ ns: 'inbox', key, value: new Uint8Array(n).fill(7) }]); out.push(key + ':ok'); }
  catch { out.push(key + ':failed'); }
}
console.log(JSON.stringify(out));
await s.close();
`,
    );
    const data = path.join(dir, 'data');
    fs.mkdirSync(data);
    const { execFileSync } = await import('node:child_process');
    const printed = execFileSync('bash', ['-c', `trap '' XFSZ; ulimit -f 16; exec node --import tsx "$0" "$1"`, script, data], { encoding: 'utf8' });
    const outcome = JSON.parse(printed.trim().split('\n').pop()!) as string[];
    const s = await FileStore.open(data);
    expect(await s.get('inbox', 'a')).toBeDefined();
    // Whatever the writer was told is what a restart finds.
    for (const o of outcome) {
      const [key, result] = o.split(':');
      expect([key, (await s.get('inbox', key!)) !== undefined]).toEqual([key, result === 'ok']);
    }
    expect(outcome[0]).toBe('b:failed');
    await s.close();
  });

  it('does not reject a durable commit when compaction fails, and compacts later', async () => {
    const dir = makeTempDir('hermetic-store-compact-');
    fs.mkdirSync(path.join(dir, 'snapshot.tmp')); // the snapshot cannot be written
    const s = await FileStore.open(dir);
    const big = new Uint8Array(1024 * 1024).fill(1);
    for (let i = 0; i < 6; i++) await s.commit([{ ns: 'x', key: `k${i}`, value: big }]);
    await s.commit([{ ns: 'inbox', key: 'msg', value: new Uint8Array(10) }]);
    await s.close();
    fs.rmdirSync(path.join(dir, 'snapshot.tmp'));
    const s2 = await FileStore.open(dir);
    expect((await s2.get('x', 'k5'))?.length).toBe(big.length);
    expect((await s2.get('inbox', 'msg'))?.length).toBe(10);
    await s2.close();
  });

  it('survives a restart, drops a commit cut short by a crash, and compacts', async () => {
    const dir = makeTempDir('hermetic-store-');
    const s1 = await FileStore.open(dir);
    await s1.commit([{ ns: 'n', key: 'a', value: b('first') }]);
    await s1.commit([{ ns: 'n', key: 'b', value: b('second') }, { ns: 'n', key: 'a', delete: true }]);
    await s1.close();
    // A crash in the middle of appending the next commit: its record is cut short.
    const log = path.join(dir, 'log');
    const full = fs.readFileSync(log);
    const s2 = await FileStore.open(dir);
    await s2.commit([{ ns: 'n', key: 'c', value: new Uint8Array(1000).fill(7) }]);
    await s2.close();
    const withThird = fs.readFileSync(log);
    fs.writeFileSync(log, withThird.subarray(0, full.length + 100));
    const s3 = await FileStore.open(dir);
    expect(await s3.get('n', 'a')).toBeUndefined();
    expect(await s3.get('n', 'b')).toEqual(b('second'));
    expect(await s3.get('n', 'c')).toBeUndefined();
    // The torn tail is gone: new commits append after the last whole one.
    await s3.commit([{ ns: 'n', key: 'd', value: b('fourth') }]);
    // Enough writes to fold the log into a snapshot.
    for (let i = 0; i < 5; i++) await s3.commit([{ ns: 'bulk', key: String(i), value: new Uint8Array(1024 * 1024).fill(i) }]);
    await s3.close();
    expect(fs.existsSync(path.join(dir, 'snapshot'))).toBe(true);
    expect(fs.statSync(log).size).toBeLessThan(4 * 1024 * 1024);
    const s4 = await FileStore.open(dir);
    expect(await s4.get('n', 'd')).toEqual(b('fourth'));
    expect((await s4.get('bulk', '4'))?.[0]).toBe(4);
    expect((await s4.list('bulk')).length).toBe(5);
    await s4.close();
  });

  it('is locked against a second user, and a lock left by a dead process is taken over', async () => {
    const dir = makeTempDir('hermetic-store-');
    const s = await FileStore.open(dir);
    expect((await storeError(FileStore.open(dir))).message).toContain(`in use by process ${process.pid}`);
    await s.close();
    // A process that no longer exists.
    fs.writeFileSync(path.join(dir, 'lock'), '999999999');
    const again = await FileStore.open(dir);
    await again.close();
  });

  it('refuses a snapshot that fails its checksum (STORE_CORRUPT)', async () => {
    const dir = makeTempDir('hermetic-store-');
    const s = await FileStore.open(dir);
    for (let i = 0; i < 5; i++) await s.commit([{ ns: 'bulk', key: String(i), value: new Uint8Array(1024 * 1024).fill(i) }]);
    await s.close();
    const snap = path.join(dir, 'snapshot');
    const bytes = fs.readFileSync(snap);
    bytes[bytes.length - 1]! ^= 1;
    fs.writeFileSync(snap, bytes);
    expect((await storeError(FileStore.open(dir))).code).toBe('STORE_CORRUPT');
  });
});

describe('encryption at rest', () => {
  it('keeps nothing readable on disk; a wrong passphrase or key is refused', async () => {
    const dir = makeTempDir('hermetic-store-');
    const secret = 'a-session-state-marker-QX9';
    const s = await EncryptedStore.open(await FileStore.open(dir), { passphrase: 'correct horse' });
    await s.commit([{ ns: 'sessions', key: 'bob d1', value: b(secret) }]);
    await s.close();
    for (const f of fs.readdirSync(dir)) expect(fs.readFileSync(path.join(dir, f)).includes(Buffer.from(secret)), f).toBe(false);
    // A failed open leaves the inner store to its owner, open.
    for (const wrong of [{ passphrase: 'wrong' }, { key: new Uint8Array(32) }]) {
      const inner = await FileStore.open(dir);
      expect((await storeError(EncryptedStore.open(inner, wrong))).code).toBe('STORE_KEY_INVALID');
      await inner.close();
    }
    const reopened = await EncryptedStore.open(await FileStore.open(dir), { passphrase: 'correct horse' });
    expect(await reopened.get('sessions', 'bob d1')).toEqual(b(secret));
    await reopened.close();
  });

  it('binds each value to its slot: a value moved to another key does not open (STORE_CORRUPT)', async () => {
    const inner = new MemoryStore();
    const s = await EncryptedStore.open(inner, { key: new Uint8Array(32).fill(9) });
    await s.commit([{ ns: 'sessions', key: 'alice', value: b('for alice') }]);
    const box = (await inner.get('sessions', 'alice'))!;
    await inner.commit([{ ns: 'sessions', key: 'mallory', value: box }]);
    expect((await storeError(s.get('sessions', 'mallory'))).code).toBe('STORE_CORRUPT');
    expect(String(s)).toBe('EncryptedStore');
  });
});

/** A memory store whose commits take a while (or fail on demand), counting them. */
class SlowStore extends MemoryStore {
  commits = 0;
  failNext = false;
  override async commit(writes: Parameters<MemoryStore['commit']>[0]): Promise<void> {
    this.commits++;
    await new Promise((r) => setTimeout(r, 20));
    if (this.failNext) {
      this.failNext = false;
      throw new Error('disk full');
    }
    return super.commit(writes);
  }
}

describe('group commit', () => {
  it('commits transactions that end during a commit together, each resolving once its writes are stored', async () => {
    const s = new SlowStore();
    const db = new Transactor(s);
    const runs = Array.from({ length: 10 }, (_, i) =>
      db.run(async (tx) => {
        const prev = await tx.get('n', 'counter');
        const n = prev === undefined ? 0 : Number(new TextDecoder().decode(prev));
        tx.put('n', 'counter', b(String(n + 1)));
        tx.put('n', `k${i}`, b(String(i)));
        return n + 1;
      }).then(async (n) => [n, await s.get('n', `k${i}`)] as const),
    );
    const out = await Promise.all(runs);
    // Each transaction read the one before it (committed or not), and was stored when it resolved.
    expect(out).toEqual(Array.from({ length: 10 }, (_, i) => [i + 1, b(String(i))]));
    expect(await s.get('n', 'counter')).toEqual(b('10'));
    expect(s.commits).toBeLessThan(10);
    // A transaction without writes resolves after what it could read is stored.
    const w = db.run((tx) => tx.put('n', 'late', b('x')));
    const seen = db.run((tx) => tx.get('n', 'late')).then(async (v) => [v, await s.get('n', 'late')]);
    await w;
    expect(await seen).toEqual([b('x'), b('x')]);
  });

  it('a failed commit rejects its transactions and those that read their writes; nothing of them is stored', async () => {
    const s = new SlowStore();
    const db = new Transactor(s);
    await db.run((tx) => tx.put('n', 'base', b('0')));
    s.failNext = true;
    const first = db.run((tx) => tx.put('n', 'a', b('1')));
    // Runs while `first` commits, over its writes.
    const second = db.run(async (tx) => {
      tx.put('n', 'b', (await tx.get('n', 'a')) ?? b('none'));
    });
    await expect(first).rejects.toThrow('disk full');
    await expect(second).rejects.toThrow('disk full');
    expect(await s.get('n', 'a')).toBeUndefined();
    expect(await s.get('n', 'b')).toBeUndefined();
    // The store goes on working, without the forgotten writes.
    expect(await db.run(async (tx) => [await tx.get('n', 'base'), await tx.get('n', 'a')])).toEqual([b('0'), undefined]);
    // A store that throws rather than rejects (closed) fails the transaction the same way.
    await s.close();
    const closed = new MemoryStore();
    closed.commit = () => {
      throw new Error('closed');
    };
    await expect(new Transactor(closed).run((tx) => tx.put('n', 'x', b('1')))).rejects.toThrow('closed');
  });
});

describe('store records', () => {
  const record = fc.letrec((tie) => ({
    value: fc.oneof(
      { depthSize: 'small' },
      fc.constant(null),
      fc.boolean(),
      fc.double(),
      fc.constant(-0),
      fc.maxSafeNat(),
      fc.integer(),
      fc.string({ unit: 'grapheme' }),
      fc.uint8Array({ maxLength: 300 }),
      fc.array(tie('value'), { maxLength: 4 }),
      fc.dictionary(fc.string().filter((k) => k !== '__proto__'), tie('value'), { maxKeys: 4 }),
    ),
  })).value;

  fcTest.prop([record])('round-trip every value a record holds, bytes as bytes', (v) => {
    expect(decodeRecord(encodeRecord(v))).toEqual(v);
  });

  it('leave out undefined properties as JSON does, and still read records written as JSON', () => {
    expect(decodeRecord(encodeRecord({ a: 1, b: undefined, c: [undefined] }))).toEqual({ a: 1, c: [null] });
    const legacy = te.encode(JSON.stringify({ v: 1, state: { $b: 'AQID' }, n: 5 }));
    expect(decodeRecord(legacy)).toEqual({ v: 1, state: new Uint8Array([1, 2, 3]), n: 5 });
  });

  it('refuse what is cut short, has trailing bytes, an unknown tag or format (STORE_CORRUPT)', () => {
    const good = encodeRecord({ state: new Uint8Array(40), list: [1, 2, 3] });
    for (const bad of [good.subarray(0, good.length - 1), Uint8Array.of(...good, 0), Uint8Array.of(0, 1, 99), Uint8Array.of(0, 2, 0)]) {
      expect(() => decodeRecord(bad)).toThrow(expect.objectContaining({ code: 'STORE_CORRUPT' }));
    }
    expect(() => encodeRecord({ when: new Date(0) })).toThrow();
  });
});

describe('payload', () => {
  it('the largest body fits an envelope even as an initial message', () => {
    expect(paddedLength(limits.MAX_BODY_BYTES + limits.PAYLOAD_HEADER_MAX_BYTES)).toBeLessThanOrEqual(limits.MAX_PADDED_PAYLOAD_BYTES);
    expect(limits.MAX_PADDED_PAYLOAD_BYTES + limits.ENVELOPE_OVERHEAD_BYTES).toBeLessThanOrEqual(MAX_ENVELOPE_BYTES);
    const p: Payload = { type: 'message', sentAt: 1, messageId: new Uint8Array(16), number: 0xffff_ffff, to: undefined, groupId: 'g'.repeat(64), kind: 'bytes', body: new Uint8Array(limits.MAX_BODY_BYTES) };
    expect(encodePayload(p).length).toBeLessThanOrEqual(limits.MAX_BODY_BYTES + limits.PAYLOAD_HEADER_MAX_BYTES);
    const q: Payload = { ...p, to: 'u'.repeat(128), groupId: undefined };
    expect(encodePayload(q).length).toBeLessThanOrEqual(limits.MAX_BODY_BYTES + limits.PAYLOAD_HEADER_MAX_BYTES);
  });

  it('round-trips every type', () => {
    const id = new Uint8Array(16).fill(5);
    const all: Payload[] = [
      { type: 'message', sentAt: 1_800_000_000_123, messageId: id, number: 7, to: 'bob', groupId: undefined, kind: 'text', body: b('hi') },
      { type: 'message', sentAt: 0, messageId: id, number: 1, to: undefined, groupId: 'team', kind: 'json', body: b('{"a":1}') },
      { type: 'distribution', sentAt: 2, messageId: id, groupId: 'team', distribution: new Uint8Array([0x13, 1, 2]) },
      { type: 'reset', sentAt: 3, messageId: id, failedEnvelopeId: new Uint8Array(16).fill(1) },
      { type: 'receipt', sentAt: 4, messageId: id, jws: 'eyJhbGciOiJFZERTQSJ9.e30.c2ln' },
      { type: 'message', sentAt: 5, messageId: id, number: 9, to: 'bob', groupId: undefined, kind: 'event', body: b('a.b.c') },
    ];
    for (const p of all) expect(decodePayload(encodePayload(p))).toEqual(p);
    // Version 1 payloads (no message number) are still read.
    const v2 = encodePayload(all[0]!);
    const v1 = new Uint8Array([1, ...v2.subarray(1, 26), ...v2.subarray(30)]);
    expect(decodePayload(v1)).toEqual({ ...all[0], number: undefined });
    // A message number 0 is refused; a receipt that is not ASCII is refused.
    const zero = v2.slice();
    zero.fill(0, 26, 30);
    expect(() => decodePayload(zero)).toThrow(expect.objectContaining({ code: 'INVALID_MESSAGE' }));
    const r = encodePayload(all[4]!);
    r[r.length - 1] = 0x0a;
    expect(() => decodePayload(r)).toThrow(expect.objectContaining({ code: 'INVALID_MESSAGE' }));
  });

  fcTest.prop([fc.uint8Array({ maxLength: 200 })])('decoding arbitrary bytes throws nothing but CryptoError', (bytes) => {
    try {
      decodePayload(bytes);
    } catch (err) {
      expect(err).toBeInstanceOf(CryptoError);
    }
  });
});
