// The op library as a checked, functional JS API over the addon: every argument is validated
// here (sharp-style messages), outputs are freshly allocated, and native errors are re-thrown
// with the caller's stack. Training code composes ops natively (src/ models, later); this API
// is for tests, benchmarks and tools.
import { native } from './loader.js';
import {
  type DType,
  type LowpDType,
  type LowpTensor,
  ShapeCheck,
  type Tensor,
  invalid,
  numel,
} from '../core/tensor.js';

import { type Device, checkDevice } from '../core/device.js';

export type { Device };
export interface DeviceOption {
  device?: Device;
}

/** Runs a native call; a failure is re-thrown with the stack of the code that called the op. */
export async function callNative<T>(run: () => Promise<T>): Promise<T> {
  const caller = new Error().stack?.split('\n').slice(2).join('\n') ?? '';
  try {
    return await run();
  } catch (e) {
    if (e instanceof Error) e.stack = `${e.name}: ${e.message}\n${caller}`;
    throw e;
  }
}

const out = (shape: number[]): Tensor => ({ data: new Float32Array(numel(shape)), shape });

/** Which of the kernel sets (avx512, avx2, generic) the CPU backend uses. */
export function setCpuKernels(name: 'avx512' | 'avx2' | 'generic'): void {
  native().setCpuKernels(name);
}

export function backendInfo() {
  return native().info();
}

// ---- GEMM ------------------------------------------------------------------------------------

export interface MatmulOptions extends DeviceOption {
  transA?: boolean;
  transB?: boolean;
  alpha?: number;
  beta?: number;
  /** Accumulate into this (M, N) tensor (with beta) instead of allocating. */
  out?: Tensor;
}

const dtypeOf = (t: Tensor | LowpTensor): DType => ('dtype' in t ? t.dtype : 'f32');

/**
 * alpha * op(a) @ op(b) + beta * out, op = optional transpose; a, b 2-D. Either operand may be
 * bf16/fp16 (then the other is rounded to that type, as on tensor cores); out is fp32.
 */
export async function matmul(
  a: Tensor | LowpTensor,
  b: Tensor | LowpTensor,
  opts: MatmulOptions = {},
): Promise<Tensor> {
  const s = new ShapeCheck('matmul');
  const dev = checkDevice('matmul', opts.device);
  const transA = opts.transA ?? false,
    transB = opts.transB ?? false;
  s.typedTensor('a', a, transA ? ['K', 'M'] : ['M', 'K']);
  s.typedTensor('b', b, transB ? ['N', 'K'] : ['K', 'N']);
  const ta = dtypeOf(a),
    tb = dtypeOf(b);
  if (ta !== 'f32' && tb !== 'f32' && ta !== tb) invalid('matmul', `b of a's type (${ta})`, 'b.dtype', tb, RangeError);
  const M = s.dim('M'),
    N = s.dim('N'),
    K = s.dim('K');
  const alpha = s.finite('alpha', opts.alpha ?? 1);
  const beta = s.finite('beta', opts.beta ?? 0);
  const c = opts.out ? s.tensor('out', opts.out, ['M', 'N']) : out([M, N]);
  await callNative(() => native().gemm(dev, c.data, a.data, b.data, M, N, K, transA, transB, alpha, beta, ta, tb));
  return c;
}

/** x rounded to bf16 or fp16 (nearest, ties to even), as raw bits. */
export async function toLowp(x: Tensor, dtype: LowpDType, opts: DeviceOption = {}): Promise<LowpTensor> {
  const s = new ShapeCheck('toLowp');
  const dev = checkDevice('toLowp', opts.device);
  s.tensor('x', x, ['...n']);
  if (dtype !== 'bf16' && dtype !== 'f16') invalid('toLowp', "'bf16' or 'f16'", 'dtype', dtype);
  const y: LowpTensor = { data: new Uint16Array(x.data.length), shape: [...x.shape], dtype };
  await callNative(() => native().convert(dev, y.data, dtype, x.data, 'f32', x.data.length));
  return y;
}

/** A bf16/fp16 tensor widened to fp32 (exact). */
export async function fromLowp(x: LowpTensor, opts: DeviceOption = {}): Promise<Tensor> {
  const s = new ShapeCheck('fromLowp');
  const dev = checkDevice('fromLowp', opts.device);
  s.typedTensor('x', x, ['...n']);
  const y = out([...x.shape]);
  await callNative(() => native().convert(dev, y.data, 'f32', x.data, dtypeOf(x), x.data.length));
  return y;
}

/** Whether the device's fp32 GEMMs may round inputs to TF32 (CUDA; the CPU ignores it). */
export function setAllowTf32(allow: boolean, opts: DeviceOption = {}): void {
  const dev = checkDevice('setAllowTf32', opts.device);
  if (typeof allow !== 'boolean') invalid('setAllowTf32', 'a boolean', 'allow', allow);
  native().setAllowTf32(dev, allow);
}

// ---- Linear and LoRA linear ------------------------------------------------------------------

export interface GradRequest extends DeviceOption {
  /** Gradient of the input (default true). */
  input?: boolean;
  /** Gradients of the frozen weight and bias (default false: LoRA training leaves them frozen). */
  weight?: boolean;
  bias?: boolean;
}

/** y = x weight^T + bias over the last dim. x (..., in), weight (out, in), bias (out). */
export async function linear(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  opts: DeviceOption = {},
): Promise<Tensor> {
  const s = new ShapeCheck('linear');
  const dev = checkDevice('linear', opts.device);
  s.tensor('x', x, ['...rows', 'in']);
  s.tensor('weight', weight, ['out', 'in']);
  const b = s.optionalTensor('bias', bias, ['out']);
  const y = out([...x.shape.slice(0, -1), s.dim('out')]);
  await callNative(() =>
    native().linearForward(dev, y.data, x.data, weight.data, b?.data ?? null, s.dim('rows'), s.dim('in'), s.dim('out')),
  );
  return y;
}

export interface LinearGrads {
  dx?: Tensor;
  dWeight?: Tensor;
  dBias?: Tensor;
}

export async function linearBackward(
  dy: Tensor,
  x: Tensor,
  weight: Tensor,
  want: GradRequest = {},
): Promise<LinearGrads> {
  const s = new ShapeCheck('linearBackward');
  const dev = checkDevice('linearBackward', want.device);
  s.tensor('x', x, ['...rows', 'in']);
  s.tensor('weight', weight, ['out', 'in']);
  s.tensor('dy', dy, ['...rows', 'out']);
  const rows = s.dim('rows'),
    inF = s.dim('in'),
    outF = s.dim('out');
  const g: LinearGrads = {};
  if (want.input ?? true) g.dx = out([...x.shape]);
  if (want.weight) g.dWeight = out([outF, inF]);
  if (want.bias) g.dBias = out([outF]);
  await callNative(() =>
    native().linearBackward(
      dev,
      g.dx?.data ?? null,
      g.dWeight?.data ?? null,
      g.dBias?.data ?? null,
      dy.data,
      x.data,
      weight.data,
      rows,
      inF,
      outF,
    ),
  );
  return g;
}

export interface LoraWeights {
  /** (r, in) */
  down: Tensor;
  /** (out, r) */
  up: Tensor;
  /** alpha / r */
  scale: number;
}

/** y = x W^T + b + scale (x A^T) B^T; also returns xa = x A^T, which the backward needs. */
export async function loraLinear(
  x: Tensor,
  weight: Tensor,
  bias: Tensor | null | undefined,
  lora: LoraWeights,
  opts: DeviceOption = {},
): Promise<{ y: Tensor; xa: Tensor }> {
  const s = new ShapeCheck('loraLinear');
  const dev = checkDevice('loraLinear', opts.device);
  s.tensor('x', x, ['...rows', 'in']);
  s.tensor('weight', weight, ['out', 'in']);
  const b = s.optionalTensor('bias', bias, ['out']);
  s.tensor('lora.down', lora.down, ['r', 'in']);
  s.tensor('lora.up', lora.up, ['out', 'r']);
  const scale = s.finite('lora.scale', lora.scale);
  const lead = x.shape.slice(0, -1);
  const y = out([...lead, s.dim('out')]),
    xa = out([...lead, s.dim('r')]);
  await callNative(() =>
    native().loraLinearForward(
      dev,
      y.data,
      xa.data,
      x.data,
      weight.data,
      b?.data ?? null,
      lora.down.data,
      lora.up.data,
      scale,
      s.dim('rows'),
      s.dim('in'),
      s.dim('out'),
      s.dim('r'),
    ),
  );
  return { y, xa };
}

export interface LoraGrads extends LinearGrads {
  dDown: Tensor;
  dUp: Tensor;
}

export async function loraLinearBackward(
  dy: Tensor,
  x: Tensor,
  xa: Tensor,
  weight: Tensor,
  lora: LoraWeights,
  want: GradRequest = {},
): Promise<LoraGrads> {
  const s = new ShapeCheck('loraLinearBackward');
  const dev = checkDevice('loraLinearBackward', want.device);
  s.tensor('x', x, ['...rows', 'in']);
  s.tensor('weight', weight, ['out', 'in']);
  s.tensor('lora.down', lora.down, ['r', 'in']);
  s.tensor('lora.up', lora.up, ['out', 'r']);
  s.tensor('xa', xa, ['...rows', 'r']);
  s.tensor('dy', dy, ['...rows', 'out']);
  const scale = s.finite('lora.scale', lora.scale);
  const rows = s.dim('rows'),
    inF = s.dim('in'),
    outF = s.dim('out'),
    r = s.dim('r');
  const g: LoraGrads = { dDown: out([r, inF]), dUp: out([outF, r]) };
  if (want.input ?? true) g.dx = out([...x.shape]);
  if (want.weight) g.dWeight = out([outF, inF]);
  if (want.bias) g.dBias = out([outF]);
  await callNative(() =>
    native().loraLinearBackward(
      dev,
      g.dx?.data ?? null,
      g.dDown.data,
      g.dUp.data,
      g.dWeight?.data ?? null,
      g.dBias?.data ?? null,
      dy.data,
      x.data,
      xa.data,
      weight.data,
      lora.down.data,
      lora.up.data,
      scale,
      rows,
      inF,
      outF,
      r,
    ),
  );
  return g;
}

// ---- Attention -------------------------------------------------------------------------------

export interface AttentionOptions extends DeviceOption {
  /** Defaults to 1/sqrt(head dim). */
  scale?: number;
  /** 'bf16' / 'f16': the GPU multiplies in that type on tensor cores (fp32 accumulation), as
   * mixed precision trains; the CPU computes in fp32 regardless. Default 'f32'. */
  compute?: DType;
}

function computeType(op: string, opts: AttentionOptions): DType {
  const c = opts.compute ?? 'f32';
  if (c !== 'f32' && c !== 'bf16' && c !== 'f16') invalid(op, "'f32', 'bf16' or 'f16'", 'compute', c);
  return c;
}

function attentionDims(s: ShapeCheck, q: Tensor, k: Tensor, v: Tensor, heads: number) {
  s.tensor('q', q, ['B', 'N', 'C']);
  s.tensor('k', k, ['B', 'M', 'C']);
  s.tensor('v', v, ['B', 'M', 'C']);
  const H = s.positiveInteger('heads', heads);
  const C = s.dim('C');
  if (C % H !== 0) invalid('attention', `a divisor of the channel count ${C}`, 'heads', heads, RangeError);
  return { B: s.dim('B'), N: s.dim('N'), M: s.dim('M'), H, d: C / H };
}

/** Multi-head attention, heads interleaved in channels: q (B, N, C), k, v (B, M, C).
 * Returns out (B, N, C) and lse (B, H, N), the log-sum-exp the backward needs. */
export async function attention(
  q: Tensor,
  k: Tensor,
  v: Tensor,
  heads: number,
  opts: AttentionOptions = {},
): Promise<{ out: Tensor; lse: Tensor }> {
  const s = new ShapeCheck('attention');
  const dev = checkDevice('attention', opts.device);
  const { B, N, M, H, d } = attentionDims(s, q, k, v, heads);
  const scale = s.finite('scale', opts.scale ?? 1 / Math.sqrt(d));
  const o = out([B, N, H * d]),
    lse = out([B, H, N]);
  await callNative(() =>
    native().attentionForward(
      dev,
      o.data,
      lse.data,
      q.data,
      k.data,
      v.data,
      B,
      N,
      M,
      H,
      d,
      scale,
      computeType('attention', opts),
    ),
  );
  return { out: o, lse };
}

export async function attentionBackward(
  dout: Tensor,
  q: Tensor,
  k: Tensor,
  v: Tensor,
  o: Tensor,
  lse: Tensor,
  heads: number,
  opts: AttentionOptions = {},
): Promise<{ dq: Tensor; dk: Tensor; dv: Tensor }> {
  const s = new ShapeCheck('attentionBackward');
  const dev = checkDevice('attentionBackward', opts.device);
  const { B, N, M, H, d } = attentionDims(s, q, k, v, heads);
  s.tensor('out', o, ['B', 'N', 'C']);
  s.tensor('dout', dout, ['B', 'N', 'C']);
  s.tensor('lse', lse, ['B', H, 'N']);
  const scale = s.finite('scale', opts.scale ?? 1 / Math.sqrt(d));
  const dq = out([...q.shape]),
    dk = out([...k.shape]),
    dv = out([...v.shape]);
  await callNative(() =>
    native().attentionBackward(
      dev,
      dq.data,
      dk.data,
      dv.data,
      dout.data,
      q.data,
      k.data,
      v.data,
      o.data,
      lse.data,
      B,
      N,
      M,
      H,
      d,
      scale,
      computeType('attentionBackward', opts),
    ),
  );
  return { dq, dk, dv };
}

// ---- Norms and activations -------------------------------------------------------------------

/** LayerNorm over the last dim without affine parameters. */
export async function layerNorm(
  x: Tensor,
  eps: number,
  opts: DeviceOption = {},
): Promise<{ y: Tensor; mean: Tensor; rstd: Tensor }> {
  const s = new ShapeCheck('layerNorm');
  const dev = checkDevice('layerNorm', opts.device);
  s.tensor('x', x, ['...rows', 'C']);
  s.finite('eps', eps);
  const rows = s.dim('rows'),
    C = s.dim('C');
  const y = out([...x.shape]),
    mean = out([rows]),
    rstd = out([rows]);
  await callNative(() => native().layerNormForward(dev, y.data, mean.data, rstd.data, x.data, rows, C, eps));
  return { y, mean, rstd };
}

export async function layerNormBackward(
  dy: Tensor,
  x: Tensor,
  mean: Tensor,
  rstd: Tensor,
  opts: DeviceOption = {},
): Promise<Tensor> {
  const s = new ShapeCheck('layerNormBackward');
  const dev = checkDevice('layerNormBackward', opts.device);
  s.tensor('x', x, ['...rows', 'C']);
  s.tensor('dy', dy, ['...rows', 'C']);
  s.tensor('mean', mean, ['rows']);
  s.tensor('rstd', rstd, ['rows']);
  const dx = out([...x.shape]);
  await callNative(() =>
    native().layerNormBackward(dev, dx.data, dy.data, x.data, mean.data, rstd.data, s.dim('rows'), s.dim('C')),
  );
  return dx;
}

export type Activation = 'gelu' | 'silu' | 'leaky_relu';

/** Pointwise activation; gelu is the exact erf form; slope is leaky_relu's negative slope. */
export async function activation(
  kind: Activation,
  x: Tensor,
  opts: DeviceOption & { slope?: number } = {},
): Promise<Tensor> {
  const s = new ShapeCheck(kind);
  const dev = checkDevice(kind, opts.device);
  s.tensor('x', x, ['...n']);
  const slope = s.finite('slope', opts.slope ?? 0.01);
  const y = out([...x.shape]);
  await callNative(() => native().activationForward(dev, kind, y.data, x.data, x.data.length, slope));
  return y;
}

export async function activationBackward(
  kind: Activation,
  dy: Tensor,
  x: Tensor,
  opts: DeviceOption & { slope?: number } = {},
): Promise<Tensor> {
  const s = new ShapeCheck(`${kind}Backward`);
  const dev = checkDevice(kind, opts.device);
  s.tensor('x', x, ['...n']);
  s.tensor('dy', dy, ['...n']);
  if (dy.shape.join() !== x.shape.join())
    invalid(`${kind}Backward`, `shape [${x.shape.join(', ')}]`, 'dy', dy.shape, RangeError);
  const slope = s.finite('slope', opts.slope ?? 0.01);
  const dx = out([...x.shape]);
  await callNative(() => native().activationBackward(dev, kind, dx.data, dy.data, x.data, x.data.length, slope));
  return dx;
}

/** GlobalResponseNorm over (B, H, W, C) channels-last input (diffusers' GlobalResponseNorm). */
export async function globalResponseNorm(
  u: Tensor,
  gamma: Tensor,
  beta: Tensor,
  opts: DeviceOption & { eps?: number } = {},
): Promise<Tensor> {
  const s = new ShapeCheck('globalResponseNorm');
  const dev = checkDevice('globalResponseNorm', opts.device);
  s.tensor('u', u, ['B', 'H', 'W', 'C']);
  s.tensor('gamma', gamma, ['...one', 'C']);
  s.tensor('beta', beta, ['...one', 'C']);
  const eps = s.finite('eps', opts.eps ?? 1e-6);
  const y = out([...u.shape]);
  await callNative(() =>
    native().grnForward(
      dev,
      y.data,
      u.data,
      gamma.data,
      beta.data,
      s.dim('B'),
      s.dim('H') * s.dim('W'),
      s.dim('C'),
      eps,
    ),
  );
  return y;
}

export async function globalResponseNormBackward(
  dy: Tensor,
  u: Tensor,
  gamma: Tensor,
  want: GradRequest & { eps?: number } = {},
): Promise<{ du?: Tensor; dGamma?: Tensor; dBeta?: Tensor }> {
  const s = new ShapeCheck('globalResponseNormBackward');
  const dev = checkDevice('globalResponseNormBackward', want.device);
  s.tensor('u', u, ['B', 'H', 'W', 'C']);
  s.tensor('dy', dy, ['B', 'H', 'W', 'C']);
  s.tensor('gamma', gamma, ['...one', 'C']);
  const eps = s.finite('eps', want.eps ?? 1e-6);
  const C = s.dim('C');
  const g: { du?: Tensor; dGamma?: Tensor; dBeta?: Tensor } = {};
  if (want.input ?? true) g.du = out([...u.shape]);
  if (want.weight) g.dGamma = out([...gamma.shape]);
  if (want.bias) g.dBeta = out([...gamma.shape]);
  await callNative(() =>
    native().grnBackward(
      dev,
      g.du?.data ?? null,
      g.dGamma?.data ?? null,
      g.dBeta?.data ?? null,
      dy.data,
      u.data,
      gamma.data,
      s.dim('B'),
      s.dim('H') * s.dim('W'),
      C,
      eps,
    ),
  );
  return g;
}

// ---- Convolutions ----------------------------------------------------------------------------

/** 3x3 depthwise convolution, padding 1, on channels-last x (B, H, W, C); weight (C, 1, 3, 3). */
export async function depthwiseConv3x3(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  opts: DeviceOption = {},
): Promise<Tensor> {
  const s = new ShapeCheck('depthwiseConv3x3');
  const dev = checkDevice('depthwiseConv3x3', opts.device);
  s.tensor('x', x, ['B', 'H', 'W', 'C']);
  s.tensor('weight', weight, ['C', 1, 3, 3]);
  const b = s.optionalTensor('bias', bias, ['C']);
  const y = out([...x.shape]);
  await callNative(() =>
    native().depthwiseConv3x3Forward(
      dev,
      y.data,
      x.data,
      weight.data,
      b?.data ?? null,
      s.dim('B'),
      s.dim('H'),
      s.dim('W'),
      s.dim('C'),
    ),
  );
  return y;
}

export async function depthwiseConv3x3Backward(
  dy: Tensor,
  x: Tensor,
  weight: Tensor,
  want: GradRequest = {},
): Promise<LinearGrads> {
  const s = new ShapeCheck('depthwiseConv3x3Backward');
  const dev = checkDevice('depthwiseConv3x3Backward', want.device);
  s.tensor('x', x, ['B', 'H', 'W', 'C']);
  s.tensor('dy', dy, ['B', 'H', 'W', 'C']);
  s.tensor('weight', weight, ['C', 1, 3, 3]);
  const g: LinearGrads = {};
  if (want.input ?? true) g.dx = out([...x.shape]);
  if (want.weight) g.dWeight = out([...weight.shape]);
  if (want.bias) g.dBias = out([s.dim('C')]);
  await callNative(() =>
    native().depthwiseConv3x3Backward(
      dev,
      g.dx?.data ?? null,
      g.dWeight?.data ?? null,
      g.dBias?.data ?? null,
      dy.data,
      x.data,
      weight.data,
      s.dim('B'),
      s.dim('H'),
      s.dim('W'),
      s.dim('C'),
    ),
  );
  return g;
}

/** How the forward-only convolutions of the image encoder and decoder run. */
export interface ConvOptions extends DeviceOption {
  /** 1 (default) or 2; the output is ceil(H / stride) x ceil(W / stride), padding k / 2. */
  stride?: number;
  /** y = SiLU(conv(x)), as the output is written. */
  silu?: boolean;
}

/** The stride, and the output (B, ceil(H / stride), ceil(W / stride), channels) of a
 * channels-last convolution whose input s has bound as (B, H, W, ...). */
function convOutput(op: string, s: ShapeCheck, stride: number | undefined, channels: string) {
  const st = stride ?? 1;
  if (st !== 1 && st !== 2) throw new RangeError(`${op}: Expected 1 or 2 for stride but received ${stride}`);
  const side = (n: number) => Math.ceil(n / st);
  return { stride: st, y: out([s.dim('B'), side(s.dim('H')), side(s.dim('W')), s.dim(channels)]) };
}

/** k x k convolution (k odd, at most 15), channels last: x (B, H, W, Cin), weight
 * (Cout, k, k, Cin) (PyTorch's (Cout, Cin, k, k) with the channels last), zero padding k / 2.
 * With opts.residual (the output's shape), y = conv + residual, added as the output is written
 * (an MBConv block's skip connection; not with silu). */
export async function conv2d(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  opts: ConvOptions & { residual?: Tensor } = {},
): Promise<Tensor> {
  const s = new ShapeCheck('conv2d');
  const dev = checkDevice('conv2d', opts.device);
  s.tensor('x', x, ['B', 'H', 'W', 'Cin']);
  s.tensor('weight', weight, ['Cout', 'k', 'k', 'Cin']);
  const b = s.optionalTensor('bias', bias, ['Cout']);
  const { stride, y } = convOutput('conv2d', s, opts.stride, 'Cout');
  const [B, H, W] = [s.dim('B'), s.dim('H'), s.dim('W')];
  const residual = s.optionalTensor('residual', opts.residual, y.shape);
  const silu = opts.silu ?? false;
  if (residual && silu) throw new RangeError('conv2d: Expected false for silu with a residual but received true');
  await callNative(() =>
    native().conv2dForward(
      dev,
      y.data,
      x.data,
      weight.data,
      b?.data ?? null,
      residual?.data ?? null,
      B,
      H,
      W,
      s.dim('Cin'),
      s.dim('Cout'),
      s.dim('k'),
      stride,
      silu,
    ),
  );
  return y;
}

/** Depthwise k x k convolution (k odd, at most 15), channels last: x (B, H, W, C), weight
 * (C, 1, k, k); the padding (k / 2) zeros, or with replicate the nearest edge pixel. */
export async function depthwiseConv(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  opts: ConvOptions & { replicate?: boolean } = {},
): Promise<Tensor> {
  const s = new ShapeCheck('depthwiseConv');
  const dev = checkDevice('depthwiseConv', opts.device);
  s.tensor('x', x, ['B', 'H', 'W', 'C']);
  s.tensor('weight', weight, ['C', 1, 'k', 'k']);
  const b = s.optionalTensor('bias', bias, ['C']);
  const { stride, y } = convOutput('depthwiseConv', s, opts.stride, 'C');
  const [B, H, W, C, k] = [s.dim('B'), s.dim('H'), s.dim('W'), s.dim('C'), s.dim('k')];
  const [replicate, silu] = [opts.replicate ?? false, opts.silu ?? false];
  await callNative(() =>
    native().depthwiseConvForward(
      dev,
      y.data,
      x.data,
      weight.data,
      b?.data ?? null,
      B,
      H,
      W,
      C,
      k,
      stride,
      replicate,
      silu,
    ),
  );
  return y;
}

/** 1x1 convolution in NCHW: x (B, Cin, H, W), weight (Cout, Cin, 1, 1). */
export async function conv1x1(
  x: Tensor,
  weight: Tensor,
  bias?: Tensor | null,
  opts: DeviceOption = {},
): Promise<Tensor> {
  const s = new ShapeCheck('conv1x1');
  const dev = checkDevice('conv1x1', opts.device);
  s.tensor('x', x, ['B', 'Cin', 'H', 'W']);
  s.tensor('weight', weight, ['Cout', 'Cin', 1, 1]);
  const b = s.optionalTensor('bias', bias, ['Cout']);
  const y = out([s.dim('B'), s.dim('Cout'), s.dim('H'), s.dim('W')]);
  await callNative(() =>
    native().conv1x1Forward(
      dev,
      y.data,
      x.data,
      weight.data,
      b?.data ?? null,
      s.dim('B'),
      s.dim('Cin'),
      s.dim('Cout'),
      s.dim('H') * s.dim('W'),
    ),
  );
  return y;
}

export async function conv1x1Backward(
  dy: Tensor,
  x: Tensor,
  weight: Tensor,
  want: GradRequest = {},
): Promise<LinearGrads> {
  const s = new ShapeCheck('conv1x1Backward');
  const dev = checkDevice('conv1x1Backward', want.device);
  s.tensor('x', x, ['B', 'Cin', 'H', 'W']);
  s.tensor('weight', weight, ['Cout', 'Cin', 1, 1]);
  s.tensor('dy', dy, ['B', 'Cout', 'H', 'W']);
  const g: LinearGrads = {};
  if (want.input ?? true) g.dx = out([...x.shape]);
  if (want.weight) g.dWeight = out([...weight.shape]);
  if (want.bias) g.dBias = out([s.dim('Cout')]);
  await callNative(() =>
    native().conv1x1Backward(
      dev,
      g.dx?.data ?? null,
      g.dWeight?.data ?? null,
      g.dBias?.data ?? null,
      dy.data,
      x.data,
      weight.data,
      s.dim('B'),
      s.dim('Cin'),
      s.dim('Cout'),
      s.dim('H') * s.dim('W'),
    ),
  );
  return g;
}

// ---- Loss and optimiser ----------------------------------------------------------------------

/** mean((pred - target)^2) and its gradient with respect to pred. */
export async function mseLoss(
  pred: Tensor,
  target: Tensor,
  opts: DeviceOption = {},
): Promise<{ loss: number; dpred: Tensor }> {
  const s = new ShapeCheck('mseLoss');
  const dev = checkDevice('mseLoss', opts.device);
  s.tensor('pred', pred, ['...n']);
  s.tensor('target', target, ['...n']);
  if (pred.shape.join() !== target.shape.join())
    invalid('mseLoss', `shape [${pred.shape.join(', ')}]`, 'target', target.shape, RangeError);
  const dpred = out([...pred.shape]);
  const loss = await callNative(() => native().mseLoss(dev, dpred.data, pred.data, target.data, pred.data.length, 1));
  return { loss, dpred };
}

export interface AdamWHyper {
  lr: number;
  beta1?: number;
  beta2?: number;
  eps?: number;
  weightDecay?: number;
  /** Multiplies every gradient as it is read (an inverse loss scale, a clipping coefficient). */
  gradScale?: number;
}

export interface AdamWSlot {
  param: Float32Array;
  grad: Float32Array;
  expAvg: Float32Array;
  expAvgSq: Float32Array;
}

/** One AdamW step (torch.optim.AdamW semantics) over every slot, in place; step is 1-based. */
export async function adamw(
  slots: AdamWSlot[],
  hyper: AdamWHyper,
  step: number,
  opts: DeviceOption = {},
): Promise<void> {
  const op = 'adamw';
  const dev = checkDevice(op, opts.device);
  const s = new ShapeCheck(op);
  if (!Array.isArray(slots)) invalid(op, 'an array of { param, grad, expAvg, expAvgSq }', 'slots', slots);
  slots.forEach((slot, i) => {
    if (!(slot?.param instanceof Float32Array)) invalid(op, 'a Float32Array', `slots[${i}].param`, slot?.param);
    for (const key of ['grad', 'expAvg', 'expAvgSq'] as const) {
      const a = slot[key];
      if (!(a instanceof Float32Array)) invalid(op, 'a Float32Array', `slots[${i}].${key}`, a);
      if (a.length !== slot.param.length)
        invalid(op, `a Float32Array of length ${slot.param.length}`, `slots[${i}].${key}`, a, RangeError);
    }
  });
  s.positiveInteger('step', step);
  const lr = s.finite('lr', hyper.lr);
  const beta1 = s.finite('beta1', hyper.beta1 ?? 0.9),
    beta2 = s.finite('beta2', hyper.beta2 ?? 0.999);
  const eps = s.finite('eps', hyper.eps ?? 1e-8),
    wd = s.finite('weightDecay', hyper.weightDecay ?? 1e-2);
  const gradScale = s.finite('gradScale', hyper.gradScale ?? 1);
  await callNative(() =>
    native().adamw(
      dev,
      slots.map((x) => x.param),
      slots.map((x) => x.expAvg),
      slots.map((x) => x.expAvgSq),
      slots.map((x) => x.grad),
      lr,
      beta1,
      beta2,
      eps,
      wd,
      step,
      gradScale,
    ),
  );
}

/** Global L2 norm of all gradients; scales them in place to maxNorm when above it
 * (torch.nn.utils.clip_grad_norm_). maxNorm 0 only measures. Returns the norm before clipping. */
export async function clipGradNorm(grads: Float32Array[], maxNorm: number, opts: DeviceOption = {}): Promise<number> {
  const dev = checkDevice('clipGradNorm', opts.device);
  if (!Array.isArray(grads)) invalid('clipGradNorm', 'an array of Float32Array', 'grads', grads);
  grads.forEach((g, i) => {
    if (!(g instanceof Float32Array)) invalid('clipGradNorm', 'a Float32Array', `grads[${i}]`, g);
  });
  if (typeof maxNorm !== 'number' || !(maxNorm >= 0) || !Number.isFinite(maxNorm))
    invalid('clipGradNorm', 'a finite number >= 0', 'maxNorm', maxNorm);
  return callNative(() => native().clipGradNorm(dev, grads, maxNorm));
}
