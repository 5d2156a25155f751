// Reads the config schema as data: the keys of a dict (for "did you mean"), and each key's
// type, choices, default and description (for the CLI's option table and docs/config.md).
import type * as z from 'zod';
import { configSchema } from './schema.js';

type Schema = z.ZodType;
interface Def {
  type: string;
  innerType?: Schema;
  in?: Schema;
  shape?: Record<string, Schema>;
  element?: Schema;
  options?: Schema[];
  entries?: Record<string, string>;
  items?: Schema[];
  defaultValue?: unknown;
  format?: string;
}
const defOf = (s: Schema) => s.def as Def;
const WRAPPERS = new Set(['optional', 'default', 'prefault', 'nullable', 'readonly']);

/** The schema inside optional/default/nullable wrappers and transforms. */
function unwrap(s: Schema): Schema {
  for (let d = defOf(s); ; d = defOf(s)) {
    if (WRAPPERS.has(d.type)) s = d.innerType!;
    else if (d.type === 'pipe') s = d.in!;
    else return s;
  }
}

/** The schemas a key path may lead to (several inside a union of dicts). */
function schemasAt(path: readonly PropertyKey[], from: Schema = configSchema): Schema[] {
  let current = [unwrap(from)];
  for (const key of path) {
    const next: Schema[] = [];
    for (const s of current.flatMap((c) => (defOf(c).type === 'union' ? defOf(c).options!.map(unwrap) : [c]))) {
      const d = defOf(s);
      if (d.type === 'object' && typeof key === 'string' && d.shape![key]) next.push(unwrap(d.shape![key]));
      if (d.type === 'array' && typeof key === 'number') next.push(unwrap(d.element!));
    }
    current = next;
  }
  return current.flatMap((c) => (defOf(c).type === 'union' ? defOf(c).options!.map(unwrap) : [c]));
}

/** The keys a dict at `path` takes. */
export function keysAt(path: readonly PropertyKey[]): string[] {
  return [...new Set(schemasAt(path).flatMap((s) => Object.keys(defOf(s).shape ?? {})))];
}

export interface KeyInfo {
  /** 'string', 'number', 'integer', 'boolean', 'enum', 'array', 'object', 'tuple', 'union'. */
  kind: string;
  choices?: string[];
  description?: string;
  /** The default, when the key has a fixed one. */
  default?: unknown;
}

/** What the key at a dotted path takes: its kind, choices, description and default. */
export function keyInfo(dotted: string, from: Schema = configSchema): KeyInfo {
  let s = unwrap(from);
  let outer: Schema | undefined;
  for (const key of dotted.split('.')) {
    const shape = defOf(s).shape;
    if (!shape?.[key]) throw new Error(`the config has no key '${dotted}'`);
    outer = shape[key];
    s = unwrap(outer);
  }
  const { type, format } = defOf(s);
  const info: KeyInfo = { kind: type === 'number' && format?.includes('int') ? 'integer' : type };
  if (info.kind === 'enum') info.choices = Object.values(defOf(s).entries!);
  for (let w: Schema | undefined = outer; w;) {
    const d = defOf(w);
    info.description ??= w.description;
    if (d.type === 'default') info.default = d.defaultValue;
    w = WRAPPERS.has(d.type) ? d.innerType : undefined;
  }
  info.description ??= s.description;
  return info;
}

/** Every key path of the config, dicts first then their keys, in declaration order. */
export function configKeys(from: Schema = configSchema, prefix = ''): string[] {
  const shape = defOf(unwrap(from)).shape ?? {};
  return Object.entries(shape).flatMap(([key, s]) => {
    const path = prefix ? `${prefix}.${key}` : key;
    return defOf(unwrap(s)).type === 'object' ? [path, ...configKeys(s, path)] : [path];
  });
}

/** The dict schemas a list at a dotted path holds (each option of a union of dicts). */
export function itemSchemas(dotted: string): Schema[] {
  return schemasAt([...dotted.split('.'), 0]);
}

/** The keys of a dict schema, in declaration order. */
export function dictKeys(schema: Schema): string[] {
  return Object.keys(defOf(unwrap(schema)).shape ?? {});
}
