export * as ops from './ops.js';
export { native, NativeLoadError, type NativeInfo } from './native.js';
export { type Tensor, tensor, zeros, numel } from './tensor.js';
export { readSafetensors, parseSafetensors, getTensor, writeSafetensors, serializeSafetensors, SafetensorsError } from './safetensors.js';
export { loadPrior, Prior, readLoraFile, type PriorConfig, type LoraOptions, type LoadPriorOptions, DEFAULT_LORA_TARGETS } from './prior.js';
export { SafetensorsReader } from './safetensors.js';
