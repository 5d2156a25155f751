import { join } from 'node:path';
import { expect } from 'vitest';
import { getTensor, readSafetensors, type SafetensorsFile } from '../src/safetensors.js';
import type { Tensor } from '../src/tensor.js';

export const fixturesDir = join(import.meta.dirname, 'fixtures');

export interface FixtureCase {
  op: string;
  id: string;
  [param: string]: unknown;
}

export class Fixture {
  readonly file: SafetensorsFile;
  readonly cases: FixtureCase[];
  constructor(name: string) {
    this.file = readSafetensors(join(fixturesDir, name));
    this.cases = JSON.parse(this.file.metadata.cases ?? '[]') as FixtureCase[];
    if (this.cases.length === 0) throw new Error(`${name} lists no cases`);
  }
  casesOf(op: string): FixtureCase[] {
    const found = this.cases.filter((c) => c.op === op);
    if (found.length === 0) throw new Error(`fixture has no ${op} cases`);
    return found;
  }
  tensor(c: FixtureCase, key: string): Tensor {
    return getTensor(this.file, `${c.id}.${key}`);
  }
}

/** max |actual - expected| / max |expected|: relative to the tensor's scale, so entries near
 * zero neither dominate nor escape. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!, e = expected[i]!;
    if (Number.isNaN(a) !== Number.isNaN(e)) return Infinity;
    maxDiff = Math.max(maxDiff, Math.abs(a - e));
    maxRef = Math.max(maxRef, Math.abs(e));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

export const FORWARD_TOLERANCE = 1e-5;
export const GRADIENT_TOLERANCE = 1e-4;

export function expectClose(label: string, actual: Tensor | Float32Array | undefined, expected: Tensor, tolerance: number): void {
  expect(actual, `${label} missing`).toBeDefined();
  const data = actual instanceof Float32Array ? actual : actual!.data;
  if (!(actual instanceof Float32Array)) expect(actual!.shape, `${label} shape`).toEqual(expected.shape);
  const err = relativeError(data, expected.data);
  expect(err, `${label}: relative error ${err.toExponential(2)} > ${tolerance}`).toBeLessThanOrEqual(tolerance);
}
