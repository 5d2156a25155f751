// The demo's dataset, built from npm packages on first use: the Twemoji graphics rendered with
// sharp and captioned from emojibase's labels and tags, written once as an image folder with
// metadata.jsonl under $LORA_TRAIN_HOME/datasets.
import { readFileSync, readdirSync, writeFileSync, mkdirSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import sharp from 'sharp';
import { loraTrainHome } from '../core/paths.js';
import { Progress } from '../core/progress.js';
import { buildFolderOnce } from '../io/atomic.js';

export const TWEMOJI_DATASET_ID = 'builtin:twemoji';

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
  const version = (JSON.parse(readFileSync(join(svgDir, 'package.json'), 'utf8')) as { version: string }).version;
  const target = join(loraTrainHome(), 'datasets', `twemoji-${version}-${size}px`);
  return buildFolderOnce(target, async (tmp) => {
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
