// Whole LoRA training steps of a random prior as backend cases: the loss, every LoRA gradient,
// and the optimizer step after it, compared between backends (prior.test.ts holds the CPU to
// diffusers and peft).
import { randomStepInputs } from '../../bench/inputs.js';
import type { Device } from '../../src/core/device.js';
import { Prior, type PriorConfig, type Precision } from '../../src/models/prior.js';
import type { OpCase, Outputs } from './ops.js';
import { TOLERANCE } from './tolerance.js';

const EVERY_TARGET = ['to_q', 'to_k', 'to_v', 'to_out.0', 'kv_mapper.1', 'channelwise.0', 'channelwise.4'];

interface StepCase {
  label: string;
  config: PriorConfig;
  /** Batch, latent height and width, text tokens. */
  shape: [number, number, number, number];
  precision: Precision;
  rank: number;
  dropout: number;
  targets?: string[];
}

async function step({ config, shape: [B, H, W, T], precision, rank, dropout, targets }: StepCase, device: Device) {
  const lora = { rank, alpha: 4, targets: targets ?? EVERY_TARGET, dropout, seed: 2 };
  const prior = Prior.random(config, { seed: 1, lora, device, precision });
  const weights = Object.entries(prior.loraWeights());
  prior.setLoraWeights(
    Object.fromEntries(
      weights.map(([k, w]) => [k, { data: w.data.map((_, i) => Math.sin(i) * 0.05), shape: w.shape }]),
    ),
  );
  const { x, r, clip, target } = randomStepInputs(config, B, H, W, T, 7);
  // fp16 as it trains: under the GradScaler's initial 2^16. Unscaled, the output gradients
  // (~1e-6) fall below fp16's normal range where the GPU rounds dO and dS for its tensor-core
  // attention, and the q/k LoRA gradients lose digits (2.4e-2 relative error in the CUDA
  // emulator, 7.7e-4 scaled), as they would in PyTorch.
  const lossScale = precision === 'fp16' ? 2 ** 16 : 1;
  const { loss, grads } = await prior.lossAndGrad(x, r, clip, target, { seed: 9, train: true, lossScale });
  // The model's multi-tensor AdamW, its gradients clipped (maxNorm below their norm) and
  // unscaled: its first moment is the clipped gradient times 1 - beta1.
  const norm = await prior.optimizerStep({ lr: 1e-3, maxNorm: 1e-4, lossScale }, 1);
  const moments = Object.entries(prior.optimizerState()).filter(([k]) => k.endsWith('.exp_avg'));
  return { loss, grads, norm, moments };
}

function priorStepCase(c: StepCase): OpCase {
  const { forward, gradient } = c.precision === 'fp32' ? TOLERANCE : TOLERANCE.gpuMixed.step[c.precision];
  return {
    name: `prior LoRA step, ${c.label}`,
    async run(device) {
      const { loss, grads, norm, moments } = await step(c, device);
      const out: Outputs = { loss: { tensor: new Float32Array([loss]), tolerance: forward } };
      for (const [k, g] of Object.entries(grads)) out[k] = { tensor: g, tolerance: gradient };
      out['gradient norm'] = { tensor: new Float32Array([norm]), tolerance: gradient };
      for (const [k, m] of moments) out[k] = { tensor: m, tolerance: gradient };
      return out;
    },
  };
}

const SMALL: PriorConfig = { c_in: 16, c: 256, c_cond: 64, c_r: 64, depth: 2, nhead: 4, dropout: 0.1 };
const REAL_WIDTH: PriorConfig = { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 1, nhead: 24, dropout: 0.1 };

export function priorStepCases(): OpCase[] {
  const cases: StepCase[] = [
    // Head dim 64 (the GPU's tensor-core attention) and enough rows that the GPU's LoRA linears
    // take both of their bf16/fp16 paths (concatenated where rows are many, separate elsewhere).
    // LoRA dropout in fp16 only: the GPU joins the low-rank path differently with and without
    // it. An odd rank in bf16: low-precision GEMMs with a leading dimension of r.
    {
      label: 'fp32 (c 256, depth 2, head dim 64, every LoRA target)',
      config: SMALL,
      shape: [2, 12, 12, 7],
      precision: 'fp32',
      rank: 8,
      dropout: 0,
    },
    {
      label: 'bf16 (c 256, depth 2, head dim 64, every LoRA target, rank 5)',
      config: SMALL,
      shape: [2, 12, 12, 7],
      precision: 'bf16',
      rank: 5,
      dropout: 0,
    },
    {
      label: 'fp16 (c 256, depth 2, head dim 64, every LoRA target, LoRA dropout)',
      config: SMALL,
      shape: [2, 12, 12, 7],
      precision: 'fp16',
      rank: 8,
      dropout: 0.1,
    },
    // Head dim 32 (the GPU's row attention kernels writing bf16) and some targets only, so the
    // activations no adapter keeps share one scratch across blocks.
    {
      label: 'bf16 (c 256, depth 2, head dim 32, to_q and channelwise.4 only)',
      config: { ...SMALL, nhead: 8 },
      shape: [2, 12, 12, 7],
      precision: 'bf16',
      rank: 4,
      dropout: 0,
      targets: ['to_q', 'channelwise.4'],
    },
    // The real model's widths (every kernel at the benchmark's channel counts and 24 heads), one
    // level deep and on 4x4 latents so that it stays small.
    {
      label: 'bf16 at the real width (c 1536, c_cond 1280, 24 heads, depth 1, 4x4 latents)',
      config: REAL_WIDTH,
      shape: [2, 4, 4, 3],
      precision: 'bf16',
      rank: 4,
      dropout: 0,
    },
  ];
  return cases.map(priorStepCase);
}
