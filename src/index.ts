export * as ops from './ops.js';
export { native, NativeLoadError, type NativeInfo } from './native.js';
export { type Tensor, tensor, zeros, numel } from './tensor.js';
export {
  readSafetensors,
  parseSafetensors,
  getTensor,
  writeSafetensors,
  serializeSafetensors,
  SafetensorsError,
} from './safetensors.js';
export {
  loadPrior,
  Prior,
  readLoraFile,
  type PriorConfig,
  type LoraOptions,
  type LoadPriorOptions,
  DEFAULT_LORA_TARGETS,
} from './prior.js';
export { SafetensorsReader } from './safetensors.js';
export { ClipTokenizer, type TokenizedBatch } from './tokenizer.js';
export { TextEncoder, readTextEncoderConfig, type TextEncoderConfig } from './text-encoder.js';
export { ImageEncoder, EFFICIENTNET_V2_S, type ImageEncoderConfig } from './image-encoder.js';
export { TorchCheckpoint, TensorRef, CheckpointError } from './torch-checkpoint.js';
export { EmbeddingCache } from './embedding-cache.js';
export { Progress } from './progress.js';
export { defineConfig, loadConfig, type LoraTrainConfig, ConfigError } from './config.js';
