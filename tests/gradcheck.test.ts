// Every backward op against finite differences of its forward, independent of the PyTorch
// fixtures: for L = sum(f(x) * r) with r random, the analytic directional derivative <dL/dx, v>
// must match (L(x + h v) - L(x - h v)) / 2h along a random direction v, for every differentiable
// input of every op case (tests/cases/ops.ts) that has one, at the case's own inputs.
import { describe, expect, it } from 'vitest';
import { Rng } from '../src/core/rng.js';
import type { Tensor } from '../src/core/tensor.js';
import { type Differentiable, TOLERANCE, opCases } from './cases/index.js';
import { fixturesDir } from './helpers.js';

const random = (shape: number[], seed: number): Tensor => {
  const rng = new Rng(seed);
  return { data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, () => rng.uniform() * 2 - 1), shape };
};
const dot = (a: Float32Array, b: Float32Array) => a.reduce((acc, v, i) => acc + v * b[i]!, 0);
const shifted = (t: Tensor, v: Tensor, h: number): Tensor => ({
  data: t.data.map((x, i) => x + h * v.data[i]!),
  shape: t.shape,
});

async function expectGradientsMatchFiniteDifferences(op: Differentiable): Promise<void> {
  const inputs = op.inputs();
  const h = op.step ?? 1e-2;
  const r = random((await op.forward(inputs, 'cpu')).shape, 99);
  const grads = await op.backward(inputs, r, 'cpu');
  const loss = async (x: Record<string, Tensor>) => dot((await op.forward(x, 'cpu')).data, r.data);
  for (const [i, name] of op.wrt.entries()) {
    const x = inputs[name]!;
    const v = random(x.shape, i + 7);
    const numeric =
      ((await loss({ ...inputs, [name]: shifted(x, v, h) })) - (await loss({ ...inputs, [name]: shifted(x, v, -h) }))) /
      (2 * h);
    const analytic = dot(grads[name]!.data, v.data);
    expect(Math.abs(numeric - analytic), `d/d${name}: numeric ${numeric}, analytic ${analytic}`).toBeLessThanOrEqual(
      TOLERANCE.finiteDifference * Math.max(1, Math.abs(analytic)),
    );
  }
}

const cases = opCases(fixturesDir).filter((c) => c.gradient);
describe('finite-difference gradient checks', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_, c) =>
    expectGradientsMatchFiniteDifferences(c.gradient!),
  );
});
