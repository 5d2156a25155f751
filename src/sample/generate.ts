// Image embeddings from prompts with the (LoRA-adapted) prior, saved as safetensors with their
// prompts in the metadata, or drawn by Würstchen's decoder and VQGAN into a PNG:
// `lora-train sample` and the VisualizationHook.
import { mkdirSync } from 'node:fs';
import { basename, dirname, extname, resolve } from 'node:path';
import { type LoadedConfig, required } from '../config/load.js';
import { NonFiniteError } from '../core/finite.js';
import { Rng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';
import { writeSafetensors } from '../io/safetensors.js';
import { fetchForConfig } from '../hub/job.js';
import { loadPictureModels, loadTextModels } from '../models/from-config.js';
import { DIFFUSERS_LORA_FILE, type Prior } from '../models/prior.js';
import type { TextEncoder } from '../models/text-encoder.js';
import type { ClipTokenizer } from '../models/tokenizer.js';
import { decoderSettings, drawFromEmbeddings, writePictureGrid } from './pictures.js';
import { latentSide, samplePrior } from './sampler.js';

export interface GenerateOptions {
  prompts: string[];
  /** Images per prompt. */
  num: number;
  /** Classifier-free guidance scale (4 in the combined Würstchen pipeline). */
  guidance: number;
  /** Image size in pixels; the latents are ceil(side / 42.67). */
  height: number;
  width: number;
  /** Seed of the initial latents and every step's noise. */
  seed: number;
  /** The unconditional prompt ('' in diffusers). */
  negativePrompt: string;
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
  const prompts = options.prompts.flatMap((p) => Array<string>(options.num).fill(p));
  const cond = await embed(tokenizer, textEncoder, prompts);
  const uncond = await embed(
    tokenizer,
    textEncoder,
    prompts.map(() => options.negativePrompt),
  );
  const rng = new Rng(options.seed);
  const shape = [prompts.length, prior.config.c_in, latentSide(options.height), latentSide(options.width)];
  const n = shape.reduce((a, b) => a * b, 1);
  const latents = { data: Float32Array.from({ length: n }, () => rng.normal()), shape };
  const embeddings = await withSizeHint(shape, () =>
    samplePrior(prior, {
      cond,
      uncond,
      latents,
      guidance: options.guidance,
      stepNoise: () => Float32Array.from({ length: n }, () => rng.normal()),
    }),
  );
  return { embeddings, prompts };
}

/** Runs `sample`, naming the batch's size when its memory cannot be had: every prompt and image
 * is one batch (as in diffusers), so the fix is fewer or smaller images. */
async function withSizeHint<T>(shape: number[], sample: () => Promise<T>): Promise<T> {
  try {
    return await sample();
  } catch (e) {
    const message = (e as Error).message;
    if (!/bad_alloc|out of memory|cannot allocate/i.test(message)) throw e;
    const [images, , h, w] = shape;
    throw new Error(
      `sampling ${images} images of ${h}×${w} latents at once needs more memory than there is (${message}); ` +
        'ask for fewer (sample.num, sample.prompt) or smaller (sample.height, sample.width) images',
    );
  }
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

const LORA_FILE_NAMES = [DIFFUSERS_LORA_FILE, 'adapter_model.safetensors'];

/** `lora-train sample`: the config's `sample` prompts through its prior (with `sample.lora`;
 * without one the fresh adapters add nothing: the base prior), written to `sample.out`: the
 * image embeddings, or (a .png) the pictures model.decoder_model draws from them, a row per
 * prompt. */
export async function sampleCommand(loaded: LoadedConfig): Promise<{ file: string; count: number }> {
  const { seed, sample } = loaded.config;
  const prompts = required(sample.prompt, 'sample.prompt', loaded.file);
  // Embeddings written over the LoRA they were sampled with would lose the training run.
  if (LORA_FILE_NAMES.includes(basename(sample.out)) || (sample.lora && resolve(sample.lora) === resolve(sample.out)))
    throw new Error(`${loaded.file}: sample.out ${sample.out} names a LoRA file; write the embeddings elsewhere`);
  const pictures = extname(sample.out).toLowerCase() === '.png';
  if (pictures)
    required(loaded.config.model.decoder_model, 'model.decoder_model (to draw sample.out as a .png)', loaded.file);
  await fetchForConfig(loaded, (line) => process.stderr.write(`${line}\n`), true, pictures);
  const { prior, tokenizer, textEncoder } = await loadTextModels(loaded);
  if (sample.lora) prior.loadLora(sample.lora);
  const { guidance, height, width, num } = sample;
  const options = { prompts, num, guidance, height, width, seed, negativePrompt: sample.negative_prompt };
  const { embeddings, prompts: all } = await generateEmbeddings(prior, tokenizer, textEncoder, options);
  if (pictures) {
    const models = await loadPictureModels(loaded, prior);
    const drawn = await drawFromEmbeddings(models, embeddings, {
      prompts: all,
      negativePrompt: sample.negative_prompt,
      ...decoderSettings(loaded.config),
    });
    await writePictureGrid(sample.out, drawn, num);
    return { file: sample.out, count: all.length };
  }
  try {
    saveEmbeddings(sample.out, embeddings, all, { guidance, height, width, seed, lora: sample.lora ?? null });
  } catch (e) {
    if (!(e instanceof NonFiniteError)) throw e;
    throw new NonFiniteError(
      `${e.message}: the prior gave NaN or Inf with sample.guidance ${guidance}${sample.lora ? ` and the LoRA ${sample.lora}` : ''}`,
      e.tensor,
    );
  }
  return { file: sample.out, count: all.length };
}
