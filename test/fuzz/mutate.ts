/**
 * Structure-aware input generation: valid encodings produced by the real encoders (a
 * corpus), then mutated, so that inputs get past the first checks and reach the deep
 * paths of a decoder; mixed with purely random inputs.
 *
 * Mutations are plain data applied by a pure function, so fast-check can shrink a
 * failing input to its fewest and smallest mutations. Positions are taken modulo the
 * length of what they apply to, so any mutation applies to any corpus entry.
 */
import fc from 'fast-check';

// ---------------------------------------------------------------------------------------
// Bytes
// ---------------------------------------------------------------------------------------

/** Values that sit on the edges of length and count checks, written big-endian. */
const INTERESTING = [
  0n, 1n, 2n, 0x7fn, 0x80n, 0xffn, 0x100n, 0x7fffn, 0x8000n, 0xffffn, 0x1_0000n, 0x4_0000n, 0x4_0001n, 0x7fff_ffffn,
  0x8000_0000n, 0xffff_ffffn, 0x1_0000_0000n, 0x1f_ffff_ffff_ffffn, 0x20_0000_0000_0000n, 0xffff_ffff_ffff_ffffn,
] as const;

export type ByteMutation =
  | { readonly op: 'flip'; readonly at: number; readonly bit: number }
  | { readonly op: 'set'; readonly at: number; readonly value: number }
  /** Overwrites a big-endian integer of `width` bytes with an interesting value. */
  | { readonly op: 'int'; readonly at: number; readonly width: 1 | 2 | 4 | 8; readonly pick: number }
  /** Adds a small delta to a big-endian integer: a length field off by a few. */
  | { readonly op: 'nudge'; readonly at: number; readonly width: 1 | 2 | 4; readonly delta: number }
  | { readonly op: 'truncate'; readonly at: number }
  | { readonly op: 'extend'; readonly bytes: Uint8Array }
  | { readonly op: 'insert'; readonly at: number; readonly bytes: Uint8Array }
  | { readonly op: 'delete'; readonly at: number; readonly length: number }
  /** Repeats a range in place (grows a list, or a field). */
  | { readonly op: 'repeat'; readonly at: number; readonly length: number; readonly times: number }
  /** Replaces everything from `at` with another corpus entry's bytes from `from`. */
  | { readonly op: 'splice'; readonly at: number; readonly donor: number; readonly from: number };

/** Positions: biased to small values (headers) half of the time, uniform otherwise. */
const pos = fc.oneof(fc.nat({ max: 0xffff }), fc.noBias(fc.nat({ max: 0xffff })));
const smallBytes = fc.uint8Array({ minLength: 1, maxLength: 64 });

export const byteMutation: fc.Arbitrary<ByteMutation> = fc.oneof(
  { weight: 4, arbitrary: fc.record({ op: fc.constant('flip' as const), at: pos, bit: fc.nat({ max: 7 }) }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('set' as const), at: pos, value: fc.nat({ max: 255 }) }) },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('int' as const),
      at: pos,
      width: fc.constantFrom(1 as const, 2 as const, 4 as const, 8 as const),
      pick: fc.nat({ max: INTERESTING.length - 1 }),
    }),
  },
  {
    weight: 3,
    arbitrary: fc.record({
      op: fc.constant('nudge' as const),
      at: pos,
      width: fc.constantFrom(1 as const, 2 as const, 4 as const),
      delta: fc.integer({ min: -16, max: 16 }),
    }),
  },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('truncate' as const), at: pos }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('extend' as const), bytes: smallBytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('insert' as const), at: pos, bytes: smallBytes }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('delete' as const), at: pos, length: fc.integer({ min: 1, max: 64 }) }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('repeat' as const),
      at: pos,
      length: fc.integer({ min: 1, max: 128 }),
      times: fc.integer({ min: 1, max: 20 }),
    }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('splice' as const), at: pos, donor: fc.nat(), from: pos }) },
);

function concat(...parts: Uint8Array[]): Uint8Array {
  return Buffer.concat(parts);
}

/** A copy. (Not `.slice()`: on a Node Buffer that is a view.) */
function copy(b: Uint8Array): Uint8Array {
  return new Uint8Array(b);
}

function writeInt(out: Uint8Array, at: number, width: number, value: bigint): void {
  for (let i = width - 1; i >= 0; i--) {
    if (at + i < out.length) out[at + i] = Number(value & 0xffn);
    value >>= 8n;
  }
}

function readInt(b: Uint8Array, at: number, width: number): bigint {
  let v = 0n;
  for (let i = 0; i < width; i++) v = (v << 8n) | BigInt(at + i < b.length ? (b[at + i] as number) : 0);
  return v;
}

/** Applies one mutation to a copy of `b`; `corpus` supplies splice donors. */
export function applyByteMutation(b: Uint8Array, m: ByteMutation, corpus: readonly Uint8Array[]): Uint8Array {
  const len = b.length;
  switch (m.op) {
    case 'flip':
    case 'set':
    case 'int':
    case 'nudge': {
      if (len === 0) return b;
      const out = copy(b);
      const at = m.at % len;
      if (m.op === 'flip') out[at] = (out[at] as number) ^ (1 << m.bit);
      else if (m.op === 'set') out[at] = m.value;
      else if (m.op === 'int') writeInt(out, at, m.width, INTERESTING[m.pick] as bigint);
      else {
        const mask = (1n << BigInt(8 * m.width)) - 1n;
        writeInt(out, at, m.width, (readInt(b, at, m.width) + BigInt(m.delta)) & mask);
      }
      return out;
    }
    case 'truncate':
      return copy(b.subarray(0, m.at % (len + 1)));
    case 'extend':
      return concat(b, m.bytes);
    case 'insert': {
      const at = m.at % (len + 1);
      return concat(b.subarray(0, at), m.bytes, b.subarray(at));
    }
    case 'delete': {
      const at = m.at % (len + 1);
      return concat(b.subarray(0, at), b.subarray(at + m.length));
    }
    case 'repeat': {
      if (len === 0) return b;
      const at = m.at % len;
      const range = b.subarray(at, at + m.length);
      return concat(b.subarray(0, at + range.length), ...Array.from({ length: m.times }, () => range), b.subarray(at + range.length));
    }
    case 'splice': {
      const donor = corpus[m.donor % corpus.length] as Uint8Array;
      return concat(b.subarray(0, m.at % (len + 1)), donor.subarray(m.from % (donor.length + 1)));
    }
  }
}

export function applyByteMutations(b: Uint8Array, ms: readonly ByteMutation[], corpus: readonly Uint8Array[]): Uint8Array {
  let out = b;
  for (const m of ms) out = applyByteMutation(out, m, corpus);
  return out === b ? copy(b) : out;
}

export const mutationList = fc.array(byteMutation, { minLength: 1, maxLength: 4 });

/**
 * Inputs for a binary decoder: corpus entries as they are, mutated corpus entries, and
 * random bytes (with or without a corpus entry's first bytes, so the type byte is right).
 */
export function bytesFrom(corpus: readonly Uint8Array[], opts: { maxRandomLength?: number } = {}): fc.Arbitrary<Uint8Array> {
  if (corpus.length === 0) throw new Error('bytesFrom needs a corpus');
  corpus = corpus.map(copy);
  const pick = fc.nat({ max: corpus.length - 1 });
  const maxRandomLength = opts.maxRandomLength ?? 2048;
  return fc.oneof(
    { weight: 1, arbitrary: pick.map((i) => copy(corpus[i] as Uint8Array)) },
    {
      weight: 12,
      arbitrary: fc.tuple(pick, mutationList).map(([i, ms]) => applyByteMutations(corpus[i] as Uint8Array, ms, corpus)),
    },
    {
      weight: 2,
      arbitrary: fc
        .tuple(pick, fc.nat({ max: 64 }), fc.uint8Array({ maxLength: maxRandomLength }))
        .map(([i, keep, rest]) => concat((corpus[i] as Uint8Array).subarray(0, keep), rest)),
    },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: maxRandomLength }) },
  );
}

// ---------------------------------------------------------------------------------------
// Strings
// ---------------------------------------------------------------------------------------

/** Characters that sit on the edges of the patterns the decoders check. */
const EDGE_CHARS = [
  ...'AZaz09-_.~+/=%: \t\r\n"\\{}[],',
  '\u0000',
  '\u001f',
  '\u007f',
  '\u0080',
  'é',
  '€',
  '\u2028',
  '\ufeff',
  '\ud800',
  '\udc00',
  '😀',
];

export const edgeChar = fc.constantFrom(...EDGE_CHARS);

/** Strings mixing edge characters, ASCII and any code point. */
export const edgyString = (maxLength = 64): fc.Arbitrary<string> =>
  fc.string({
    unit: fc.oneof({ weight: 3, arbitrary: edgeChar }, { weight: 3, arbitrary: fc.string({ unit: 'binary-ascii', minLength: 1, maxLength: 1 }) }, { weight: 1, arbitrary: fc.string({ unit: 'binary', minLength: 1, maxLength: 1 }) }),
    maxLength,
  });

export type StringEdit =
  | { readonly op: 'truncate'; readonly at: number }
  | { readonly op: 'insert'; readonly at: number; readonly text: string }
  | { readonly op: 'replace'; readonly at: number; readonly text: string }
  | { readonly op: 'delete'; readonly at: number; readonly length: number }
  | { readonly op: 'repeat'; readonly times: number };

export const stringEdit: fc.Arbitrary<StringEdit> = fc.oneof(
  fc.record({ op: fc.constant('truncate' as const), at: pos }),
  fc.record({ op: fc.constant('insert' as const), at: pos, text: edgyString(4).filter((s) => s.length > 0) }),
  fc.record({ op: fc.constant('replace' as const), at: pos, text: edgyString(2).filter((s) => s.length > 0) }),
  fc.record({ op: fc.constant('delete' as const), at: pos, length: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ op: fc.constant('repeat' as const), times: fc.integer({ min: 2, max: 4 }) }),
);

export function applyStringEdit(s: string, e: StringEdit): string {
  const at = 'at' in e ? e.at % (s.length + 1) : 0;
  switch (e.op) {
    case 'truncate':
      return s.slice(0, at);
    case 'insert':
      return s.slice(0, at) + e.text + s.slice(at);
    case 'replace':
      return s.slice(0, at) + e.text + s.slice(at + e.text.length);
    case 'delete':
      return s.slice(0, at) + s.slice(at + e.length);
    case 'repeat':
      return s.repeat(e.times);
  }
}

/** Inputs for a string decoder: corpus strings as they are, edited, and random. */
export function stringsFrom(corpus: readonly string[], opts: { maxRandomLength?: number } = {}): fc.Arbitrary<string> {
  const pick = fc.nat({ max: corpus.length - 1 });
  return fc.oneof(
    { weight: 1, arbitrary: pick.map((i) => corpus[i] as string) },
    {
      weight: 6,
      arbitrary: fc
        .tuple(pick, fc.array(stringEdit, { minLength: 1, maxLength: 3 }))
        .map(([i, edits]) => edits.reduce(applyStringEdit, corpus[i] as string)),
    },
    { weight: 2, arbitrary: edgyString(opts.maxRandomLength ?? 128) },
  );
}

// ---------------------------------------------------------------------------------------
// JSON
// ---------------------------------------------------------------------------------------

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };

/** Values on the edges of the field checks: wrong types, bounds, lengths. */
const EDGE_VALUES: Json[] = [
  null,
  true,
  false,
  0,
  -0,
  -1,
  1,
  1.5,
  0xffff_ffff,
  0x1_0000_0000,
  Number.MAX_SAFE_INTEGER,
  Number.MAX_SAFE_INTEGER + 1,
  1e308,
  -1e308,
  '',
  'A',
  'A'.repeat(65),
  'A'.repeat(129),
  [],
  {},
  [null],
];

export const jsonEdgeValue: fc.Arbitrary<Json> = fc.oneof(
  { weight: 3, arbitrary: fc.constantFrom(...EDGE_VALUES) },
  { weight: 2, arbitrary: fc.jsonValue({ maxDepth: 2 }) as fc.Arbitrary<Json> },
  { weight: 1, arbitrary: edgyString(40) },
);

export type JsonMutation =
  | { readonly op: 'replace'; readonly at: number; readonly value: Json }
  | { readonly op: 'remove'; readonly at: number }
  | { readonly op: 'add'; readonly at: number; readonly key: string; readonly value: Json }
  | { readonly op: 'edit'; readonly at: number; readonly edit: StringEdit }
  | { readonly op: 'grow'; readonly at: number; readonly times: number };

export const jsonMutation: fc.Arbitrary<JsonMutation> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('replace' as const), at: pos, value: jsonEdgeValue }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('remove' as const), at: pos }) },
  {
    weight: 1,
    arbitrary: fc.record({
      op: fc.constant('add' as const),
      at: pos,
      key: fc.oneof(fc.constantFrom('type', 'id', '__proto__', 'constructor', 'keyId'), edgyString(8)),
      value: jsonEdgeValue,
    }),
  },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('edit' as const), at: pos, edit: stringEdit }) },
  { weight: 1, arbitrary: fc.record({ op: fc.constant('grow' as const), at: pos, times: fc.integer({ min: 1, max: 120 }) }) },
);

/** Arrays are grown up to this length (limits on counts are 100 or below). */
const MAX_GROWN_LENGTH = 256;

interface Slot {
  readonly parent: Json[] | { [k: string]: Json } | undefined;
  readonly key: string | number;
  readonly value: Json;
}

/** Every value in the tree with where it sits, in a fixed order (the root first). */
function slots(root: Json): Slot[] {
  const out: Slot[] = [{ parent: undefined, key: '', value: root }];
  for (let i = 0; i < out.length; i++) {
    const v = (out[i] as Slot).value;
    if (Array.isArray(v)) v.forEach((x, k) => out.push({ parent: v, key: k, value: x }));
    else if (v !== null && typeof v === 'object') for (const [k, x] of Object.entries(v)) out.push({ parent: v, key: k, value: x });
  }
  return out;
}

function setSlot(s: Slot, value: Json): void {
  if (Array.isArray(s.parent)) s.parent[s.key as number] = value;
  else if (s.parent) Object.defineProperty(s.parent, s.key, { value, enumerable: true, writable: true, configurable: true });
}

/** Applies one mutation to `root` in place (the root may be replaced: returns it). */
export function applyJsonMutation(root: Json, m: JsonMutation): Json {
  const all = slots(root);
  const choose = (list: Slot[]): Slot | undefined => (list.length === 0 ? undefined : list[m.at % list.length]);
  switch (m.op) {
    case 'replace': {
      // Generated values may be shared instances (constants): place copies.
      const s = choose(all) as Slot;
      if (s.parent === undefined) return structuredClone(m.value);
      setSlot(s, structuredClone(m.value));
      return root;
    }
    case 'remove': {
      const s = choose(all.filter((x) => x.parent !== undefined));
      if (!s) return root;
      if (Array.isArray(s.parent)) s.parent.splice(s.key as number, 1);
      else delete (s.parent as Record<string, Json>)[s.key];
      return root;
    }
    case 'add': {
      const s = choose(all.filter((x) => x.value !== null && typeof x.value === 'object' && !Array.isArray(x.value)));
      if (s) setSlot({ parent: s.value as Record<string, Json>, key: m.key, value: null }, structuredClone(m.value));
      return root;
    }
    case 'edit': {
      const s = choose(all.filter((x) => typeof x.value === 'string'));
      if (!s) return root;
      const edited = applyStringEdit(s.value as string, m.edit);
      if (s.parent === undefined) return edited;
      setSlot(s, edited);
      return root;
    }
    case 'grow': {
      const s = choose(all.filter((x) => Array.isArray(x.value) && x.value.length > 0));
      if (!s) return root;
      const arr = s.value as Json[];
      // Enough to cross any count limit, never so much that generating inputs is the work.
      const times = Math.min(m.times, MAX_GROWN_LENGTH - arr.length);
      const extra = Array.from({ length: Math.max(0, times) }, (_, i) => structuredClone(arr[i % arr.length] as Json));
      arr.push(...extra);
      return root;
    }
  }
}

/**
 * JSON text for a JSON decoder: corpus objects mutated as values (fields replaced,
 * removed, added, strings edited, arrays grown) then serialized; corpus texts mutated
 * as bytes; and random JSON and strings.
 */
export function jsonTextFrom(corpus: readonly Json[] | readonly object[]): fc.Arbitrary<string> {
  const values = corpus as readonly Json[];
  const texts = values.map((v) => new TextEncoder().encode(JSON.stringify(v)));
  const pick = fc.nat({ max: values.length - 1 });
  const decoder = new TextDecoder();
  return fc.oneof(
    { weight: 1, arbitrary: pick.map((i) => JSON.stringify(values[i])) },
    {
      weight: 10,
      arbitrary: fc
        .tuple(pick, fc.array(jsonMutation, { minLength: 1, maxLength: 3 }))
        .map(([i, ms]) => JSON.stringify(ms.reduce(applyJsonMutation, structuredClone(values[i]) as Json))),
    },
    {
      weight: 3,
      arbitrary: fc.tuple(pick, mutationList).map(([i, ms]) => decoder.decode(applyByteMutations(texts[i] as Uint8Array, ms, texts))),
    },
    { weight: 1, arbitrary: fc.json({ maxDepth: 3 }) },
    { weight: 1, arbitrary: edgyString(64) },
  );
}

export type { Json };
