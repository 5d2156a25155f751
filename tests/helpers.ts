import { join } from 'node:path';
import { expect } from 'vitest';
import { relativeError } from '../bench/parity.js';
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
