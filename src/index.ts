export * as ops from './ops.js';
export { native, NativeLoadError, type NativeInfo } from './native.js';
export { type Tensor, tensor, zeros, numel } from './tensor.js';
export { readSafetensors, parseSafetensors, getTensor, writeSafetensors, serializeSafetensors, SafetensorsError } from './safetensors.js';
