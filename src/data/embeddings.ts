// The frozen encoders' outputs for a dataset (docs/wuerstchen-prior.md §4): the text
// encoder's last hidden state for every caption, and the image embeddings
// effnet(pixels).add(1).div(42) for every image and its flip, each computed once and kept in
// the embedding cache. An image whose random crop has room to move is encoded every step
// instead (Batches), so augmentation stays exact.
import { sha256 } from '../core/hash.js';
import { Progress } from '../core/progress.js';
import { Rng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';
import type { ImageEncoder } from '../models/image-encoder.js';
import type { TextEncoder } from '../models/text-encoder.js';
import type { ClipTokenizer } from '../models/tokenizer.js';
import type { DatasetItem } from './dataset.js';
import { EmbeddingCache } from './embedding-cache.js';
import { type ImageGeometry, ImageTransform, type TransformPlan } from './transforms.js';

/** Captions encoded per text-encoder call. */
const TEXT_BATCH = 32;

export interface Encoders {
  tokenizer: ClipTokenizer;
  textEncoder: TextEncoder;
  imageEncoder: ImageEncoder;
  /** The files each encoder's outputs depend on, fingerprinted for cache keys. */
  textFiles: string[];
  imageFiles: string[];
}

/** Encodes captions and images through the cache (or straight, without one). */
export class Embedder {
  private readonly textPrint: string;
  private readonly imagePrint: string;

  constructor(
    private readonly encoders: Encoders,
    readonly transform: ImageTransform,
    readonly cache: EmbeddingCache | undefined,
  ) {
    this.textPrint = cache?.weightsFingerprint(encoders.textFiles) ?? '';
    this.imagePrint = cache?.weightsFingerprint(encoders.imageFiles) ?? '';
  }

  /** Each distinct caption's embedding (T, c_cond); missing ones are encoded in batches. */
  async captions(captions: string[]): Promise<Map<string, Tensor>> {
    const distinct = [...new Set(captions)];
    const encode = async (texts: string[]) => {
      const out: Record<string, Tensor>[] = [];
      for (let i = 0; i < texts.length; i += TEXT_BATCH) {
        const { tokenizer, textEncoder } = this.encoders;
        const hidden = await textEncoder.encode(await tokenizer.encode(texts.slice(i, i + TEXT_BATCH)));
        const per = hidden.data.length / hidden.shape[0]!;
        for (let b = 0; b < hidden.shape[0]!; b++)
          out.push({ embedding: { data: hidden.data.slice(b * per, (b + 1) * per), shape: hidden.shape.slice(1) } });
      }
      return out;
    };
    const keys = distinct.map((caption) => EmbeddingCache.key({ kind: 'text', caption, encoder: this.textPrint }));
    const values = this.cache
      ? await this.cache.getMany(keys, (missing) => encode(missing.map((i) => distinct[i]!)))
      : await encode(distinct);
    return new Map(distinct.map((c, i) => [c, values[i]!.embedding!]));
  }

  /** The image embedding (16, h, w) of one image under one crop and flip. */
  async image(bytes: Uint8Array, contentHash: string, plan: TransformPlan): Promise<Tensor> {
    const run = async () => {
      const pixels = await this.transform.apply(bytes, plan);
      const latent = await this.encoders.imageEncoder.encode({
        data: pixels,
        shape: [1, 3, plan.crop.height, plan.crop.width],
      });
      return { embedding: { data: latent.data.map((v) => (v + 1) / 42), shape: latent.shape.slice(1) } };
    };
    const key = EmbeddingCache.key({
      kind: 'image',
      content: contentHash,
      encoder: this.imagePrint,
      transform: this.transform.settings,
      plan,
    });
    return (this.cache ? await this.cache.get(key, run) : await run()).embedding;
  }
}

export interface PreparedItem {
  source: string;
  /** Text embeddings per caption, (T, c_cond). */
  text: Tensor[];
  /** Image embeddings [unflipped, flipped], (16, h, w), or null when a random crop varies. */
  image: [Tensor, Tensor | undefined] | null;
  /** The image's bytes and their hash, kept only when a random crop makes it encode every step. */
  bytes?: { data: Uint8Array; hash: string };
  geometry: ImageGeometry;
}

async function prepareItem(item: DatasetItem, embedder: Embedder, text: Map<string, Tensor>): Promise<PreparedItem> {
  const bytes = await item.image();
  const geometry = await ImageTransform.geometry(bytes);
  const hash = sha256(bytes);
  const { transform } = embedder;
  const prepared = { source: item.source, text: item.captions.map((c) => text.get(c)!), geometry };
  const fixed = transform.plan(geometry, new Rng(0), item.source);
  if (transform.cropVaries(geometry)) {
    // Decoded once here, so an image that cannot be is skipped now rather than stopping a step.
    await transform.apply(bytes, fixed);
    return { ...prepared, image: null, bytes: { data: bytes, hash } };
  }
  const plain = await embedder.image(bytes, hash, { ...fixed, flip: false });
  const flipped =
    transform.flipProbability > 0 ? await embedder.image(bytes, hash, { ...fixed, flip: true }) : undefined;
  return { ...prepared, image: [plain, flipped] };
}

/** Every item's embeddings, in the dataset's order, `concurrency` images at a time. An image
 * that cannot be read or decoded is skipped with a message naming it. */
export async function prepareItems(
  items: DatasetItem[],
  embedder: Embedder,
  options: { concurrency: number; log: (line: string) => void },
): Promise<{ prepared: PreparedItem[]; skipped: string[] }> {
  const text = await embedder.captions(items.flatMap((item) => item.captions));
  const results = new Array<PreparedItem | undefined>(items.length);
  const progress = new Progress('embeddings', items.length, { unit: 'images' });
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < items.length; i = next++) {
      try {
        results[i] = await prepareItem(items[i]!, embedder, text);
      } catch (e) {
        options.log(`lora-train: skipping ${items[i]!.source}: ${(e as Error).message.split('\n')[0]}`);
      }
      progress.tick();
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, options.concurrency) }, worker));
  const skipped = items.filter((_, i) => !results[i]).map((item) => item.source);
  return { prepared: results.filter((r): r is PreparedItem => r !== undefined), skipped };
}
