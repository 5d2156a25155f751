// The CUDA backend's own code (native/cuda: kernels, launches, cuBLASLt calls, shared memory,
// warp shuffles, tensor-core tiles) run on the CPU by the test emulator in tests/cuda-emulator,
// against the CPU backend: every parity case of tests/parity.test.ts, so the CUDA code is
// checked on machines without a GPU. It cannot measure speed or see lost updates (threads
// switch only at barriers, blocks run one after another) or a missing __syncwarp before a WMMA
// load, and its tensor-core products add in another order than the hardware's.
import { existsSync, mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Device } from '../src/core/device.js';

const binary = join(import.meta.dirname, '..', 'build-emulator', 'Release', 'lora_train.node');
// Before anything loads the addon: this file's process uses the emulator build.
process.env.LORA_TRAIN_NATIVE = binary;
const { parityCases } = await import('./cases/index.js');
const { backendInfo } = await import('../src/native/ops.js');
const {
  NAN_CASES,
  expectAttentionPropagatesNaN,
  expectCudaMatchesCpu,
  fixturesDir,
  logLosses,
  settings,
  tinyTrainingConfig,
  useFixtureHubCache,
} = await import('./helpers.js');
const { loadConfig } = await import('../src/config/load.js');
const { createTinyStack } = await import('../src/models/tiny.js');
const { train } = await import('../src/train/train.js');

it('loads the emulator build', () => {
  expect(existsSync(binary), `${binary} is missing: build it with \`npm run build:emulator\` (npm test does)`).toBe(
    true,
  );
  const info = backendInfo();
  expect(info.cuda).toBe(true);
  expect(info.cudaDevice).toMatch(/emulated on the CPU/);
});

// Three schedules. forward and reverse: each warp runs as far as a GPU may let it before the
// next (first to last, then last to first), so a barrier left out lets a warp read shared
// memory another has not written yet (poison: NaN, then 3.4e38). interleaved: warps switch at
// every warp barrier, so warps that should keep to their own part of shared memory collide;
// its cuBLASLt also finds no algorithm for the bias epilogue or bf16/fp16 operands, so the
// GEMM fallbacks a GPU's cuBLASLt may force run too.
const schedules = [
  { order: 'forward', cublaslt: '' },
  { order: 'reverse', cublaslt: '' },
  { order: 'interleaved', cublaslt: 'no-bias-epilogue,no-lowp' },
];
describe.each(schedules)(
  'cuda backend in the CPU emulator ($order order) against the cpu backend',
  ({ order, cublaslt }) => {
    beforeAll(() => {
      process.env.LORA_TRAIN_EMULATOR_ORDER = order;
      process.env.LORA_TRAIN_EMULATOR_CUBLASLT = cublaslt;
    });
    afterAll(() => {
      delete process.env.LORA_TRAIN_EMULATOR_ORDER;
      delete process.env.LORA_TRAIN_EMULATOR_CUBLASLT;
    });
    it.each(parityCases(fixturesDir).map((c) => [c.name, c] as const))(
      '%s',
      async (_, c) => expectCudaMatchesCpu(c),
      120_000,
    );
  },
);

// The default flash kernel is mma.sync's (its fragments modelled lane by lane); the WMMA one
// stays selectable and must agree as well, on every case that reaches flash attention.
describe('cuda backend in the CPU emulator, WMMA flash attention (LORA_TRAIN_FLASH=wmma)', () => {
  beforeAll(() => {
    process.env.LORA_TRAIN_FLASH = 'wmma';
  });
  afterAll(() => {
    delete process.env.LORA_TRAIN_FLASH;
  });
  const flashCases = parityCases(fixturesDir).filter((c) =>
    /attention.*_d64 \(bf16|(bf16|fp16) \(c 256, depth 2, head dim 64/.test(c.name),
  );
  it('has cases that reach flash attention', () => expect(flashCases.length).toBeGreaterThanOrEqual(3));
  it.each(flashCases.map((c) => [c.name, c] as const))('%s', async (_, c) => expectCudaMatchesCpu(c), 120_000);
  it.each(NAN_CASES.filter(([compute]) => compute !== 'f32'))(
    'attention propagates NaN as PyTorch does (%s compute, head dim %i)',
    async (compute, d) => expectAttentionPropagatesNaN('cuda', compute, d),
  );
});

describe('cuda backend in the CPU emulator: NaN', () => {
  it.each(NAN_CASES)('attention propagates NaN as PyTorch does (%s compute, head dim %i)', async (compute, d) =>
    expectAttentionPropagatesNaN('cuda', compute, d),
  );
});

// The training job on the emulated device: encoders, embedding cache, steps, AdamW, checkpoints.
describe('training on the emulated cuda device', () => {
  const root = mkdtempSync(join(tmpdir(), 'lora-train-emulator-'));
  const stack = createTinyStack(join(root, 'stack'), {
    seed: 1,
    tokenizer: join(fixturesDir, '..', '..', 'assets', 'clip-tokenizer'),
  });
  useFixtureHubCache();

  // Relative tolerances per logged loss; bf16 attention runs on (emulated) tensor cores.
  it.each([
    ['no', 1e-4],
    ['bf16', 1e-3],
  ] as const)(
    "mixed_precision %s: logs the cpu run's losses, and resumes exactly",
    async (precision, tolerance) => {
      const file = join(root, `${precision}.json`);
      const checkpoint = { checkpoint: { interval: 3, by_epoch: false, max_keep_ckpts: 2 }, logger: { interval: 100 } };
      writeFileSync(
        file,
        JSON.stringify(
          tinyTrainingConfig(stack, {
            mixed_precision: precision,
            train_cfg: { by_epoch: false, max_iters: 6 },
            default_hooks: checkpoint,
          }),
        ),
      );
      const run = async (device: Device, workDir: string, more: { stopAfter?: number; resume?: 'auto' } = {}) =>
        train({
          config: await loadConfig(
            file,
            settings({ work_dir: join(root, precision, workDir), device, resume: more.resume }),
          ),
          log: () => undefined,
          cacheDir: join(root, precision, `cache-${device}`),
          stopAfter: more.stopAfter,
        });
      await run('cpu', 'cpu');
      await run('cuda', 'cuda');
      const [cpu, cuda] = [logLosses(join(root, precision, 'cpu')), logLosses(join(root, precision, 'cuda'))];
      expect(cuda.map((l) => l.step)).toEqual([1, 2, 3, 4, 5, 6]);
      cuda.forEach((l, i) =>
        expect(
          Math.abs(l.loss - cpu[i]!.loss),
          `step ${l.step}: ${l.loss} against ${cpu[i]!.loss}`,
        ).toBeLessThanOrEqual(tolerance * cpu[i]!.loss),
      );
      await run('cuda', 'split', { stopAfter: 3 });
      await run('cuda', 'split', { resume: 'auto' });
      expect(logLosses(join(root, precision, 'split'))).toEqual(cuda);
    },
    120_000,
  );
});
