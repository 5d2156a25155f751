// Random inputs of one prior training step, drawn from a seed in a fixed order: x and target
// normal (B, c_in, H, W), r uniform (B), clip normal (B, T, c_cond). The benchmarks, the GPU
// check and the prior-step parity cases all use them.
import { Rng } from '../src/core/rng.js';
import type { Tensor } from '../src/core/tensor.js';
import type { PriorConfig } from '../src/models/prior.js';

export function randomStepInputs(config: PriorConfig, B: number, H: number, W: number, T: number, seed: number) {
  const rng = new Rng(seed);
  const tensor = (shape: number[], draw: () => number): Tensor => ({
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, draw),
    shape,
  });
  const x = tensor([B, config.c_in, H, W], () => rng.normal()),
    target = tensor([B, config.c_in, H, W], () => rng.normal());
  const r = tensor([B], () => rng.uniform()),
    clip = tensor([B, T, config.c_cond], () => rng.normal());
  return { x, r, clip, target };
}
