// The training data a config names: its dataset's items with their embeddings ready, less the
// items held out to evaluate on.
import { type LoadedConfig, required } from '../config/load.js';
import { loadDataset } from './dataset.js';
import { EmbeddingCache } from './embedding-cache.js';
import { Embedder, type Encoders, type PreparedItem, prepareItems } from './embeddings.js';
import { splitHoldout } from './batches.js';
import { ImageTransform } from './transforms.js';
import { TWEMOJI_DATASET_ID, twemojiDataset } from './twemoji.js';

export interface TrainingData {
  train: PreparedItem[];
  heldOut: PreparedItem[];
  /** Items whose image could not be read or decoded. */
  skipped: string[];
  embedder: Embedder;
}

export async function loadTrainingData(
  loaded: LoadedConfig,
  encoders: Encoders,
  options: { cacheDir: string; log: (line: string) => void },
): Promise<TrainingData> {
  const { config, file } = loaded;
  const ds = config.train_dataloader.dataset;
  const id = required(ds.dataset, 'train_dataloader.dataset.dataset', file);
  const items = await loadDataset(id === TWEMOJI_DATASET_ID ? await twemojiDataset() : id, {
    imageColumn: ds.image_column,
    captionColumn: ds.caption_column,
    split: ds.split,
    subset: ds.subset,
    revision: ds.revision,
  });
  const cache = config.cache_embeddings ? new EmbeddingCache(options.cacheDir) : undefined;
  const transform = new ImageTransform(ds.pipeline, file);
  // Said once here rather than for every image the encoder would refuse.
  if (transform.cropSize?.some((side) => side % 32 !== 0))
    throw new Error(
      `${file}: train_dataloader.dataset.pipeline crops to [${transform.cropSize.join(', ')}], and the image encoder takes multiples of 32 on each side`,
    );
  const embedder = new Embedder(encoders, transform, cache);
  const concurrency = config.train_dataloader.num_workers;
  const { prepared, skipped } = await prepareItems(items, embedder, { concurrency, log: options.log });
  const { train, heldOut } = splitHoldout(prepared, ds.holdout, config.seed);
  if (train.length === 0)
    throw new Error(`the dataset has no usable items (${skipped.length} skipped, ${heldOut.length} held out)`);
  const stats = cache?.stats ?? { hits: 0, misses: 0, repaired: 0, unwritten: 0 };
  options.log(
    `lora-train: ${train.length} items ready (${stats.hits} cached embeddings reused, ${stats.misses} computed, ${stats.repaired} damaged entries recomputed, ${skipped.length} unreadable images skipped)`,
  );
  if (stats.unwritten)
    options.log(
      `lora-train: warning: ${stats.unwritten} embeddings could not be cached in ${cache!.dir} (${stats.writeError}); they will be computed again next run`,
    );
  return { train, heldOut, skipped, embedder };
}
