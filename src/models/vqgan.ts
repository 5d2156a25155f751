// The Würstchen VQGAN's decoder (diffusers' PaellaVQModel.decode, Stage A) in native code:
// pictures from the latents the decoder (Stage B) samples.
import { type Device, checkDevice } from '../core/device.js';
import type { Tensor } from '../core/tensor.js';
import { invalid } from '../core/tensor.js';
import type { NativeVQGANDecoder } from '../native/addon.js';
import { native } from '../native/loader.js';
import {
  buildFrom,
  componentConfig,
  fillForBenchmark,
  loadCheckedWeights,
  readJsonConfig,
  weightFiles,
} from './weights.js';

/** vqgan/config.json's keys the decoder uses, with diffusers' defaults (warp-ai/wuerstchen's). */
export interface VQGANConfig {
  latent_channels: number;
  out_channels: number;
  levels: number;
  bottleneck_blocks: number;
  embed_dim: number;
  up_down_scale_factor: number;
  /** The pipeline multiplies the decoder's latents by this before decoding. */
  scale_factor: number;
}

const LIMITS: Record<keyof Omit<VQGANConfig, 'scale_factor'>, [number, number]> = {
  latent_channels: [4, 4096],
  out_channels: [3, 64],
  levels: [2, 16],
  bottleneck_blocks: [12, 1024],
  embed_dim: [384, 65536],
  up_down_scale_factor: [2, 64],
};

/** diffusers' defaults, those of warp-ai/wuerstchen's VQGAN. */
export const DEFAULT_VQGAN_CONFIG = {
  ...Object.fromEntries(Object.entries(LIMITS).map(([key, [fallback]]) => [key, fallback])),
  scale_factor: 0.3764,
} as VQGANConfig;

/** vqgan/config.json as diffusers' PaellaVQModel reads it. */
export function readVQGANConfig(file: string): VQGANConfig {
  const raw = readJsonConfig(file, 'VQGAN');
  if (raw._class_name !== undefined && raw._class_name !== 'PaellaVQModel')
    throw new Error(`${file}: _class_name is ${JSON.stringify(raw._class_name)}, expected "PaellaVQModel"`);
  const config = { scale_factor: raw.scale_factor ?? DEFAULT_VQGAN_CONFIG.scale_factor } as VQGANConfig;
  for (const [key, [fallback, max]] of Object.entries(LIMITS)) {
    const v = raw[key] ?? fallback;
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max)
      throw new Error(`${file}: ${key} must be a positive integer <= ${max}, got ${JSON.stringify(v)}`);
    config[key as keyof typeof LIMITS] = v as number;
  }
  if (typeof config.scale_factor !== 'number' || !Number.isFinite(config.scale_factor))
    throw new Error(`${file}: scale_factor must be a finite number, got ${JSON.stringify(config.scale_factor)}`);
  if (config.embed_dim % 2 ** (config.levels - 1))
    throw new Error(
      `${file}: embed_dim (${config.embed_dim}) must be divisible by 2^(levels - 1) = ${2 ** (config.levels - 1)}`,
    );
  return config;
}

/** The encoder's tensors in a PaellaVQModel state dict: present in the file, unused by decode. */
const ENCODER_TENSOR = /^(in_block|down_blocks|vquantizer)\./;

export class VQGAN {
  private constructor(
    readonly config: VQGANConfig,
    private readonly model: NativeVQGANDecoder,
  ) {}

  /** Loads vqgan/ (config.json + diffusion_pytorch_model.safetensors, F32/F16/BF16, or
   * sharded) from a folder or a snapshot holding it. */
  static load(dir: string, options: { device?: Device } = {}): VQGAN {
    const device = checkDevice('loadVQGAN', options.device);
    const { folder, configFile } = componentConfig(dir, 'vqgan', 'VQGAN');
    const config = readVQGANConfig(configFile);
    const model = buildFrom(configFile, () => new (native().VQGANDecoder)(device, config));
    loadCheckedWeights(folder, weightFiles(folder, 'diffusion_pytorch_model'), model, (name) =>
      ENCODER_TENSOR.test(name),
    );
    return new VQGAN(config, model);
  }

  /** Weights for benchmarks (fillForBenchmark). */
  static random(config: VQGANConfig, options: { seed?: number; device?: Device } = {}): VQGAN {
    const model = new (native().VQGANDecoder)(checkDevice('VQGAN.random', options.device), config);
    fillForBenchmark(model, options.seed ?? 0);
    return new VQGAN(config, model);
  }

  /** PaellaVQModel.decode(latents).sample (B, out_channels, H·s, W·s), s = 2^(levels-1) ·
   * up_down_scale_factor, not clamped; latents (B, latent_channels, H, W) already scaled by
   * scale_factor. */
  async decode(latents: Tensor): Promise<Tensor> {
    const [B, C, H, W] = latents.shape;
    if (latents.shape.length !== 4 || C !== this.config.latent_channels)
      invalid('decode', `a (B, ${this.config.latent_channels}, H, W) shape`, 'latents.shape', latents.shape);
    const scale = 2 ** (this.config.levels - 1) * this.config.up_down_scale_factor;
    const out = new Float32Array(B! * this.config.out_channels * H! * scale * W! * scale);
    await this.model.decode(out, latents.data, B!, H!, W!);
    return { data: out, shape: [B!, this.config.out_channels, H! * scale, W! * scale] };
  }
}
