// `lora-train sample`: image embeddings from prompts with the (LoRA-adapted) prior, saved as
// safetensors with their prompts in the metadata, ready for Würstchen's decoder.
import { dirname } from 'node:path';
import { mkdirSync } from 'node:fs';
import type { LoadedConfig } from '../config/load.js';
import type { Prior } from '../models/prior.js';
import { Rng } from '../core/rng.js';
import { writeSafetensors } from '../io/safetensors.js';
import { latentSide, samplePrior } from './sampler.js';
import type { Tensor } from '../core/tensor.js';
import type { TextEncoder } from '../models/text-encoder.js';
import type { ClipTokenizer } from '../models/tokenizer.js';
import { loadModels } from '../models/from-config.js';

export interface GenerateOptions {
  prompts: string[];
  /** Images per prompt (default 1). */
  num?: number;
  /** Classifier-free guidance scale (default 4, as the combined Würstchen pipeline). */
  guidance?: number;
  height?: number;
  width?: number;
  seed?: number;
  negativePrompt?: string;
}

async function embed(tokenizer: ClipTokenizer, encoder: TextEncoder, texts: string[]): Promise<Tensor> {
  return encoder.encode(await tokenizer.encode(texts));
}

/** Image embeddings (decoder input, latents * 42 - 1) for every prompt x num, in that order. */
export async function generateEmbeddings(
  prior: Prior,
  tokenizer: ClipTokenizer,
  textEncoder: TextEncoder,
  options: GenerateOptions,
): Promise<{ embeddings: Tensor; prompts: string[] }> {
  const num = options.num ?? 1;
  const prompts = options.prompts.flatMap((p) => Array<string>(num).fill(p));
  const h = latentSide(options.height ?? 1024),
    w = latentSide(options.width ?? 1024);
  const cond = await embed(tokenizer, textEncoder, prompts);
  const uncond = await embed(
    tokenizer,
    textEncoder,
    prompts.map(() => options.negativePrompt ?? ''),
  );
  const rng = new Rng(options.seed ?? 0);
  const shape = [prompts.length, prior.config.c_in, h, w];
  const n = shape.reduce((a, b) => a * b, 1);
  const latents = { data: Float32Array.from({ length: n }, () => rng.normal()), shape };
  const embeddings = await samplePrior(prior, {
    cond,
    uncond,
    latents,
    guidance: options.guidance ?? 4,
    stepNoise: () => Float32Array.from({ length: n }, () => rng.normal()),
  });
  return { embeddings, prompts };
}

export function saveEmbeddings(
  file: string,
  embeddings: Tensor,
  prompts: string[],
  settings: Record<string, unknown>,
): void {
  mkdirSync(dirname(file), { recursive: true });
  writeSafetensors(
    file,
    { image_embeddings: embeddings },
    { format: 'pt', prompts: JSON.stringify(prompts), settings: JSON.stringify(settings) },
  );
}

export interface SampleCommandOptions extends GenerateOptions {
  config: LoadedConfig;
  lora?: string;
  out: string;
  device?: 'cpu' | 'cuda';
}

export async function sampleCommand(options: SampleCommandOptions): Promise<string> {
  const seed = options.seed ?? options.config.config.seed ?? 0;
  const { prior, tokenizer, textEncoder } = await loadModels(
    options.config.config,
    options.config.file,
    seed,
    options.device ?? 'cpu',
  );
  if (options.lora) prior.loadLora(options.lora);
  else
    prior.setLoraWeights(
      Object.fromEntries(
        Object.entries(prior.loraWeights())
          .filter(([k]) => k.endsWith('lora_B.weight'))
          .map(([k, t]) => [k, { data: new Float32Array(t.data.length), shape: t.shape }]),
      ),
    );
  const { embeddings, prompts } = await generateEmbeddings(prior, tokenizer, textEncoder, { ...options, seed });
  saveEmbeddings(options.out, embeddings, prompts, {
    guidance: options.guidance ?? 4,
    height: options.height ?? 1024,
    width: options.width ?? 1024,
    seed,
    lora: options.lora ?? null,
  });
  return options.out;
}
