// Captioned image datasets: a Hub dataset in the local cache or a folder of parquet files
// (an image struct {bytes, path} and a caption column, as lambdalabs/pokemon-blip-captions),
// an image folder with metadata.jsonl or metadata.csv (file_name, caption), or images with
// same-name .txt captions. Items load their image bytes lazily.
import { existsSync, readFileSync, readdirSync, realpathSync, statSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { CONFIG_DEFAULTS } from '../config/schema.js';
import { resolveRepo } from '../io/hub.js';

/** An error in a dataset's files, naming the file (and line or row). */
class DatasetError extends Error {}

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
  const items: DatasetItem[] = [];
  for (const file of files) {
    const where = relative(root, file) || file;
    const rows = await readParquet(file, where, { image_column: imageColumn, caption_column: captionColumn });
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
          if (path) return readFile(fileInside(root, path, source));
          throw new Error(`${source}: the image has neither bytes nor a path`);
        },
      });
    });
  }
  return items;
}

/** The rows of a parquet file's two columns (keyed by the config keys naming them); a file that
 * is not parquet, or lacks a column, is an error naming it. */
async function readParquet(
  file: string,
  where: string,
  columns: Record<string, string>,
): Promise<Record<string, unknown>[]> {
  const { asyncBufferFromFile, parquetMetadataAsync, parquetReadObjects, parquetSchema } = await import('hyparquet');
  let rows: Record<string, unknown>[];
  try {
    const buffer = await asyncBufferFromFile(file);
    const metadata = await parquetMetadataAsync(buffer);
    const present = parquetSchema(metadata).children.map((c) => c.element.name);
    for (const [key, column] of Object.entries(columns))
      if (!present.includes(column))
        throw new DatasetError(
          `${where}: no column '${column}' (columns: ${present.join(', ')}); set train_dataloader.dataset.${key}`,
        );
    rows = (await parquetReadObjects({
      file: buffer,
      metadata,
      columns: Object.values(columns),
      utf8: false,
    })) as Record<string, unknown>[];
  } catch (e) {
    if (e instanceof DatasetError) throw e;
    throw new DatasetError(`${file}: not a readable parquet file (${(e as Error).message})`);
  }
  return rows;
}

/** The boundary a dataset's files must stay inside: its folder, or for a snapshot in the Hugging
 * Face cache the repository's folder (snapshot files link into its blobs/). */
function boundaryOf(root: string): string {
  const real = realpathSync(root);
  return basename(dirname(real)) === 'snapshots' ? dirname(dirname(real)) : real;
}

/** A file a dataset names (metadata's file_name, a parquet image's path) inside the dataset,
 * after symlinks; anything outside is an error naming where the name came from. */
function fileInside(root: string, name: string, where: string): string {
  const path = resolve(root, name);
  const real = existsSync(path) ? realpathSync(path) : path;
  const boundary = boundaryOf(root);
  if (!real.startsWith(boundary + sep))
    throw new DatasetError(`${where}: '${name}' is outside the dataset's folder ${root}; refusing to read it`);
  return path;
}

/** A text file's lines, without a UTF-8 byte-order mark. */
function textLines(file: string): string[] {
  return readFileSync(file, 'utf8')
    .replace(/^\uFEFF/, '')
    .split(/\r?\n/);
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
    rows = textLines(jsonl).flatMap((line, i) => {
      if (!line.trim()) return [];
      const where = `${jsonl}:${i + 1}`;
      let row: unknown;
      try {
        row = JSON.parse(line);
      } catch (e) {
        throw new DatasetError(`${where}: not valid JSON (${(e as Error).message})`);
      }
      if (typeof row !== 'object' || row === null || Array.isArray(row))
        throw new DatasetError(`${where}: not a JSON object (${line.trim().slice(0, 40)})`);
      return [{ row: row as Record<string, unknown>, where }];
    });
  } else if (existsSync(csv)) {
    const lines = textLines(csv);
    const header = parseCsvLine(lines[0] ?? '');
    rows = lines.slice(1).flatMap((l, i) =>
      l.trim()
        ? [
            {
              row: Object.fromEntries(parseCsvLine(l).map((v, j) => [header[j] ?? `column${j}`, v])),
              where: `${csv}:${i + 2}`,
            },
          ]
        : [],
    );
  } else return undefined;
  return rows.map(({ row, where }) => {
    if (typeof row.file_name !== 'string') throw new DatasetError(`${where}: no file_name`);
    if (!Object.hasOwn(row, captionColumn))
      throw new DatasetError(
        `${where}: no caption column '${captionColumn}' (keys: ${Object.keys(row).join(', ')}); set train_dataloader.dataset.caption_column`,
      );
    const file = fileInside(dir, row.file_name, where);
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
