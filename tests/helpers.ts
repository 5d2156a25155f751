// Shared by the test files: fixture comparisons, the backend comparison, the tiny training config.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import type { ConfigOverride } from '../src/config/load.js';
import type { Tensor } from '../src/core/tensor.js';
import { type OpCase, compareWithCpu, relativeError } from './cases/index.js';

export const fixturesDir = join(import.meta.dirname, 'fixtures');

/** actual within `tolerance` (relative error) of expected, with the same shape. */
export function expectClose(
  label: string,
  actual: Tensor | Float32Array | undefined,
  expected: Tensor,
  tolerance: number,
): void {
  expect(actual, `${label} missing`).toBeDefined();
  const data = actual instanceof Float32Array ? actual : actual!.data;
  if (!(actual instanceof Float32Array)) expect(actual!.shape, `${label} shape`).toEqual(expected.shape);
  const err = relativeError(data, expected.data);
  expect(err, `${label}: relative error ${err.toExponential(2)} > ${tolerance}`).toBeLessThanOrEqual(tolerance);
}

/** Every output of a case on CUDA within its tolerance of the CPU backend's. */
export async function expectCudaMatchesCpu(c: OpCase): Promise<void> {
  const failing = (await compareWithCpu(c, 'cuda')).filter((r) => !(r.error <= r.tolerance));
  expect(
    failing.map((r) => `${c.name} ${r.output}: relative error ${r.error.toExponential(2)} > ${r.tolerance}`),
  ).toEqual([]);
}

const tinyPipeline = (crop: 'CenterCrop' | 'RandomCrop') => [
  { type: 'torchvision/Resize', size: 64, interpolation: 'bilinear' },
  { type: crop, size: 64 },
  { type: 'RandomHorizontalFlip', p: 0.5 },
  { type: 'torchvision/ToTensor' },
  { type: 'torchvision/Normalize', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] },
  { type: 'PackInputs' },
];

/** A config training LoRA adapters on a tiny random stack (src/models/tiny.ts) for 12 iterations, on
 * a dataset of tests/fixtures/datasets/hub (HF_HUB_CACHE must point there). */
export function tinyTrainingConfig(
  stack: { snapshot: string; imageEncoder: string; imageEncoderConfig: string },
  overrides: Record<string, unknown> = {},
  dataset = 'tiny/disc-captions',
  crop: 'CenterCrop' | 'RandomCrop' = 'CenterCrop',
): Record<string, unknown> {
  return {
    model: {
      prior_model: stack.snapshot,
      image_encoder: { path: stack.imageEncoder, config: stack.imageEncoderConfig },
      prior_lora_config: {
        r: 4,
        lora_alpha: 4,
        target_modules: ['to_q', 'to_k', 'to_v', 'to_out.0', 'kv_mapper.1', 'channelwise.0', 'channelwise.4'],
      },
    },
    train_dataloader: { batch_size: 2, dataset: { dataset, caption_column: 'text', pipeline: tinyPipeline(crop) } },
    optim_wrapper: { optimizer: { type: 'AdamW', lr: 1e-3, weight_decay: 1e-2 }, clip_grad: { max_norm: 1.0 } },
    train_cfg: { by_epoch: false, max_iters: 12 },
    default_hooks: { checkpoint: { interval: 4, by_epoch: false, max_keep_ckpts: 2 }, logger: { interval: 100 } },
    seed: 3,
    ...overrides,
  };
}

/** The log's lines without their wall-clock times. */
export const logLosses = (dir: string) =>
  readFileSync(join(dir, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => {
      const { seconds, ...rest } = JSON.parse(l) as { step: number; loss: number; seconds: number };
      void seconds;
      return rest;
    });

/** HF_HUB_CACHE at tests/fixtures/datasets/hub (the bundled tiny datasets) while the calling
 * suite runs, restored after. */
export function useFixtureHubCache(): void {
  const saved = process.env.HF_HUB_CACHE;
  beforeAll(() => {
    process.env.HF_HUB_CACHE = join(fixturesDir, 'datasets', 'hub');
  });
  afterAll(() => {
    if (saved === undefined) delete process.env.HF_HUB_CACHE;
    else process.env.HF_HUB_CACHE = saved;
  });
}

/** Config keys set as a caller would (the CLI's flags do the same), e.g. { work_dir, resume }. */
export function settings(values: Record<string, unknown>): ConfigOverride[] {
  return Object.entries(values).map(([key, value]) => ({ key, value, origin: 'the test' }));
}
