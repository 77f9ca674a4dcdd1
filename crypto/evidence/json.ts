/**
 * JSON from other parties, read strictly: no member twice in an object (RFC 8259 leaves
 * duplicates to the reader, and two readers could then see two documents), a bounded
 * nesting depth (so no later walk over the value can exhaust the stack), and a canonical
 * form for comparing values (object members sorted, as RFC 8785 orders them).
 *
 * Every walk here is iterative: a value nested as deep as JSON.parse accepts is refused,
 * never a stack overflow.
 */

/** Deepest nesting of arrays and objects accepted in a receipt or an event. */
export const MAX_JSON_DEPTH = 32;

/**
 * Checks JSON text for a member name used twice in one object and for nesting deeper
 * than `maxDepth`. Returns a reason, or undefined when it is fine. Call it on text that
 * JSON.parse accepted.
 */
export function jsonProblem(text: string, maxDepth = MAX_JSON_DEPTH): string | undefined {
  // One set of member names per open object; undefined for an open array.
  const stack: Array<Set<string> | undefined> = [];
  let expectKey = false;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c === 0x22 /* " */) {
      let j = i + 1;
      let raw = '';
      let escaped = false;
      for (; j < text.length; j++) {
        const d = text.charCodeAt(j);
        if (d === 0x5c /* \ */) {
          escaped = true;
          j++;
          continue;
        }
        if (d === 0x22) break;
      }
      raw = text.slice(i, j + 1);
      if (expectKey) {
        const name = escaped ? (JSON.parse(raw) as string) : raw.slice(1, -1);
        const members = stack[stack.length - 1];
        if (members !== undefined) {
          if (members.has(name)) return `the member "${name.slice(0, 32)}" appears twice in one object`;
          members.add(name);
        }
        expectKey = false;
      }
      i = j;
    } else if (c === 0x7b /* { */ || c === 0x5b /* [ */) {
      stack.push(c === 0x7b ? new Set() : undefined);
      if (stack.length > maxDepth) return `nested deeper than ${maxDepth}`;
      expectKey = c === 0x7b;
    } else if (c === 0x7d /* } */ || c === 0x5d /* ] */) {
      stack.pop();
      expectKey = false;
    } else if (c === 0x2c /* , */) {
      expectKey = stack[stack.length - 1] !== undefined;
    }
  }
  return undefined;
}

/**
 * The canonical JSON of a value JSON.parse produced (or a plain JSON value): object
 * members sorted by name, no whitespace. Equal values give equal text whatever the order
 * their members came in. The value must be at most MAX_JSON_DEPTH deep (checked before).
 */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(',')}]`;
  const o = value as Record<string, unknown>;
  return `{${Object.keys(o)
    .sort()
    .map((k) => `${JSON.stringify(k)}:${canonicalJson(o[k])}`)
    .join(',')}}`;
}
