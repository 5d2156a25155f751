// Every CPU op against PyTorch (float64 references from tests/reference/ops_fixtures.py),
// once per micro-kernel set this CPU can run; sets it cannot run are reported as skipped.
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import * as ops from '../src/native/ops.js';
import { backendInfo } from '../src/native/ops.js';
import { LOWP_GEMM, lowpTensor, makeLowpRunners } from '../bench/parity.js';
import type { Tensor } from '../src/core/tensor.js';
import { Fixture, FORWARD_TOLERANCE as FWD, GRADIENT_TOLERANCE as GRAD, expectClose, fixturesDir } from './helpers.js';

const fx = new Fixture(join(fixturesDir, 'ops.safetensors'));
const lowp = new Fixture(join(fixturesDir, 'lowp.safetensors'));
const lowpRunners = makeLowpRunners(lowp);
const available = backendInfo().cpu.availableKernels;
const initial = backendInfo().cpu.kernels as 'avx512' | 'avx2' | 'generic';
afterAll(() => ops.setCpuKernels(initial));

const num = (v: unknown) => v as number;

describe('bf16 and fp16 conversions (PyTorch rounding, tests/reference/lowp_fixtures.py)', () => {
  const c = lowp.casesOf('convert')[0]!;
  // NaN may round to any NaN encoding (PyTorch's own differ between code paths): bits are
  // compared for numbers, and a NaN's widened value must be NaN.
  const sameValues = (label: string, actual: Float32Array, expected: Float32Array, skip = (_: number) => false) => {
    const wrong = [...expected.keys()].filter((i) => !skip(i) && !Object.is(actual[i], expected[i]));
    expect(wrong.slice(0, 5).map((i) => `${label}[${i}] = ${actual[i]}, expected ${expected[i]}`)).toEqual([]);
  };

  it.each(['bf16', 'f16'] as const)('rounds fp32 to %s bit-exactly, and widens back exactly', async (dtype) => {
    const x = lowp.tensor(c, 'x');
    const bits = await ops.toLowp(x, dtype);
    sameValues(`${dtype} bits`, Float32Array.from(bits.data), lowp.tensor(c, dtype).data, (i) =>
      Number.isNaN(x.data[i]),
    );
    sameValues(
      `${dtype} value`,
      (await ops.fromLowp(lowpTensor(lowp, c, dtype, dtype))).data,
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

    it.each(fx.casesOf('gemm').map((c) => [c.id, c] as const))('gemm %s', async (_, c) => {
      ops.setCpuKernels(set);
      const out = c.beta !== 0 ? fx.tensor(c, 'C0') : undefined;
      const C = await ops.matmul(fx.tensor(c, 'A'), fx.tensor(c, 'B'), {
        transA: !!c.transA,
        transB: !!c.transB,
        alpha: num(c.alpha),
        beta: num(c.beta),
        out,
      });
      expectClose('C', C, fx.tensor(c, 'C'), FWD);
    });

    it.each(lowp.casesOf('gemm_lowp').map((c) => [c.id, c] as const))(
      'gemm with low-precision operands %s',
      async (_, c) => {
        ops.setCpuKernels(set);
        const { C } = await lowpRunners.gemm_lowp!(c, 'cpu');
        expectClose('C', C!.tensor as Tensor, lowp.tensor(c, 'C'), LOWP_GEMM);
      },
    );

    it.each(fx.casesOf('linear').map((c) => [c.id, c] as const))('linear %s', async (_, c) => {
      ops.setCpuKernels(set);
      const [x, W, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'W'), fx.tensor(c, 'b')];
      expectClose('y', await ops.linear(x, W, b), fx.tensor(c, 'y'), FWD);
      const g = await ops.linearBackward(fx.tensor(c, 'dy'), x, W, { weight: true, bias: true });
      expectClose('dx', g.dx, fx.tensor(c, 'dx'), GRAD);
      expectClose('dW', g.dWeight, fx.tensor(c, 'dW'), GRAD);
      expectClose('db', g.dBias, fx.tensor(c, 'db'), GRAD);
    });

    it.each(fx.casesOf('lora_linear').map((c) => [c.id, c] as const))('lora linear %s', async (_, c) => {
      ops.setCpuKernels(set);
      const [x, W, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'W'), fx.tensor(c, 'b')];
      const lora = { down: fx.tensor(c, 'A'), up: fx.tensor(c, 'B'), scale: num(c.scale) };
      const { y, xa } = await ops.loraLinear(x, W, b, lora);
      expectClose('y', y, fx.tensor(c, 'y'), FWD);
      expectClose('xa', xa, fx.tensor(c, 'xa'), FWD);
      const frozen = await ops.loraLinearBackward(fx.tensor(c, 'dy'), x, xa, W, lora);
      expect(frozen.dWeight, 'frozen weight gets no gradient').toBeUndefined();
      expect(frozen.dBias, 'frozen bias gets no gradient').toBeUndefined();
      expectClose('dA', frozen.dDown, fx.tensor(c, 'dA'), GRAD);
      expectClose('dB', frozen.dUp, fx.tensor(c, 'dB'), GRAD);
      expectClose('dx', frozen.dx, fx.tensor(c, 'dx'), GRAD);
      const full = await ops.loraLinearBackward(fx.tensor(c, 'dy'), x, xa, W, lora, { weight: true, bias: true });
      expectClose('dW', full.dWeight, fx.tensor(c, 'dW'), GRAD);
      expectClose('db', full.dBias, fx.tensor(c, 'db'), GRAD);
    });

    it.each(fx.casesOf('attention').map((c) => [c.id, c] as const))('attention %s', async (_, c) => {
      ops.setCpuKernels(set);
      const [q, k, v] = [fx.tensor(c, 'q'), fx.tensor(c, 'k'), fx.tensor(c, 'v')];
      const H = num(c.H);
      const { out, lse } = await ops.attention(q, k, v, H);
      expectClose('o', out, fx.tensor(c, 'o'), FWD);
      expectClose('lse', lse, fx.tensor(c, 'lse'), FWD);
      const g = await ops.attentionBackward(fx.tensor(c, 'do'), q, k, v, out, lse, H);
      expectClose('dq', g.dq, fx.tensor(c, 'dq'), GRAD);
      expectClose('dk', g.dk, fx.tensor(c, 'dk'), GRAD);
      expectClose('dv', g.dv, fx.tensor(c, 'dv'), GRAD);
    });

    it.each(fx.casesOf('layernorm').map((c) => [c.id, c] as const))('layer norm %s', async (_, c) => {
      ops.setCpuKernels(set);
      const x = fx.tensor(c, 'x');
      const { y, mean, rstd } = await ops.layerNorm(x, num(c.eps));
      expectClose('y', y, fx.tensor(c, 'y'), FWD);
      expectClose('dx', await ops.layerNormBackward(fx.tensor(c, 'dy'), x, mean, rstd), fx.tensor(c, 'dx'), GRAD);
    });

    it.each(fx.casesOf('activation').map((c) => [c.id, c] as const))('activation %s', async (_, c) => {
      ops.setCpuKernels(set);
      const kind = c.kind as ops.Activation;
      const slope = c.slope === undefined ? undefined : num(c.slope);
      const x = fx.tensor(c, 'x');
      expectClose('y', await ops.activation(kind, x, { slope }), fx.tensor(c, 'y'), FWD);
      expectClose('dx', await ops.activationBackward(kind, fx.tensor(c, 'dy'), x, { slope }), fx.tensor(c, 'dx'), GRAD);
    });

    it.each(fx.casesOf('grn').map((c) => [c.id, c] as const))('global response norm %s', async (_, c) => {
      ops.setCpuKernels(set);
      const [u, gamma, beta] = [fx.tensor(c, 'u'), fx.tensor(c, 'gamma'), fx.tensor(c, 'beta')];
      expectClose('y', await ops.globalResponseNorm(u, gamma, beta, { eps: num(c.eps) }), fx.tensor(c, 'y'), FWD);
      const g = await ops.globalResponseNormBackward(fx.tensor(c, 'dy'), u, gamma, {
        weight: true,
        bias: true,
        eps: num(c.eps),
      });
      expectClose('du', g.du, fx.tensor(c, 'du'), GRAD);
      expectClose('dgamma', g.dGamma, fx.tensor(c, 'dgamma'), GRAD);
      expectClose('dbeta', g.dBeta, fx.tensor(c, 'dbeta'), GRAD);
    });

    it.each(fx.casesOf('depthwise').map((c) => [c.id, c] as const))('depthwise conv 3x3 %s', async (_, c) => {
      ops.setCpuKernels(set);
      const [x, w, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'w'), fx.tensor(c, 'b')];
      expectClose('y', await ops.depthwiseConv3x3(x, w, b), fx.tensor(c, 'y'), FWD);
      const g = await ops.depthwiseConv3x3Backward(fx.tensor(c, 'dy'), x, w, { weight: true, bias: true });
      expectClose('dx', g.dx, fx.tensor(c, 'dx'), GRAD);
      expectClose('dw', g.dWeight, fx.tensor(c, 'dw'), GRAD);
      expectClose('db', g.dBias, fx.tensor(c, 'db'), GRAD);
    });

    it.each(fx.casesOf('conv1x1').map((c) => [c.id, c] as const))('conv 1x1 %s', async (_, c) => {
      ops.setCpuKernels(set);
      const [x, w, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'w'), fx.tensor(c, 'b')];
      expectClose('y', await ops.conv1x1(x, w, b), fx.tensor(c, 'y'), FWD);
      const g = await ops.conv1x1Backward(fx.tensor(c, 'dy'), x, w, { weight: true, bias: true });
      expectClose('dx', g.dx, fx.tensor(c, 'dx'), GRAD);
      expectClose('dw', g.dWeight, fx.tensor(c, 'dw'), GRAD);
      expectClose('db', g.dBias, fx.tensor(c, 'db'), GRAD);
    });
  });
}

describe('loss and optimiser', () => {
  it('mse loss and its gradient', async () => {
    const [c] = fx.casesOf('mse');
    const { loss, dpred } = await ops.mseLoss(fx.tensor(c!, 'pred'), fx.tensor(c!, 'target'));
    expectClose('loss', new Float32Array([loss]), fx.tensor(c!, 'loss'), FWD);
    expectClose('dpred', dpred, fx.tensor(c!, 'dpred'), GRAD);
  });

  it('AdamW over several tensors matches torch.optim.AdamW for three steps', async () => {
    const [c] = fx.casesOf('adamw');
    const count = num(c!.tensors);
    const slots = Array.from({ length: count }, (_, i) => {
      const param = fx.tensor(c!, `p${i}.init`).data;
      return {
        param,
        grad: new Float32Array(param.length),
        expAvg: new Float32Array(param.length),
        expAvgSq: new Float32Array(param.length),
      };
    });
    const hyper = {
      lr: num(c!.lr),
      beta1: num(c!.beta1),
      beta2: num(c!.beta2),
      eps: num(c!.eps),
      weightDecay: num(c!.weightDecay),
    };
    for (let step = 1; step <= num(c!.steps); step++) {
      slots.forEach((s, i) => s.grad.set(fx.tensor(c!, `p${i}.grad${step}`).data));
      await ops.adamw(slots, hyper, step);
      slots.forEach((s, i) =>
        expectClose(`p${i} after step ${step}`, s.param, fx.tensor(c!, `p${i}.step${step}`), FWD),
      );
    }
  });

  it.each(fx.casesOf('clip').map((c) => [c.id, c] as const))('clip grad norm %s', async (_, c) => {
    const grads = Array.from({ length: num(c.tensors) }, (_, i) => fx.tensor(c, `g${i}`).data);
    const norm = await ops.clipGradNorm(grads, num(c.maxNorm));
    expectClose('norm', new Float32Array([norm]), fx.tensor(c, 'norm'), FWD);
    grads.forEach((g, i) => expectClose(`grad ${i}`, g, fx.tensor(c, `out${i}`), FWD));
  });
});
