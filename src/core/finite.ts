// NaN and Inf found where a model's numbers are read or written. A non-finite weight poisons
// every output it touches, so lora-train refuses to load one and never writes one.
import type { Tensor } from './tensor.js';

/** How many values of `data` are NaN or ±Inf, and the first of them. */
export function nonFinite(data: Float32Array): { count: number; first?: { index: number; value: number } } {
  let count = 0;
  let first: { index: number; value: number } | undefined;
  for (let i = 0; i < data.length; i++) {
    const v = data[i]!;
    // v - v is 0 for every finite number and NaN for NaN and ±Inf: one cheap test per value.
    if (v - v !== 0) {
      count++;
      first ??= { index: i, value: v };
    }
  }
  return { count, first };
}

/** A tensor holding NaN or Inf, met where lora-train reads or writes weights. */
export class NonFiniteError extends Error {
  constructor(
    message: string,
    readonly tensor: string,
  ) {
    super(message);
    this.name = 'NonFiniteError';
  }
}

/** `tensor 'name' holds 3 non-finite values of 12 (the first, at index 5, is NaN)`, or
 * undefined when every value is finite. */
export function describeNonFinite(name: string, data: Float32Array): string | undefined {
  const { count, first } = nonFinite(data);
  if (!first) return undefined;
  return nonFiniteText(name, count, data.length, first);
}

/** The message for tensor `name` of `size` values holding `count` non-finite ones. */
export function nonFiniteText(
  name: string,
  count: number,
  size: number,
  first: { index: number; value: number },
): string {
  return `tensor '${name}' holds ${count} non-finite value${count === 1 ? '' : 's'} of ${size} (the first, at index ${first.index}, is ${first.value})`;
}

/** Throws a NonFiniteError naming the first tensor with NaN or Inf, prefixed by `what`. */
export function assertFinite(what: string, tensors: Record<string, Tensor>): void {
  for (const [name, t] of Object.entries(tensors)) {
    const problem = describeNonFinite(name, t.data);
    if (problem) throw new NonFiniteError(`${what}: ${problem}`, name);
  }
}
