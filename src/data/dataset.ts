// Captioned image datasets: a Hub dataset in the local cache or a folder of parquet files
// (an image struct {bytes, path} and a caption column, as lambdalabs/pokemon-blip-captions),
// an image folder with metadata.jsonl or metadata.csv (file_name, caption), or images with
// same-name .txt captions. Items load their image bytes lazily.
import {
  type Stats,
  closeSync,
  existsSync,
  fstatSync,
  openSync,
  readFileSync,
  readdirSync,
  realpathSync,
  statSync,
} from 'node:fs';
import { open } from 'node:fs/promises';
import { basename, dirname, extname, join, relative, resolve, sep } from 'node:path';
import { CONFIG_DEFAULTS } from '../config/schema.js';
import { describeValue } from '../core/tensor.js';
import { resolveRepo } from '../hub/cache.js';
import { READ_FLAGS, kindOf } from '../io/regular-file.js';

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
  /** The branch, tag or commit of a Hub dataset (default main). */
  revision?: string;
}

const IMAGE_EXTENSIONS = new Set(['.png', '.jpg', '.jpeg', '.webp', '.gif', '.tif', '.tiff', '.avif', '.bmp']);

/** The regular files under `dir` that `keep`, and the links to regular files: a Hub snapshot's
 * files are links into its blobs/ (where a link leads is checked before it is read). */
function listFiles(dir: string, keep: (f: string) => boolean): string[] {
  const out: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const p = join(dir, entry.name);
    if (entry.isDirectory() && !entry.name.startsWith('.')) out.push(...listFiles(p, keep));
    else if (
      keep(p) &&
      (entry.isFile() || (entry.isSymbolicLink() && statSync(p, { throwIfNoEntry: false })?.isFile()))
    )
      out.push(p);
  }
  return out.sort();
}

function captionsOf(value: unknown, where: string, column: string): string[] {
  if (typeof value === 'string') return [value];
  if (Array.isArray(value) && value.length > 0 && value.every((v) => typeof v === 'string')) return value;
  throw new Error(
    `${where}: caption column '${column}' holds ${describeValue(value)}, not a string or a list of strings`,
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
    // A parquet file given by path (root '') is its own dataset, in its folder.
    if (root) ownFile(root, file);
    regularOnly(file, statSync(file));
    const base = root || dirname(resolve(file));
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
          if (path) return readImage(base, fileInside(base, path, source));
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
  const repo = dirname(dirname(real));
  const inHubCache =
    basename(dirname(real)) === 'snapshots' &&
    /^(datasets|models|spaces)--/.test(basename(repo)) &&
    existsSync(join(repo, 'blobs'));
  return inHubCache ? repo : real;
}

/** `path` after symlinks; for a path that does not exist, its nearest existing folder's, so that
 * a missing file is judged by where it would be. */
function realOf(path: string): string {
  if (existsSync(path)) return realpathSync(path);
  const parent = dirname(path);
  return parent === path ? path : join(realOf(parent), basename(path));
}

function isInside(root: string, path: string): boolean {
  return realOf(resolve(path)).startsWith(boundaryOf(root) + sep);
}

/** A file a dataset names (metadata's file_name, a parquet image's path) inside the dataset,
 * after symlinks; anything outside is an error naming where the name came from. */
function fileInside(root: string, name: string, where: string): string {
  const path = resolve(root, name);
  if (path === resolve(root)) throw new DatasetError(`${where}: '${name}' does not name a file`);
  if (!isInside(root, path))
    throw new DatasetError(`${where}: '${name}' is outside the dataset's folder ${root}; refusing to read it`);
  return path;
}

/** A file the reader finds by itself (a caption, metadata, a parquet file or a listed image),
 * held to the rule of the files a dataset names: a link out of the dataset is not followed. */
function ownFile(root: string, file: string): string {
  if (!isInside(root, file))
    throw new DatasetError(`${file}: outside the dataset's folder ${root} (after symlinks); refusing to read it`);
  return file;
}

/** Only regular files are read: a pipe or device could block or never end, a folder gives a bare EISDIR. */
function regularOnly(file: string, stats: Stats): void {
  if (!stats.isFile()) throw new DatasetError(`${file}: ${kindOf(stats)}, not a regular file; refusing to read it`);
}

/** A caption or metadata file's text, without a UTF-8 byte-order mark. */
function readText(root: string, file: string): string {
  const fd = openSync(ownFile(root, file), READ_FLAGS);
  try {
    regularOnly(file, fstatSync(fd));
    return readFileSync(fd, 'utf8').replace(/^\uFEFF/, '');
  } finally {
    closeSync(fd);
  }
}

/** An image's bytes. Checked again when read, which may be long after loading; the error skips
 * the item as an unreadable image. */
async function readImage(root: string, file: string): Promise<Uint8Array> {
  const handle = await open(ownFile(root, file), READ_FLAGS);
  try {
    regularOnly(file, await handle.stat());
    return await handle.readFile();
  } finally {
    await handle.close();
  }
}

interface MetadataRow {
  row: Record<string, unknown>;
  /** The file and line, for messages. */
  where: string;
}

function jsonlRows(dir: string, file: string): MetadataRow[] {
  return readText(dir, file)
    .split(/\r?\n/)
    .flatMap((line, i) => {
      if (!line.trim()) return [];
      const where = `${file}:${i + 1}`;
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
}

interface CsvRecord {
  fields: string[];
  /** The line the record starts on. */
  line: number;
}

/** Where the quoted field whose text starts at `from` closes (a doubled quote is a quote in
 * the text), or -1. */
function closingQuote(text: string, from: number): number {
  for (let q = text.indexOf('"', from); q >= 0; q = text.indexOf('"', q + 2)) if (text[q + 1] !== '"') return q;
  return -1;
}

/** A CSV text's records as RFC 4180 has them: a quoted field may hold commas, doubled quotes
 * and line breaks; lines end in LF or CRLF. Blank lines are skipped. Text after a closing quote,
 * or a quote inside an unquoted field, is kept as it is, as Python's csv (which the Hub's
 * datasets library reads with) keeps it. */
function csvRecords(text: string, file: string): CsvRecord[] {
  const records: CsvRecord[] = [];
  const delimiter = /,|\r?\n/g;
  let line = 1;
  for (let i = 0; i < text.length;) {
    const start = i;
    const fields: string[] = [];
    for (let more = true; more;) {
      let field = '';
      if (text[i] === '"') {
        const close = closingQuote(text, i + 1);
        if (close < 0) throw new DatasetError(`${file}:${line}: a quoted field is never closed`);
        field = text.slice(i + 1, close).replaceAll('""', '"');
        i = close + 1;
      }
      delimiter.lastIndex = i;
      const stop = delimiter.exec(text)?.index ?? text.length;
      fields.push(field + text.slice(i, stop));
      more = text[stop] === ',';
      i = stop + (text.startsWith('\r\n', stop) ? 2 : 1);
    }
    const raw = text.slice(start, i);
    if (raw.trim()) records.push({ fields, line });
    line += raw.split('\n').length - 1;
  }
  return records;
}

/** metadata.csv's rows, keyed by its header's column names. */
function csvRows(dir: string, file: string): MetadataRow[] {
  const [header, ...records] = csvRecords(readText(dir, file), file);
  if (!header) return [];
  const names = header.fields;
  // Unnamed columns (a trailing comma in a spreadsheet's export) name nothing a dataset reads.
  const twice = names.find((name, i) => name !== '' && names.indexOf(name) !== i);
  if (twice !== undefined) throw new DatasetError(`${file}:${header.line}: the header names column '${twice}' twice`);
  return records.map(({ fields, line }) => ({
    row: Object.fromEntries(fields.map((v, j) => [names[j] ?? `column${j}`, v])),
    where: `${file}:${line}`,
  }));
}

function metadataItem(dir: string, { row, where }: MetadataRow, captionColumn: string): DatasetItem {
  if (!Object.hasOwn(row, 'file_name')) throw new DatasetError(`${where}: no file_name`);
  if (typeof row.file_name !== 'string')
    throw new DatasetError(`${where}: file_name must be a string, got ${JSON.stringify(row.file_name).slice(0, 40)}`);
  if (!Object.hasOwn(row, captionColumn))
    throw new DatasetError(
      `${where}: no caption column '${captionColumn}' (keys: ${Object.keys(row).join(', ')}); set train_dataloader.dataset.caption_column`,
    );
  const file = fileInside(dir, row.file_name, where);
  return {
    source: file,
    captions: captionsOf(row[captionColumn], where, captionColumn),
    image: () => readImage(dir, file),
  };
}

function metadataItems(dir: string, captionColumn: string): DatasetItem[] | undefined {
  const jsonl = join(dir, 'metadata.jsonl');
  const csv = join(dir, 'metadata.csv');
  const rows = existsSync(jsonl) ? jsonlRows(dir, jsonl) : existsSync(csv) ? csvRows(dir, csv) : undefined;
  return rows?.map((row) => metadataItem(dir, row, captionColumn));
}

function textFileItems(dir: string): DatasetItem[] {
  const images = listFiles(dir, (f) => IMAGE_EXTENSIONS.has(extname(f).toLowerCase()));
  return images.map((file) => {
    const txt = file.slice(0, -extname(file).length) + '.txt';
    if (!existsSync(txt)) throw new Error(`${file}: no caption file ${basename(txt)} beside it`);
    ownFile(dir, file);
    return { source: file, captions: [readText(dir, txt).trim()], image: () => readImage(dir, file) };
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

/** The parquet files of one split, their split read from their paths below `root` (or the
 * paths themselves when relative). Files that name no split are all "train", as the Hub's
 * datasets library reads them. Errors name `where` (default root). */
export function splitFiles(files: string[], root: string, split: string, where = root): string[] {
  const splits = files.map((f) => splitOf(f, root) ?? 'train');
  const chosen = files.filter((_, i) => splits[i] === split);
  if (chosen.length === 0)
    throw new Error(
      `${where}: no parquet files of split '${split}' (splits: ${[...new Set(splits)].sort().join(', ')}); set train_dataloader.dataset.split`,
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
    const root = resolveRepo(idOrPath, 'dataset', options.revision);
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
