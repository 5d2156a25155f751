// Pictures from image embeddings: the decoder's sampler and the VQGAN (decoder-sampler.ts) for
// every embedding, written as one PNG grid by sharp, a row per prompt.
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import sharp from 'sharp';
import type { LoraTrainConfig } from '../config/schema.js';
import { Rng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';
import type { PictureModels } from '../models/from-config.js';
import { decoderLatentSide, drawPictures, sampleDecoder } from './decoder-sampler.js';

/** The decoder's settings of a config (its `sample` keys) and its seed: the prior's seed + 1, so
 * that its draws differ from the prior's. */
export function decoderSettings(config: LoraTrainConfig) {
  return { guidance: config.sample.decoder_guidance, steps: config.sample.decoder_steps, seed: config.seed + 1 };
}

export interface PictureOptions {
  /** One prompt per embedding, and the unconditional prompt. */
  prompts: string[];
  negativePrompt: string;
  guidance: number;
  steps: number;
  /** Seed of the decoder's initial latents and step noise. */
  seed: number;
}

/** Pictures (N, 3, H, W) in [0, 1] for image embeddings (N, c, h, w). */
export async function drawFromEmbeddings(
  models: PictureModels,
  embeddings: Tensor,
  options: PictureOptions,
): Promise<Tensor> {
  const { decoder, vqgan, tokenizer, textEncoder } = models;
  const [N, , h, w] = embeddings.shape as [number, number, number, number];
  const shape = [N, decoder.config.c_in, decoderLatentSide(h), decoderLatentSide(w)];
  const multiple = decoder.sideMultiple;
  if (shape[2]! % multiple || shape[3]! % multiple)
    throw new RangeError(
      `the decoder needs latent sides that are multiples of ${multiple}, and ${h}x${w} image embeddings give ` +
        `${shape[2]}x${shape[3]} (int(side * 10.67)): choose sample.height and sample.width so that ceil(side / 42.67) ` +
        'makes one (1024 px does)',
    );
  const encode = async (texts: string[]) => textEncoder.encode(await tokenizer.encode(texts));
  const cond = await encode(options.prompts);
  // The negative prompts only matter with guidance (none by diffusers' default).
  const uncond = options.guidance > 1 ? await encode(options.prompts.map(() => options.negativePrompt)) : undefined;
  const rng = new Rng(options.seed);
  const n = shape.reduce((a, b) => a * b, 1);
  const latents = { data: Float32Array.from({ length: n }, () => rng.normal()), shape };
  const final = await sampleDecoder(decoder, {
    embeddings,
    cond,
    uncond,
    latents,
    guidance: options.guidance,
    steps: options.steps,
    stepNoise: () => Float32Array.from({ length: n }, () => rng.normal()),
  });
  return drawPictures(vqgan, final);
}

/** pictures (N, 3, H, W) in [0, 1] as one PNG: `columns` pictures a row, each rounded to 8 bits as
 * diffusers' numpy_to_pil does. */
export async function writePictureGrid(file: string, pictures: Tensor, columns: number): Promise<void> {
  const [N, C, H, W] = pictures.shape as [number, number, number, number];
  const cols = Math.min(columns, N),
    rows = Math.ceil(N / cols);
  const rgb = new Uint8Array(rows * H * cols * W * 3);
  for (let i = 0; i < N; i++) {
    const y0 = Math.floor(i / cols) * H,
      x0 = (i % cols) * W;
    for (let c = 0; c < 3; c++)
      for (let y = 0; y < H; y++)
        for (let x = 0; x < W; x++) {
          const v = pictures.data[((i * C + Math.min(c, C - 1)) * H + y) * W + x]!;
          rgb[((y0 + y) * cols * W + x0 + x) * 3 + c] = Math.round(v * 255);
        }
  }
  mkdirSync(dirname(file), { recursive: true });
  await sharp(rgb, { raw: { width: cols * W, height: rows * H, channels: 3 } })
    .png()
    .toFile(file);
}
