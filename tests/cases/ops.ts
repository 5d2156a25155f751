// The op case table, as ggml's test-backend-ops has one: every op of the fixture suites
// (tests/reference/ops_fixtures.py, lowp_fixtures.py) written once as cases that run its
// forward and backward on a device. ops.test.ts holds each case to PyTorch's float64 results
// under every CPU kernel set, gradcheck.test.ts holds each backward to finite differences of its
// forward, and parity.test.ts and cuda-emulator.test.ts hold the CUDA backend to the CPU's.
import { join } from 'node:path';
import type { Device } from '../../src/core/device.js';
import type { DType, LowpDType, Tensor } from '../../src/core/tensor.js';
import * as ops from '../../src/native/ops.js';
import { Fixture, type FixtureCase } from './fixture.js';
import { TOLERANCE } from './tolerance.js';

export type Outputs = Record<string, { tensor: Tensor | Float32Array | undefined; tolerance: number }>;
type Tensors = Record<string, Tensor>;

/** An op as a differentiable function of some of its inputs. */
export interface Differentiable {
  inputs(): Tensors;
  /** The inputs that get gradients. */
  wrt: string[];
  forward(inputs: Tensors, device: Device): Promise<Tensor>;
  /** The gradient of sum(forward(inputs) * dy) for each input of wrt. */
  backward(inputs: Tensors, dy: Tensor, device: Device): Promise<Record<string, Tensor | undefined>>;
  /** Finite-difference step (default 1e-2). */
  step?: number;
}

export interface OpCase {
  name: string;
  /** Forward and backward on a device: every output, with the tolerance it is held to. */
  run(device: Device): Promise<Outputs>;
  /** PyTorch's float64 results for the outputs run names (absent: a case that compares
   * backends only). */
  reference?: () => Tensors;
  gradient?: Differentiable;
}

/** One differentiable op, written once: its forward (named outputs, the first one
 * differentiated) and its backward (the gradient of each input, from the first output's). */
interface OpDefinition {
  inputs: string[];
  /** Input -> the fixture's name of its gradient; these inputs are differentiated. */
  gradients: Record<string, string>;
  /** The forward's outputs held to references; the first receives the gradient. */
  outputs: string[];
  /** The fixture's name of the first output's gradient (default dy). */
  dy?: string;
  forward(c: FixtureCase, x: Tensors, device: Device): Promise<Tensors>;
  backward(
    c: FixtureCase,
    x: Tensors,
    y: Tensors,
    dy: Tensor,
    device: Device,
  ): Promise<Record<string, Tensor | undefined>>;
  step?: number;
  /** false: no finite differences (a kink where the inputs cross it). */
  smooth?: boolean;
  tolerance?: { forward: number; gradient: number };
  /** Multiplies in bf16, rounding its operands: held to the float64 reference at its own
   * tolerance, without finite differences (the rounding would swamp them). */
  roundsOperands?: boolean;
}

const num = (v: unknown) => v as number;
const FP32 = { forward: TOLERANCE.forward, gradient: TOLERANCE.gradient };

function defined(fx: Fixture, c: FixtureCase, def: OpDefinition, variant = ''): OpCase {
  const inputs = () => Object.fromEntries(def.inputs.map((k) => [k, fx.tensor(c, k)]));
  const tolerance = def.tolerance ?? FP32;
  const names = [...def.outputs, ...Object.values(def.gradients)];
  const gradient: Differentiable = {
    inputs,
    wrt: Object.keys(def.gradients),
    forward: async (x, device) => (await def.forward(c, x, device))[def.outputs[0]!]!,
    backward: async (x, dy, device) => def.backward(c, x, await def.forward(c, x, device), dy, device),
    step: def.step,
  };
  return {
    name: c.id + variant,
    async run(device) {
      const x = inputs();
      const y = await def.forward(c, x, device);
      const grads = await def.backward(c, x, y, fx.tensor(c, def.dy ?? 'dy'), device);
      const out: Outputs = {};
      for (const k of def.outputs) out[k] = { tensor: y[k], tolerance: tolerance.forward };
      for (const [input, k] of Object.entries(def.gradients))
        out[k] = { tensor: grads[input], tolerance: tolerance.gradient };
      return out;
    },
    reference: () => Object.fromEntries(names.map((k) => [k, fx.tensor(c, k)])),
    gradient: def.roundsOperands || def.smooth === false ? undefined : gradient,
  };
}

const linear: OpDefinition = {
  inputs: ['x', 'W', 'b'],
  gradients: { x: 'dx', W: 'dW', b: 'db' },
  outputs: ['y'],
  forward: async (_, { x, W, b }, device) => ({ y: await ops.linear(x!, W!, b, { device }) }),
  async backward(_, { x, W }, __, dy, device) {
    const g = await ops.linearBackward(dy, x!, W!, { weight: true, bias: true, device });
    return { x: g.dx, W: g.dWeight, b: g.dBias };
  },
};

const loraLinear: OpDefinition = {
  inputs: ['x', 'W', 'b', 'A', 'B'],
  gradients: { x: 'dx', A: 'dA', B: 'dB', W: 'dW', b: 'db' },
  outputs: ['y', 'xa'],
  async forward(c, { x, W, b, A, B }, device) {
    return ops.loraLinear(x!, W!, b, { down: A!, up: B!, scale: num(c.scale) }, { device });
  },
  async backward(c, { x, W, A, B }, { xa }, dy, device) {
    const lora = { down: A!, up: B!, scale: num(c.scale) };
    const frozen = await ops.loraLinearBackward(dy, x!, xa!, W!, lora, { device });
    if (frozen.dWeight || frozen.dBias) throw new Error('the frozen weight and bias got gradients nobody asked for');
    const full = await ops.loraLinearBackward(dy, x!, xa!, W!, lora, { weight: true, bias: true, device });
    return { x: frozen.dx, A: frozen.dDown, B: frozen.dUp, W: full.dWeight, b: full.dBias };
  },
};

/** Attention computed in `compute`: fp32, or bf16 (on the GPU's tensor cores and on CPUs with
 * AVX512_BF16; other CPUs compute in fp32), against PyTorch in float64. */
function attention(compute: DType): OpDefinition {
  const bf16 = compute !== 'f32';
  return {
    inputs: ['q', 'k', 'v'],
    gradients: { q: 'dq', k: 'dk', v: 'dv' },
    outputs: ['o', 'lse'],
    dy: 'do',
    async forward(c, { q, k, v }, device) {
      const { out, lse } = await ops.attention(q!, k!, v!, num(c.H), { device, compute });
      return { o: out, lse };
    },
    async backward(c, { q, k, v }, { o, lse }, dy, device) {
      const g = await ops.attentionBackward(dy, q!, k!, v!, o!, lse!, num(c.H), { device, compute });
      return { q: g.dq, k: g.dk, v: g.dv };
    },
    tolerance: bf16 ? TOLERANCE.gpuMixed.attention : FP32,
    roundsOperands: bf16,
  };
}

const layerNorm: OpDefinition = {
  inputs: ['x'],
  gradients: { x: 'dx' },
  outputs: ['y'],
  forward: async (c, { x }, device) => ops.layerNorm(x!, num(c.eps), { device }),
  async backward(_, { x }, { mean, rstd }, dy, device) {
    return { x: await ops.layerNormBackward(dy, x!, mean!, rstd!, { device }) };
  },
};

/** GELU and SiLU are checked by finite differences too; LeakyReLU's kink at 0 is not
 * differentiable there. */
const activation = (kind: ops.Activation): OpDefinition => ({
  inputs: ['x'],
  gradients: { x: 'dx' },
  smooth: kind !== 'leaky_relu',
  outputs: ['y'],
  forward: async (c, { x }, device) => ({
    y: await ops.activation(kind, x!, { slope: c.slope as number | undefined, device }),
  }),
  backward: async (c, { x }, _, dy, device) => ({
    x: await ops.activationBackward(kind, dy, x!, { slope: c.slope as number | undefined, device }),
  }),
  step: 1e-3,
});

const grn: OpDefinition = {
  inputs: ['u', 'gamma', 'beta'],
  gradients: { u: 'du', gamma: 'dgamma', beta: 'dbeta' },
  outputs: ['y'],
  forward: async (c, { u, gamma, beta }, device) => ({
    y: await ops.globalResponseNorm(u!, gamma!, beta!, { eps: num(c.eps), device }),
  }),
  async backward(c, { u, gamma }, _, dy, device) {
    const g = await ops.globalResponseNormBackward(dy, u!, gamma!, {
      weight: true,
      bias: true,
      eps: num(c.eps),
      device,
    });
    return { u: g.du, gamma: g.dGamma, beta: g.dBeta };
  },
};

/** A convolution's forward and backward (x, w, b), under the op API's two names. */
function convolution(
  forward: (x: Tensor, w: Tensor, b: Tensor, o: ops.DeviceOption) => Promise<Tensor>,
  backward: (dy: Tensor, x: Tensor, w: Tensor, want: ops.GradRequest) => Promise<ops.LinearGrads>,
): OpDefinition {
  return {
    inputs: ['x', 'w', 'b'],
    gradients: { x: 'dx', w: 'dw', b: 'db' },
    outputs: ['y'],
    forward: async (_, { x, w, b }, device) => ({ y: await forward(x!, w!, b!, { device }) }),
    async backward(_, { x, w }, __, dy, device) {
      const g = await backward(dy, x!, w!, { weight: true, bias: true, device });
      return { x: g.dx, w: g.dWeight, b: g.dBias };
    },
  };
}

function gemmCase(fx: Fixture, c: FixtureCase): OpCase {
  return {
    name: c.id,
    async run(device) {
      const out = c.beta !== 0 ? fx.tensor(c, 'C0') : undefined;
      const options = { transA: !!c.transA, transB: !!c.transB, alpha: num(c.alpha), beta: num(c.beta), out, device };
      return {
        C: { tensor: await ops.matmul(fx.tensor(c, 'A'), fx.tensor(c, 'B'), options), tolerance: TOLERANCE.forward },
      };
    },
    reference: () => ({ C: fx.tensor(c, 'C') }),
  };
}

/** The MSE loss and its gradient in one op. */
function mseCase(fx: Fixture, c: FixtureCase): OpCase {
  const inputs = () => ({ pred: fx.tensor(c, 'pred'), target: fx.tensor(c, 'target') });
  return {
    name: c.id,
    async run(device) {
      const { pred, target } = inputs();
      const { loss, dpred } = await ops.mseLoss(pred, target, { device });
      return {
        loss: { tensor: new Float32Array([loss]), tolerance: TOLERANCE.forward },
        dpred: { tensor: dpred, tolerance: TOLERANCE.gradient },
      };
    },
    reference: () => ({ loss: fx.tensor(c, 'loss'), dpred: fx.tensor(c, 'dpred') }),
    gradient: {
      inputs,
      wrt: ['pred'],
      forward: async ({ pred, target }, device) => ({
        data: new Float32Array([(await ops.mseLoss(pred!, target!, { device })).loss]),
        shape: [1],
      }),
      backward: async ({ pred, target }, dy, device) => {
        const { dpred } = await ops.mseLoss(pred!, target!, { device });
        return { pred: { data: dpred.data.map((g) => g * dy.data[0]!), shape: dpred.shape } };
      },
    },
  };
}

/** The multi-tensor AdamW's steps, each gradient multiplied by `gradScale` and AdamW told to
 * divide it back out (fp16's loss scaling); parameters and moments after every step. */
function adamwCase(fx: Fixture, c: FixtureCase, gradScale: number): OpCase {
  const tensors = Array.from({ length: num(c.tensors) }, (_, i) => i);
  const steps = Array.from({ length: num(c.steps) }, (_, s) => s + 1);
  return {
    name: c.id + (gradScale === 1 ? '' : ' (scaled gradients)'),
    async run(device) {
      const slots = tensors.map((i) => {
        const param = Float32Array.from(fx.tensor(c, `p${i}.init`).data);
        const zeros = () => new Float32Array(param.length);
        return { param, grad: zeros(), expAvg: zeros(), expAvgSq: zeros() };
      });
      const hyper = {
        lr: num(c.lr),
        beta1: num(c.beta1),
        beta2: num(c.beta2),
        eps: num(c.eps),
        weightDecay: num(c.weightDecay),
      };
      const out: Outputs = {};
      for (const step of steps) {
        slots.forEach((s, i) => s.grad.set(fx.tensor(c, `p${i}.grad${step}`).data.map((g) => g * gradScale)));
        await ops.adamw(slots, { ...hyper, gradScale: 1 / gradScale }, step, { device });
        slots.forEach((s, i) => {
          out[`p${i}.step${step}`] = { tensor: Float32Array.from(s.param), tolerance: TOLERANCE.forward };
          out[`p${i}.exp_avg_sq.step${step}`] = { tensor: Float32Array.from(s.expAvgSq), tolerance: TOLERANCE.forward };
        });
      }
      return out;
    },
    reference: () =>
      Object.fromEntries(tensors.flatMap((i) => steps.map((s) => [`p${i}.step${s}`, fx.tensor(c, `p${i}.step${s}`)]))),
  };
}

function clipCase(fx: Fixture, c: FixtureCase): OpCase {
  const tensors = Array.from({ length: num(c.tensors) }, (_, i) => i);
  return {
    name: c.id,
    async run(device) {
      const grads = tensors.map((i) => Float32Array.from(fx.tensor(c, `g${i}`).data));
      const norm = await ops.clipGradNorm(grads, num(c.maxNorm), { device });
      const out: Outputs = { norm: { tensor: new Float32Array([norm]), tolerance: TOLERANCE.forward } };
      grads.forEach((g, i) => (out[`out${i}`] = { tensor: g, tolerance: TOLERANCE.forward }));
      return out;
    },
    reference: () => ({
      norm: fx.tensor(c, 'norm'),
      ...Object.fromEntries(tensors.map((i) => [`out${i}`, fx.tensor(c, `out${i}`)])),
    }),
  };
}

/** Rounding to bf16/fp16 on each backend (ops.test.ts holds it to PyTorch's bits, NaN aside). */
function convertCase(fx: Fixture, c: FixtureCase): OpCase {
  return {
    name: c.id,
    async run(device) {
      const x = fx.tensor(c, 'x');
      const bits = async (dtype: LowpDType) => Float32Array.from((await ops.toLowp(x, dtype, { device })).data);
      return {
        bf16: { tensor: await bits('bf16'), tolerance: TOLERANCE.exact },
        f16: { tensor: await bits('f16'), tolerance: TOLERANCE.exact },
      };
    },
  };
}

function lowpGemmCase(fx: Fixture, c: FixtureCase): OpCase {
  const operand = (key: string, type: unknown) =>
    type === 'f32' ? fx.tensor(c, key) : fx.lowp(c, key, type as LowpDType);
  return {
    name: c.id,
    async run(device) {
      const C = await ops.matmul(operand('A', c.aType), operand('B', c.bType), {
        transA: !!c.transA,
        transB: !!c.transB,
        device,
      });
      return { C: { tensor: C, tolerance: TOLERANCE.lowpGemm } };
    },
    reference: () => ({ C: fx.tensor(c, 'C') }),
  };
}

/** The image encoder's and decoder's forward-only convolutions (k x k and depthwise k x k). */
function convForwardCase(fx: Fixture, c: FixtureCase): OpCase {
  const depthwise = c.op === 'depthwise_k';
  return {
    name: c.id,
    async run(device) {
      const [x, w, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'w'), fx.tensor(c, 'b')];
      const opts = { device, stride: num(c.stride), silu: !!c.silu };
      const y = depthwise
        ? await ops.depthwiseConv(x, w, b, { ...opts, replicate: !!c.replicate })
        : await ops.conv2d(x, w, b, opts);
      return { y: { tensor: y, tolerance: TOLERANCE.forward } };
    },
    reference: () => ({ y: fx.tensor(c, 'y') }),
  };
}

/** A convolution without activation that adds a residual as it writes: PyTorch's result plus
 * that residual (a fixed pattern of the output's shape). */
function convResidualCase(fx: Fixture, c: FixtureCase): OpCase {
  const residual = (): Tensor => {
    const shape = fx.tensor(c, 'y').shape;
    const size = shape.reduce((a, b) => a * b, 1);
    return { data: Float32Array.from({ length: size }, (_, i) => Math.cos(0.37 * i)), shape };
  };
  return {
    name: `${c.id} (residual)`,
    async run(device) {
      const [x, w, b] = [fx.tensor(c, 'x'), fx.tensor(c, 'w'), fx.tensor(c, 'b')];
      const y = await ops.conv2d(x, w, b, { device, stride: num(c.stride), residual: residual() });
      return { y: { tensor: y, tolerance: TOLERANCE.forward } };
    },
    reference: () => {
      const [y, r] = [fx.tensor(c, 'y'), residual()];
      return { y: { data: y.data.map((v, i) => v + (r.data[i] ?? Number.NaN)), shape: y.shape } };
    },
  };
}

/** Every op case of tests/fixtures/ops.safetensors and lowp.safetensors. */
export function opCases(fixturesDir: string): OpCase[] {
  const fx = new Fixture(join(fixturesDir, 'ops.safetensors'));
  const lowp = new Fixture(join(fixturesDir, 'lowp.safetensors'));
  const of = (op: string, def: OpDefinition, variant = '') => fx.casesOf(op).map((c) => defined(fx, c, def, variant));
  return [
    ...fx.casesOf('gemm').map((c) => gemmCase(fx, c)),
    ...of('linear', linear),
    ...of('lora_linear', loraLinear),
    ...of('attention', attention('f32')),
    ...of('attention', attention('bf16'), ' (bf16 compute)'),
    ...of('layernorm', layerNorm),
    ...fx.casesOf('activation').map((c) => defined(fx, c, activation(c.kind as ops.Activation))),
    ...of('grn', grn),
    ...of('depthwise', convolution(ops.depthwiseConv3x3, ops.depthwiseConv3x3Backward)),
    ...of('conv1x1', convolution(ops.conv1x1, ops.conv1x1Backward)),
    ...[...fx.casesOf('conv2d'), ...fx.casesOf('depthwise_k')].map((c) => convForwardCase(fx, c)),
    ...fx
      .casesOf('conv2d')
      .filter((c) => !c.silu)
      .map((c) => convResidualCase(fx, c)),
    ...fx.casesOf('mse').map((c) => mseCase(fx, c)),
    ...fx.casesOf('adamw').flatMap((c) => [adamwCase(fx, c, 1), adamwCase(fx, c, 1024)]),
    ...fx.casesOf('clip').map((c) => clipCase(fx, c)),
    ...lowp.casesOf('convert').map((c) => convertCase(lowp, c)),
    ...lowp.casesOf('gemm_lowp').map((c) => lowpGemmCase(lowp, c)),
  ];
}
