// The PyTorch fixtures (tests/reference/*.py write them): tensors named <case id>.<key> in one
// safetensors file, the cases and their parameters in its metadata.
import { getTensor, readSafetensors, type SafetensorsFile } from '../../src/io/safetensors.js';
import type { LowpDType, LowpTensor, Tensor } from '../../src/core/tensor.js';

export interface FixtureCase {
  op: string;
  id: string;
  [param: string]: unknown;
}

export class Fixture {
  readonly file: SafetensorsFile;
  readonly cases: FixtureCase[];
  constructor(path: string) {
    this.file = readSafetensors(path);
    this.cases = JSON.parse(this.file.metadata.cases ?? '[]') as FixtureCase[];
    if (this.cases.length === 0) throw new Error(`${path} lists no cases`);
  }

  casesOf(op: string): FixtureCase[] {
    const found = this.cases.filter((c) => c.op === op);
    if (found.length === 0) throw new Error(`fixture has no ${op} cases`);
    return found;
  }

  tensor(c: FixtureCase, key: string): Tensor {
    return getTensor(this.file, `${c.id}.${key}`);
  }

  has(c: FixtureCase, key: string): boolean {
    return this.file.entries.has(`${c.id}.${key}`);
  }

  /** A tensor of bf16/fp16 bits (stored as F32 integers) as a LowpTensor. */
  lowp(c: FixtureCase, key: string, dtype: LowpDType): LowpTensor {
    const t = this.tensor(c, key);
    return { data: Uint16Array.from(t.data), shape: t.shape, dtype };
  }
}

/** max |actual - expected| / max |expected|; Infinity for other lengths or NaN where the other
 * is not. */
export function relativeError(actual: ArrayLike<number>, expected: ArrayLike<number>): number {
  if (actual.length !== expected.length) return Infinity;
  let maxDiff = 0;
  let maxRef = 0;
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i]!,
      e = expected[i]!;
    if (Number.isNaN(a) !== Number.isNaN(e)) return Infinity;
    maxDiff = Math.max(maxDiff, Math.abs(a - e));
    maxRef = Math.max(maxRef, Math.abs(e));
  }
  return maxRef === 0 ? maxDiff : maxDiff / maxRef;
}

export const dataOf = (t: Tensor | Float32Array | undefined): Float32Array =>
  t instanceof Float32Array ? t : t ? t.data : new Float32Array(0);
