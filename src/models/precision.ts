// The storage type of a model's frozen Linear weights, as a user names it and as the addon does.
import { invalid } from '../core/tensor.js';
import type { WeightType } from '../native/addon.js';

/** Storage of the frozen Linear weights: fp32, or mixed precision with bf16/fp16 weights and
 * GEMM operands (fp32 accumulation; activations, LoRA weights, gradients and AdamW state stay
 * fp32). fp16 needs loss scaling in training (the trainer's GradScaler does it). */
export type Precision = 'fp32' | 'bf16' | 'fp16';
const WEIGHT_TYPE = { fp32: 'f32', bf16: 'bf16', fp16: 'f16' } as const;

/** The addon's weight_type for `precision` (default fp32), or an error naming op's option. */
export function weightType(op: string, precision: unknown = 'fp32'): WeightType {
  if (typeof precision !== 'string' || !Object.hasOwn(WEIGHT_TYPE, precision))
    invalid(op, "'fp32', 'bf16' or 'fp16'", 'precision', precision);
  return WEIGHT_TYPE[precision as Precision];
}
