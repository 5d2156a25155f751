// Every op case and whole prior training steps on each available GPU backend against the CPU
// backend (ggml's test-backend-ops). Without a usable CUDA device these report skipped and say why.
import { describe, it } from 'vitest';
import { backendInfo } from '../src/native/ops.js';
import { parityCases } from './cases/index.js';
import { NAN_CASES, expectAttentionPropagatesNaN, expectCudaMatchesCpu, fixturesDir } from './helpers.js';

const info = backendInfo();
const cuda = info.cuda === true;
const reason = cuda
  ? ''
  : ` (skipped: ${info.backends.includes('cuda') ? `no usable CUDA device: ${info.cuda}` : 'this build has no CUDA backend'})`;

describe.skipIf(!cuda)(`cuda backend against cpu${reason}`, () => {
  it.each(parityCases(fixturesDir).map((c) => [c.name, c] as const))('%s', async (_, c) => expectCudaMatchesCpu(c));
  it.each(NAN_CASES)('attention propagates NaN as PyTorch does (%s compute, head dim %i)', async (compute, d) =>
    expectAttentionPropagatesNaN('cuda', compute, d),
  );
});
