// Where lora-train keeps what it makes once and reuses: the built-in model and dataset
// ($LORA_TRAIN_HOME) and the frozen encoders' outputs ($LORA_TRAIN_CACHE).
import { homedir } from 'node:os';
import { join } from 'node:path';

const defaultHome = () => join(homedir(), '.cache', 'lora-train');

/** The built-in tiny model and Twemoji dataset live here. */
export function loraTrainHome(): string {
  return process.env.LORA_TRAIN_HOME ?? defaultHome();
}

/** The embedding cache's folder. */
export function embeddingCacheDir(): string {
  return process.env.LORA_TRAIN_CACHE ?? join(defaultHome(), 'embeddings');
}
