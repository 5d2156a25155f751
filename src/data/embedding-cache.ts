// A content-addressed cache of frozen-encoder outputs on disk. An entry's key hashes what
// determines its value (the input's bytes, the encoder's weights, the transform settings), so a
// changed image, caption, encoder or setting misses and is recomputed. Entries are safetensors
// files written atomically, carrying their key and a checksum of their tensor bytes; an entry
// that does not parse, names another key or fails its checksum is recomputed, never trusted.
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { canonicalJson, fileHash, sha256 } from '../core/hash.js';
import { nullRecord } from '../core/untrusted.js';
import { type Tensor } from '../core/tensor.js';
import { NonFiniteError } from '../core/finite.js';
import { writeFileDurably } from '../io/atomic.js';
import { readRegular } from '../io/regular-file.js';
import { getTensor, parseSafetensors, writeSafetensors } from '../io/safetensors.js';

function tensorChecksum(tensors: Record<string, Tensor>): string {
  const h = createHash('sha256');
  for (const name of Object.keys(tensors).sort()) {
    const t = tensors[name]!;
    h.update(`${name}:${t.shape.join('x')};`);
    h.update(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength));
  }
  return h.digest('hex');
}

export interface CacheStats {
  hits: number;
  misses: number;
  /** Entries found damaged (unreadable, wrong key, bad checksum) and recomputed. */
  repaired: number;
  /** Entries that could not be stored, and the first reason. */
  unwritten: number;
  writeError?: string;
}

export class EmbeddingCache {
  readonly stats: CacheStats = { hits: 0, misses: 0, repaired: 0, unwritten: 0 };
  private readonly fingerprints: string;

  constructor(readonly dir: string) {
    try {
      mkdirSync(dir, { recursive: true });
    } catch (e) {
      throw new Error(
        `${dir}: cannot make the embedding cache folder here (${(e as Error).message}); set LORA_TRAIN_CACHE to a folder, or cache_embeddings: false`,
        { cause: e },
      );
    }
    this.fingerprints = join(dir, 'fingerprints.json');
  }

  /** A stable fingerprint of weight files: their content hashes, remembered per (path, size,
   * mtime) so that a multi-gigabyte encoder is hashed once, not on every run. */
  weightsFingerprint(files: string[]): string {
    const known = nullRecord<string>();
    try {
      Object.assign(known, JSON.parse(readRegular(this.fingerprints).toString('utf8')));
    } catch {
      // a damaged list of fingerprints: the files are hashed again
    }
    let changed = false;
    const hashes = files.map((f) => {
      const s = statSync(f);
      const id = `${resolve(f)}|${s.size}|${s.mtimeMs}`;
      if (!known[id]) {
        known[id] = fileHash(f);
        changed = true;
      }
      return known[id];
    });
    try {
      if (changed) writeFileDurably(this.fingerprints, JSON.stringify(known, null, 1));
    } catch {
      // not remembered: the files are hashed again next run
    }
    return sha256(...hashes);
  }

  /** The key of an entry: a hash over everything that determines its value (key order of
   * objects, at any depth, does not matter). */
  static key(parts: Record<string, unknown>): string {
    return sha256(canonicalJson(parts));
  }

  private path(key: string): string {
    return join(this.dir, key.slice(0, 2), `${key}.safetensors`);
  }

  /** The cached tensors for key, or undefined (missing or damaged: damaged counts as repaired). */
  read(key: string): Record<string, Tensor> | undefined {
    const file = this.path(key);
    if (!existsSync(file)) return undefined;
    try {
      const st = parseSafetensors(readRegular(file), file);
      if (st.metadata.key !== key) throw new Error('names another key');
      const tensors = nullRecord<Tensor>();
      for (const name of st.entries.keys()) tensors[name] = getTensor(st, name);
      if (tensorChecksum(tensors) !== st.metadata.checksum) throw new Error('checksum mismatch');
      return tensors;
    } catch {
      this.stats.repaired++;
      return undefined;
    }
  }

  /** Stores an entry, if it can: a cache that cannot be written (a full disk, something else
   * at the entry's path) costs time on the next run, never an item of this one. */
  write(key: string, tensors: Record<string, Tensor>): void {
    const file = this.path(key);
    try {
      mkdirSync(dirname(file), { recursive: true });
      writeSafetensors(file, tensors, { key, checksum: tensorChecksum(tensors) });
    } catch (e) {
      if (e instanceof NonFiniteError) throw e;
      this.stats.unwritten++;
      this.stats.writeError ??= (e as Error).message;
    }
  }

  /** The cached values for many keys; compute(missing) is called once with the indices of the
   * keys that are missing or damaged and returns their values in that order. */
  async getMany(
    keys: string[],
    compute: (missing: number[]) => Promise<Record<string, Tensor>[]>,
  ): Promise<Record<string, Tensor>[]> {
    const values = keys.map((k) => this.read(k));
    const missing = values.flatMap((v, i) => (v ? [] : [i]));
    this.stats.hits += keys.length - missing.length;
    this.stats.misses += missing.length;
    if (missing.length) {
      const computed = await compute(missing);
      missing.forEach((index, j) => {
        this.write(keys[index]!, computed[j]!);
        values[index] = computed[j]!;
      });
    }
    return values as Record<string, Tensor>[];
  }

  /** The cached value, or compute(), stored, when missing or damaged. */
  async get(key: string, compute: () => Promise<Record<string, Tensor>>): Promise<Record<string, Tensor>> {
    const cached = this.read(key);
    if (cached) {
      this.stats.hits++;
      return cached;
    }
    this.stats.misses++;
    const value = await compute();
    this.write(key, value);
    return value;
  }
}
