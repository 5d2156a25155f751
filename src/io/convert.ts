// `lora-train convert`: the tensors of a PyTorch checkpoint (read without running its pickle)
// as a safetensors file, e.g. the EfficientNet inside Würstchen's model_v2_stage_b.pt.
import { nullRecord } from '../core/untrusted.js';
import { type WritableTensor, writeSafetensors } from './safetensors.js';
import { TorchCheckpoint } from './torch-checkpoint.js';

/** Writes every tensor under `key` of a torch checkpoint to safetensors: floating point as F32,
 * integers as I64. Returns how many tensors it wrote. */
export function convertCheckpoint(input: string, output: string, key?: string): number {
  const checkpoint = new TorchCheckpoint(input);
  try {
    const tensors = nullRecord<WritableTensor>();
    for (const [name, ref] of checkpoint.stateDict(key)) {
      const t = checkpoint.tensor(ref);
      tensors[name] = ref.dtype.startsWith('float') || ref.dtype === 'bfloat16' ? t : { ...t, dtype: 'I64' };
    }
    if (Object.keys(tensors).length === 0)
      throw new Error(`${input}: no tensors under ${key ? `'${key}'` : 'the top level'}`);
    writeSafetensors(output, tensors, { format: 'pt', converted_from: input });
    return Object.keys(tensors).length;
  } finally {
    checkpoint.close();
  }
}
