// Shared by the test files: fixture comparisons, the backend comparison, the tiny training config.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, expect } from 'vitest';
import type { ConfigOverride } from '../src/config/load.js';
import type { Device } from '../src/core/device.js';
import type { DType, Tensor } from '../src/core/tensor.js';
import * as ops from '../src/native/ops.js';
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

/** The snapshot of the bundled dataset tiny/disc-captions (parquet shards under data/). */
export const TINY_DATASET_SNAPSHOT = join(
  fixturesDir,
  'datasets',
  'hub',
  'datasets--tiny--disc-captions',
  'snapshots',
  '0123456789abcdef0123456789abcdef01234567',
);

/** The bundled tiny datasets' cache (tests/fixtures/datasets/hub), offline: their ids are not on
 * the Hub, and tests must not reach it. */
export const FIXTURE_HUB_ENV = { HF_HUB_CACHE: join(fixturesDir, 'datasets', 'hub'), HF_HUB_OFFLINE: '1' };

/** FIXTURE_HUB_ENV while the calling suite runs, restored after. */
export function useFixtureHubCache(): void {
  const saved = Object.fromEntries(Object.keys(FIXTURE_HUB_ENV).map((k) => [k, process.env[k]]));
  beforeAll(() => Object.assign(process.env, FIXTURE_HUB_ENV));
  afterAll(() => {
    for (const [k, v] of Object.entries(saved)) {
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    }
  });
}

/** Config keys set as a caller would (the CLI's flags do the same), e.g. { work_dir, resume }. */
export function settings(values: Record<string, unknown>): ConfigOverride[] {
  return Object.entries(values).map(([key, value]) => ({ key, value, origin: 'the test' }));
}

/** The attention paths a GPU takes: row kernels (fp32, head dim 4 or 64) and tensor-core flash
 * attention (bf16, head dim 64). */
export const NAN_CASES: [DType, number][] = [
  ['f32', 4],
  ['f32', 64],
  ['bf16', 64],
];

/** Attention with one NaN placed in q, k or v (batch 0, row 2, head 0) must give NaN exactly
 * where PyTorch's matmul-softmax-matmul does. A NaN query makes its row's scores NaN: that row's
 * output and log-sum-exp, its dq, and every dk and dv of the head. A NaN key makes a score of
 * every row NaN: every output, log-sum-exp, dq, dk and dv of the head. A NaN value reaches every
 * output of the head and, through dP = dO v^T, every dq and dk; dv does not depend on v. */
export async function expectAttentionPropagatesNaN(device: Device, compute: DType, d: number): Promise<void> {
  const [B, N, M, H] = [1, 5, 7, 2];
  const C = H * d;
  const tensor = (rows: number, seed: number) => ({
    data: Float32Array.from({ length: B * rows * C }, (_, i) => Math.sin(i * 1.3 + seed)),
    shape: [B, rows, C],
  });
  const head0 = (t: Float32Array, rows: number) =>
    Array.from({ length: rows }, (_, r) => t.subarray(r * C, r * C + d).some(Number.isNaN));
  const head1 = (t: Float32Array, rows: number) =>
    Array.from({ length: rows }, (_, r) => t.subarray(r * C + d, (r + 1) * C).some(Number.isNaN));
  const all = (rows: number, value: boolean) => Array<boolean>(rows).fill(value);
  const onlyRow2 = (rows: number) => Array.from({ length: rows }, (_, r) => r === 2);
  const expected = {
    q: { o: onlyRow2(N), lse: onlyRow2(N), dq: onlyRow2(N), dk: all(M, true), dv: all(M, true) },
    k: { o: all(N, true), lse: all(N, true), dq: all(N, true), dk: all(M, true), dv: all(M, true) },
    v: { o: all(N, true), lse: all(N, false), dq: all(N, true), dk: all(M, true), dv: all(M, false) },
  };
  for (const where of ['q', 'k', 'v'] as const) {
    const inputs = { q: tensor(N, 1), k: tensor(M, 2), v: tensor(M, 3) };
    inputs[where].data[2 * C + 1] = Number.NaN;
    const { q, k, v } = inputs;
    const { out, lse } = await ops.attention(q, k, v, H, { device, compute });
    const g = await ops.attentionBackward(tensor(N, 4), q, k, v, out, lse, H, { device, compute });
    const seen = {
      o: head0(out.data, N),
      lse: Array.from({ length: N }, (_, r) => Number.isNaN(lse.data[r])),
      dq: head0(g.dq.data, N),
      dk: head0(g.dk.data, M),
      dv: head0(g.dv.data, M),
    };
    expect(seen, `NaN in ${where}`).toEqual(expected[where]);
    const otherHead = [head1(out.data, N), head1(g.dq.data, N), head1(g.dk.data, M), head1(g.dv.data, M)];
    expect(otherHead.flat().some(Boolean), `NaN in ${where} reaches head 1`).toBe(false);
  }
}
