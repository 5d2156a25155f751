import { join } from 'node:path';
import { expect } from 'vitest';
import { dataOf, type ParityCase, relativeError } from '../bench/parity.js';
import type { Tensor } from '../src/tensor.js';

export const fixturesDir = join(import.meta.dirname, 'fixtures');

export { Fixture, type FixtureCase, FWD as FORWARD_TOLERANCE, GRAD as GRADIENT_TOLERANCE, relativeError } from '../bench/parity.js';

export function expectClose(label: string, actual: Tensor | Float32Array | undefined, expected: Tensor, tolerance: number): void {
  expect(actual, `${label} missing`).toBeDefined();
  const data = actual instanceof Float32Array ? actual : actual!.data;
  if (!(actual instanceof Float32Array)) expect(actual!.shape, `${label} shape`).toEqual(expected.shape);
  const err = relativeError(data, expected.data);
  expect(err, `${label}: relative error ${err.toExponential(2)} > ${tolerance}`).toBeLessThanOrEqual(tolerance);
}

/** Runs a backend parity case on the CPU and on CUDA; every output within its tolerance. */
export async function expectCudaMatchesCpu(c: ParityCase): Promise<void> {
  const cpu = await c.run('cpu');
  const gpu = await c.run('cuda');
  expect(Object.keys(gpu).sort()).toEqual(Object.keys(cpu).sort());
  for (const [key, { tensor, tolerance }] of Object.entries(cpu)) {
    const err = relativeError(dataOf(gpu[key]!.tensor), dataOf(tensor));
    expect(err, `${c.name} ${key}: relative error ${err.toExponential(2)} > ${tolerance}`).toBeLessThanOrEqual(tolerance);
  }
}
