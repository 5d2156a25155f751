/** A dense fp32 tensor, row-major. */
export interface Tensor {
  data: Float32Array;
  shape: number[];
}

/** Storage types of the native ops: fp32, or bf16/fp16 bits in a Uint16Array. */
export type DType = 'f32' | 'bf16' | 'f16';
export type LowpDType = Exclude<DType, 'f32'>;

/** A bf16 or fp16 tensor as raw bits (what mixed precision stores frozen weights in). */
export interface LowpTensor {
  data: Uint16Array;
  shape: number[];
  dtype: LowpDType;
}

export function numel(shape: readonly number[]): number {
  return shape.reduce((a, b) => a * b, 1);
}

export function describeValue(value: unknown): string {
  if (value === null) return 'null';
  if (value === undefined) return 'undefined';
  if (ArrayBuffer.isView(value)) {
    const length = (value as unknown as { length?: number }).length;
    return `${value.constructor.name}${length === undefined ? '' : ` of length ${length}`}`;
  }
  // Bounded: the value may be a file's whole column or text.
  if (Array.isArray(value)) {
    const shown = value.slice(0, 8).map((v) => describeValue(v));
    return `[${shown.join(', ')}${value.length > 8 ? `, … (${value.length} items)` : ''}]`;
  }
  if (typeof value === 'string')
    return value.length > 80 ? `'${value.slice(0, 80)}…' (${value.length} characters)` : `'${value}'`;
  if (typeof value === 'object')
    return value.constructor?.name && value.constructor !== Object ? value.constructor.name : 'object';
  if (typeof value === 'number' || typeof value === 'boolean' || typeof value === 'bigint') return String(value);
  return typeof value; // a function or a symbol
}

/** Throws `Expected <what> for <name> but received <value>` (sharp's wording). */
export function invalid(
  op: string,
  what: string,
  name: string,
  value: unknown,
  Kind: typeof TypeError | typeof RangeError = TypeError,
): never {
  throw new Kind(`${op}: Expected ${what} for ${name} but received ${describeValue(value)}`);
}

export function tensor(data: Float32Array, shape: number[]): Tensor {
  const t = { data, shape };
  new ShapeCheck('tensor').tensor(
    'tensor',
    t,
    shape.map((_, i) => `d${i}`),
  );
  return t;
}

export function zeros(shape: number[]): Tensor {
  return { data: new Float32Array(numel(shape)), shape: [...shape] };
}

/**
 * Checks tensors against symbolic shapes and binds the symbols, e.g. x: ['...rows', 'in'],
 * weight: ['out', 'in'] makes both agree on `in`. A leading '...name' matches any number of
 * leading dims (their product binds to name). Numbers must match exactly.
 */
export class ShapeCheck {
  private readonly dims = new Map<string, number>();
  constructor(private readonly op: string) {}

  tensor(name: string, t: unknown, pattern: (string | number)[]): Tensor {
    if (typeof t !== 'object' || t === null)
      invalid(this.op, 'a tensor { data: Float32Array, shape: number[] }', name, t);
    const { data, shape } = t as Partial<Tensor>;
    if (!(data instanceof Float32Array)) invalid(this.op, 'a Float32Array', `${name}.data`, data);
    this.bind(name, data, shape, pattern, 'Float32Array');
    return t as Tensor;
  }

  /** An fp32 tensor, or a bf16/fp16 one ({ data: Uint16Array, dtype }). */
  typedTensor(name: string, t: unknown, pattern: (string | number)[]): Tensor | LowpTensor {
    const dtype = (t as Partial<LowpTensor> | null)?.dtype;
    if (dtype === undefined) return this.tensor(name, t, pattern);
    if (dtype !== 'bf16' && dtype !== 'f16') invalid(this.op, "'bf16' or 'f16'", `${name}.dtype`, dtype);
    const { data, shape } = t as Partial<LowpTensor>;
    if (!(data instanceof Uint16Array)) invalid(this.op, 'a Uint16Array', `${name}.data`, data);
    this.bind(name, data, shape, pattern, 'Uint16Array');
    return t as LowpTensor;
  }

  private bind(
    name: string,
    data: { length: number },
    shape: unknown,
    pattern: (string | number)[],
    arrayType: string,
  ): void {
    if (!Array.isArray(shape) || !shape.every((d) => Number.isInteger(d) && d >= 1))
      invalid(this.op, 'an array of positive integers', `${name}.shape`, shape);
    if (data.length !== numel(shape))
      invalid(
        this.op,
        `a ${arrayType} of length ${numel(shape)} (shape [${shape.join(', ')}])`,
        `${name}.data`,
        data,
        RangeError,
      );
    const expected = () =>
      `shape [${pattern.map((p) => (typeof p === 'number' ? p : (this.dims.get(p.replace('...', '')) ?? p))).join(', ')}]`;
    const variadic = typeof pattern[0] === 'string' && pattern[0].startsWith('...');
    const fixed = variadic ? pattern.slice(1) : pattern;
    if (variadic ? shape.length < fixed.length : shape.length !== fixed.length)
      invalid(this.op, expected(), name, shape, RangeError);
    const lead = shape.length - fixed.length;
    const bindings = fixed.map((p, i): [string | number, number] => [p, shape[lead + i] as number]);
    if (variadic) bindings.unshift([(pattern[0] as string).slice(3), numel(shape.slice(0, lead))]);
    for (const [p, size] of bindings) {
      if (typeof p === 'number') {
        if (p !== size) invalid(this.op, expected(), name, shape, RangeError);
      } else {
        const bound = this.dims.get(p);
        if (bound !== undefined && bound !== size) invalid(this.op, expected(), name, shape, RangeError);
        this.dims.set(p, size);
      }
    }
  }

  optionalTensor(name: string, t: unknown, pattern: (string | number)[]): Tensor | null {
    return t === null || t === undefined ? null : this.tensor(name, t, pattern);
  }

  dim(name: string): number {
    const d = this.dims.get(name);
    if (d === undefined) throw new Error(`${this.op}: internal error, dim ${name} unbound`);
    return d;
  }

  positiveInteger(name: string, value: unknown): number {
    if (typeof value !== 'number' || !Number.isInteger(value) || value < 1)
      invalid(this.op, 'a positive integer', name, value);
    return value;
  }

  finite(name: string, value: unknown): number {
    if (typeof value !== 'number' || !Number.isFinite(value)) invalid(this.op, 'a finite number', name, value);
    return value;
  }
}
