/**
 * C2SP signed notes with Ed25519 keys, on both backends.
 *
 * Known answers: the verifier key and note of the signed-note spec's "Verifier keys"
 * example (c2sp.org/signed-note), and the PeterNeumann signer key, verifier key and note
 * from the documentation of golang.org/x/mod/sumdb/note (used as data). Ed25519 is
 * deterministic, so signing that text with that key must give that note byte for byte.
 */
import { inspect } from 'node:util';
import { describe, expect, it } from 'vitest';
import { EvidenceError } from '../../crypto/evidence/errors.js';
import { toBase64 } from '../../crypto/tlog/base64.js';
import { MAX_NOTE_BYTES, MAX_NOTE_SIGNATURES } from '../../crypto/tlog/limits.js';
import { NoteSigner, NoteVerifier, noteKeyId, openNote, parseNote, signNote } from '../../crypto/tlog/note.js';
import { BACKENDS, noble } from '../crypto/helpers.js';
import { expectEvidenceErrorSync } from './helpers.js';

const SPEC_VKEY = 'example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k';
const SPEC_NOTE =
  'This is an example message.\n\n' +
  '\u2014 example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXmRKuwHjG1Yu72IneyaQM=\n';

const GO_SKEY = 'PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz';
const GO_VKEY = 'PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW';
const GO_TEXT = "If you think cryptography is the answer to your problem,\nthen you don't know what your problem is.\n";
const GO_NOTE =
  GO_TEXT + '\n\u2014 PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotpRZb6KE6RyyBwJnAM=\n';

const seed = (b: number) => new Uint8Array(32).fill(b);

describe.each(BACKENDS)('signed notes (%s)', (_name, backend) => {
  it('parses the spec example verifier key and opens the spec example note', () => {
    const v = NoteVerifier.parse(SPEC_VKEY, backend);
    expect(v.name).toBe('example.com/foo');
    expect(v.keyId).toBe(0x530d903a);
    expect(noteKeyId(v.name, v.publicKey, backend)).toBe(0x530d903a);
    expect(v.toString()).toBe(SPEC_VKEY);
    const opened = openNote(SPEC_NOTE, [v]);
    expect(opened.text).toBe('This is an example message.\n');
    expect(opened.verifiedBy).toEqual([v]);
    expect(opened.unknown).toEqual([]);
  });

  it('reproduces the Go reference signer, verifier and note exactly', () => {
    const signer = NoteSigner.parse(GO_SKEY, backend);
    expect(signer.name).toBe('PeterNeumann');
    expect(signer.keyId).toBe(0xc74f20a3);
    expect(signer.verifier.toString()).toBe(GO_VKEY);
    expect(signer.exportSignerKey()).toBe(GO_SKEY);
    expect(signNote(GO_TEXT, signer)).toBe(GO_NOTE);
    const opened = openNote(new TextEncoder().encode(GO_NOTE), [NoteVerifier.parse(GO_VKEY, backend)]);
    expect(opened.text).toBe(GO_TEXT);
  });

  it('round trips with several signers, unknown ones ignored', () => {
    const a = NoteSigner.fromSeed('log.example/a', seed(1), backend);
    const b = NoteSigner.fromSeed('witness.example', seed(2), backend);
    const text = 'line one\n\nline three after an empty line\n';
    const note = signNote(text, [a, b]);
    const onlyA = openNote(note, [a.verifier]);
    expect(onlyA.text).toBe(text);
    expect(onlyA.verifiedBy.map((v) => v.name)).toEqual(['log.example/a']);
    expect(onlyA.unknown.map((s) => [s.name, s.keyId])).toEqual([['witness.example', b.keyId]]);
    expect(openNote(note, [a.verifier, b.verifier]).verifiedBy).toHaveLength(2);
    // Round trip through the key strings.
    const again = NoteSigner.parse(a.exportSignerKey(), backend);
    expect(signNote(text, again)).toBe(signNote(text, a));
    expect(NoteVerifier.parse(a.verifier.toString(), backend).toString()).toBe(a.verifier.toString());
  });

  it('a bad signature by a known key is BAD_SIGNATURE; unknown keys alone are INVALID_NOTE', () => {
    const a = NoteSigner.fromSeed('log.example/a', seed(1), backend);
    const other = NoteSigner.fromSeed('log.example/b', seed(3), backend);
    const note = signNote('hello\n', a);
    expectEvidenceErrorSync(() => openNote(note.replace('hello', 'jello'), [a.verifier]), 'BAD_SIGNATURE');
    expectEvidenceErrorSync(() => openNote(note, [other.verifier]), 'INVALID_NOTE');
    expectEvidenceErrorSync(() => openNote(note, []), 'INVALID_NOTE');
    // Same name, different key: a different key id, so it is unknown, not a failure.
    const sameName = NoteSigner.fromSeed('log.example/a', seed(4), backend);
    expectEvidenceErrorSync(() => openNote(note, [sameName.verifier]), 'INVALID_NOTE');
    // A flipped bit in the signature by a known key.
    const { signatures } = parseNote(note);
    const sig = signatures[0]!;
    const flipped = new Uint8Array(sig.signature);
    flipped[10]! ^= 1;
    const tampered = `hello\n\n\u2014 log.example/a ${toBase64(new Uint8Array([...u32(sig.keyId), ...flipped]))}\n`;
    expectEvidenceErrorSync(() => openNote(tampered, [a.verifier]), 'BAD_SIGNATURE');
    // A known key with a signature of the wrong length.
    const short = `hello\n\n\u2014 log.example/a ${toBase64(new Uint8Array([...u32(sig.keyId), 1, 2, 3]))}\n`;
    expectEvidenceErrorSync(() => openNote(short, [a.verifier]), 'BAD_SIGNATURE');
    // The same key signing twice.
    expectEvidenceErrorSync(() => openNote(signNote('hello\n', [a, a]), [a.verifier]), 'INVALID_NOTE');
  });
});

function u32(n: number): number[] {
  return [n >>> 24, (n >>> 16) & 0xff, (n >>> 8) & 0xff, n & 0xff];
}

describe('malformed notes and keys', () => {
  const signer = NoteSigner.fromSeed('log.example', seed(7), noble);
  const good = signNote('text\n', signer);
  const sigLine = good.slice('text\n\n'.length);
  const v = [signer.verifier];

  const notes: [string, string | Uint8Array][] = [
    ['missing final newline', good.slice(0, -1)],
    ['no blank line', `text\n${sigLine}`],
    ['no signatures', 'text\n\n'],
    ['en dash instead of em dash', good.replace('\u2014', '\u2013')],
    ['hyphen instead of em dash', good.replace('\u2014', '-')],
    ['no space after the dash', good.replace('\u2014 ', '\u2014')],
    ['no signature after the name', 'text\n\n\u2014 log.example\n'],
    ['bad base64', good.replace(/ [A-Za-z0-9+/]{8}/, ' !!!!!!!!')],
    ['unpadded base64', good.replace('=\n', '\n')],
    ['signature only a key id', `text\n\n\u2014 log.example ${toBase64(Uint8Array.of(1, 2, 3, 4))}\n`],
    ['name with a plus', good.replace('log.example', 'log+example')],
    ['carriage return', good.replace('text\n', 'text\r\n')],
    ['tab in the text', good.replace('text', 'te\txt')],
    ['NUL in the text', good.replace('text', 'te\u0000xt')],
    ['lone surrogate', good.replace('text', 'te\ud800xt')],
    ['invalid UTF-8 bytes', Uint8Array.of(0x74, 0xff, 0x0a, 0x0a)],
    ['oversize', 'a'.repeat(MAX_NOTE_BYTES) + good],
    ['oversize bytes', new Uint8Array(MAX_NOTE_BYTES + 1).fill(0x61)],
    ['too many signatures', 'text\n\n' + sigLine.repeat(MAX_NOTE_SIGNATURES + 1)],
    ['blank line after the signatures', `${good}\n`],
    ['not a string', 42 as unknown as string],
  ];
  it.each(notes)('%s -> INVALID_NOTE', (_label, note) => {
    expectEvidenceErrorSync(() => openNote(note, v), 'INVALID_NOTE');
  });

  it('the good note opens (so the cases above fail for their one defect)', () => {
    expect(openNote(good, v).text).toBe('text\n');
    // The last blank line separates the text: lines before it that look like signatures
    // are text.
    const tricky = `text\n\n${sigLine}`;
    expect(openNote(signNote(tricky, signer), v).text).toBe(tricky);
    expectEvidenceErrorSync(() => openNote(`${tricky}\n${sigLine}`, v), 'BAD_SIGNATURE');
  });

  it('accepts at least 16 signatures (unknown ones included)', () => {
    const others = Array.from({ length: 15 }, (_, i) => NoteSigner.fromSeed(`w${i}.example`, seed(20 + i), noble));
    const note = signNote('text\n', [signer, ...others]);
    expect(openNote(note, v).unknown).toHaveLength(15);
  });

  const vkeys: [string, string][] = [
    ['wrong key id', SPEC_VKEY.replace('530d903a', '530d903b')],
    ['uppercase key id', SPEC_VKEY.replace('530d903a', '530D903A')],
    ['short key id', SPEC_VKEY.replace('530d903a', '530d903')],
    ['missing part', 'example.com/foo+530d903a'],
    ['empty name', SPEC_VKEY.replace('example.com/foo', '')],
    ['name with a space', SPEC_VKEY.replace('example.com/foo', 'example com')],
    ['wrong type byte', `example.com/foo+530d903a+${toBase64(new Uint8Array(33).fill(2))}`],
    ['short key', `example.com/foo+530d903a+${toBase64(Uint8Array.of(1, 2, 3))}`],
    ['bad base64', 'example.com/foo+530d903a+!!!!'],
    ['oversize', 'a'.repeat(1000)],
  ];
  it.each(vkeys)('verifier key: %s -> INVALID_NOTE', (_label, vkey) => {
    expectEvidenceErrorSync(() => NoteVerifier.parse(vkey), 'INVALID_NOTE');
  });

  const skeys: [string, string][] = [
    ['no PRIVATE+KEY prefix', GO_SKEY.slice('PRIVATE+KEY+'.length)],
    ['wrong key id', GO_SKEY.replace('c74f20a3', 'c74f20a4')],
    ['a verifier key', GO_VKEY],
    ['short seed', `PRIVATE+KEY+PeterNeumann+c74f20a3+${toBase64(Uint8Array.of(1, 2))}`],
  ];
  it.each(skeys)('signer key: %s -> INVALID_NOTE, without echoing the key', (_label, skey) => {
    const err = expectEvidenceErrorSync(() => NoteSigner.parse(skey), 'INVALID_NOTE');
    expect(err.message).not.toContain('AYEKFALV');
  });

  it('signing refuses text without a final newline or with control characters', () => {
    expectEvidenceErrorSync(() => signNote('no newline', signer), 'INVALID_NOTE');
    expectEvidenceErrorSync(() => signNote('bell\u0007\n', signer), 'INVALID_NOTE');
    expectEvidenceErrorSync(() => signNote('x\n', []), 'INVALID_NOTE');
    expectEvidenceErrorSync(() => NoteSigner.fromSeed('bad name', seed(1)), 'INVALID_NOTE');
  });

  it('two verifiers with the same name and key id are refused', () => {
    expectEvidenceErrorSync(() => openNote(good, [signer.verifier, NoteVerifier.parse(signer.verifier.toString())]), 'INVALID_NOTE');
  });

  it('a signer never prints its secret', () => {
    const s = NoteSigner.parse(GO_SKEY, noble);
    const secretPart = GO_SKEY.split('+').slice(4).join('+');
    for (const printed of [String(s), JSON.stringify(s), inspect(s), inspect({ s }), `${s}`, JSON.stringify({ ...s })]) {
      expect(printed).not.toContain(secretPart);
      expect(printed).not.toContain('PRIVATE');
    }
    expect(String(s)).toContain('PeterNeumann+c74f20a3');
    expect(new EvidenceError('INVALID_NOTE').code).toBe('INVALID_NOTE');
  });
});
