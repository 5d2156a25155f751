// The models a config names: the prior (with fresh LoRA adapters), tokenizer and text encoder,
// from the built-in tiny stack, a folder, or the local Hugging Face cache.
import { TINY_MODEL_ID, tinyModel } from '../data/builtin.js';
import { ConfigError, type LoraTrainConfig } from '../config/load.js';
import { readFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import { resolveRepo, resolveRepoFile } from '../io/hub.js';
import { EFFICIENTNET_V2_S, ImageEncoder, type ImageEncoderConfig } from './image-encoder.js';
import { type Precision, loadPrior } from './prior.js';
import { TextEncoder } from './text-encoder.js';
import { ClipTokenizer } from './tokenizer.js';

export function required<T>(value: T | undefined, key: string, file: string): T {
  if (value === undefined) throw new ConfigError(`${file}: '${key}' is required`);
  return value;
}

/** The precision a config trains in: mixed_precision when given; else diffengine's
 * AmpOptimWrapper (float16 unless its dtype says otherwise) on CUDA only, as its autocast
 * targets the GPU; else fp32. */
export function trainingPrecision(cfg: LoraTrainConfig, device: 'cpu' | 'cuda'): Precision {
  const mixed = cfg.mixed_precision;
  if (mixed !== undefined) return mixed === 'no' ? 'fp32' : mixed;
  const wrapper = cfg.optim_wrapper;
  if (device !== 'cuda' || wrapper?.type !== 'AmpOptimWrapper') return 'fp32';
  return ({ float16: 'fp16', bfloat16: 'bf16', float32: 'fp32' } as const)[wrapper.dtype ?? 'float16'];
}

/** The prior (with fresh adapters from the config), tokenizer and text encoder of a config. */
export async function loadModels(cfg: LoraTrainConfig, file: string, seed: number, device: 'cpu' | 'cuda' = 'cpu') {
  const model = required(cfg.model, 'model', file);
  const priorModel = required(model.prior_model, 'model.prior_model', file);
  const priorSnapshot = priorModel === TINY_MODEL_ID ? tinyModel() : resolveRepo(priorModel, 'model');
  const lora = model.prior_lora_config ?? {};
  const prior = await loadPrior(priorSnapshot, {
    device,
    precision: trainingPrecision(cfg, device),
    lora: {
      rank: lora.r ?? 8,
      alpha: lora.lora_alpha ?? lora.r ?? 8,
      targets: lora.target_modules,
      dropout: lora.lora_dropout ?? 0,
      seed,
    },
  });
  const textSnapshot = model.text_encoder_model ? resolveRepo(model.text_encoder_model, 'model') : priorSnapshot;
  const tokenizer = ClipTokenizer.load(textSnapshot);
  const textEncoder = TextEncoder.load(textSnapshot, { device });
  if (textEncoder.config.hidden !== prior.config.c_cond)
    throw new Error(
      `the text encoder's hidden size ${textEncoder.config.hidden} differs from the prior's c_cond ${prior.config.c_cond}`,
    );
  return { prior, tokenizer, textEncoder, textSnapshot };
}

/** The EfficientNet encoder a config names: the built-in tiny one, a file (.safetensors, or a
 * .pt read safely under `key`), or a file of a Hub repository in the local cache. */
export function loadImageEncoder(
  cfg: LoraTrainConfig,
  file: string,
  device: 'cpu' | 'cuda' = 'cpu',
): { imageEncoder: ImageEncoder; imageFile: string } {
  const ie = required(cfg.model?.image_encoder, 'model.image_encoder', file);
  const builtin = ie.path === TINY_MODEL_ID;
  const imageFile = builtin
    ? join(tinyModel(), 'image_encoder', 'effnet.safetensors')
    : (ie.path ??
      resolveRepoFile(
        required(ie.repo, 'model.image_encoder.repo', file),
        required(ie.file, 'model.image_encoder.file', file),
      ));
  const configFile = builtin ? join(tinyModel(), 'image_encoder', 'config.json') : ie.config;
  const config = configFile ? (JSON.parse(readFileSync(configFile, 'utf8')) as ImageEncoderConfig) : EFFICIENTNET_V2_S;
  const imageEncoder =
    extname(imageFile) === '.pt'
      ? ImageEncoder.loadCheckpoint(imageFile, ie.key ?? 'effnet_state_dict', config, { device })
      : ImageEncoder.load(imageFile, config, { device });
  return { imageEncoder, imageFile };
}
