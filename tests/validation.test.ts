// Bad arguments from JS get clear errors, from the checked API and from the raw addon alike.
import { mkdirSync, mkdtempSync, utimesSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  NativeLoadError,
  candidatePaths,
  libcTag,
  loadNativeFrom,
  native,
  nvidiaDriverPresent,
} from '../src/native/loader.js';
import * as ops from '../src/native/ops.js';
import { zeros } from '../src/core/tensor.js';

const t = (shape: number[]) => zeros(shape);

describe('the checked op API', () => {
  it('rejects a tensor whose data is not a Float32Array', async () => {
    const x = { data: new Float64Array(6) as unknown as Float32Array, shape: [2, 3] };
    await expect(ops.linear(x, t([4, 3]))).rejects.toThrow(
      new TypeError('linear: Expected a Float32Array for x.data but received Float64Array of length 6'),
    );
  });

  it('rejects data whose length does not match the shape', async () => {
    const x = { data: new Float32Array(11), shape: [3, 4] };
    await expect(ops.linear(x, t([5, 4]))).rejects.toThrow(
      new RangeError(
        'linear: Expected a Float32Array of length 12 (shape [3, 4]) for x.data but received Float32Array of length 11',
      ),
    );
  });

  it('rejects shapes that disagree, naming the bound sizes', async () => {
    await expect(ops.linear(t([3, 4]), t([5, 6]))).rejects.toThrow(
      new RangeError('linear: Expected shape [5, 4] for weight but received [5, 6]'),
    );
    await expect(
      ops.loraLinear(t([2, 8]), t([6, 8]), null, { down: t([4, 8]), up: t([6, 3]), scale: 1 }),
    ).rejects.toThrow('loraLinear: Expected shape [6, 4] for lora.up but received [6, 3]');
    await expect(ops.matmul(t([2, 3]), t([4, 5]))).rejects.toThrow(
      'matmul: Expected shape [3, N] for b but received [4, 5]',
    );
  });

  it('rejects bad shapes, head counts, scalars and devices', async () => {
    await expect(ops.layerNorm({ data: new Float32Array(0), shape: [0, 4] }, 1e-6)).rejects.toThrow(
      'layerNorm: Expected an array of positive integers for x.shape but received [0, 4]',
    );
    await expect(ops.attention(t([1, 4, 12]), t([1, 5, 12]), t([1, 5, 12]), 5)).rejects.toThrow(
      'attention: Expected a divisor of the channel count 12 for heads but received 5',
    );
    await expect(ops.attention(t([1, 4, 12]), t([1, 5, 12]), t([1, 6, 12]), 3)).rejects.toThrow(
      'attention: Expected shape [1, 5, 12] for v but received [1, 6, 12]',
    );
    await expect(ops.layerNorm(t([2, 4]), Number.NaN)).rejects.toThrow(
      'layerNorm: Expected a finite number for eps but received NaN',
    );
    await expect(ops.activation('gelu', t([3]), { device: 'tpu' as 'cpu' })).rejects.toThrow(
      "gelu: Expected 'cpu' or 'cuda' for device but received 'tpu'",
    );
    await expect(
      ops.adamw(
        [
          {
            param: new Float32Array(3),
            grad: new Float32Array(2),
            expAvg: new Float32Array(3),
            expAvgSq: new Float32Array(3),
          },
        ],
        { lr: 1e-3 },
        1,
      ),
    ).rejects.toThrow(
      'adamw: Expected a Float32Array of length 3 for slots[0].grad but received Float32Array of length 2',
    );
    await expect(ops.conv2d(t([1, 4, 4, 2]), t([3, 3, 3, 2]), null, { stride: 3 })).rejects.toThrow(
      'conv2d: Expected 1 or 2 for stride but received 3',
    );
    await expect(
      ops.conv2d(t([1, 4, 4, 2]), t([3, 3, 3, 2]), null, { silu: true, residual: t([1, 4, 4, 3]) }),
    ).rejects.toThrow('conv2d: Expected false for silu with a residual but received true');
    await expect(ops.conv2d(t([1, 4, 4, 2]), t([3, 3, 3, 2]), null, { residual: t([1, 4, 4, 2]) })).rejects.toThrow(
      'conv2d: Expected shape [1, 4, 4, 3] for residual but received [1, 4, 4, 2]',
    );
    await expect(ops.conv2d(t([1, 4, 4, 2]), t([3, 4, 4, 2]))).rejects.toThrow(
      'conv2dForward: Expected an odd kernel size of at most 15 for k but received 4',
    );
    await expect(ops.depthwiseConv(t([1, 4, 4, 2]), t([2, 1, 17, 17]))).rejects.toThrow(
      'depthwiseConvForward: Expected an odd kernel size of at most 15 for k but received 17',
    );
    await expect(ops.clipGradNorm([new Float32Array(2)], -1)).rejects.toThrow(
      'clipGradNorm: Expected a finite number >= 0 for maxNorm but received -1',
    );
  });

  it("re-throws native errors with the caller's stack", async () => {
    const bad = () =>
      ops.callNative(() =>
        native().gemm(
          'cpu',
          new Float32Array(5),
          new Float32Array(6),
          new Float32Array(6),
          2,
          3,
          3,
          false,
          false,
          1,
          0,
          'f32',
          'f32',
        ),
      );
    const error = (await bad().catch((e: unknown) => e)) as Error;
    expect(error).toBeInstanceOf(RangeError);
    expect(error.message).toBe('gemm: Expected a Float32Array of length 6 for C but received Float32Array of length 5');
    expect(error.stack).toContain('validation.test.ts');
  });
});

describe('the raw addon', () => {
  const addon = native();
  const f = (n: number) => new Float32Array(n);

  it("checks every buffer's type and length", () => {
    expect(() =>
      addon.gemm(
        'cpu',
        f(6),
        new Int32Array(6) as unknown as Float32Array,
        f(6),
        2,
        3,
        3,
        false,
        false,
        1,
        0,
        'f32',
        'f32',
      ),
    ).toThrow(new TypeError('gemm: Expected a Float32Array of length 6 for A but received Int32Array of length 6'));
    expect(() => addon.linearForward('cpu', f(6), f(6), f(9), f(2), 2, 3, 3)).toThrow(
      new RangeError(
        'linearForward: Expected a Float32Array of length 3 or null for b but received Float32Array of length 2',
      ),
    );
    expect(() => addon.attentionForward('cpu', f(8), f(2), f(8), f(8), f(7), 1, 2, 2, 1, 4, 0.5, 'f32')).toThrow(
      'attentionForward: Expected a Float32Array of length 8 for v but received Float32Array of length 7',
    );
  });

  it('checks sizes, flags, numbers and arrays', () => {
    expect(() => addon.gemm('cpu', f(6), f(6), f(6), -2, 3, 3, false, false, 1, 0, 'f32', 'f32')).toThrow(
      new RangeError('gemm: Expected a positive integer for M but received -2'),
    );
    expect(() => addon.gemm('cpu', f(6), f(6), f(6), 2.5, 3, 3, false, false, 1, 0, 'f32', 'f32')).toThrow(
      'gemm: Expected a positive integer for M but received 2.500000',
    );
    expect(() =>
      addon.gemm('cpu', f(6), f(6), f(6), 2, 3, 3, 0 as unknown as boolean, false, 1, 0, 'f32', 'f32'),
    ).toThrow(new TypeError('gemm: Expected a boolean for transA but received 0'));
    expect(() => addon.gemm('cpu', f(6), f(6), f(6), 2, 3, 3, false, false, Infinity, 0, 'f32', 'f32')).toThrow(
      'gemm: Expected a finite number for alpha but received inf',
    );
    expect(() => addon.gemm('cpu', f(6), f(6), f(6), 2, 3, 3, false, false, 1, 0, 'fp8', 'f32')).toThrow(
      new TypeError("gemm: Expected 'f32', 'bf16' or 'f16' for aType but received 'fp8'"),
    );
    expect(() =>
      addon.gemm('cpu', f(6), new Uint16Array(6), new Uint16Array(9), 2, 3, 3, false, false, 1, 0, 'bf16', 'f16'),
    ).toThrow(new RangeError("gemm: Expected operands of one low-precision type for bType but received 'f16'"));
    expect(() => addon.gemm('cpu', f(6), new Uint16Array(5), f(9), 2, 3, 3, false, false, 1, 0, 'bf16', 'f32')).toThrow(
      new RangeError('gemm: Expected a Uint16Array (bf16 bits) of length 6 for A but received Uint16Array of length 5'),
    );
    expect(() => addon.convert('cpu', f(4), 'f32', f(4), 'f32', 4)).not.toThrow();
    expect(() =>
      addon.convert('cpu', new Uint16Array(4), 'bf16', new Int16Array(4) as unknown as Float32Array, 'f16', 4),
    ).toThrow(
      new TypeError(
        'convert: Expected a Uint16Array (f16 bits) of length 4 for src but received Int16Array of length 4',
      ),
    );
    expect(() => addon.adamw('cpu', [f(2)], [f(2)], [f(2), f(2)], [f(2)], 1e-3, 0.9, 0.999, 1e-8, 0, 1, 1)).toThrow(
      'adamw: Expected an Array of length 1 for expAvgSqs but received Array of length 2',
    );
    expect(() => addon.adamw('cpu', [f(2)], [f(3)], [f(2)], [f(2)], 1e-3, 0.9, 0.999, 1e-8, 0, 1, 1)).toThrow(
      'adamw: Expected a Float32Array of length 2 for expAvgs[0] but received Float32Array of length 3',
    );
    expect(() => addon.activationForward('cpu', 'relu6', f(2), f(2), 2, 0)).toThrow(
      "activationForward: Expected 'gelu', 'silu' or 'leaky_relu' for kind but received 'relu6'",
    );
  });

  it('refuses unknown devices and kernel sets', () => {
    expect(() => addon.gemm('tpu', f(1), f(1), f(1), 1, 1, 1, false, false, 1, 0, 'f32', 'f32')).toThrow(
      /device 'tpu' is not available in this build \(built backends: cpu(, cuda)?\)/,
    );
    expect(() => addon.setCpuKernels('avx9')).toThrow(
      /CPU kernel set 'avx9' is not available on this CPU \(available: .*generic\)/,
    );
  });
});

describe('the loader', () => {
  it('tries prebuilt binaries before the local build, unless the local build is newer', () => {
    const root = mkdtempSync(join(tmpdir(), 'lora-train-root-'));
    const prebuiltDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
    mkdirSync(prebuiltDir, { recursive: true });
    mkdirSync(join(root, 'build', 'Release'), { recursive: true });
    const prebuilt = join(prebuiltDir, 'lora-train.node');
    const local = join(root, 'build', 'Release', 'lora_train.node');
    writeFileSync(prebuilt, '');
    writeFileSync(local, '');
    const saved = process.env.LORA_TRAIN_NATIVE;
    delete process.env.LORA_TRAIN_NATIVE;
    try {
      utimesSync(local, 1000, 1000);
      utimesSync(prebuilt, 2000, 2000);
      expect(candidatePaths(root)).toEqual([prebuilt, local]);
      utimesSync(local, 3000, 3000);
      expect(candidatePaths(root)).toEqual([local, prebuilt]);
    } finally {
      if (saved !== undefined) process.env.LORA_TRAIN_NATIVE = saved;
    }
  });

  it('takes the CUDA prebuild first where an NVIDIA driver is, and leaves it out elsewhere', () => {
    const root = mkdtempSync(join(tmpdir(), 'lora-train-root-'));
    const prebuiltDir = join(root, 'prebuilds', `${process.platform}-${process.arch}`);
    mkdirSync(prebuiltDir, { recursive: true });
    const libc = process.platform === 'linux' ? `.${libcTag()}` : '';
    const cpu = join(prebuiltDir, `lora-train${libc}.node`);
    const cuda = join(prebuiltDir, `lora-train${libc}.cuda.node`);
    writeFileSync(cpu, '');
    writeFileSync(cuda, '');
    const local = join(root, 'build', 'Release', 'lora_train.node');
    const saved = { native: process.env.LORA_TRAIN_NATIVE, cuda: process.env.LORA_TRAIN_CUDA };
    delete process.env.LORA_TRAIN_NATIVE;
    try {
      expect(candidatePaths(root, true)).toEqual([cuda, cpu, local]);
      expect(candidatePaths(root, false)).toEqual([cpu, local]);
      process.env.LORA_TRAIN_CUDA = '0';
      expect(nvidiaDriverPresent()).toBe(false);
      process.env.LORA_TRAIN_CUDA = '1';
      expect(candidatePaths(root)).toEqual([cuda, cpu, local]);
    } finally {
      for (const [key, value] of [
        ['LORA_TRAIN_NATIVE', saved.native],
        ['LORA_TRAIN_CUDA', saved.cuda],
      ] as const)
        if (value === undefined) delete process.env[key];
        else process.env[key] = value;
    }
  });

  it('takes LORA_TRAIN_NATIVE relative to the working directory, first', () => {
    const saved = process.env.LORA_TRAIN_NATIVE;
    process.env.LORA_TRAIN_NATIVE = join('build-emulator', 'Release', 'lora_train.node');
    try {
      expect(candidatePaths(mkdtempSync(join(tmpdir(), 'lora-train-root-')))[0]).toBe(
        join(process.cwd(), 'build-emulator', 'Release', 'lora_train.node'),
      );
    } finally {
      if (saved === undefined) delete process.env.LORA_TRAIN_NATIVE;
      else process.env.LORA_TRAIN_NATIVE = saved;
    }
  });

  it('names every path it tried, why each failed, and the fix', () => {
    const garbage = join(tmpdir(), `lora-train-garbage-${process.pid}.node`);
    writeFileSync(garbage, 'not a shared object');
    const missing = join(tmpdir(), 'lora-train-missing', 'lora_train.node');
    let error: unknown;
    try {
      loadNativeFrom([missing, garbage]);
    } catch (e) {
      error = e;
    }
    expect(error).toBeInstanceOf(NativeLoadError);
    const message = (error as Error).message;
    expect(message).toContain(`- ${missing}: not found`);
    expect(message).toMatch(
      new RegExp(
        `- ${garbage.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: .*(invalid ELF header|too short|file too short)`,
      ),
    );
    expect(message).toContain('npm run build:native');
  });
});
