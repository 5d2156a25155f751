// The command line's options, each standing for one config key (as vitest's option table stands
// for its config): the table is typed against the config, the option's type, choices and help
// come from the schema, and a given option reaches the job only as an override of its key,
// named in errors by its flag.
import type { Options } from 'yargs';
import { keyInfo } from '../config/introspect.js';
import type { ConfigOverride } from '../config/load.js';
import type { LoraTrainConfig } from '../config/schema.js';

/** Dotted paths to the config's settings (dicts excluded), e.g. 'sample.num'. */
type KeyPath<T> = {
  [K in keyof T & string]-?: NonNullable<T[K]> extends readonly unknown[]
    ? K
    : NonNullable<T[K]> extends object
      ? `${K}.${KeyPath<NonNullable<T[K]>>}`
      : K;
}[keyof T & string];
export type ConfigKey = KeyPath<LoraTrainConfig>;

export interface ConfigOption {
  /** The config key the option sets. */
  key: ConfigKey;
  /** Help text beyond the key's own description. */
  note?: string;
}

/** An option table: flag name -> the config key it sets. */
export type ConfigOptions = Record<string, ConfigOption>;

const YARGS_TYPE: Record<string, Options['type']> = {
  string: 'string',
  number: 'number',
  integer: 'number',
  boolean: 'boolean',
};

/** The yargs option of one config key: its type or choices, help and default from the schema. */
function yargsOption({ key, note }: ConfigOption): Options {
  const info = keyInfo(key);
  const help = [info.description, note].filter(Boolean).join(' ');
  const shownDefault = info.default === undefined ? '' : `, default ${JSON.stringify(info.default)}`;
  const option: Options = { describe: `${help} (config: ${key}${shownDefault})` };
  if (info.kind === 'enum') option.choices = info.choices;
  else if (info.kind === 'array') Object.assign(option, { type: 'array', string: true });
  else option.type = YARGS_TYPE[info.kind] ?? 'string';
  return option;
}

export function yargsOptions(table: ConfigOptions): Record<string, Options> {
  return Object.fromEntries(Object.entries(table).map(([flag, option]) => [flag, yargsOption(option)]));
}

/** The options given on the command line, as config overrides named by their flags. */
export function overridesFrom(table: ConfigOptions, args: Record<string, unknown>): ConfigOverride[] {
  return Object.entries(table)
    .filter(([flag]) => args[flag] !== undefined)
    .map(([flag, { key }]) => ({ key, value: args[flag], origin: `--${flag}` }));
}

/** `lora-train [train]`'s options. */
export const trainOptions = {
  'work-dir': { key: 'work_dir' },
  resume: { key: 'resume' },
  device: { key: 'device' },
  'mixed-precision': { key: 'mixed_precision', note: '(overrides optim_wrapper.type AmpOptimWrapper)' },
  seed: { key: 'seed' },
} satisfies ConfigOptions;

/** `lora-train sample`'s options. */
export const sampleOptions = {
  prompt: { key: 'sample.prompt' },
  'negative-prompt': { key: 'sample.negative_prompt' },
  num: { key: 'sample.num' },
  guidance: { key: 'sample.guidance' },
  height: { key: 'sample.height' },
  width: { key: 'sample.width' },
  lora: { key: 'sample.lora' },
  out: { key: 'sample.out' },
  seed: { key: 'seed' },
  device: { key: 'device' },
  'mixed-precision': { key: 'mixed_precision' },
} satisfies ConfigOptions;
