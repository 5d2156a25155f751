// Where lora-train keeps what it makes once and reuses: the built-in model and dataset
// ($LORA_TRAIN_HOME) and the frozen encoders' outputs ($LORA_TRAIN_CACHE).
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';

const defaultHome = () => join(homedir(), '.cache', 'lora-train');

/** A folder from the environment: unset or empty (as a shell's `VAR=` leaves it) means the
 * default, a relative path is taken from the working directory. */
function folderFrom(variable: string, fallback: () => string): string {
  const value = process.env[variable];
  return value ? resolve(value) : fallback();
}

/** The built-in tiny model and Twemoji dataset live here. */
export function loraTrainHome(): string {
  return folderFrom('LORA_TRAIN_HOME', defaultHome);
}

/** The embedding cache's folder. */
export function embeddingCacheDir(): string {
  return folderFrom('LORA_TRAIN_CACHE', () => join(defaultHome(), 'embeddings'));
}
