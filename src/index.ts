export * as ops from './native/ops.js';
export { native, NativeLoadError } from './native/loader.js';
export type { NativeInfo } from './native/addon.js';
export { type Tensor, tensor, zeros, numel } from './core/tensor.js';
export {
  readSafetensors,
  parseSafetensors,
  getTensor,
  writeSafetensors,
  serializeSafetensors,
  SafetensorsError,
} from './io/safetensors.js';
export {
  loadPrior,
  Prior,
  readLoraFile,
  type PriorConfig,
  type LoraOptions,
  type LoadPriorOptions,
} from './models/prior.js';
export { SafetensorsReader } from './io/safetensors.js';
export { ClipTokenizer, type TokenizedBatch } from './models/tokenizer.js';
export { TextEncoder, readTextEncoderConfig, type TextEncoderConfig } from './models/text-encoder.js';
export { ImageEncoder, EFFICIENTNET_V2_S, type ImageEncoderConfig } from './models/image-encoder.js';
export { TorchCheckpoint, TensorRef, CheckpointError } from './io/torch-checkpoint.js';
export { EmbeddingCache } from './data/embedding-cache.js';
export { Progress } from './core/progress.js';
export {
  defineConfig,
  loadConfig,
  type ConfigInput,
  type ConfigOverride,
  type LoadedConfig,
  type LoraTrainConfig,
  ConfigError,
} from './config/load.js';
export { DEFAULT_LORA_TARGETS, CONFIG_DEFAULTS } from './config/schema.js';
export { train, type TrainOptions, type TrainResult } from './train/train.js';
