// The CUDA backend's own code (native/cuda: kernels, launches, cuBLASLt calls, shared memory,
// warp shuffles, tensor-core tiles) run on the CPU by the test emulator in tests/cuda-emulator,
// against the CPU backend: every parity case of tests/parity.test.ts, so the CUDA code is
// checked on machines without a GPU. It cannot measure speed, races between blocks (they run
// one after another) or a missing __syncwarp before a WMMA load, and its tensor-core products
// add in another order than the hardware's.
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';

const binary = join(import.meta.dirname, '..', 'build-emulator', 'Release', 'lora_train.node');
// Before anything loads the addon: this file's process uses the emulator build.
process.env.LORA_TRAIN_NATIVE = binary;
const { parityCases } = await import('../bench/parity.js');
const { backendInfo } = await import('../src/ops.js');
const { expectCudaMatchesCpu, fixturesDir } = await import('./helpers.js');

it('loads the emulator build', () => {
  expect(existsSync(binary), `${binary} is missing: build it with \`npm run build:emulator\` (npm test does)`).toBe(true);
  const info = backendInfo();
  expect(info.cuda).toBe(true);
  expect(info.cudaDevice).toMatch(/emulated on the CPU/);
});

// Twice: warps (and lanes) first to last, then last to first. A barrier left out lets the warp
// that runs ahead read shared memory another has not written yet, in at least one order.
describe.each(['forward', 'reverse'])('cuda backend in the CPU emulator (threads in %s order) against the cpu backend', (order) => {
  beforeAll(() => {
    process.env.LORA_TRAIN_EMULATOR_ORDER = order;
  });
  afterAll(() => {
    delete process.env.LORA_TRAIN_EMULATOR_ORDER;
  });
  it.each(parityCases(fixturesDir).map((c) => [c.name, c] as const))('%s', async (_, c) => expectCudaMatchesCpu(c), 120_000);
});
