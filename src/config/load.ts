// Configs in diffengine's style: TypeScript (typed with defineConfig), JavaScript or JSON files,
// `_base_` inheritance with deep merge (`_delete_: true` replaces a dict), mmengine-style
// `--cfg-options key.path=value` overrides and the command line's own options, then checked
// against the schema (schema.ts) with every default filled in. Errors name the key and the file
// or option that set it.
import { basename, dirname, extname, join, resolve } from 'node:path';
import { existsSync } from 'node:fs';
import { PROTOTYPE_KEYS } from '../core/untrusted.js';
import { importModule, isProgram, isShippedConfig, resolveConfigPath } from './files.js';
import type { ConfigInput, LoraTrainConfig } from './schema.js';
import { ConfigError, type Origins, resolveConfig } from './validate.js';

export { ConfigError };
export type { ConfigInput, LoraTrainConfig };

/** Types a config file: `export default defineConfig({ ... })`. */
export function defineConfig(config: ConfigInput): ConfigInput {
  return config;
}

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

/** Deep merge: objects merge key by key, anything else replaces; `_delete_: true` replaces. */
function merge(
  base: Record<string, unknown>,
  over: Record<string, unknown>,
  file: string,
  origin: Origins,
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
      out[key] = merge(out[key], value, file, origin, path);
    } else {
      out[key] = value;
      origin.set(path, file);
    }
  }
  return out;
}

async function loadFile(file: string, origin: Origins, chain: string[]): Promise<Record<string, unknown>> {
  if (chain.includes(file))
    throw new ConfigError(
      `${file}: _base_ inherits from itself (${[...chain, file].map((f) => basename(f)).join(' -> ')})`,
    );
  const raw = await importModule(file);
  if (!isPlainObject(raw))
    throw new ConfigError(`${file}: a config must export an object (export default defineConfig({ ... }))`);
  checkKeys(raw, file, '');
  let merged: Record<string, unknown> = {};
  const bases = raw._base_ === undefined ? [] : Array.isArray(raw._base_) ? raw._base_ : [raw._base_];
  for (const base of bases) {
    if (typeof base !== 'string')
      throw new ConfigError(`${file}: _base_ entries must be paths, got ${JSON.stringify(base)}`);
    const basePath = resolve(dirname(file), base);
    if (!existsSync(basePath))
      throw new ConfigError(`${file}: _base_ '${base}' does not exist (looked at ${basePath})`);
    // A JSON config is data: reading it must not run a program it names.
    if (!isProgram(file) && isProgram(basePath) && !isShippedConfig(basePath))
      throw new ConfigError(
        `${file}: _base_ '${base}' is a program (${extname(basePath) || 'no extension'}); a JSON config inherits only from JSON files and shipped configs, so that reading it runs no code`,
      );
    merged = merge(merged, await loadFile(basePath, origin, [...chain, file]), basePath, origin);
  }
  const { _base_, ...own } = raw;
  void _base_;
  return merge(merged, own, file, origin);
}

/** Configs nest a few levels; deeper is a hostile file or an object that contains itself. */
const MAX_DEPTH = 32;

/** Refuses, at any depth, keys that would reach an object's prototype and objects that have a
 * prototype of their own (what a `__proto__:` key in a JavaScript object literal makes), and
 * nesting deeper than MAX_DEPTH. */
function checkKeys(value: unknown, where: string, path: string, depth = 0): void {
  if (typeof value !== 'object' || value === null) return;
  if (depth > MAX_DEPTH)
    throw new ConfigError(
      `${where}: '${path}' is nested deeper than ${MAX_DEPTH} levels (a value that contains itself?)`,
    );
  if (Array.isArray(value)) return value.forEach((v, i) => checkKeys(v, where, `${path}[${i}]`, depth + 1));
  const proto: unknown = Object.getPrototypeOf(value);
  if (proto !== Object.prototype && proto !== null)
    throw new ConfigError(`${where}: '${path}' is not a plain object (a __proto__ key sets its prototype)`);
  for (const [key, v] of Object.entries(value)) {
    const keyPath = path ? `${path}.${key}` : key;
    if (PROTOTYPE_KEYS.has(key))
      throw new ConfigError(`${where}: key '${keyPath}' is not allowed: it would reach every object's prototype`);
    checkKeys(v, where, keyPath, depth + 1);
  }
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
  /** Every key resolved: what the job reads and its checkpoints record. */
  config: LoraTrainConfig;
  file: string;
  /** The config's name: its file name without extension (diffengine names work dirs by it). */
  name: string;
}

/** A key set from outside the file: `--cfg-options key.path=value` as written, or a value with
 * the command-line option (or caller) it came from. */
export type ConfigOverride = string | { key: string; value: unknown; origin: string };

function patchOf(path: string[], value: unknown): Record<string, unknown> {
  return path.reduceRight<unknown>((inner, key) => ({ [key]: inner }), value) as Record<string, unknown>;
}

/** Loads a config file or name, applies the overrides in order, checks the result and fills
 * in every default (work_dir: work_dirs/<config name>, as diffengine). */
export async function loadConfig(nameOrPath: string, overrides: ConfigOverride[] = []): Promise<LoadedConfig> {
  const file = resolveConfigPath(nameOrPath);
  const origins: Origins = new Map([['', file]]);
  let merged = await loadFile(file, origins, []);
  for (const override of overrides) {
    const [path, value, origin] =
      typeof override === 'string'
        ? [...parseOverride(override), `--cfg-options ${override}`]
        : [override.key.split('.'), override.value, override.origin];
    checkKeys(patchOf(path, value), origin, '');
    merged = merge(merged, patchOf(path, value), origin, origins);
  }
  const name = basename(file, extname(file));
  const config = resolveConfig(merged, origins);
  return { config: { ...config, work_dir: config.work_dir ?? join('work_dirs', name) }, file, name };
}

/** A key the job cannot run without: its value, or an error naming the key and the config. */
export function required<T>(value: T | undefined, key: string, file: string): T {
  if (value === undefined) throw new ConfigError(`${file}: '${key}' is required`);
  return value;
}
