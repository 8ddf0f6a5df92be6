/**
 * The serving knobs autotune searches, their axes (the values each may take) and how a knob set is
 * written back: as the YAML keys of the config file and as `serve` flags. Every value is parsed by
 * the setting's own parser (config/settings.ts), so the tuner never proposes what `serve` rejects.
 */
import { InvalidValue, type ParseContext, SETTINGS } from "../config/settings.js";

/** The engines a knob set may name; one today, so its axis has a single cell. */
export const ENGINES = ["llama"] as const;
export type EngineName = (typeof ENGINES)[number];

/** KV-cache bits; undefined is the unquantized (F16) cache, spelled "off" on an axis. */
export type KvBits = 4 | 8 | undefined;

/** One point of the search space. */
export interface Knobs {
  engine: EngineName;
  kvBits: KvBits;
  maxBatch: number;
  maxContext: number;
  threads: number;
}

export type AxisName = keyof Knobs;

/** The order stage 2 visits the axes in: the knobs that move decode speed most first. */
export const AXIS_ORDER: readonly AxisName[] = ["threads", "maxBatch", "kvBits", "maxContext", "engine"];

/** The values each knob may take, in neighbour order (a hill-climb step moves one cell). */
export interface SearchSpace {
  engine: readonly EngineName[];
  kvBits: readonly KvBits[];
  maxBatch: readonly number[];
  maxContext: readonly number[];
  threads: readonly number[];
}

/** A bad axis flag: one line, exit 64. */
export class AxisError extends Error {
  override readonly name = "AxisError";
}

/** The flag that overrides each axis. */
export const AXIS_FLAGS: Record<Exclude<AxisName, "engine">, string> = {
  kvBits: "--kv-bits-axis",
  maxBatch: "--max-batch-axis",
  maxContext: "--max-context-axis",
  threads: "--threads-axis",
};

const KV_OFF = new Set(["off", "f16", "none"]);

/** The rank of a KV setting on its axis: unquantized, then 8 bits, then 4 (less memory each step). */
const kvRank = (bits: KvBits): number => (bits === undefined ? 0 : bits === 8 ? 1 : 2);

/**
 * Parses an axis flag such as "1,2,4": every cell through the setting's parser, no empty cell, no
 * duplicate; sorted into neighbour order (ascending; KV bits off, 8, 4).
 */
export function parseAxis<K extends Exclude<AxisName, "engine">>(
  name: K,
  raw: string,
  ctx: ParseContext,
): Knobs[K][] {
  const flag = AXIS_FLAGS[name];
  const cells = raw.split(",").map((cell) => cell.trim());
  const values: Knobs[K][] = [];
  for (const cell of cells) {
    if (cell === "") throw new AxisError(`${flag} has an empty cell (got ${JSON.stringify(raw)})`);
    let value: Knobs[K];
    try {
      value = (
        name === "kvBits" && KV_OFF.has(cell.toLowerCase()) ? undefined : SETTINGS[name].parse(cell, ctx)
      ) as Knobs[K];
    } catch (error) {
      if (error instanceof InvalidValue)
        throw new AxisError(`${flag} cell ${JSON.stringify(cell)} ${error.message}`);
      throw error;
    }
    // threads also takes "auto" in the config; an axis needs the counts themselves.
    if (name === "threads" && typeof value !== "number")
      throw new AxisError(`${flag} cell ${JSON.stringify(cell)} must be a whole number from 1 to 1024`);
    if (values.includes(value)) throw new AxisError(`${flag} lists ${cell} twice`);
    values.push(value);
  }
  return sortAxis(name, values);
}

export function sortAxis<K extends AxisName>(name: K, values: Knobs[K][]): Knobs[K][] {
  // Array.prototype.sort moves undefined to the end without asking the comparator: sort ranks.
  if (name === "kvBits")
    return [0, 1, 2].flatMap((rank) => values.filter((v) => kvRank(v as KvBits) === rank));
  if (name === "engine") return [...values];
  return [...values].sort((a, b) => (a as number) - (b as number));
}

/** Distinct values in neighbour order. */
function axisOf<K extends AxisName>(name: K, values: Knobs[K][]): Knobs[K][] {
  const unique: Knobs[K][] = [];
  for (const v of values) if (!unique.includes(v)) unique.push(v);
  return sortAxis(name, unique);
}

/** Powers of two from 1 up to `max`, inclusive of `max` itself. */
function ladder(max: number): number[] {
  const out: number[] = [];
  for (let n = 1; n < max; n *= 2) out.push(n);
  out.push(max);
  return out;
}

/** The default space around a starting point: every core count step, batch widths, every KV type. */
export function defaultSearchSpace(start: Knobs, cpuCount: number, targetBatch: number): SearchSpace {
  return {
    engine: [...ENGINES],
    kvBits: [undefined, 8, 4],
    maxBatch: axisOf("maxBatch", [...ladder(Math.max(2 * targetBatch, start.maxBatch)), targetBatch]),
    maxContext: [start.maxContext],
    threads: axisOf("threads", [...ladder(Math.max(1, cpuCount)), start.threads]),
  };
}

/** The cell of `axis` nearest to `value` (the axis is non-empty). */
export function snap<T extends number | undefined>(axis: readonly T[], value: T): T {
  if (axis.includes(value)) return value;
  if (typeof value !== "number") return axis[0] as T;
  let best = axis[0] as T;
  for (const cell of axis) {
    if (typeof cell !== "number") continue;
    if (typeof best !== "number" || Math.abs(cell - value) < Math.abs(best - value)) best = cell;
  }
  return best;
}

/** The knob set's stable identity (the trial store's key part and the recipe's knobs). */
export function knobsKey(knobs: Knobs): string {
  return `engine=${knobs.engine},kv=${knobs.kvBits ?? "off"},batch=${knobs.maxBatch},ctx=${knobs.maxContext},threads=${knobs.threads}`;
}

/** The knobs under their YAML key names (kv_bits null: unquantized, the key left out of the file). */
export function knobsAsYaml(knobs: Knobs): Record<string, number | string | null> {
  return {
    engine: knobs.engine,
    [SETTINGS.kvBits.yaml]: knobs.kvBits ?? null,
    [SETTINGS.maxBatch.yaml]: knobs.maxBatch,
    [SETTINGS.maxContext.yaml]: knobs.maxContext,
    [SETTINGS.threads.yaml]: knobs.threads,
  };
}

/** The `serve` arguments that run `model` with `knobs`. */
export function serveArgs(model: string, knobs: Knobs): string[] {
  const args = [SETTINGS.models.flag, model];
  if (knobs.kvBits !== undefined) args.push(SETTINGS.kvBits.flag, String(knobs.kvBits));
  args.push(SETTINGS.maxBatch.flag, String(knobs.maxBatch));
  args.push(SETTINGS.maxContext.flag, String(knobs.maxContext));
  args.push(SETTINGS.threads.flag, String(knobs.threads));
  return args;
}

export function describeKnobs(knobs: Knobs): string {
  return `kv ${knobs.kvBits ?? "off"}, batch ${knobs.maxBatch}, context ${knobs.maxContext}, ${knobs.threads} thread${knobs.threads === 1 ? "" : "s"}`;
}
