// Loading a model's weights from safetensors (one file, or shards named by an index), each
// tensor checked against the shapes the model's config implies.
import { existsSync, readFileSync } from 'node:fs';
import { basename, join } from 'node:path';
import { describeNonFinite, nonFiniteText } from '../core/finite.js';
import { SafetensorsReader } from '../io/safetensors.js';

export const shapeText = (s: readonly number[]) => `[${s.join(', ')}]`;

export interface ParameterSink {
  parameters(): { name: string; shape: number[] }[];
  setParameter(name: string, data: Float32Array): void;
  /** Reads F32/F16/BF16 tensors of a checked file natively, straight into the parameters where
   * the storage allows; returns those that held NaN or infinities (the model is then refused). */
  loadParameters?(
    path: string,
    tensors: { name: string; offset: number; dtype: string }[],
  ): { name: string; count: number; index: number; value: number }[];
}

const NATIVE_DTYPES = new Set(['F32', 'F16', 'BF16']);
const numelOf = (shape: number[]) => shape.reduce((a, b) => a * b, 1);

/** A snapshot's `component/` folder when it holds `marker`, else `dir` itself (a folder of that
 * component alone). */
export function componentFolder(dir: string, component: string, marker = 'config.json'): string {
  return existsSync(join(dir, component, marker)) ? join(dir, component) : dir;
}

/** The config.json of a snapshot's `component/`, or of `dir` itself, with its folder; the error
 * when there is none says where it looked. */
export function componentConfig(dir: string, component: string, what: string) {
  const folder = componentFolder(dir, component);
  const configFile = join(folder, 'config.json');
  if (!existsSync(configFile))
    throw new Error(`${dir}: no ${what} here (looked for ${component}/config.json and config.json)`);
  return { folder, configFile };
}

/** `<stem>.safetensors`, or the shards `<stem>.safetensors.index.json` names. */
export function weightFiles(folder: string, stem: string): string[] {
  const single = join(folder, `${stem}.safetensors`);
  if (existsSync(single)) return [single];
  const index = join(folder, `${stem}.safetensors.index.json`);
  if (existsSync(index)) {
    let map: Record<string, string>;
    try {
      map = (JSON.parse(readFileSync(index, 'utf8')) as { weight_map: Record<string, string> }).weight_map;
    } catch (e) {
      throw new Error(`${index}: cannot read the shard index (${(e as Error).message})`);
    }
    if (!map || typeof map !== 'object' || Array.isArray(map)) throw new Error(`${index}: has no weight_map`);
    for (const [name, shard] of Object.entries(map))
      if (typeof shard !== 'string' || basename(shard) !== shard || !shard.endsWith('.safetensors'))
        throw new Error(
          `${index}: weight_map names ${JSON.stringify(shard)} for ${name}, not a .safetensors file beside it`,
        );
    const shards = [...new Set(Object.values(map))].sort();
    for (const shard of shards)
      if (!existsSync(join(folder, shard))) throw new Error(`${index}: names shard ${shard}, which is missing`);
    return shards.map((s) => join(folder, s));
  }
  throw new Error(`${folder}: no weights (looked for ${stem}.safetensors and ${stem}.safetensors.index.json)`);
}

/** Copies every tensor of `files` into the model, converting F16/BF16/F64 to F32. Missing,
 * unexpected (unless `ignore` says so), wrongly shaped and non-finite tensors are collected and
 * reported together, naming each tensor and both shapes. `rename` maps a file's tensor names to
 * the model's (for layouts another library version writes). */
export function loadCheckedWeights(
  what: string,
  files: string[],
  model: ParameterSink,
  ignore: (name: string) => boolean = () => false,
  rename: (name: string) => string = (name) => name,
): void {
  const expected = new Map(model.parameters().map((p) => [p.name, p.shape]));
  const seen = new Set<string>();
  const problems: string[] = [];
  const poisoned: string[] = [];
  for (const file of files) {
    const reader = new SafetensorsReader(file);
    const direct: { name: string; offset: number; dtype: string }[] = [];
    try {
      for (const [stored, entry] of reader.entries) {
        const name = rename(stored);
        const shape = expected.get(name);
        if (!shape) {
          if (!ignore(name)) problems.push(`unexpected tensor ${name} ${shapeText(entry.shape)} in ${basename(file)}`);
          continue;
        }
        if (seen.has(name)) problems.push(`tensor ${name} appears twice (again in ${basename(file)})`);
        seen.add(name);
        if (shapeText(shape) !== shapeText(entry.shape)) {
          problems.push(
            `tensor ${name} has shape ${shapeText(entry.shape)} in ${basename(file)}, the config needs ${shapeText(shape)}`,
          );
          continue;
        }
        if (model.loadParameters && NATIVE_DTYPES.has(entry.dtype)) {
          direct.push({ name, offset: reader.fileOffset(stored), dtype: entry.dtype });
          continue;
        }
        const { data } = reader.read(stored);
        const nonFinite = describeNonFinite(name, data);
        if (nonFinite) poisoned.push(`${nonFinite} in ${basename(file)}`);
        else model.setParameter(name, data);
      }
      for (const bad of direct.length ? model.loadParameters!(file, direct) : [])
        poisoned.push(
          `${nonFiniteText(bad.name, bad.count, numelOf(expected.get(bad.name)!), bad)} in ${basename(file)}`,
        );
    } finally {
      reader.close();
    }
  }
  for (const [name, shape] of expected)
    if (!seen.has(name)) problems.push(`missing tensor ${name} ${shapeText(shape)}`);
  const list = (lines: string[]) => `\n  - ${lines.join('\n  - ')}`;
  if (problems.length)
    throw new Error(`${what}: the weights do not fit config.json:${list([...problems, ...poisoned])}`);
  if (poisoned.length)
    throw new Error(`${what}: the weights hold NaN or Inf, which no model can use:${list(poisoned)}`);
}

/** Fills a model for benchmarks with small pseudo-random weights (within ±0.02, a
 * multiplicative hash of the index and the seed: a billion normal draws in JS take minutes);
 * vectors (biases, norms) zero. */
export function fillForBenchmark(model: ParameterSink, seed: number): void {
  for (const p of model.parameters()) {
    const n = p.shape.reduce((a, b) => a * b, 1);
    const data = new Float32Array(n);
    if (p.shape.length > 1)
      for (let i = 0; i < n; i++) data[i] = ((Math.imul(i + seed, 2654435761) >>> 0) / 2 ** 32) * 0.04 - 0.02;
    model.setParameter(p.name, data);
  }
}

/** Sizes a model config may give: far above any released Würstchen or CLIP, far below what
 * would only end in a failed allocation. */
export const MAX_MODEL_DIM = 65536;

/** A model built from the sizes `file` gives, with the file named when they cannot be
 * allocated (the native error alone, e.g. std::bad_alloc, says nothing of where they came from). */
export function buildFrom<T>(file: string, build: () => T): T {
  try {
    return build();
  } catch (e) {
    throw new Error(`${file}: cannot build the model it describes (${(e as Error).message})`);
  }
}

/** Reads a JSON config file, with the file named in any error. */
export function readJsonConfig(file: string, what: string): Record<string, unknown> {
  try {
    const value: unknown = JSON.parse(readFileSync(file, 'utf8'));
    if (typeof value !== 'object' || value === null || Array.isArray(value)) throw new Error('not a JSON object');
    return value as Record<string, unknown>;
  } catch (e) {
    throw new Error(`${file}: cannot read the ${what} config (${(e as Error).message})`);
  }
}
