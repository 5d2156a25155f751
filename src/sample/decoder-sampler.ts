// Stage B and A of Würstchen's picture (diffusers' WuerstchenDecoderPipeline): the decoder
// denoises VQGAN latents from noise under the prior's image embeddings and the decoder's own text
// embeddings, DDPMWuerstchenScheduler's steps as for the prior, then the VQGAN draws them.
import type { Tensor } from '../core/tensor.js';
import type { Decoder } from '../models/decoder.js';
import type { VQGAN } from '../models/vqgan.js';
import { concat, ddpmStep, guide } from './sampler.js';

/** The pipeline's latent_dim_scale: decoder latents per image-embedding position. */
export const LATENT_DIM_SCALE = 10.67;
/** WuerstchenDecoderPipeline's default num_inference_steps. */
export const DECODER_STEPS = 12;

/** The decoder latents' side for an image embedding's side: int(side * 10.67). */
export const decoderLatentSide = (embeddingSide: number) => Math.floor(embeddingSide * LATENT_DIM_SCALE);

/** DDPMWuerstchenScheduler.set_timesteps(steps): torch.linspace(1, 0, steps + 1) in float32,
 * which fills the second half from the end. */
export function decoderTimesteps(steps = DECODER_STEPS): number[] {
  const n = steps + 1,
    step = Math.fround(-1 / steps);
  return Array.from({ length: n }, (_, i) =>
    i < n / 2 ? Math.fround(1 + Math.fround(step * i)) : Math.fround(0 - Math.fround(step * (n - 1 - i))),
  );
}

export interface DecoderSampleOptions {
  /** The prior's image embeddings (B, effnet_embd, h, w) (its latents * 42 - 1). */
  embeddings: Tensor;
  /** The decoder text encoder's last_hidden_state for the prompts, and for the negative prompts
   * (needed only with guidance). */
  cond: Tensor;
  uncond?: Tensor;
  /** Initial latents (B, c_in, int(h * 10.67), int(w * 10.67)), standard normal. */
  latents: Tensor;
  /** Guidance scale; 1 or less (the pipeline's default is 0): none. */
  guidance: number;
  /** The noise of each step, standard normal, shaped as the latents. */
  stepNoise: (step: number) => Float32Array;
  steps?: number;
}

/** The decoder's sampling loop; returns the final latents. */
export async function sampleDecoder(decoder: Decoder, o: DecoderSampleOptions): Promise<Tensor> {
  const timesteps = decoderTimesteps(o.steps);
  const B = o.latents.shape[0]!,
    per = o.latents.data.length / B;
  const useGuidance = o.guidance > 1;
  if (useGuidance && !o.uncond) throw new Error('sampleDecoder: guidance needs the negative prompts (uncond)');
  const twice = (t: Tensor, second: Float32Array): Tensor => ({
    data: concat(t.data, second),
    shape: [2 * t.shape[0]!, ...t.shape.slice(1)],
  });
  // Unconditional: the embeddings zeroed and the negative prompts.
  const effnet = useGuidance ? twice(o.embeddings, new Float32Array(o.embeddings.data.length)) : o.embeddings;
  const clip = useGuidance ? twice(o.cond, o.uncond!.data) : o.cond;
  let x: Float32Array = Float32Array.from(o.latents.data);
  for (let i = 0; i < timesteps.length - 1; i++) {
    const t = timesteps[i]!;
    const input = useGuidance ? twice({ data: x, shape: o.latents.shape }, x) : { data: x, shape: o.latents.shape };
    const r = { data: new Float32Array(input.shape[0]!).fill(t), shape: [input.shape[0]!] };
    const out = await decoder.forward(input, r, effnet, clip);
    const eps = useGuidance ? guide(out.data, per, B, o.guidance) : out.data;
    x = ddpmStep(x, eps, t, timesteps[i + 1]!, o.stepNoise(i));
  }
  return { data: x, shape: [...o.latents.shape] };
}

/** The VQGAN's pictures (B, 3, H, W) in [0, 1] from the decoder's final latents. */
export async function drawPictures(vqgan: VQGAN, latents: Tensor): Promise<Tensor> {
  const scaled = { data: latents.data.map((v) => v * vqgan.config.scale_factor), shape: latents.shape };
  const pictures = await vqgan.decode(scaled);
  return { data: pictures.data.map((v) => Math.min(1, Math.max(0, v))), shape: pictures.shape };
}
