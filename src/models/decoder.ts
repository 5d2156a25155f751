// Würstchen's Stage B (diffusers' WuerstchenDiffNeXt) in native code: VQGAN latents denoised
// under the prior's image embeddings and the decoder's own CLIP text embeddings.
import { type Device, checkDevice } from '../core/device.js';
import type { Tensor } from '../core/tensor.js';
import { invalid } from '../core/tensor.js';
import type { NativeDecoder } from '../native/addon.js';
import { native } from '../native/loader.js';
import { type Precision, weightType } from './precision.js';
import {
  MAX_MODEL_DIM,
  buildFrom,
  componentConfig,
  fillForBenchmark,
  loadCheckedWeights,
  readJsonConfig,
  weightFiles,
} from './weights.js';

/** decoder/config.json with diffusers' defaults (those of warp-ai/wuerstchen's decoder). */
export interface DecoderConfig {
  c_in: number;
  c_out: number;
  c_r: number;
  patch_size: number;
  c_cond: number;
  c_hidden: number[];
  nhead: number[];
  blocks: number[];
  level_config: string[];
  inject_effnet: boolean[];
  effnet_embd: number;
  clip_embd: number;
  kernel_size: number;
}

/** The config as the native model takes it: nhead of a level without attention (diffusers
 * writes -1) is 1, as it is never used. */
export function nativeDecoderConfig(config: DecoderConfig): DecoderConfig {
  return { ...config, nhead: config.nhead.map((h, i) => (config.level_config[i]!.includes('A') ? h : 1)) };
}

/** diffusers' defaults, those of warp-ai/wuerstchen's decoder. */
export const DEFAULT_DECODER_CONFIG: DecoderConfig = {
  c_in: 4,
  c_out: 4,
  c_r: 64,
  patch_size: 2,
  c_cond: 1024,
  c_hidden: [320, 640, 1280, 1280],
  nhead: [-1, 10, 20, 20],
  blocks: [4, 4, 14, 4],
  level_config: ['CT', 'CTA', 'CTA', 'CTA'],
  inject_effnet: [false, true, true, true],
  effnet_embd: 16,
  clip_embd: 1024,
  kernel_size: 3,
};

const SCALARS = ['c_in', 'c_out', 'c_r', 'patch_size', 'c_cond', 'effnet_embd', 'clip_embd', 'kernel_size'] as const;

/** decoder/config.json as diffusers' WuerstchenDiffNeXt reads it. */
export function readDecoderConfig(file: string): DecoderConfig {
  const raw = readJsonConfig(file, 'decoder');
  if (raw._class_name !== undefined && raw._class_name !== 'WuerstchenDiffNeXt')
    throw new Error(`${file}: _class_name is ${JSON.stringify(raw._class_name)}, expected "WuerstchenDiffNeXt"`);
  const positive = (key: string, v: unknown, max = MAX_MODEL_DIM) => {
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max)
      throw new Error(`${file}: ${key} must be a positive integer <= ${max}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const config = { ...DEFAULT_DECODER_CONFIG };
  for (const key of SCALARS) config[key] = positive(key, raw[key] ?? DEFAULT_DECODER_CONFIG[key]);
  const list = <T>(key: keyof DecoderConfig, check: (v: unknown, at: string) => T): T[] => {
    const v = raw[key] ?? DEFAULT_DECODER_CONFIG[key];
    if (!Array.isArray(v) || v.length < 1 || v.length > 16)
      throw new Error(`${file}: ${key} must be a list of 1 to 16 entries, got ${JSON.stringify(v)}`);
    return v.map((x, i) => check(x, `${key}[${i}]`));
  };
  config.c_hidden = list('c_hidden', (v, at) => positive(at, v));
  config.blocks = list('blocks', (v, at) => positive(at, v, 1024));
  config.level_config = list('level_config', (v, at) => {
    if (typeof v !== 'string' || !/^[CTA]+$/.test(v))
      throw new Error(`${file}: ${at} must be a string of C, T and A, got ${JSON.stringify(v)}`);
    return v;
  });
  config.inject_effnet = list('inject_effnet', (v, at) => {
    if (typeof v !== 'boolean') throw new Error(`${file}: ${at} must be true or false, got ${JSON.stringify(v)}`);
    return v;
  });
  config.nhead = list('nhead', (v, at) => {
    if (!Number.isInteger(v)) throw new Error(`${file}: ${at} must be an integer, got ${JSON.stringify(v)}`);
    return v as number;
  });
  const levels = config.c_hidden.length;
  for (const key of ['nhead', 'blocks', 'level_config', 'inject_effnet'] as const)
    if (config[key].length !== levels)
      throw new Error(`${file}: ${key} has ${config[key].length} entries, c_hidden ${levels}`);
  config.level_config.forEach((types, i) => {
    if (!types.includes('A')) return;
    const heads = config.nhead[i]!;
    if (heads < 1 || config.c_hidden[i]! % heads)
      throw new Error(
        `${file}: nhead[${i}] (${heads}) must be positive and divide c_hidden[${i}] (${config.c_hidden[i]})`,
      );
  });
  if (config.c_in !== config.c_out)
    throw new Error(`${file}: c_in (${config.c_in}) and c_out (${config.c_out}) must be equal`);
  if (config.kernel_size % 2 === 0 || config.kernel_size > 15)
    throw new Error(`${file}: kernel_size must be odd and at most 15, got ${config.kernel_size}`);
  return config;
}

export class Decoder {
  private constructor(
    readonly config: DecoderConfig,
    private readonly model: NativeDecoder,
  ) {}

  /** Loads decoder/ (config.json + diffusion_pytorch_model.safetensors, F32/F16/BF16, or
   * sharded) from a folder or a snapshot holding it. precision bf16/fp16 keeps the Linear
   * weights so, with their GEMMs and the attention in that type (fp32 accumulation). */
  static load(dir: string, options: { device?: Device; precision?: Precision } = {}): Decoder {
    const device = checkDevice('loadDecoder', options.device);
    const weight_type = weightType('loadDecoder', options.precision);
    const { folder, configFile } = componentConfig(dir, 'decoder', 'decoder');
    const config = readDecoderConfig(configFile);
    const model = buildFrom(
      configFile,
      () => new (native().Decoder)(device, { ...nativeDecoderConfig(config), weight_type }),
    );
    loadCheckedWeights(folder, weightFiles(folder, 'diffusion_pytorch_model'), model);
    return new Decoder(config, model);
  }

  /** Weights for benchmarks (fillForBenchmark). */
  static random(
    config: DecoderConfig,
    options: { seed?: number; device?: Device; precision?: Precision } = {},
  ): Decoder {
    const device = checkDevice('Decoder.random', options.device);
    const weight_type = weightType('Decoder.random', options.precision);
    const model = new (native().Decoder)(device, { ...nativeDecoderConfig(config), weight_type });
    const seed = options.seed ?? 0;
    fillForBenchmark(model, seed);
    return new Decoder(config, model);
  }

  /** The sides latents must be multiples of: patch_size · 2^(levels - 1). */
  get sideMultiple(): number {
    return this.config.patch_size * 2 ** (this.config.c_hidden.length - 1);
  }

  /** WuerstchenDiffNeXt(x, r, effnet, clip) in eval mode: the predicted noise (B, c_out, H, W).
   * x (B, c_in, H, W), r (B), effnet (B, effnet_embd, He, We), clip (B, T, clip_embd). */
  async forward(x: Tensor, r: Tensor, effnet: Tensor, clip: Tensor): Promise<Tensor> {
    const k = this.config;
    const [B, C, H, W] = x.shape as [number, number, number, number];
    if (x.shape.length !== 4 || C !== k.c_in || H % this.sideMultiple || W % this.sideMultiple)
      invalid(
        'forward',
        `a (B, ${k.c_in}, H, W) shape with H and W multiples of ${this.sideMultiple}`,
        'x.shape',
        x.shape,
      );
    if (r.shape.length !== 1 || r.shape[0] !== B) invalid('forward', `a (${B}) shape`, 'r.shape', r.shape);
    const [Be, E, He, We] = effnet.shape as [number, number, number, number];
    if (effnet.shape.length !== 4 || Be !== B || E !== k.effnet_embd)
      invalid('forward', `a (${B}, ${k.effnet_embd}, He, We) shape`, 'effnet.shape', effnet.shape);
    const [Bc, T, D] = clip.shape as [number, number, number];
    if (clip.shape.length !== 3 || Bc !== B || D !== k.clip_embd)
      invalid('forward', `a (${B}, T, ${k.clip_embd}) shape`, 'clip.shape', clip.shape);
    const out = new Float32Array(B * k.c_out * H * W);
    await this.model.forward(out, x.data, r.data, effnet.data, clip.data, B, H, W, He, We, T);
    return { data: out, shape: [B, k.c_out, H, W] };
  }
}
