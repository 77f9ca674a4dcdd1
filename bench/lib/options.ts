/** Command-line options of a benchmark suite: `--name value` pairs and flags, checked. */
export interface OptionReader {
  /** The value after `name`, or undefined when the option is absent. */
  value(name: string): string | undefined;
  /** A number option within `min..max`, `def` when absent. */
  num(name: string, def: number, min: number, max: number): number;
  /** The comma list of `--only`, each one of `phases`; all of them when absent. */
  phases<P extends string>(phases: readonly P[]): Set<P>;
}

/** Refuses options not in `known`, then reads the rest. */
export function readOptions(args: readonly string[], known: readonly string[]): OptionReader {
  for (const a of args) if (a.startsWith('--') && !known.includes(a)) throw new Error(`unknown option ${a}`);
  const value = (name: string): string | undefined => {
    const i = args.indexOf(name);
    if (i < 0) return undefined;
    const v = args[i + 1];
    if (v === undefined || v.startsWith('--')) throw new Error(`${name} needs a value`);
    return v;
  };
  return {
    value,
    num(name, def, min, max) {
      const raw = value(name);
      if (raw === undefined) return def;
      const v = Number(raw);
      if (!Number.isFinite(v) || v < min || v > max) throw new Error(`${name} must be a number in ${min}..${max}`);
      return v;
    },
    phases<P extends string>(all: readonly P[]): Set<P> {
      const only = value('--only');
      if (only === undefined) return new Set(all);
      return new Set(
        only.split(',').map((p) => {
          if (!(all as readonly string[]).includes(p)) throw new Error(`--only takes ${all.join(',')}`);
          return p as P;
        }),
      );
    },
  };
}
