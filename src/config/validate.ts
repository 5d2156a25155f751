// Checks a merged config against the schema and fills in its defaults. Every problem becomes
// one line naming the file (or command-line option) that set the key, the key's path, what it
// must be and what it was, with the likely key for a misspelt one.
import type * as z from 'zod';
import { type ParsedConfig, UNSUPPORTED_KEYS, configSchema } from './schema.js';
import { keysAt } from './introspect.js';

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

/** Where each key path ('a.b', array items as 'a.0') was set: a file or a command-line option. */
export type Origins = Map<string, string>;

type PathKey = PropertyKey;

/** `a.b[0].c`, as the message shows a key. */
export function displayPath(path: readonly PathKey[]): string {
  return path.map((p, i) => (typeof p === 'number' ? `[${p}]` : `${i ? '.' : ''}${String(p)}`)).join('');
}

/** The file or option that set a path, or the nearest dict above it. */
function originOf(origins: Origins, path: readonly PathKey[]): string {
  for (let n = path.length; n > 0; n--) {
    const found = origins.get(path.slice(0, n).join('.'));
    if (found) return found;
  }
  return origins.get('') ?? 'the config';
}

function editDistance(a: string, b: string): number {
  const row = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    let diagonal = row[0]!;
    row[0] = i;
    for (let j = 1; j <= b.length; j++) {
      const above = row[j]!;
      row[j] = Math.min(above + 1, row[j - 1]! + 1, diagonal + (a[i - 1] === b[j - 1] ? 0 : 1));
      diagonal = above;
    }
  }
  return row[b.length]!;
}

/** The closest of `options` to a misspelt key, when close enough to be a likely typo. */
export function closest(key: string, options: string[]): string | undefined {
  const ranked = options.map((o) => [o, editDistance(key, o)] as const).sort((x, y) => x[1] - y[1]);
  const best = ranked[0];
  return best && best[1] <= Math.max(2, Math.floor(key.length / 3)) ? best[0] : undefined;
}

/** A value as JSON, but NaN and the infinities as themselves (JSON would say null). */
function valueText(value: unknown): string {
  return typeof value === 'number' && !Number.isFinite(value) ? String(value) : JSON.stringify(value);
}

function describeIssue(issue: z.core.$ZodIssue, origins: Origins, prefix: readonly PathKey[]): string[] {
  issue = { ...issue, path: [...prefix, ...issue.path] };
  if (issue.code === 'unrecognized_keys')
    return issue.keys.map((key) => {
      const path = [...issue.path, key];
      const where = originOf(origins, path);
      const shown = displayPath(path);
      const unsupported = Object.hasOwn(UNSUPPORTED_KEYS, path.join('.'))
        ? UNSUPPORTED_KEYS[path.join('.')]
        : undefined;
      if (unsupported) return `${where}: '${shown}' is not supported: ${unsupported}`;
      const hint = closest(key, keysAt(issue.path));
      return `${where}: unknown key '${shown}'${hint ? ` (did you mean '${displayPath([...issue.path, hint])}'?)` : ''}`;
    });
  const where = originOf(origins, issue.path);
  const shown = displayPath(issue.path);
  // A union told apart by a key (a transform's `type`) reports the whole dict at that key's path.
  const input =
    issue.code === 'invalid_union' && 'discriminator' in issue && typeof issue.discriminator === 'string'
      ? (issue.input as Record<string, unknown> | undefined)?.[issue.discriminator]
      : issue.input;
  if (input === undefined) return [`${where}: '${shown}' is required`];
  return [`${where}: '${shown}' must be ${issue.message}, got ${valueText(input)}`];
}

/** `value` checked by a part of the config's schema found at `prefix` in the config, with its
 * defaults filled in, or a ConfigError listing every problem. */
export function checkedParse<S extends z.ZodType>(
  schema: S,
  value: unknown,
  origins: Origins,
  prefix: readonly PathKey[] = [],
): z.output<S> {
  const result = schema.safeParse(value, { reportInput: true });
  if (result.success) return result.data;
  throw new ConfigError(result.error.issues.flatMap((issue) => describeIssue(issue, origins, prefix)).join('\n'));
}

/** The config with every default filled in, or a ConfigError listing every problem. */
export function resolveConfig(merged: unknown, origins: Origins): ParsedConfig {
  return checkedParse(configSchema, merged, origins);
}
