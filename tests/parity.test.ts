// Every op, and a whole prior training step, on each available GPU backend against the CPU
// backend (ggml's test-backend-ops). Without a usable CUDA device these report skipped and say why.
import { describe, expect, it } from 'vitest';
import { dataOf, parityCases, relativeError } from '../bench/parity.js';
import { backendInfo } from '../src/ops.js';
import { fixturesDir } from './helpers.js';

const info = backendInfo();
const cuda = info.cuda === true;
const reason = cuda ? '' : ` (skipped: ${info.backends.includes('cuda') ? `no usable CUDA device: ${info.cuda}` : 'this build has no CUDA backend'})`;

describe.skipIf(!cuda)(`cuda backend against cpu${reason}`, () => {
  it.each(parityCases(fixturesDir).map((c) => [c.name, c] as const))('%s', async (_, c) => {
    const cpu = await c.run('cpu');
    const gpu = await c.run('cuda');
    expect(Object.keys(gpu).sort()).toEqual(Object.keys(cpu).sort());
    for (const [key, { tensor, tolerance }] of Object.entries(cpu)) {
      const err = relativeError(dataOf(gpu[key]!.tensor), dataOf(tensor));
      expect(err, `${c.name} ${key}: relative error ${err.toExponential(2)} > ${tolerance}`).toBeLessThanOrEqual(tolerance);
    }
  });
});
