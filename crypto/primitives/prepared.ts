/**
 * Shared by every backend's prepared private keys (backend.ts): whatever prints one
 * (String, JSON.stringify, util.inspect) gets a fixed placeholder. The key itself lives
 * in an ES private field of the subclass, which none of those walk.
 */
const INSPECT = Symbol.for('nodejs.util.inspect.custom');

export abstract class PreparedSecret {
  readonly #text: string;

  protected constructor(label: string) {
    this.#text = `[${label} redacted]`;
  }

  toString(): string {
    return this.#text;
  }

  toJSON(): string {
    return this.#text;
  }

  [INSPECT](): string {
    return this.#text;
  }
}
