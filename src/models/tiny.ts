// A tiny Würstchen stack in exactly the diffusers layout of the real ones (prior/, text_encoder/,
// tokenizer/ as in warp-ai/wuerstchen-prior; decoder/ and vqgan/ as in warp-ai/wuerstchen, which
// share that text encoder here) plus an EfficientNet encoder file, with random weights drawn from
// a seed: it runs every code path the real model runs, in seconds, and its pictures are noise.
// The demo's model is one, made once under $LORA_TRAIN_HOME/models.
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { packageRoot } from '../core/package-root.js';
import { loraTrainHome } from '../core/paths.js';
import { buildFolderOnce } from '../io/atomic.js';
import { type ImageEncoderConfig, expectedKeys } from './image-encoder.js';
import type { NamedShape } from '../native/addon.js';
import { native } from '../native/loader.js';
import { type PriorConfig, priorDefaultInit } from './prior.js';
import { Rng } from '../core/rng.js';
import { type WritableTensor, writeSafetensors } from '../io/safetensors.js';
import type { TextEncoderConfig } from './text-encoder.js';
import { type DecoderConfig, nativeDecoderConfig } from './decoder.js';
import type { VQGANConfig } from './vqgan.js';

export const TINY_MODEL_ID = 'builtin:tiny-wuerstchen';
const TINY_MODEL_VERSION = 'v2-seed0';

/** The demo's stack (prior/, text_encoder/, tokenizer/, image_encoder/, decoder/, vqgan/), made
 * on first use. */
export function tinyModel(): Promise<string> {
  const target = join(loraTrainHome(), 'models', `tiny-wuerstchen-${TINY_MODEL_VERSION}`);
  return buildFolderOnce(target, (tmp) =>
    createTinyStack(tmp, { seed: 0, tokenizer: join(packageRoot, 'assets', 'clip-tokenizer') }),
  );
}

export interface TinyStackOptions {
  seed?: number;
  prior?: Partial<PriorConfig>;
  textEncoder?: Partial<TextEncoderConfig>;
  imageEncoder?: ImageEncoderConfig;
  /** Folder with tokenizer.json (+ special_tokens_map.json, tokenizer_config.json) to copy. */
  tokenizer: string;
}

export const TINY_IMAGE_ENCODER: ImageEncoderConfig = {
  stages: [
    { fused: true, expand: 1, kernel: 3, stride: 1, in: 8, out: 8, layers: 1 },
    { fused: true, expand: 4, kernel: 3, stride: 2, in: 8, out: 16, layers: 1 },
    { fused: true, expand: 4, kernel: 3, stride: 2, in: 16, out: 16, layers: 1 },
    { fused: false, expand: 4, kernel: 3, stride: 2, in: 16, out: 24, layers: 1 },
    { fused: false, expand: 6, kernel: 3, stride: 1, in: 24, out: 32, layers: 1 },
    { fused: false, expand: 6, kernel: 3, stride: 2, in: 32, out: 40, layers: 1 },
  ],
  last_channel: 64,
  latent_channels: 16,
};

/** A model folder: config.json and one safetensors file of the shapes' values. */
function writeModel(
  folder: string,
  file: string,
  config: object,
  shapes: NamedShape[],
  init: (name: string, shape: number[]) => Float32Array,
): void {
  mkdirSync(folder, { recursive: true });
  writeFileSync(join(folder, 'config.json'), JSON.stringify(config, null, 2));
  const tensors: Record<string, WritableTensor> = {};
  for (const { name, shape } of shapes) tensors[name] = { data: init(name, shape), shape };
  writeSafetensors(join(folder, file), tensors, { format: 'pt' });
}

function writePrior(dir: string, prior: PriorConfig, rng: Rng): void {
  const shapes = new (native().Prior)('cpu', { ...prior, weight_type: 'f32' }).parameters();
  const values = new Map(priorDefaultInit(shapes, rng));
  const config = { _class_name: 'WuerstchenPrior', _diffusers_version: '0.30.3', ...prior };
  writeModel(join(dir, 'prior'), 'diffusion_pytorch_model.safetensors', config, shapes, (name) => values.get(name)!);
}

/** transformers' CLIPTextModel config.json and weights with CLIP's initialisation. */
function writeTextEncoder(dir: string, text: TextEncoderConfig, rng: Rng): void {
  const shapes = new (native().TextEncoder)('cpu', text).parameters();
  const config = {
    architectures: ['CLIPTextModel'],
    model_type: 'clip_text_model',
    vocab_size: text.vocab_size,
    hidden_size: text.hidden,
    intermediate_size: text.intermediate,
    num_hidden_layers: text.layers,
    num_attention_heads: text.heads,
    max_position_embeddings: text.max_positions,
    layer_norm_eps: text.eps,
    hidden_act: text.quick_gelu ? 'quick_gelu' : 'gelu',
    bos_token_id: 49406,
    eos_token_id: 49407,
    pad_token_id: 1,
  };
  writeModel(join(dir, 'text_encoder'), 'model.safetensors', config, shapes, (name, shape) => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (/layer_norm/.test(name)) return new Float32Array(n).fill(name.endsWith('.weight') ? 1 : 0);
    if (name.endsWith('.bias')) return new Float32Array(n);
    return Float32Array.from({ length: n }, () => rng.normal() * 0.02);
  });
}

/** The tokenizer's files, and the pipeline and scheduler configs of a prior snapshot. */
function writeSnapshotFiles(dir: string, tokenizer: string): void {
  mkdirSync(join(dir, 'tokenizer'), { recursive: true });
  for (const f of ['tokenizer.json', 'special_tokens_map.json', 'tokenizer_config.json'])
    if (existsSync(join(tokenizer, f))) copyFileSync(join(tokenizer, f), join(dir, 'tokenizer', f));
  const pipeline = {
    _class_name: 'WuerstchenPriorPipeline',
    _diffusers_version: '0.30.3',
    prior: ['diffusers', 'WuerstchenPrior'],
    text_encoder: ['transformers', 'CLIPTextModel'],
    tokenizer: ['transformers', 'CLIPTokenizerFast'],
    scheduler: ['diffusers', 'DDPMWuerstchenScheduler'],
    latent_mean: 42.0,
    latent_std: 1.0,
    resolution_multiple: 42.67,
  };
  writeFileSync(join(dir, 'model_index.json'), JSON.stringify(pipeline, null, 2));
  mkdirSync(join(dir, 'scheduler'), { recursive: true });
  const scheduler = { _class_name: 'DDPMWuerstchenScheduler', s: 0.008, scaler: 1.0 };
  writeFileSync(join(dir, 'scheduler', 'scheduler_config.json'), JSON.stringify(scheduler, null, 2));
}

/** The EfficientNet encoder's state dict (torchvision's initialisation, identity batch norms)
 * and its stage layout. */
function writeImageEncoder(imageDir: string, image: ImageEncoderConfig, rng: Rng): void {
  mkdirSync(imageDir, { recursive: true });
  const tensors: Record<string, WritableTensor> = {};
  for (const [name, shape] of expectedKeys(image)) {
    const n = shape.reduce((a, b) => a * b, 1);
    if (name.endsWith('num_batches_tracked')) tensors[name] = { data: new Float32Array(1), shape, dtype: 'I64' };
    else if (name.endsWith('running_var') || (name.endsWith('.weight') && shape.length === 1))
      tensors[name] = { data: new Float32Array(n).fill(1), shape };
    else if (shape.length === 1) tensors[name] = { data: new Float32Array(n), shape };
    else {
      // Kaiming-normal fan-out, torchvision's init for EfficientNet convolutions
      const std = Math.sqrt(2 / (shape[0]! * (shape[2] ?? 1) * (shape[3] ?? 1)));
      tensors[name] = { data: Float32Array.from({ length: n }, () => rng.normal() * std), shape };
    }
  }
  writeSafetensors(join(imageDir, 'effnet.safetensors'), tensors, { format: 'pt' });
  writeFileSync(join(imageDir, 'config.json'), JSON.stringify(image, null, 1));
}

/** A decoder of two levels taking the prior's 16 channels and the text encoder's width. */
export function tinyDecoderConfig(clipEmbd: number, effnetEmbd: number): DecoderConfig {
  return {
    c_in: 4,
    c_out: 4,
    c_r: 64,
    patch_size: 2,
    c_cond: 32,
    c_hidden: [16, 32],
    nhead: [-1, 2],
    blocks: [1, 1],
    level_config: ['CT', 'CTA'],
    inject_effnet: [false, true],
    effnet_embd: effnetEmbd,
    clip_embd: clipEmbd,
    kernel_size: 3,
  };
}

export const TINY_VQGAN: VQGANConfig = {
  latent_channels: 4,
  out_channels: 3,
  levels: 2,
  bottleneck_blocks: 1,
  embed_dim: 16,
  up_down_scale_factor: 2,
  scale_factor: 0.3764,
};

/** The decoder's weights drawn normal(0, 0.02) (diffusers' init for its conditioning mappers; its
 * output layer too, which diffusers starts at zero, so that the prompts and guidance matter),
 * biases and norms zero; the VQGAN's normal with variance 1 / fan-in and its output bias 0.5, so
 * that its pictures are visible noise. */
function writeDecoderModels(dir: string, decoder: DecoderConfig, rng: Rng): void {
  const init = (name: string, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (shape.length < 2) return new Float32Array(n);
    return Float32Array.from({ length: n }, () => rng.normal() * 0.02);
  };
  const decoderShapes = new (native().Decoder)('cpu', nativeDecoderConfig(decoder)).parameters();
  const decoderConfig = { _class_name: 'WuerstchenDiffNeXt', _diffusers_version: '0.42.1', ...decoder, dropout: 0.1 };
  writeModel(join(dir, 'decoder'), 'diffusion_pytorch_model.safetensors', decoderConfig, decoderShapes, init);
  const vqganInit = (name: string, shape: number[]) => {
    const n = shape.reduce((a, b) => a * b, 1);
    if (name === 'out_block.0.bias') return new Float32Array(n).fill(0.5);
    if (shape.length < 2) return new Float32Array(n);
    const std = 1 / Math.sqrt(n / shape[0]!);
    return Float32Array.from({ length: n }, () => rng.normal() * std);
  };
  const vqganShapes = new (native().VQGANDecoder)('cpu', TINY_VQGAN).parameters();
  const vqganConfig = {
    _class_name: 'PaellaVQModel',
    _diffusers_version: '0.42.1',
    in_channels: 3,
    num_vq_embeddings: 16,
    ...TINY_VQGAN,
  };
  writeModel(join(dir, 'vqgan'), 'diffusion_pytorch_model.safetensors', vqganConfig, vqganShapes, vqganInit);
}

/** Writes the stack into `dir` (prior/, text_encoder/, tokenizer/, image_encoder/) and returns
 * the paths a config needs. One generator draws every weight, in this order. */
export function createTinyStack(
  dir: string,
  options: TinyStackOptions,
): { snapshot: string; imageEncoder: string; imageEncoderConfig: string } {
  const rng = new Rng(options.seed ?? 0);
  const prior: PriorConfig = {
    c_in: 16,
    c: 64,
    c_cond: 64,
    c_r: 64,
    depth: 2,
    nhead: 4,
    dropout: 0.1,
    ...options.prior,
  };
  const text: TextEncoderConfig = {
    vocab_size: 49408,
    hidden: prior.c_cond,
    layers: 2,
    heads: 4,
    intermediate: 4 * prior.c_cond,
    max_positions: 77,
    eps: 1e-5,
    quick_gelu: false,
    ...options.textEncoder,
  };
  writePrior(dir, prior, rng);
  writeTextEncoder(dir, text, rng);
  writeSnapshotFiles(dir, options.tokenizer);
  const imageDir = join(dir, 'image_encoder');
  writeImageEncoder(imageDir, options.imageEncoder ?? TINY_IMAGE_ENCODER, rng);
  writeDecoderModels(dir, tinyDecoderConfig(text.hidden, prior.c_in), rng);
  return {
    snapshot: dir,
    imageEncoder: join(imageDir, 'effnet.safetensors'),
    imageEncoderConfig: join(imageDir, 'config.json'),
  };
}
