// Finite-difference checks of the backward ops, independent of the PyTorch fixtures: for
// L = sum(f(x) * r), the analytic directional derivative <dL/dx, v> must match
// (L(x + h v) - L(x - h v)) / 2h along a random direction v, for every differentiable input.
import { describe, expect, it } from 'vitest';
import * as ops from '../src/native/ops.js';
import type { Tensor } from '../src/core/tensor.js';

function rng(seed: number) {
  let s = seed;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 4294967296 - 0.5;
  };
}
const rand = (shape: number[], seed: number, scale = 1): Tensor => {
  const r = rng(seed);
  const n = shape.reduce((a, b) => a * b, 1);
  return { data: Float32Array.from({ length: n }, () => r() * 2 * scale), shape };
};
const dot = (a: Float32Array, b: Float32Array) => a.reduce((acc, v, i) => acc + v * b[i]!, 0);
const shifted = (t: Tensor, v: Tensor, h: number): Tensor => ({
  data: t.data.map((x, i) => x + h * v.data[i]!),
  shape: t.shape,
});

/** Checks every named input of f against its analytic gradient. */
async function gradcheck(
  inputs: Record<string, Tensor>,
  forward: (inp: Record<string, Tensor>) => Promise<Tensor>,
  backward: (inp: Record<string, Tensor>, dy: Tensor) => Promise<Record<string, Tensor | undefined>>,
  h = 1e-2,
) {
  const y = await forward(inputs);
  const r = rand(y.shape, 99);
  const grads = await backward(inputs, r);
  for (const [name, x] of Object.entries(inputs)) {
    const g = grads[name];
    if (!g) continue;
    const v = rand(x.shape, name.length * 31 + 7);
    const plus = dot((await forward({ ...inputs, [name]: shifted(x, v, h) })).data, r.data);
    const minus = dot((await forward({ ...inputs, [name]: shifted(x, v, -h) })).data, r.data);
    const numeric = (plus - minus) / (2 * h);
    const analytic = dot(g.data, v.data);
    expect(Math.abs(numeric - analytic), `d/d${name}: numeric ${numeric} analytic ${analytic}`).toBeLessThanOrEqual(
      1e-2 * Math.max(1, Math.abs(analytic)),
    );
  }
}

describe('finite-difference gradient checks', () => {
  it('attention', async () => {
    const H = 2;
    await gradcheck(
      { q: rand([2, 7, 16], 1), k: rand([2, 11, 16], 2), v: rand([2, 11, 16], 3) },
      async ({ q, k, v }) => (await ops.attention(q!, k!, v!, H)).out,
      async ({ q, k, v }, dy) => {
        const { out, lse } = await ops.attention(q!, k!, v!, H);
        const g = await ops.attentionBackward(dy, q!, k!, v!, out, lse, H);
        return { q: g.dq, k: g.dk, v: g.dv };
      },
    );
  });

  it('LoRA linear (input and adapter weights)', async () => {
    const W = rand([6, 5], 4),
      b = rand([6], 5);
    await gradcheck(
      { x: rand([3, 5], 6), down: rand([2, 5], 7), up: rand([6, 2], 8) },
      async ({ x, down, up }) => (await ops.loraLinear(x!, W, b, { down: down!, up: up!, scale: 1.5 })).y,
      async ({ x, down, up }, dy) => {
        const lora = { down: down!, up: up!, scale: 1.5 };
        const { xa } = await ops.loraLinear(x!, W, b, lora);
        const g = await ops.loraLinearBackward(dy, x!, xa, W, lora);
        return { x: g.dx, down: g.dDown, up: g.dUp };
      },
    );
  });

  it('layer norm, GELU and global response norm', async () => {
    await gradcheck(
      { x: rand([4, 9], 9) },
      async ({ x }) => (await ops.layerNorm(x!, 1e-6)).y,
      async ({ x }, dy) => {
        const { mean, rstd } = await ops.layerNorm(x!, 1e-6);
        return { x: await ops.layerNormBackward(dy, x!, mean, rstd) };
      },
    );
    await gradcheck(
      { x: rand([40], 10, 3) },
      async ({ x }) => ops.activation('gelu', x!),
      async ({ x }, dy) => ({ x: await ops.activationBackward('gelu', dy, x!) }),
      1e-3,
    );
    await gradcheck(
      { u: rand([2, 3, 4, 5], 11), gamma: rand([1, 1, 1, 5], 12), beta: rand([1, 1, 1, 5], 13) },
      async ({ u, gamma, beta }) => ops.globalResponseNorm(u!, gamma!, beta!),
      async ({ u, gamma }, dy) => {
        const g = await ops.globalResponseNormBackward(dy, u!, gamma!, { weight: true, bias: true });
        return { u: g.du, gamma: g.dGamma, beta: g.dBeta };
      },
    );
  });

  it('depthwise 3x3 and 1x1 convolutions', async () => {
    await gradcheck(
      { x: rand([2, 4, 3, 5], 14), w: rand([5, 1, 3, 3], 15), b: rand([5], 16) },
      async ({ x, w, b }) => ops.depthwiseConv3x3(x!, w!, b!),
      async ({ x, w }, dy) => {
        const g = await ops.depthwiseConv3x3Backward(dy, x!, w!, { weight: true, bias: true });
        return { x: g.dx, w: g.dWeight, b: g.dBias };
      },
    );
    await gradcheck(
      { x: rand([2, 3, 2, 2], 17), w: rand([4, 3, 1, 1], 18), b: rand([4], 19) },
      async ({ x, w, b }) => ops.conv1x1(x!, w!, b!),
      async ({ x, w }, dy) => {
        const g = await ops.conv1x1Backward(dy, x!, w!, { weight: true, bias: true });
        return { x: g.dx, w: g.dWeight, b: g.dBias };
      },
    );
  });
});
