// Captioned image datasets: a Hub dataset in the local cache or a folder of parquet files
// (an image struct {bytes, path} and a caption column, as lambdalabs/pokemon-blip-captions),
// an image folder with metadata.jsonl or metadata.csv (file_name, caption), or images with
// same-name .txt captions. Items load their image bytes lazily.
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, extname, join, relative } from 'node:path';
import { CONFIG_DEFAULTS } from '../config/schema.js';
import { resolveRepo } from '../io/hub.js';

export interface DatasetItem {
  /** Where the item came from, for messages: file path or parquet file and row. */
  source: string;
  /** One caption, or several of which a step picks one at random. */
  captions: string[];
  image(): Promise<Uint8Array>;
}

const DATASET_DEFAULTS = CONFIG_DEFAULTS.train_dataloader.dataset;

export interface DatasetOptions {
  imageColumn?: string;
  captionColumn?: string;
  /** The split of a Hub dataset's parquet files (default train). */
  split?: string;
  /** Use only the first N items. */
  subset?: number;
}

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp']);

function listFiles(dir: string, keep: (f: string) => boolean): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory() && !entry.name.startsWith('.')) out.push(...listFiles(p, keep));
    else if (entry.isFile() && keep(p)) out.push(p);
  }
  return out.sort();
}

function captionsOf(value: unknown, where: string, column: string): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string')) return value;
  throw new Error(
    `${where}: caption column '${column}' holds ${JSON.stringify(value)}, not a string or a list of strings`,
  );
}

async function parquetItems(
  files: string[],
  root: string,
  imageColumn: string,
  captionColumn: string,
): Promise<DatasetItem[]> {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } = await import('hyparquet');
  const items: DatasetItem[] = [];
  for (const file of files) {
    const buffer = await asyncBufferFromFile(file);
    const metadata = await parquetMetadataAsync(buffer);
    const columns = parquetSchema(metadata).children.map((c) => c.element.name);
    const where = relative(root, file) || file;
    for (const column of [imageColumn, captionColumn])
      if (!columns.includes(column))
        throw new Error(
          `${where}: no column '${column}' (columns: ${columns.join(', ')}); set train_dataloader.dataset.${column === imageColumn ? 'image_column' : 'caption_column'}`,
        );
    const rows = (await parquetReadObjects({
      file: buffer,
      metadata,
      columns: [imageColumn, captionColumn],
      utf8: false,
    })) as Record<string, unknown>[];
    rows.forEach((row, i) => {
      const source = `${where} row ${i}`;
      const image = row[imageColumn] as { bytes?: Uint8Array; path?: string | null } | Uint8Array | null;
      const bytes = image instanceof Uint8Array ? image : image?.bytes;
      const path = image instanceof Uint8Array ? undefined : image?.path;
      items.push({
        source,
        captions: captionsOf(row[captionColumn], source, captionColumn),
        image: async () => {
          if (bytes && bytes.length) return bytes;
          if (path) return readFile(join(root, path));
          throw new Error(`${source}: the image has neither bytes nor a path`);
        },
      });
    });
  }
  return items;
}

function parseCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    const ch = line[i]!;
    if (quoted) {
      if (ch === '"' && line[i + 1] === '"') {
        cur += '"';
        i++;
      } else if (ch === '"') quoted = false;
      else cur += ch;
    } else if (ch === '"') quoted = true;
    else if (ch === ',') {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out;
}

function metadataItems(dir: string, captionColumn: string): DatasetItem[] | undefined {
  const jsonl = join(dir, 'metadata.jsonl');
  const csv = join(dir, 'metadata.csv');
  let rows: { row: Record<string, unknown>; where: string }[];
  if (existsSync(jsonl)) {
    rows = readFileSync(jsonl, 'utf8')
      .split('\n')
      .flatMap((line, i) => {
        if (!line.trim()) return [];
        try {
          return [{ row: JSON.parse(line) as Record<string, unknown>, where: `${jsonl}:${i + 1}` }];
        } catch (e) {
          throw new Error(`${jsonl}:${i + 1}: not valid JSON (${(e as Error).message})`);
        }
      });
  } else if (existsSync(csv)) {
    const lines = readFileSync(csv, 'utf8')
      .split(/\r?\n/)
      .filter((l) => l.trim());
    const header = parseCsvLine(lines[0] ?? '');
    rows = lines.slice(1).map((l, i) => ({
      row: Object.fromEntries(parseCsvLine(l).map((v, j) => [header[j] ?? `column${j}`, v])),
      where: `${csv}:${i + 2}`,
    }));
  } else return undefined;
  return rows.map(({ row, where }) => {
    if (typeof row.file_name !== 'string') throw new Error(`${where}: no file_name`);
    if (!(captionColumn in row))
      throw new Error(
        `${where}: no caption column '${captionColumn}' (keys: ${Object.keys(row).join(', ')}); set train_dataloader.dataset.caption_column`,
      );
    const file = join(dir, row.file_name);
    return {
      source: file,
      captions: captionsOf(row[captionColumn], where, captionColumn),
      image: () => readFile(file),
    };
  });
}

function textFileItems(dir: string): DatasetItem[] {
  const images = listFiles(dir, (f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase()));
  return images.map((file) => {
    const txt = file.slice(0, -extname(file).length) + '.txt';
    if (!existsSync(txt)) throw new Error(`${file}: no caption file ${basename(txt)} beside it`);
    return { source: file, captions: [readFileSync(txt, 'utf8').trim()], image: () => readFile(file) };
  });
}

/** The Hub's split keywords, as file and folder names use them (train-00000-of-00001.parquet,
 * data/validation.parquet, test/0000.parquet). */
const SPLIT_KEYWORDS: Record<string, string[]> = {
  train: ['train', 'training'],
  validation: ['validation', 'valid', 'val', 'dev'],
  test: ['test', 'testing', 'eval', 'evaluation'],
};

/** The split a file belongs to by its path's names, or undefined when they name none. */
function splitOf(file: string, root: string): string | undefined {
  for (const part of relative(root, file).split(/[\\/]/)) {
    const word = /^[a-z]+/i.exec(part)?.[0]?.toLowerCase();
    for (const [split, words] of Object.entries(SPLIT_KEYWORDS)) if (word && words.includes(word)) return split;
  }
  return undefined;
}

/** The parquet files of one split. Files that name no split are all "train", as the Hub's
 * datasets library reads them. */
function splitFiles(files: string[], root: string, split: string): string[] {
  const splits = files.map((f) => splitOf(f, root) ?? 'train');
  const chosen = files.filter((_, i) => splits[i] === split);
  if (chosen.length === 0)
    throw new Error(
      `${root}: no parquet files of split '${split}' (splits: ${[...new Set(splits)].sort().join(', ')}); set train_dataloader.dataset.split`,
    );
  return chosen;
}

/** Loads the items of a dataset: Hub id (local cache), folder or parquet file(s). */
export async function loadDataset(idOrPath: string, options: DatasetOptions = {}): Promise<DatasetItem[]> {
  const imageColumn = options.imageColumn ?? DATASET_DEFAULTS.image_column;
  const captionColumn = options.captionColumn ?? DATASET_DEFAULTS.caption_column;
  const split = options.split ?? DATASET_DEFAULTS.split;
  let items: DatasetItem[];
  if (existsSync(idOrPath) && statSync(idOrPath).isFile()) {
    if (extname(idOrPath) !== '.parquet') throw new Error(`${idOrPath}: a dataset file must be .parquet`);
    items = await parquetItems([idOrPath], '', imageColumn, captionColumn);
  } else {
    const root = resolveRepo(idOrPath, 'dataset');
    const parquet = listFiles(root, (f) => f.endsWith('.parquet'));
    if (!parquet.length && split !== 'train')
      throw new Error(
        `${root}: an image folder has one split, 'train', not '${split}'; set train_dataloader.dataset.split`,
      );
    items = parquet.length
      ? await parquetItems(splitFiles(parquet, root, split), root, imageColumn, captionColumn)
      : (metadataItems(root, captionColumn) ?? textFileItems(root));
    if (items.length === 0)
      throw new Error(
        `${root}: the dataset is empty (no parquet files, no metadata.jsonl/metadata.csv, no images with .txt captions)`,
      );
  }
  return options.subset ? items.slice(0, options.subset) : items;
}
