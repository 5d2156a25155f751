// `lora-train convert`: the tensors of a PyTorch checkpoint (read without running its pickle)
// as a safetensors file, e.g. the EfficientNet inside Würstchen's model_v2_stage_b.pt.
import { nullRecord, touchesPrototype } from '../core/untrusted.js';
import { type EncodedTensor, type WritableTensor, writeSafetensors } from './safetensors.js';
import { CheckpointError, type TensorRef, TorchCheckpoint } from './torch-checkpoint.js';

/** The dtypes written byte for byte, by torch dtype. Through fp32, int64 16777217 became
 * 16777216 and 2^63-1 became -2^63, and float64 lost digits and range. float32, float16 and
 * bfloat16 are written as F32, which holds each of their values exactly. */
const EXACT: Record<string, EncodedTensor['dtype']> = {
  float64: 'F64',
  int64: 'I64',
  int32: 'I32',
  int16: 'I16',
  int8: 'I8',
  uint8: 'U8',
  bool: 'BOOL',
};

/** Writes every tensor under `key` of a torch checkpoint to safetensors: integers and float64
 * exactly, in their own dtype; float32, float16 and bfloat16 as F32. Returns how many tensors
 * it wrote. */
export function convertCheckpoint(input: string, output: string, key?: string): number {
  const checkpoint = new TorchCheckpoint(input);
  try {
    const refs = checkpoint.stateDict(key);
    for (const name of refs.keys()) checkName(input, name);
    const tensors = nullRecord<WritableTensor>();
    for (const [name, ref] of refs) tensors[name] = writable(checkpoint, ref);
    if (Object.keys(tensors).length === 0)
      throw new Error(`${input}: no tensors under ${key ? `'${key}'` : 'the top level'}`);
    writeSafetensors(output, tensors, { format: 'pt', converted_from: input });
    return Object.keys(tensors).length;
  } finally {
    checkpoint.close();
  }
}

function writable(checkpoint: TorchCheckpoint, ref: TensorRef): WritableTensor {
  const dtype = Object.hasOwn(EXACT, ref.dtype) ? EXACT[ref.dtype] : undefined;
  if (!dtype) return checkpoint.tensor(ref);
  const { bytes, shape } = checkpoint.rawTensor(ref);
  return { bytes, shape, dtype };
}

/** Refuses, before anything is written, a name that lora-train's safetensors reader would
 * refuse: pickle keys may hold dots, so 'a.__proto__.b' passes the pickle reader's check of
 * whole keys, and '__metadata__' would take the place of the header's metadata. */
function checkName(input: string, name: string): void {
  if (touchesPrototype(name))
    throw new CheckpointError(input, `tensor name '${name}' is not allowed (a part of it names an object prototype)`);
  if (name === '__metadata__')
    throw new CheckpointError(input, `tensor name '${name}' is not allowed (safetensors keeps its metadata there)`);
}
