// The frozen CLIP text encoder (transformers' CLIPTextModel) in native code: prompt embeddings
// for the prior, last_hidden_state after the final LayerNorm.
import { type Device, checkDevice } from '../core/device.js';
import type { NativeTextEncoder } from '../native/addon.js';
import { native } from '../native/loader.js';
import { Rng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';
import { invalid } from '../core/tensor.js';
import type { TokenizedBatch } from './tokenizer.js';
import {
  MAX_MODEL_DIM,
  buildFrom,
  componentConfig,
  loadCheckedWeights,
  readJsonConfig,
  weightFiles,
} from './weights.js';

export interface TextEncoderConfig {
  vocab_size: number;
  hidden: number;
  layers: number;
  heads: number;
  intermediate: number;
  max_positions: number;
  eps: number;
  quick_gelu: boolean;
}

/** text_encoder/config.json as transformers' CLIPTextConfig reads it (its defaults included). */
export function readTextEncoderConfig(file: string): TextEncoderConfig {
  const raw = readJsonConfig(file, 'text encoder');
  const int = (key: string, fallback: number, max = MAX_MODEL_DIM) => {
    const v = raw[key] ?? fallback;
    if (!Number.isInteger(v) || (v as number) < 1 || (v as number) > max)
      throw new Error(`${file}: ${key} must be a positive integer <= ${max}, got ${JSON.stringify(v)}`);
    return v as number;
  };
  const act = raw.hidden_act ?? 'quick_gelu';
  if (act !== 'gelu' && act !== 'quick_gelu')
    throw new Error(
      `${file}: hidden_act ${JSON.stringify(act)} is not supported (lora-train implements "gelu" and "quick_gelu")`,
    );
  const eps = raw.layer_norm_eps ?? 1e-5;
  if (typeof eps !== 'number' || !(eps > 0))
    throw new Error(`${file}: layer_norm_eps must be a positive number, got ${JSON.stringify(eps)}`);
  const config = {
    vocab_size: int('vocab_size', 49408, 2 ** 20),
    hidden: int('hidden_size', 512),
    layers: int('num_hidden_layers', 12),
    heads: int('num_attention_heads', 8),
    intermediate: int('intermediate_size', 2048),
    max_positions: int('max_position_embeddings', 77),
    eps,
    quick_gelu: act === 'quick_gelu',
  };
  if (config.hidden % config.heads)
    throw new Error(
      `${file}: hidden_size (${config.hidden}) is not divisible by num_attention_heads (${config.heads})`,
    );
  return config;
}

export class TextEncoder {
  private constructor(
    readonly config: TextEncoderConfig,
    private readonly model: NativeTextEncoder,
  ) {}

  /** Loads text_encoder/ (config.json + model.safetensors, F32/F16/BF16, or sharded) from a
   * folder or a snapshot holding it. */
  static load(dir: string, options: { device?: Device } = {}): TextEncoder {
    const device = checkDevice('loadTextEncoder', options.device);
    const { folder, configFile } = componentConfig(dir, 'text_encoder', 'text encoder');
    const config = readTextEncoderConfig(configFile);
    const model = buildFrom(configFile, () => new (native().TextEncoder)(device, config));
    // position_ids is a buffer some checkpoints carry; it holds nothing to load. transformers 5
    // saves CLIPTextModel's weights without the text_model. prefix of earlier versions.
    loadCheckedWeights(
      folder,
      weightFiles(folder, 'model'),
      model,
      (name) => name === 'text_model.embeddings.position_ids',
      (name) => (/^(embeddings|encoder|final_layer_norm)\./.test(name) ? `text_model.${name}` : name),
    );
    return new TextEncoder(config, model);
  }

  /** Random weights (CLIP's init: normal 0.02, LayerNorm 1 and 0) from a seed, for benchmarks. */
  static random(config: TextEncoderConfig, seed = 0): TextEncoder {
    const model = new (native().TextEncoder)('cpu', config);
    const rng = new Rng(seed);
    for (const p of model.parameters()) {
      const n = p.shape.reduce((a, b) => a * b, 1);
      const norm = /layer_norm|final_layer_norm/.test(p.name);
      const value = () =>
        norm ? (p.name.endsWith('.weight') ? 1 : 0) : p.name.endsWith('.bias') ? 0 : rng.normal() * 0.02;
      model.setParameter(p.name, Float32Array.from({ length: n }, value));
    }
    return new TextEncoder(config, model);
  }

  /** last_hidden_state (B, T, hidden) for a tokenized batch. */
  async encode(batch: TokenizedBatch): Promise<Tensor> {
    const { batch: B, maxLength: T } = batch;
    if (T > this.config.max_positions)
      invalid('encode', `at most ${this.config.max_positions} tokens`, 'batch.maxLength', T, RangeError);
    const out = new Float32Array(B * T * this.config.hidden);
    await this.model.encode(out, batch.ids, batch.mask, B, T);
    return { data: out, shape: [B, T, this.config.hidden] };
  }
}
