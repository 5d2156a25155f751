// Würstchen's frozen image encoder (EfficientNetEncoder: torchvision efficientnet_v2_s features
// + a 1x1 conv and batch norm mapper) in native code. Batch norms are folded into their
// convolutions here, at load time; the native model runs convolutions with biases only.
import { existsSync } from 'node:fs';
import { type Device, checkDevice } from '../core/device.js';
import { NonFiniteError, describeNonFinite } from '../core/finite.js';
import type { NativeImageEncoder } from '../native/addon.js';
import { native } from '../native/loader.js';
import { Rng } from '../core/rng.js';
import { SafetensorsReader } from '../io/safetensors.js';
import { TorchCheckpoint } from '../io/torch-checkpoint.js';
import type { Tensor } from '../core/tensor.js';
import { ShapeCheck, invalid } from '../core/tensor.js';
import { shapeText } from './weights.js';

export interface EffNetStage {
  fused: boolean;
  expand: number;
  kernel: number;
  stride: number;
  in: number;
  out: number;
  layers: number;
}

export interface ImageEncoderConfig {
  stages: EffNetStage[];
  last_channel: number;
  latent_channels: number;
}

/** torchvision's efficientnet_v2_s stages, and Würstchen's 16-channel mapper. */
export const EFFICIENTNET_V2_S: ImageEncoderConfig = {
  stages: [
    { fused: true, expand: 1, kernel: 3, stride: 1, in: 24, out: 24, layers: 2 },
    { fused: true, expand: 4, kernel: 3, stride: 2, in: 24, out: 48, layers: 4 },
    { fused: true, expand: 4, kernel: 3, stride: 2, in: 48, out: 64, layers: 4 },
    { fused: false, expand: 4, kernel: 3, stride: 2, in: 64, out: 128, layers: 6 },
    { fused: false, expand: 6, kernel: 3, stride: 1, in: 128, out: 160, layers: 9 },
    { fused: false, expand: 6, kernel: 3, stride: 2, in: 160, out: 256, layers: 15 },
  ],
  last_channel: 1280,
  latent_channels: 16,
};

const BACKBONE_BN_EPS = 1e-3; // torchvision's efficientnet norm_layer
const MAPPER_BN_EPS = 1e-5; // nn.BatchNorm2d default

/** One convolution of the network and what travels with it in the state dict. */
interface ConvSpec {
  conv: string;
  bn?: string;
  bnEps?: number;
  in: number;
  out: number;
  k: number;
  depthwise: boolean;
  hasBias: boolean;
}

/** torchvision's _make_divisible(in * expand, 8). */
export function expandedChannels(channels: number, expand: number): number {
  const v = channels * expand;
  let out = Math.max(8, Math.floor((v + 4) / 8) * 8);
  if (out < 0.9 * v) out += 8;
  return out;
}

/** Every convolution in state-dict order, as torchvision names them under backbone./mapper.. */
export function convSpecs(config: ImageEncoderConfig): ConvSpec[] {
  const specs: ConvSpec[] = [];
  const cbn = (prefix: string, inC: number, out: number, k: number, depthwise = false) =>
    specs.push({
      conv: `${prefix}.0`,
      bn: `${prefix}.1`,
      bnEps: BACKBONE_BN_EPS,
      in: inC,
      out,
      k,
      depthwise,
      hasBias: false,
    });
  cbn('backbone.0', 3, config.stages[0]!.in, 3);
  config.stages.forEach((st, s) => {
    for (let j = 0; j < st.layers; j++) {
      const inC = j === 0 ? st.in : st.out;
      const exp = expandedChannels(inC, st.expand);
      const p = `backbone.${s + 1}.${j}.block`;
      if (st.fused) {
        if (exp !== inC) {
          cbn(`${p}.0`, inC, exp, st.kernel);
          cbn(`${p}.1`, exp, st.out, 1);
        } else cbn(`${p}.0`, inC, st.out, st.kernel);
      } else {
        const expands = exp !== inC;
        const squeeze = Math.max(1, Math.floor(inC / 4));
        if (expands) cbn(`${p}.0`, inC, exp, 1);
        cbn(`${p}.${expands ? 1 : 0}`, exp, exp, st.kernel, true);
        const se = `${p}.${expands ? 2 : 1}`;
        specs.push({ conv: `${se}.fc1`, in: exp, out: squeeze, k: 1, depthwise: false, hasBias: true });
        specs.push({ conv: `${se}.fc2`, in: squeeze, out: exp, k: 1, depthwise: false, hasBias: true });
        cbn(`${p}.${expands ? 3 : 2}`, exp, st.out, 1);
      }
    }
  });
  cbn(`backbone.${config.stages.length + 1}`, config.stages.at(-1)!.out, config.last_channel, 1);
  specs.push({
    conv: 'mapper.0',
    bn: 'mapper.1',
    bnEps: MAPPER_BN_EPS,
    in: config.last_channel,
    out: config.latent_channels,
    k: 1,
    depthwise: false,
    hasBias: false,
  });
  return specs;
}

/** The PyTorch state-dict keys and shapes of the encoder. */
export function expectedKeys(config: ImageEncoderConfig): Map<string, number[]> {
  const keys = new Map<string, number[]>();
  for (const c of convSpecs(config)) {
    keys.set(`${c.conv}.weight`, [c.out, c.depthwise ? 1 : c.in, c.k, c.k]);
    if (c.hasBias) keys.set(`${c.conv}.bias`, [c.out]);
    if (c.bn) {
      for (const p of ['weight', 'bias', 'running_mean', 'running_var']) keys.set(`${c.bn}.${p}`, [c.out]);
      keys.set(`${c.bn}.num_batches_tracked`, []);
    }
  }
  return keys;
}

/** A source of named tensors: a safetensors file, or a PyTorch checkpoint read safely. */
export interface TensorSource {
  path: string;
  names(): string[];
  shape(name: string): number[];
  read(name: string): Tensor;
}

export function safetensorsSource(path: string): TensorSource & { close(): void } {
  const reader = new SafetensorsReader(path);
  return {
    path,
    names: () => [...reader.entries.keys()],
    shape: (name) => reader.entries.get(name)!.shape,
    read: (name) => reader.read(name),
    close: () => reader.close(),
  };
}

export function checkpointSource(path: string, key?: string): TensorSource & { close(): void } {
  const checkpoint = new TorchCheckpoint(path);
  try {
    const tensors = checkpoint.stateDict(key);
    return {
      path: key ? `${path} [${key}]` : path,
      names: () => [...tensors.keys()],
      shape: (name) => tensors.get(name)!.shape,
      read: (name) => checkpoint.tensor(tensors.get(name)!),
      close: () => checkpoint.close(),
    };
  } catch (e) {
    checkpoint.close();
    throw e;
  }
}

/** Throws one error listing every missing, unexpected and wrongly shaped tensor of `source`. */
function checkKeys(source: TensorSource, config: ImageEncoderConfig): void {
  const expected = expectedKeys(config);
  const problems: string[] = [];
  const present = new Set(source.names());
  for (const name of present) {
    const shape = expected.get(name);
    if (!shape) problems.push(`unexpected tensor ${name} ${shapeText(source.shape(name))}`);
    else if (shapeText(shape) !== shapeText(source.shape(name)))
      problems.push(`tensor ${name} has shape ${shapeText(source.shape(name))}, the config needs ${shapeText(shape)}`);
  }
  for (const [name, shape] of expected)
    if (!present.has(name)) problems.push(`missing tensor ${name} ${shapeText(shape)}`);
  if (problems.length)
    throw new Error(
      `${source.path}: the weights do not fit the EfficientNet encoder config:\n  - ${problems.join('\n  - ')}`,
    );
}

/** A convolution with its batch norm folded in: weight (out, k, k, in) or depthwise
 * (out, k, k), bias (out). */
function foldBatchNorm(
  c: ConvSpec,
  read: (name: string) => Float32Array,
): { weight: Float32Array; bias: Float32Array } {
  const w = read(`${c.conv}.weight`); // (out, in/groups, k, k)
  const bias = new Float32Array(c.out);
  const scale = new Float32Array(c.out).fill(1);
  if (c.hasBias) bias.set(read(`${c.conv}.bias`));
  if (c.bn) {
    const g = read(`${c.bn}.weight`),
      b = read(`${c.bn}.bias`);
    const mean = read(`${c.bn}.running_mean`),
      variance = read(`${c.bn}.running_var`);
    for (let o = 0; o < c.out; o++) {
      scale[o] = g[o]! / Math.sqrt(variance[o]! + c.bnEps!);
      bias[o] = b[o]! - mean[o]! * scale[o]!;
    }
  }
  const kk = c.k * c.k;
  const weight = new Float32Array(w.length);
  if (c.depthwise) for (let i = 0; i < w.length; i++) weight[i] = w[i]! * scale[Math.floor(i / kk)]!;
  else
    for (let o = 0; o < c.out; o++)
      for (let i = 0; i < c.in; i++)
        for (let t = 0; t < kk; t++) weight[(o * kk + t) * c.in + i] = w[(o * c.in + i) * kk + t]! * scale[o]!;
  return { weight, bias };
}

export class ImageEncoder {
  private constructor(
    readonly config: ImageEncoderConfig,
    private readonly model: NativeImageEncoder,
  ) {}

  /** Checks every tensor of `source` against the config's key set, folds the batch norms into
   * their convolutions and loads the result. */
  static fromTensors(
    source: TensorSource,
    config: ImageEncoderConfig = EFFICIENTNET_V2_S,
    options: { device?: Device } = {},
  ): ImageEncoder {
    const device = checkDevice('loadImageEncoder', options.device);
    // Built first: the native model checks the config's layout before anything reads it.
    const model = new (native().ImageEncoder)(device, config);
    checkKeys(source, config);
    const read = (name: string): Float32Array => {
      const { data } = source.read(name);
      const problem = describeNonFinite(name, data);
      if (problem) throw new NonFiniteError(`${source.path}: ${problem}, which no model can use`, name);
      return data;
    };
    for (const c of convSpecs(config)) {
      const { weight, bias } = foldBatchNorm(c, read);
      model.setParameter(`${c.conv}.weight`, weight);
      model.setParameter(`${c.conv}.bias`, bias);
    }
    return new ImageEncoder(config, model);
  }

  /** Random weights and batch-norm statistics from a seed, for benchmarks. */
  static random(config: ImageEncoderConfig = EFFICIENTNET_V2_S, seed = 0): ImageEncoder {
    const rng = new Rng(seed);
    const keys = expectedKeys(config);
    const source: TensorSource = {
      path: '<random>',
      names: () => [...keys.keys()],
      shape: (name) => keys.get(name)!,
      read: (name) => {
        const shape = keys.get(name)!;
        const n = shape.reduce((a, b) => a * b, 1);
        const fanIn = shape.slice(1).reduce((a, b) => a * b, 1);
        const value = name.endsWith('running_var')
          ? () => 0.5 + rng.uniform()
          : name.endsWith('.weight') && shape.length === 4
            ? () => rng.normal() * Math.sqrt(2 / fanIn)
            : () => rng.normal() * 0.1;
        return { data: Float32Array.from({ length: n }, value), shape };
      },
    };
    return ImageEncoder.fromTensors(source, config);
  }

  /** Loads a safetensors file with the PyTorch key names (backbone.*, mapper.*). */
  static load(
    path: string,
    config: ImageEncoderConfig = EFFICIENTNET_V2_S,
    options: { device?: Device } = {},
  ): ImageEncoder {
    if (!existsSync(path)) throw new Error(`${path}: no image encoder weights here`);
    const source = safetensorsSource(path);
    try {
      return ImageEncoder.fromTensors(source, config, options);
    } finally {
      source.close();
    }
  }

  /** Loads straight from a PyTorch checkpoint (e.g. model_v2_stage_b.pt), reading the state
   * dict under `key` (default effnet_state_dict) with the safe checkpoint reader. */
  static loadCheckpoint(
    path: string,
    key = 'effnet_state_dict',
    config: ImageEncoderConfig = EFFICIENTNET_V2_S,
    options: { device?: Device } = {},
  ): ImageEncoder {
    const source = checkpointSource(path, key);
    try {
      return ImageEncoder.fromTensors(source, config, options);
    } finally {
      source.close();
    }
  }

  /** (B, latent, H/32, W/32) from normalised images (B, 3, H, W); H and W multiples of 32. */
  async encode(images: Tensor): Promise<Tensor> {
    const s = new ShapeCheck('encodeImages');
    s.tensor('images', images, ['B', 3, 'H', 'W']);
    const B = s.dim('B'),
      H = s.dim('H'),
      W = s.dim('W');
    if (H % 32 || W % 32)
      invalid('encodeImages', 'image sides that are multiples of 32', 'images.shape', images.shape, RangeError);
    const shape = [B, this.config.latent_channels, H / 32, W / 32];
    const out = new Float32Array(shape.reduce((a, b) => a * b, 1));
    await this.model.encode(out, images.data, B, H, W);
    return { data: out, shape };
  }
}
