// Training configs in diffengine's style: TypeScript (typed with defineConfig), JavaScript or
// JSON files, `_base_` inheritance with deep merge (`_delete_: true` replaces a dict), and
// mmengine-style `--cfg-options key.path=value` overrides. Every key is checked against the
// schema below; an unknown key or a wrong type is an error naming the key and the file that set it.
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { basename, dirname, extname, join, relative, resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { packageRoot } from '../core/package-root.js';

export interface TransformConfig {
  type: string;
  [option: string]: unknown;
}

export interface LoraTrainConfig {
  _base_?: string | string[];
  model?: {
    type?: string;
    /** Hub id or folder of the prior snapshot (prior/, text_encoder/, tokenizer/). */
    prior_model?: string;
    /** Hub id or folder holding text_encoder/ and tokenizer/ (default: prior_model). */
    text_encoder_model?: string;
    /** EfficientNet weights: a file (path; .safetensors or .pt) or a Hub repo + file; key inside a
     * .pt; config: a JSON file with another stage layout than efficientnet_v2_s. */
    image_encoder?: { path?: string; repo?: string; file?: string; key?: string; config?: string };
    prior_lora_config?: {
      type?: string;
      r?: number;
      lora_alpha?: number;
      target_modules?: string[];
      lora_dropout?: number;
    };
    gradient_checkpointing?: boolean;
  };
  train_dataloader?: {
    batch_size?: number;
    num_workers?: number;
    persistent_workers?: boolean;
    sampler?: Record<string, unknown>;
    dataset?: {
      type?: string;
      dataset?: string;
      image_column?: string;
      caption_column?: string;
      split?: string;
      subset?: number;
      /** Items held out of training, to measure the adapters on (report). */
      holdout?: number;
      pipeline?: TransformConfig[];
    };
  };
  optim_wrapper?: {
    type?: string;
    /** With type 'AmpOptimWrapper' (mmengine's default dtype is float16). */
    dtype?: 'float16' | 'bfloat16' | 'float32';
    accumulative_counts?: number;
    optimizer?: { type?: string; lr?: number; weight_decay?: number; betas?: number[]; eps?: number };
    clip_grad?: { max_norm?: number } | null;
  };
  lr_scheduler?: { type?: 'constant' | 'constant_with_warmup' | 'linear' | 'cosine'; warmup_iters?: number };
  train_cfg?: { type?: string; by_epoch?: boolean; max_epochs?: number; max_iters?: number };
  default_hooks?: {
    checkpoint?: {
      type?: string;
      interval?: number;
      by_epoch?: boolean;
      max_keep_ckpts?: number;
      save_optimizer?: boolean;
    };
    logger?: { type?: string; interval?: number };
  };
  custom_hooks?: Record<string, unknown>[];
  work_dir?: string;
  seed?: number;
  device?: 'cpu' | 'cuda';
  /** As diffusers' --mixed_precision: frozen weights and GEMM operands in bf16/fp16 (fp16 with
   * dynamic loss scaling). Unset: diffengine's optim_wrapper AmpOptimWrapper dtype on CUDA,
   * else 'no'. */
  mixed_precision?: 'no' | 'bf16' | 'fp16';
  /** As diffusers' --allow_tf32: fp32 GEMMs on the GPU may round inputs to TF32. */
  allow_tf32?: boolean;
  cache_embeddings?: boolean;
  /** Write loss.png and report.md/json: the fixed-noise loss of the held-out items (or the
   * training items) without and with the trained adapters, `draws` draws per item. */
  report?: { draws?: number };
}

/** A config as written: any nested dict may say `_delete_: true` to replace its base's dict. */
export type ConfigInput<T = LoraTrainConfig> = T extends unknown[]
  ? T
  : T extends object
    ? { [K in keyof T]?: ConfigInput<T[K]> } & { _delete_?: boolean }
    : T;

/** Types a config file: `export default defineConfig({ ... })`. */
export function defineConfig(config: ConfigInput): LoraTrainConfig {
  return config as LoraTrainConfig;
}

// ---- schema ----------------------------------------------------------------------------------

type Rule =
  | 'string'
  | 'boolean'
  | 'number'
  | 'posnumber'
  | 'posint'
  | 'nonnegint'
  | 'string[]'
  | 'number[]'
  | 'any'
  | { oneOf: readonly string[] }
  | { object: Schema; nullable?: boolean }
  | { list: Rule };
type Schema = Record<string, Rule>;

const SCHEMA: Schema = {
  _base_: 'any',
  model: {
    object: {
      type: 'string',
      prior_model: 'string',
      text_encoder_model: 'string',
      image_encoder: { object: { path: 'string', repo: 'string', file: 'string', key: 'string', config: 'string' } },
      prior_lora_config: {
        object: {
          type: 'string',
          r: 'posint',
          lora_alpha: 'posnumber',
          target_modules: 'string[]',
          lora_dropout: 'number',
        },
      },
      gradient_checkpointing: 'boolean',
    },
  },
  train_dataloader: {
    object: {
      batch_size: 'posint',
      num_workers: 'nonnegint',
      persistent_workers: 'boolean',
      sampler: 'any',
      dataset: {
        object: {
          type: 'string',
          dataset: 'string',
          image_column: 'string',
          caption_column: 'string',
          split: 'string',
          subset: 'posint',
          holdout: 'nonnegint',
          pipeline: { list: 'any' },
        },
      },
    },
  },
  optim_wrapper: {
    object: {
      type: 'string',
      dtype: { oneOf: ['float16', 'bfloat16', 'float32'] },
      accumulative_counts: 'posint',
      optimizer: {
        object: {
          type: { oneOf: ['AdamW'] },
          lr: 'posnumber',
          weight_decay: 'number',
          betas: 'number[]',
          eps: 'posnumber',
        },
      },
      clip_grad: { object: { max_norm: 'posnumber' }, nullable: true },
    },
  },
  lr_scheduler: {
    object: { type: { oneOf: ['constant', 'constant_with_warmup', 'linear', 'cosine'] }, warmup_iters: 'nonnegint' },
  },
  train_cfg: { object: { type: 'string', by_epoch: 'boolean', max_epochs: 'posint', max_iters: 'posint' } },
  default_hooks: {
    object: {
      checkpoint: {
        object: {
          type: 'string',
          interval: 'posint',
          by_epoch: 'boolean',
          max_keep_ckpts: 'posint',
          save_optimizer: 'boolean',
        },
      },
      logger: { object: { type: 'string', interval: 'posint' } },
    },
  },
  custom_hooks: { list: 'any' },
  work_dir: 'string',
  seed: 'nonnegint',
  device: { oneOf: ['cpu', 'cuda'] },
  mixed_precision: { oneOf: ['no', 'bf16', 'fp16'] },
  allow_tf32: 'boolean',
  cache_embeddings: 'boolean',
  report: { object: { draws: 'posint' } },
};

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function describeRule(rule: Rule): string {
  if (typeof rule === 'string')
    return (
      {
        string: 'a string',
        boolean: 'true or false',
        number: 'a number',
        posnumber: 'a positive number',
        posint: 'a positive integer',
        nonnegint: 'an integer >= 0',
        'string[]': 'an array of strings',
        'number[]': 'an array of numbers',
        any: 'anything',
      } as const
    )[rule];
  if ('oneOf' in rule) return `one of ${rule.oneOf.map((v) => JSON.stringify(v)).join(', ')}`;
  if ('object' in rule) return rule.nullable ? 'an object or null' : 'an object';
  return 'an array';
}

function matches(rule: Rule, v: unknown): boolean {
  if (typeof rule === 'string') {
    switch (rule) {
      case 'string':
        return typeof v === 'string';
      case 'boolean':
        return typeof v === 'boolean';
      case 'number':
        return typeof v === 'number' && Number.isFinite(v);
      case 'posnumber':
        return typeof v === 'number' && Number.isFinite(v) && v > 0;
      case 'posint':
        return Number.isInteger(v) && (v as number) > 0;
      case 'nonnegint':
        return Number.isInteger(v) && (v as number) >= 0;
      case 'string[]':
        return Array.isArray(v) && v.every((x) => typeof x === 'string');
      case 'number[]':
        return Array.isArray(v) && v.every((x) => typeof x === 'number');
      case 'any':
        return true;
    }
  }
  if ('oneOf' in rule) return rule.oneOf.includes(v as string);
  if ('object' in rule)
    return (rule.nullable && v === null) || (typeof v === 'object' && v !== null && !Array.isArray(v));
  return Array.isArray(v);
}

function closest(key: string, options: string[]): string | undefined {
  const distance = (a: string, b: string) => {
    const d = Array.from({ length: a.length + 1 }, (_, i) => [i, ...new Array<number>(b.length).fill(0)]);
    for (let j = 1; j <= b.length; j++) d[0]![j] = j;
    for (let i = 1; i <= a.length; i++)
      for (let j = 1; j <= b.length; j++)
        d[i]![j] = Math.min(d[i - 1]![j]! + 1, d[i]![j - 1]! + 1, d[i - 1]![j - 1]! + (a[i - 1] === b[j - 1] ? 0 : 1));
    return d[a.length]![b.length]!;
  };
  const best = options.map((o) => [o, distance(key, o)] as const).sort((x, y) => x[1] - y[1])[0];
  return best && best[1] <= Math.max(2, Math.floor(key.length / 3)) ? best[0] : undefined;
}

/** Checks a merged config; `origin` names the file that set each key path. */
export function validateConfig(config: Record<string, unknown>, origin: Map<string, string>): void {
  const where = (path: string) => {
    for (let p = path; p; p = p.includes('.') ? p.slice(0, p.lastIndexOf('.')) : '')
      if (origin.has(p)) return origin.get(p)!;
    return origin.get('') ?? 'the config';
  };
  const walk = (value: Record<string, unknown>, schema: Schema, prefix: string) => {
    for (const [key, v] of Object.entries(value)) {
      const path = prefix ? `${prefix}.${key}` : key;
      const rule = schema[key];
      if (!rule) {
        const hint = closest(key, Object.keys(schema));
        throw new ConfigError(
          `${where(path)}: unknown key '${path}'${hint ? ` (did you mean '${prefix ? `${prefix}.` : ''}${hint}'?)` : ''}`,
        );
      }
      if (v === undefined) continue;
      if (!matches(rule, v))
        throw new ConfigError(`${where(path)}: '${path}' must be ${describeRule(rule)}, got ${JSON.stringify(v)}`);
      if (typeof rule === 'object' && 'object' in rule && v !== null)
        walk(v as Record<string, unknown>, rule.object, path);
    }
  };
  walk(config, SCHEMA, '');
}

// ---- loading and merging ---------------------------------------------------------------------

const CONFIG_ROOT = join(packageRoot, 'configs');
const EXTENSIONS = ['.ts', '.js', '.mjs', '.json'];

/** A config file path, or a shipped config's name (searched under configs/, like diffengine). */
export function resolveConfigPath(nameOrPath: string): string {
  if (existsSync(nameOrPath) && statSync(nameOrPath).isFile()) return resolve(nameOrPath);
  const found: string[] = [];
  const search = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, entry.name);
      if (entry.isDirectory()) {
        if (entry.name !== '_base_') search(p);
      } else if (
        EXTENSIONS.includes(extname(entry.name)) &&
        basename(entry.name, extname(entry.name)) === nameOrPath.replace(/\.(ts|js|mjs|json)$/, '')
      )
        found.push(p);
    }
  };
  if (existsSync(CONFIG_ROOT)) search(CONFIG_ROOT);
  if (found.length === 1) return found[0]!;
  if (found.length > 1)
    throw new ConfigError(
      `config name '${nameOrPath}' is ambiguous: ${found.map((f) => relative(packageRoot, f)).join(', ')}`,
    );
  const names: string[] = [];
  const list = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true }))
      if (entry.isDirectory() && entry.name !== '_base_') list(join(dir, entry.name));
      else if (EXTENSIONS.includes(extname(entry.name))) names.push(basename(entry.name, extname(entry.name)));
  };
  if (existsSync(CONFIG_ROOT)) list(CONFIG_ROOT);
  throw new ConfigError(
    `no config file '${nameOrPath}' and no shipped config of that name (shipped: ${names.sort().join(', ')})`,
  );
}

async function importModule(file: string): Promise<unknown> {
  const ext = extname(file);
  if (ext === '.json') {
    try {
      return JSON.parse(readFileSync(file, 'utf8'));
    } catch (e) {
      throw new ConfigError(`${file}: not valid JSON (${(e as Error).message})`);
    }
  }
  let url = pathToFileURL(file).href;
  if (ext === '.ts') {
    // A shipped config compiled by `npm install` (dist/configs/…js) when it is up to date;
    // otherwise transpile it with TypeScript.
    // An installed package's files all get the install time as mtime, in no particular order,
    // so the twin counts as stale only where TypeScript is there to transpile the source.
    const twin = join(packageRoot, 'dist', relative(packageRoot, file)).replace(/\.ts$/, '.js');
    let ts: typeof import('typescript') | undefined;
    try {
      ts = createRequire(import.meta.url)('typescript');
    } catch {
      ts = undefined;
    }
    const hasTwin = !relative(packageRoot, file).startsWith('..') && existsSync(twin);
    if (hasTwin && (!ts || statSync(twin).mtimeMs >= statSync(file).mtimeMs)) url = pathToFileURL(twin).href;
    else {
      if (!ts)
        throw new ConfigError(
          `${file}: reading a TypeScript config needs the 'typescript' package (npm install typescript), or write the config as .js or .json`,
        );
      // Transpiled next to the source (as vite does with its config), so that relative imports
      // and 'lora-train' resolve as they would from the .ts file; removed once imported.
      const source = readFileSync(file, 'utf8');
      const out = ts.transpileModule(source, {
        compilerOptions: { module: ts.ModuleKind.ESNext, target: ts.ScriptTarget.ES2022 },
        fileName: file,
      }).outputText;
      const temp = `${file}.${process.pid}-${createHash('sha256').update(source).digest('hex').slice(0, 8)}.mjs`;
      writeFileSync(temp, out);
      try {
        const mod = (await import(pathToFileURL(temp).href)) as { default?: unknown };
        return mod.default ?? mod;
      } catch (e) {
        throw new ConfigError(`${file}: cannot load the config (${(e as Error).message})`);
      } finally {
        rmSync(temp, { force: true });
      }
    }
  }
  try {
    const mod = (await import(url)) as { default?: unknown };
    return mod.default ?? mod;
  } catch (e) {
    throw new ConfigError(`${file}: cannot load the config (${(e as Error).message})`);
  }
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, anything else replaces; `_delete_: true` replaces. */
function merge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
  file: string,
  origin: Map<string, string>,
  prefix = '',
): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [key, value] of Object.entries(over)) {
    const path = prefix ? `${prefix}.${key}` : key;
    if (isPlainObject(value) && value._delete_ === true) {
      const { _delete_, ...rest } = value;
      void _delete_;
      out[key] = rest;
      origin.set(path, file);
    } else if (isPlainObject(value) && isPlainObject(out[key])) {
      out[key] = merge(out[key] as Record<string, unknown>, value, file, origin, path);
    } else {
      out[key] = value;
      origin.set(path, file);
    }
  }
  return out;
}

async function loadFile(file: string, origin: Map<string, string>, chain: string[]): Promise<Record<string, unknown>> {
  if (chain.includes(file))
    throw new ConfigError(
      `${file}: _base_ inherits from itself (${[...chain, file].map((f) => basename(f)).join(' -> ')})`,
    );
  const raw = await importModule(file);
  if (!isPlainObject(raw))
    throw new ConfigError(`${file}: a config must export an object (export default defineConfig({ ... }))`);
  let merged: Record<string, unknown> = {};
  const bases = raw._base_ === undefined ? [] : Array.isArray(raw._base_) ? raw._base_ : [raw._base_];
  for (const base of bases) {
    if (typeof base !== 'string')
      throw new ConfigError(`${file}: _base_ entries must be paths, got ${JSON.stringify(base)}`);
    const basePath = resolve(dirname(file), base);
    if (!existsSync(basePath))
      throw new ConfigError(`${file}: _base_ '${base}' does not exist (looked at ${basePath})`);
    merged = merge(merged, await loadFile(basePath, origin, [...chain, file]), basePath, origin);
  }
  const { _base_, ...own } = raw;
  void _base_;
  return merge(merged, own, file, origin);
}

/** Parses one `key.path=value`: JSON when it parses, a comma list, else a string. */
export function parseOverride(option: string): [string[], unknown] {
  const eq = option.indexOf('=');
  if (eq <= 0) throw new ConfigError(`--cfg-options: expected key.path=value, got '${option}'`);
  const path = option.slice(0, eq).split('.');
  const text = option.slice(eq + 1);
  const scalar = (s: string): unknown => {
    try {
      return JSON.parse(s);
    } catch {
      return s === 'None' ? null : s === 'True' ? true : s === 'False' ? false : s;
    }
  };
  let value: unknown = scalar(text);
  if (typeof value === 'string' && text.includes(',') && !text.startsWith('['))
    value = text.split(',').map((s) => scalar(s.trim()));
  return [path, value];
}

export interface LoadedConfig {
  config: LoraTrainConfig;
  file: string;
  /** The config's name: its file name without extension (diffengine names work dirs by it). */
  name: string;
}

/** Loads a config file or name, applies `--cfg-options`, and validates the result. */
export async function loadConfig(nameOrPath: string, overrides: string[] = []): Promise<LoadedConfig> {
  const file = resolveConfigPath(nameOrPath);
  const origin = new Map<string, string>();
  origin.set('', file);
  let merged = await loadFile(file, origin, []);
  for (const option of overrides) {
    const [path, value] = parseOverride(option);
    const patch: Record<string, unknown> = {};
    let node = patch;
    path.slice(0, -1).forEach((k) => (node = node[k] = {}) as Record<string, unknown>);
    node[path.at(-1)!] = value;
    merged = merge(merged, patch, `--cfg-options ${option}`, origin);
  }
  validateConfig(merged, origin);
  return { config: merged as LoraTrainConfig, file, name: basename(file, extname(file)) };
}
