// The backend parity cases (ggml's test-backend-ops): every op of the fixture suite, and a whole
// prior LoRA step, run on any device; shared by tests/parity.test.ts and bench/gpu-check.ts.
import { join } from 'node:path';
import * as ops from '../src/native/ops.js';
import { Prior, type PriorConfig } from '../src/models/prior.js';
import { Rng } from '../src/core/rng.js';
import { getTensor, readSafetensors, type SafetensorsFile } from '../src/io/safetensors.js';
import type { DType, LowpDType, LowpTensor, Tensor } from '../src/core/tensor.js';

/** fp32 tolerances (issue 2): relative error of forward outputs and of gradients. */
export const FWD = 1e-5;
export const GRAD = 1e-4;
/** Conversions round exactly; low-precision GEMM operands multiply exactly in fp32, so only
 * the fp32 accumulation differs from the float64 reference. */
export const EXACT = 0;
export const LOWP_GEMM = 1e-5;
/** Mixed precision (bf16/fp16 weights and GEMM operands, fp32 elsewhere) against float64
 * references: about three times the largest error seen on the prior fixtures (bf16 3e-4
 * forward, 1.1e-2 LoRA gradients; fp16 6e-5 and 8e-4). */
export const MIXED = { bf16: { fwd: 2e-3, grad: 3e-2 }, fp16: { fwd: 3e-4, grad: 3e-3 } } as const;
/** GPU against CPU in mixed precision. The GPU also multiplies attention in bf16/fp16 (its
 * flash kernels round q, k, v, P, dO and dS), which the CPU does in fp32: a CPU emulation of
 * the bf16 kernels' arithmetic measured 4.7e-3 (o) and 5.2e-3 (dq) against float64, so
 * attention gets about three times that, and whole steps twice MIXED's gradient bound. */
export const GPU_MIXED = {
  attention: { fwd: 1.5e-2, grad: 2e-2 },
  step: { bf16: { fwd: 5e-3, grad: 6e-2 }, fp16: { fwd: 1e-3, grad: 1e-2 } },
} as const;

export interface FixtureCase {
  op: string;
  id: string;
  [param: string]: unknown;
}

/** A fixture file of tests/reference/*.py: tensors named <case id>.<key>, cases in the metadata. */
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
}

const num = (v: unknown) => v as number;
export type Device = ops.Device;
export type Outputs = Record<string, { tensor: Tensor | Float32Array | undefined; tolerance: number }>;

/** Runs one fixture case on a device; returns its outputs with the tolerance each needs. */
/** Forward and backward attention of one case, computed in `compute`. */
function attentionRunner(fx: Fixture, compute: DType, fwd: number, grad: number) {
  return async (c: FixtureCase, device: Device): Promise<Outputs> => {
    const [q, k, v] = [fx.tensor(c, 'q'), fx.tensor(c, 'k'), fx.tensor(c, 'v')];
    const opts = { device, compute };
    const { out, lse } = await ops.attention(q, k, v, num(c.H), opts);
    const g = await ops.attentionBackward(fx.tensor(c, 'do'), q, k, v, out, lse, num(c.H), opts);
    return {
      o: { tensor: out, tolerance: fwd },
      lse: { tensor: lse, tolerance: fwd },
      dq: { tensor: g.dq, tolerance: grad },
      dk: { tensor: g.dk, tolerance: grad },
      dv: { tensor: g.dv, tolerance: grad },
    };
  };
}

function makeRunners(fx: Fixture): Record<string, (c: FixtureCase, device: Device) => Promise<Outputs>> {
  return {
    gemm: async (c, device) => {
      const out = c.beta !== 0 ? fx.tensor(c, 'C0') : undefined;
      const C = await ops.matmul(fx.tensor(c, 'A'), fx.tensor(c, 'B'), {
        transA: !!c.transA,
        transB: !!c.transB,
        alpha: num(c.alpha),
        beta: num(c.beta),
        out,
        device,
      });
      return { C: { tensor: C, tolerance: FWD } };
    },
    linear: async (c, device) => {
      const [x, W, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'W'), fx.tensor(c, 'b')];
      const g = await ops.linearBackward(fx.tensor(c, 'dy'), x, W, { weight: true, bias: true, device });
      return {
        y: { tensor: await ops.linear(x, W, b, { device }), tolerance: FWD },
        dx: { tensor: g.dx, tolerance: GRAD },
        dW: { tensor: g.dWeight, tolerance: GRAD },
        db: { tensor: g.dBias, tolerance: GRAD },
      };
    },
    lora_linear: async (c, device) => {
      const [x, W, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'W'), fx.tensor(c, 'b')];
      const lora = { down: fx.tensor(c, 'A'), up: fx.tensor(c, 'B'), scale: num(c.scale) };
      const { y, xa } = await ops.loraLinear(x, W, b, lora, { device });
      const g = await ops.loraLinearBackward(fx.tensor(c, 'dy'), x, xa, W, lora, { device });
      return {
        y: { tensor: y, tolerance: FWD },
        dA: { tensor: g.dDown, tolerance: GRAD },
        dB: { tensor: g.dUp, tolerance: GRAD },
        dx: { tensor: g.dx, tolerance: GRAD },
      };
    },
    attention: attentionRunner(fx, 'f32', FWD, GRAD),
    // Mixed precision's attention: tensor cores in bf16 on the GPU (head dim 64), fp32 on the CPU.
    attention_bf16: attentionRunner(fx, 'bf16', GPU_MIXED.attention.fwd, GPU_MIXED.attention.grad),
    layernorm: async (c, device) => {
      const { y, mean, rstd } = await ops.layerNorm(fx.tensor(c, 'x'), num(c.eps), { device });
      return {
        y: { tensor: y, tolerance: FWD },
        dx: {
          tensor: await ops.layerNormBackward(fx.tensor(c, 'dy'), fx.tensor(c, 'x'), mean, rstd, { device }),
          tolerance: GRAD,
        },
      };
    },
    activation: async (c, device) => {
      const kind = c.kind as ops.Activation;
      const slope = c.slope === undefined ? undefined : num(c.slope);
      return {
        y: { tensor: await ops.activation(kind, fx.tensor(c, 'x'), { slope, device }), tolerance: FWD },
        dx: {
          tensor: await ops.activationBackward(kind, fx.tensor(c, 'dy'), fx.tensor(c, 'x'), { slope, device }),
          tolerance: GRAD,
        },
      };
    },
    grn: async (c, device) => {
      const [u, gamma, beta] = [fx.tensor(c, 'u'), fx.tensor(c, 'gamma'), fx.tensor(c, 'beta')];
      const g = await ops.globalResponseNormBackward(fx.tensor(c, 'dy'), u, gamma, {
        weight: true,
        bias: true,
        eps: num(c.eps),
        device,
      });
      return {
        y: { tensor: await ops.globalResponseNorm(u, gamma, beta, { eps: num(c.eps), device }), tolerance: FWD },
        du: { tensor: g.du, tolerance: GRAD },
        dgamma: { tensor: g.dGamma, tolerance: GRAD },
        dbeta: { tensor: g.dBeta, tolerance: GRAD },
      };
    },
    depthwise: async (c, device) => {
      const [x, w, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'w'), fx.tensor(c, 'b')];
      const g = await ops.depthwiseConv3x3Backward(fx.tensor(c, 'dy'), x, w, { weight: true, bias: true, device });
      return {
        y: { tensor: await ops.depthwiseConv3x3(x, w, b, { device }), tolerance: FWD },
        dx: { tensor: g.dx, tolerance: GRAD },
        dw: { tensor: g.dWeight, tolerance: GRAD },
        db: { tensor: g.dBias, tolerance: GRAD },
      };
    },
    conv1x1: async (c, device) => {
      const [x, w, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'w'), fx.tensor(c, 'b')];
      const g = await ops.conv1x1Backward(fx.tensor(c, 'dy'), x, w, { weight: true, bias: true, device });
      return {
        y: { tensor: await ops.conv1x1(x, w, b, { device }), tolerance: FWD },
        dx: { tensor: g.dx, tolerance: GRAD },
        dw: { tensor: g.dWeight, tolerance: GRAD },
        db: { tensor: g.dBias, tolerance: GRAD },
      };
    },
    mse: async (c, device) => {
      const { loss, dpred } = await ops.mseLoss(fx.tensor(c, 'pred'), fx.tensor(c, 'target'), { device });
      return { loss: { tensor: new Float32Array([loss]), tolerance: FWD }, dpred: { tensor: dpred, tolerance: GRAD } };
    },
    adamw: adamwRunner(fx, 1),
    // fp16's loss scaling: gradients 1024 times too large, unscaled inside AdamW's read of them.
    adamw_scaled: adamwRunner(fx, 1024),
    clip: async (c, device) => {
      const grads = Array.from({ length: num(c.tensors) }, (_, i) => Float32Array.from(fx.tensor(c, `g${i}`).data));
      const norm = await ops.clipGradNorm(grads, num(c.maxNorm), { device });
      const out: Outputs = { norm: { tensor: new Float32Array([norm]), tolerance: FWD } };
      grads.forEach((g, i) => (out[`g${i}`] = { tensor: g, tolerance: FWD }));
      return out;
    },
  };
}

/** The multi-tensor AdamW case's steps, each gradient multiplied by `gradScale` and AdamW told
 * to divide it back out; parameters and moments after every step. */
function adamwRunner(fx: Fixture, gradScale: number) {
  return async (c: FixtureCase, device: Device): Promise<Outputs> => {
    const slots = Array.from({ length: num(c.tensors) }, (_, i) => {
      const param = Float32Array.from(fx.tensor(c, `p${i}.init`).data);
      return {
        param,
        grad: new Float32Array(param.length),
        expAvg: new Float32Array(param.length),
        expAvgSq: new Float32Array(param.length),
      };
    });
    const hyper = {
      lr: num(c.lr),
      beta1: num(c.beta1),
      beta2: num(c.beta2),
      eps: num(c.eps),
      weightDecay: num(c.weightDecay),
      gradScale: 1 / gradScale,
    };
    const out: Outputs = {};
    for (let step = 1; step <= num(c.steps); step++) {
      slots.forEach((s, i) => s.grad.set(fx.tensor(c, `p${i}.grad${step}`).data.map((g) => g * gradScale)));
      await ops.adamw(slots, hyper, step, { device });
      slots.forEach((s, i) => {
        out[`p${i} step ${step}`] = { tensor: Float32Array.from(s.param), tolerance: FWD };
        out[`p${i} exp_avg_sq step ${step}`] = { tensor: Float32Array.from(s.expAvgSq), tolerance: FWD };
      });
    }
    return out;
  };
}

/** A fixture tensor of bf16/fp16 bits (stored as F32 integers) as a LowpTensor. */
export function lowpTensor(fx: Fixture, c: FixtureCase, key: string, dtype: LowpDType): LowpTensor {
  const t = fx.tensor(c, key);
  return { data: Uint16Array.from(t.data), shape: t.shape, dtype };
}

/** Runs one case of tests/fixtures/lowp.safetensors on a device. */
export function makeLowpRunners(fx: Fixture): Record<string, (c: FixtureCase, device: Device) => Promise<Outputs>> {
  const operand = (c: FixtureCase, key: string, type: unknown) =>
    type === 'f32' ? fx.tensor(c, key) : lowpTensor(fx, c, key, type as LowpDType);
  return {
    convert: async (c, device) => {
      const x = fx.tensor(c, 'x');
      const bits = async (dtype: LowpDType) => Float32Array.from((await ops.toLowp(x, dtype, { device })).data);
      return {
        bf16: { tensor: await bits('bf16'), tolerance: EXACT },
        f16: { tensor: await bits('f16'), tolerance: EXACT },
      };
    },
    gemm_lowp: async (c, device) => {
      const C = await ops.matmul(operand(c, 'A', c.aType), operand(c, 'B', c.bType), {
        transA: !!c.transA,
        transB: !!c.transB,
        device,
      });
      return { C: { tensor: C, tolerance: LOWP_GEMM } };
    },
  };
}

/** Random inputs of one prior step, drawn from a seed in a fixed order: x and target normal
 * (B, c_in, H, W), r uniform (B), clip normal (B, T, c_cond). */
export function randomStepInputs(config: PriorConfig, B: number, H: number, W: number, T: number, seed: number) {
  const rng = new Rng(seed);
  const tensor = (shape: number[], draw: () => number): Tensor => ({
    data: Float32Array.from({ length: shape.reduce((a, b) => a * b, 1) }, draw),
    shape,
  });
  const x = tensor([B, config.c_in, H, W], () => rng.normal()),
    target = tensor([B, config.c_in, H, W], () => rng.normal());
  const r = tensor([B], () => rng.uniform()),
    clip = tensor([B, T, config.c_cond], () => rng.normal());
  return { x, r, clip, target };
}

export interface ParityCase {
  name: string;
  run(device: Device): Promise<Outputs>;
}

/** Every op case of tests/fixtures/ops.safetensors and lowp.safetensors, then prior LoRA steps. */
export function parityCases(fixturesDir: string): ParityCase[] {
  const cases: ParityCase[] = [];
  for (const [file, make] of [
    ['ops.safetensors', makeRunners],
    ['lowp.safetensors', makeLowpRunners],
  ] as const) {
    const fx = new Fixture(join(fixturesDir, file));
    for (const [op, run] of Object.entries(make(fx))) {
      const variant = op.endsWith('_bf16') ? ' (bf16 compute)' : op.endsWith('_scaled') ? ' (scaled gradients)' : '';
      for (const c of fx.casesOf(op.replace(/_(bf16|scaled)$/, '')))
        cases.push({ name: c.id + variant, run: (device) => run(c, device) });
    }
  }
  // Head dim 64 (the GPU's tensor-core attention) and enough rows that the GPU's LoRA linears
  // take both of their bf16/fp16 paths (concatenated where rows are many, separate elsewhere).
  // LoRA dropout in fp16 only: the GPU joins the low-rank path differently with and without it.
  // An odd rank in bf16: low-precision GEMMs with a leading dimension of r (unaligned rows).
  const small = { c_in: 16, c: 256, c_cond: 64, c_r: 64, depth: 2, nhead: 4, dropout: 0.1 };
  cases.push(
    priorStepCase('fp32 (c 256, depth 2, head dim 64, every LoRA target)', small, [2, 12, 12, 7], 'fp32', 8, 0),
  );
  cases.push(
    priorStepCase('bf16 (c 256, depth 2, head dim 64, every LoRA target, rank 5)', small, [2, 12, 12, 7], 'bf16', 5, 0),
  );
  cases.push(
    priorStepCase(
      'fp16 (c 256, depth 2, head dim 64, every LoRA target, LoRA dropout)',
      small,
      [2, 12, 12, 7],
      'fp16',
      8,
      0.1,
    ),
  );
  // Head dim 32 (the GPU's row attention kernels writing bf16) and some targets only, so the
  // activations no adapter keeps share one scratch across blocks.
  cases.push(
    priorStepCase(
      'bf16 (c 256, depth 2, head dim 32, to_q and channelwise.4 only)',
      { ...small, nhead: 8 },
      [2, 12, 12, 7],
      'bf16',
      4,
      0,
      ['to_q', 'channelwise.4'],
    ),
  );
  // The real model's widths (every kernel at the benchmark's channel counts and 24 heads), one
  // level deep and on 4x4 latents so that it stays small.
  const realWidth = { c_in: 16, c: 1536, c_cond: 1280, c_r: 64, depth: 1, nhead: 24, dropout: 0.1 };
  cases.push(
    priorStepCase(
      'bf16 at the real width (c 1536, c_cond 1280, 24 heads, depth 1, 4x4 latents)',
      realWidth,
      [2, 4, 4, 3],
      'bf16',
      4,
      0,
    ),
  );
  return cases;
}

/** One LoRA training step of a random prior: the loss, every LoRA gradient, and the optimizer
 * step after it. */
const EVERY_TARGET = ['to_q', 'to_k', 'to_v', 'to_out.0', 'kv_mapper.1', 'channelwise.0', 'channelwise.4'];

function priorStepCase(
  label: string,
  config: PriorConfig,
  [B, H, W, T]: number[],
  precision: 'fp32' | 'bf16' | 'fp16',
  rank: number,
  dropout: number,
  targets = EVERY_TARGET,
): ParityCase {
  const [fwd, grad] =
    precision === 'fp32' ? [FWD, GRAD] : [GPU_MIXED.step[precision].fwd, GPU_MIXED.step[precision].grad];
  return {
    name: `prior LoRA step, ${label}`,
    async run(device) {
      const lora = { rank, alpha: 4, targets, dropout, seed: 2 };
      const prior = Prior.random(config, { seed: 1, lora, device, precision });
      prior.setLoraWeights(
        Object.fromEntries(
          Object.entries(prior.loraWeights()).map(([k, w]) => [
            k,
            { data: w.data.map((_, i) => Math.sin(i) * 0.05), shape: w.shape },
          ]),
        ),
      );
      const { x, r, clip, target } = randomStepInputs(config, B!, H!, W!, T!, 7);
      // fp16 as it trains: under the GradScaler's initial 2^16. Unscaled, the output
      // gradients (~1e-6) fall below fp16's normal range where the GPU rounds dO and dS
      // for its tensor-core attention, and the q/k LoRA gradients lose digits (2.4e-2
      // relative error in the CUDA emulator, 7.7e-4 scaled), as they would in PyTorch.
      const lossScale = precision === 'fp16' ? 2 ** 16 : 1;
      const { loss, grads } = await prior.lossAndGrad(x, r, clip, target, { seed: 9, train: true, lossScale });
      const out: Outputs = { loss: { tensor: new Float32Array([loss]), tolerance: fwd } };
      for (const [k, g] of Object.entries(grads)) out[k] = { tensor: g, tolerance: grad };
      // The model's multi-tensor AdamW, its gradients clipped (maxNorm below their norm) and
      // unscaled: its first moment is the clipped gradient times 1 - beta1.
      const norm = await prior.optimizerStep({ lr: 1e-3, maxNorm: 1e-4, lossScale }, 1);
      out['gradient norm'] = { tensor: new Float32Array([norm]), tolerance: grad };
      for (const [k, m] of Object.entries(prior.optimizerState()))
        if (k.endsWith('.exp_avg')) out[k] = { tensor: m, tolerance: grad };
      return out;
    },
  };
}

/** max |actual - expected| / max |expected|: relative to the tensor's scale, so entries near
 * zero neither dominate nor escape. */
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
