// The CPU backend's per-op profile (cpuProfile), which the bench prints for the training step:
// each outermost op is timed once under its own name and shape, with the multiply-adds of the
// GEMMs inside it counted as the op's definition gives them.
import { describe, expect, it } from 'vitest';
import { native } from '../src/native/loader.js';
import { summariseProfile } from '../bench/profile.js';
import type { CpuProfileEntry } from '../src/native/addon.js';

const filled = (n: number) => Float32Array.from({ length: n }, (_, i) => ((i * 7) % 13) / 13 - 0.5);

function stop(): CpuProfileEntry[] {
  return native().cpuProfile(false) as CpuProfileEntry[];
}

describe('cpuProfile', () => {
  it('times each outermost op by name and shape and counts its GEMM flops', async () => {
    const [M, N, K] = [64, 48, 32];
    const [rows, inF, outF, r] = [40, 24, 16, 4];
    native().cpuProfile(true);
    for (let i = 0; i < 2; i++)
      await native().gemm(
        'cpu',
        new Float32Array(M * N),
        filled(M * K),
        filled(K * N),
        M,
        N,
        K,
        false,
        false,
        1,
        0,
        'f32',
        'f32',
      );
    await native().loraLinearForward(
      'cpu',
      new Float32Array(rows * outF),
      new Float32Array(rows * r),
      filled(rows * inF),
      filled(outF * inF),
      null,
      filled(r * inF),
      filled(outF * r),
      2,
      rows,
      inF,
      outF,
      r,
    );
    const entries = stop();
    const byKey = new Map(entries.map((e) => [`${e.op} ${e.shape}`, e]));
    expect(byKey.get(`gemm ${M}x${N}x${K}`)).toMatchObject({ calls: 2, flops: 2 * 2 * M * N * K });
    // x A^T, x W^T and the scaled up-projection, each 2 flops per multiply-add.
    const loraFlops = 2 * rows * r * inF + 2 * rows * inF * outF + 2 * rows * r * outF;
    expect(byKey.get(`lora_linear_forward ${rows}x${inF}x${outF}`)).toMatchObject({ calls: 1, flops: loraFlops });
    expect(entries.some((e) => e.op === 'linear_forward')).toBe(false); // ran inside the LoRA op
    expect(entries.every((e) => e.ms >= 0)).toBe(true);
    expect(entries.map((e) => e.ms)).toEqual([...entries.map((e) => e.ms)].sort((a, b) => b - a));
  });

  it('records nothing while stopped', async () => {
    expect(stop()).toEqual([]);
    await native().gemm('cpu', new Float32Array(16), filled(16), filled(16), 4, 4, 4, false, false, 1, 0, 'f32', 'f32');
    expect(stop()).toEqual([]);
  });
});

describe("the bench's step profile", () => {
  it('groups ops by kind, rates them against the peak and leaves the rest to glue', () => {
    const entries: CpuProfileEntry[] = [
      { op: 'linear_forward', shape: '8x8x8', ms: 50, calls: 2, flops: 5e9 },
      { op: 'attention_backward', shape: '1x1x8x8x8', ms: 20, calls: 1, flops: 1e9 },
      { op: 'gelu_forward', shape: '', ms: 10, calls: 4, flops: 0 },
      { op: 'adamw', shape: '', ms: 5, calls: 1, flops: 0 },
    ];
    const p = summariseProfile(entries, 100, 200);
    const part = (name: string) => p.categories.find((c) => c.part.startsWith(name))!;
    expect(part('GEMM')).toMatchObject({ ms: 50, share: 0.5, gflops: 100, of_peak: 0.5 });
    expect(part('attention')).toMatchObject({ ms: 20, gflops: 50, of_peak: 0.25 });
    expect(part('elementwise')).toMatchObject({ ms: 10, gflops: null });
    expect(part('optimizer')).toMatchObject({ ms: 5 });
    expect(part('outside ops')).toMatchObject({ ms: 15, share: 0.15 });
    expect(p.ops.map((o) => o.part)).toEqual([
      'linear_forward 8x8x8',
      'attention_backward 1x1x8x8x8',
      'gelu_forward',
      'adamw',
    ]);
  });
});
