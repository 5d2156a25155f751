// The embedded default: a tiny Würstchen stack made from a seed, and a real dataset built from
// npm packages (Twemoji graphics rendered with sharp, captions from emojibase's labels and
// tags). Both are written once into lora-train's cache, each into a temporary folder renamed
// into place, so an interrupted build never leaves half a model or dataset behind.
import { existsSync, mkdirSync, readFileSync, readdirSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { homedir } from 'node:os';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { packageRoot } from '../core/package-root.js';
import { Progress } from '../core/progress.js';
import { createTinyStack } from '../models/tiny.js';

export const TINY_MODEL_ID = 'builtin:tiny-wuerstchen';
export const TWEMOJI_DATASET_ID = 'builtin:twemoji';
const TINY_MODEL_VERSION = 'v1-seed0';

export function builtinRoot(): string {
  return process.env.LORA_TRAIN_HOME ?? join(homedir(), '.cache', 'lora-train');
}

function buildOnce(target: string, build: (tmp: string) => void | Promise<void>): Promise<string> | string {
  if (existsSync(join(target, '.complete'))) return target;
  const tmp = `${target}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const finish = () => {
    writeFileSync(join(tmp, '.complete'), new Date().toISOString());
    rmSync(target, { recursive: true, force: true });
    mkdirSync(dirname(target), { recursive: true });
    renameSync(tmp, target);
    return target;
  };
  const result = build(tmp);
  return result instanceof Promise ? result.then(finish) : finish();
}

/** The tiny stack's folder (prior/, text_encoder/, tokenizer/, image_encoder/), made on first use. */
export function tinyModel(): string {
  return buildOnce(join(builtinRoot(), 'models', `tiny-wuerstchen-${TINY_MODEL_VERSION}`), (tmp) => {
    createTinyStack(tmp, { seed: 0, tokenizer: join(packageRoot, 'assets', 'clip-tokenizer') }) as unknown as void;
  }) as string;
}

interface EmojiEntry {
  label: string;
  hexcode: string;
  tags?: string[];
  skins?: EmojiEntry[];
}

/** "an emoji of a dog face, animal, pet, puppy": the label, then up to three tags that do not
 * repeat its words (nor the plural of another tag). */
export function emojiCaption(entry: EmojiEntry): string {
  const words = new Set(entry.label.toLowerCase().split(/[^a-z0-9]+/));
  const tags = (entry.tags ?? []).filter((t) => !words.has(t.toLowerCase()));
  const kept = tags.filter((t) => !tags.some((o) => o !== t && (t === `${o}s` || t === `${o.replace(/y$/, '')}ies`)));
  const label = entry.label.replace(/^flag: /, 'the flag of ');
  return [
    `an emoji of ${/^(the |a |an )/.test(label) ? '' : /^[aeiou]/i.test(label) ? 'an ' : 'a '}${label}`,
    ...kept.slice(0, 3),
  ].join(', ');
}

const normaliseCode = (code: string) =>
  code
    .toLowerCase()
    .split('-')
    .filter((c) => c !== 'fe0f')
    .join('-');

/** The Twemoji dataset as an image folder with metadata.jsonl (file_name, text), made on first use. */
export async function twemojiDataset(size = 128): Promise<string> {
  const require = createRequire(import.meta.url);
  const svgDir = dirname(require.resolve('@twemoji/svg/package.json'));
  const version = JSON.parse(readFileSync(join(svgDir, 'package.json'), 'utf8')).version as string;
  const target = join(builtinRoot(), 'datasets', `twemoji-${version}-${size}px`);
  return buildOnce(target, async (tmp) => {
    const entries = require('emojibase-data/en/data.json') as EmojiEntry[];
    const byCode = new Map<string, EmojiEntry>();
    for (const e of entries)
      for (const x of [e, ...(e.skins ?? [])]) byCode.set(normaliseCode(x.hexcode), { ...x, tags: x.tags ?? e.tags });
    const files = readdirSync(svgDir)
      .filter((f) => f.endsWith('.svg'))
      .sort();
    const lines: string[] = [];
    const progress = new Progress('twemoji dataset', files.length);
    mkdirSync(join(tmp, 'images'), { recursive: true });
    for (const file of files) {
      const entry = byCode.get(normaliseCode(file.slice(0, -4)));
      progress.tick();
      if (!entry) continue; // a Twemoji graphic emojibase has no label for
      const name = `images/${file.slice(0, -4)}.png`;
      // Rendered on white: the encoders see RGB, and a transparent emoji on black loses its outline.
      await sharp(join(svgDir, file), { density: 72 * (size / 36) })
        .resize(size, size, { fit: 'contain', background: '#ffffff' })
        .flatten({ background: '#ffffff' })
        .png()
        .toFile(join(tmp, name));
      lines.push(JSON.stringify({ file_name: name, text: emojiCaption(entry) }));
    }
    writeFileSync(join(tmp, 'metadata.jsonl'), `${lines.join('\n')}\n`);
  });
}
