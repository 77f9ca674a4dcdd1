/**
 * Secret-holding objects of the session layer never print their bytes: JSON.stringify,
 * String() and util.inspect (console.log) all show a fixed placeholder. The bytes live in
 * ES private fields, which none of those walk, and these methods make the placeholder
 * explicit instead of an empty object.
 */
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

interface Redactable {
  toJSON(): string;
  toString(): string;
}

/** Installs the redacting toJSON / toString / inspect on a class prototype. */
export function redactSecrets(ctor: { prototype: object }, label: string): void {
  const text = `[${label} redacted]`;
  const proto = ctor.prototype as Redactable & Record<symbol, unknown>;
  Object.defineProperty(proto, 'toJSON', { value: () => text, enumerable: false });
  Object.defineProperty(proto, 'toString', { value: () => text, enumerable: false });
  Object.defineProperty(proto, INSPECT, { value: () => text, enumerable: false });
}
