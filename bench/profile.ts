// Where a training step's time goes: the CPU backend's per-op profile of one step, grouped and
// set against the machine's fp32 peak.
import type { CpuProfileEntry } from '../src/native/addon.js';

const CATEGORIES: [string, RegExp][] = [
  ['GEMM (linear, LoRA, convolution)', /^(gemm|linear_|lora_linear_|conv1x1_|conv2d_|conv_transpose2d_)/],
  ['attention', /^attention_/],
  ['optimizer (AdamW, clipping)', /^(adamw|clip_grad_norm)$/],
  ['memory (allocation, zeroing, conversion)', /^(alloc|release|upload_bytes|download_bytes|zero|convert)$/],
];
const ELEMENTWISE = 'elementwise, norms and activations';
const TOP_OPS = 15;

export interface ProfileLine {
  /** An op name, op with shape, or category. */
  part: string;
  calls?: number;
  ms: number;
  /** Fraction of the step's wall time. */
  share: number;
  gflops: number | null;
  /** gflops over the machine's fp32 peak. */
  of_peak: number | null;
}

export interface StepProfile {
  wall_ms: number;
  categories: ProfileLine[];
  ops: ProfileLine[];
}

function categoryOf(op: string): string {
  return CATEGORIES.find(([, pattern]) => pattern.test(op))?.[0] ?? ELEMENTWISE;
}

function line(
  part: string,
  ms: number,
  flops: number,
  wallMs: number,
  peakGflops: number,
  calls?: number,
): ProfileLine {
  const gflops = flops > 0 ? flops / ms / 1e6 : null;
  return {
    part,
    ...(calls === undefined ? {} : { calls }),
    ms: Number(ms.toFixed(1)),
    share: Number((ms / wallMs).toFixed(3)),
    gflops: gflops === null ? null : Number(gflops.toFixed(1)),
    of_peak: gflops === null ? null : Number((gflops / peakGflops).toFixed(3)),
  };
}

/** Groups one step's profile (entries from cpuProfile) by kind of op and lists the costliest
 * ops by shape; what the ops do not account for is the glue between them. */
export function summariseProfile(entries: CpuProfileEntry[], wallMs: number, peakGflops: number): StepProfile {
  const byCategory = new Map<string, { ms: number; flops: number }>();
  for (const e of entries) {
    const c = byCategory.get(categoryOf(e.op)) ?? { ms: 0, flops: 0 };
    c.ms += e.ms;
    c.flops += e.flops;
    byCategory.set(categoryOf(e.op), c);
  }
  const inOps = entries.reduce((s, e) => s + e.ms, 0);
  const categories = [...byCategory]
    .map(([name, c]) => line(name, c.ms, c.flops, wallMs, peakGflops))
    .sort((a, b) => b.ms - a.ms);
  categories.push(line('outside ops (model glue, N-API)', Math.max(0, wallMs - inOps), 0, wallMs, peakGflops));
  const ops = [...entries]
    .sort((a, b) => b.ms - a.ms)
    .slice(0, TOP_OPS)
    .map((e) => line(e.shape ? `${e.op} ${e.shape}` : e.op, e.ms, e.flops, wallMs, peakGflops, e.calls));
  return { wall_ms: Number(wallMs.toFixed(1)), categories, ops };
}
