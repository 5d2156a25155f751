// Every op case (tests/cases/ops.ts) on the CPU against PyTorch's float64 results
// (tests/reference/ops_fixtures.py, lowp_fixtures.py), once per micro-kernel set this CPU can
// run; sets it cannot run are reported as skipped.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ops from '../src/native/ops.js';
import { backendInfo } from '../src/native/ops.js';
import { Fixture, type OpCase, opCases } from './cases/index.js';
import { NAN_CASES, expectAttentionPropagatesNaN, expectClose, fixturesDir } from './helpers.js';

const lowp = new Fixture(join(fixturesDir, 'lowp.safetensors'));
const cases = opCases(fixturesDir).filter((c) => c.reference);
const available = backendInfo().cpu.availableKernels;
const initial = backendInfo().cpu.kernels as 'avx512' | 'avx2' | 'generic';
afterAll(() => ops.setCpuKernels(initial));

/** Every output of the case that PyTorch computed, within the output's tolerance. */
async function expectMatchesReference(c: OpCase): Promise<void> {
  const outputs = await c.run('cpu');
  for (const [name, expected] of Object.entries(c.reference!())) {
    const output = outputs[name];
    expect(output, `${c.name} computes no ${name}`).toBeDefined();
    expectClose(`${c.name} ${name}`, output!.tensor, expected, output!.tolerance);
  }
}

describe('bf16 and fp16 conversions (PyTorch rounding, tests/reference/lowp_fixtures.py)', () => {
  const c = lowp.casesOf('convert')[0]!;
  // NaN may round to any NaN encoding (PyTorch's own differ between code paths): bits are
  // compared for numbers, and a NaN's widened value must be NaN.
  const sameValues = (label: string, actual: Float32Array, expected: Float32Array, skip = (_: number) => false) => {
    const wrong = [...expected.keys()].filter((i) => !skip(i) && !Object.is(actual[i], expected[i]));
    expect(wrong.slice(0, 5).map((i) => `${label}[${i}] = ${actual[i]}, expected ${expected[i]}`)).toEqual([]);
  };

  // Each kernel set rounds fp32 to bf16 its own way (activations, GEMM operands): every one
  // this CPU can run is checked.
  const roundings = (['avx512', 'avx2', 'generic'] as const)
    .filter((set) => available.includes(set))
    .flatMap((set) => (['bf16', 'f16'] as const).map((dtype) => [dtype, set] as const));
  it.each(roundings)('rounds fp32 to %s bit-exactly (%s kernels), and widens back exactly', async (dtype, set) => {
    ops.setCpuKernels(set);
    const x = lowp.tensor(c, 'x');
    const bits = await ops.toLowp(x, dtype);
    sameValues(`${dtype} bits`, Float32Array.from(bits.data), lowp.tensor(c, dtype).data, (i) =>
      Number.isNaN(x.data[i]),
    );
    sameValues(
      `${dtype} value`,
      (await ops.fromLowp(lowp.lowp(c, dtype, dtype))).data,
      lowp.tensor(c, `${dtype}_value`).data,
    );
  });

  it('refuses operands of two different low-precision types', async () => {
    const a = { data: new Uint16Array(4), shape: [2, 2], dtype: 'bf16' as const };
    await expect(ops.matmul(a, { ...a, dtype: 'f16' })).rejects.toThrow(
      "matmul: Expected b of a's type (bf16) for b.dtype but received 'f16'",
    );
  });
});

for (const set of ['avx512', 'avx2', 'generic'] as const) {
  const supported = available.includes(set);
  describe.skipIf(!supported)(`cpu ${set} kernels${supported ? '' : ' (skipped: this CPU cannot run them)'}`, () => {
    it('selects the kernel set', () => {
      ops.setCpuKernels(set);
      expect(backendInfo().cpu.kernels).toBe(set);
    });

    it.each(cases.map((c) => [c.name, c] as const))('%s', async (_, c) => {
      ops.setCpuKernels(set);
      await expectMatchesReference(c);
    });

    it.each(NAN_CASES)('attention propagates NaN as PyTorch does (%s compute, head dim %i)', async (compute, d) => {
      ops.setCpuKernels(set);
      await expectAttentionPropagatesNaN('cpu', compute, d);
    });
  });
}
