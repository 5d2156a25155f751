// The Würstchen prior sampler (diffusers' WuerstchenPriorPipeline with DDPMWuerstchenScheduler,
// docs/wuerstchen-prior.md §5): Stage C's default timesteps, classifier-free guidance against the empty prompt, the
// scheduler's step, and the final latents * 42 - 1 handed to the decoder.
import { alphaCumprod } from '../models/noise-schedule.js';
import type { Prior } from '../models/prior.js';
import type { Tensor } from '../core/tensor.js';

function linspace(start: number, stop: number, num: number): number[] {
  const step = (stop - start) / (num - 1);
  return Array.from({ length: num }, (_, i) => (i === num - 1 ? stop : start + i * step)); // numpy's
}

/** DEFAULT_STAGE_C_TIMESTEPS: linspace(1, 2/3, 20) then linspace(2/3, 0, 11) without its first. */
export const STAGE_C_TIMESTEPS: readonly number[] = [...linspace(1, 2 / 3, 20), ...linspace(2 / 3, 0, 11).slice(1)];

export const LATENT_MEAN = 42;
export const LATENT_STD = 1;
export const RESOLUTION_MULTIPLE = 42.67;

/** The latent side for an image side: ceil(side / 42.67) (1024 px -> 24). */
export function latentSide(pixels: number): number {
  return Math.ceil(pixels / RESOLUTION_MULTIPLE);
}

export interface SampleOptions {
  /** Text embeddings of the prompts (B, T, c_cond) and of the empty prompt, one row per item. */
  cond: Tensor;
  uncond: Tensor;
  /** Initial latents (B, c_in, h, w), standard normal. */
  latents: Tensor;
  /** Guidance scale g: eps = uncond + g (cond - uncond) (diffusers' lerp). 1 or less: no guidance. */
  guidance: number;
  /** The noise of each step (B, c_in, h, w), drawn standard normal; index = step. */
  stepNoise: (step: number) => Float32Array;
  timesteps?: readonly number[];
  /** Called with the latents after each step (for trajectories). */
  onStep?: (step: number, latents: Float32Array) => void;
}

/** Runs the sampler; returns the decoder's input, latents * 42 - 1. */
export async function samplePrior(prior: Prior, options: SampleOptions): Promise<Tensor> {
  const timesteps = options.timesteps ?? STAGE_C_TIMESTEPS;
  const { cond, uncond, guidance } = options;
  const B = options.latents.shape[0]!;
  const per = options.latents.data.length / B;
  const useGuidance = guidance > 1;
  let x: Float32Array = Float32Array.from(options.latents.data);
  const clip = useGuidance ? { data: concat(cond.data, uncond.data), shape: [2 * B, ...cond.shape.slice(1)] } : cond;
  for (let i = 0; i < timesteps.length - 1; i++) {
    // The pipeline hands the prior its timestep in the model's dtype (fp32); the scheduler
    // then works from that value.
    const t = Math.fround(timesteps[i]!);
    const prev = timesteps[i + 1]!;
    const input = useGuidance
      ? { data: concat(x, x), shape: [2 * B, ...options.latents.shape.slice(1)] }
      : { data: x, shape: options.latents.shape };
    const r = { data: new Float32Array(input.shape[0]!).fill(t), shape: [input.shape[0]!] };
    const out = await prior.forward(input, r, clip);
    const eps = useGuidance ? guide(out.data, per, B, guidance) : out.data;
    x = ddpmStep(x, eps, t, prev, options.stepNoise(i));
    options.onStep?.(i, x);
  }
  return { data: x.map((v) => v * LATENT_MEAN - LATENT_STD), shape: [...options.latents.shape] };
}

/** DDPMWuerstchenScheduler.step: the latents at `prev` from those at `t` and the predicted
 * noise, plus the step's noise scaled by its standard deviation (none into prev = 0). */
export function ddpmStep(
  x: Float32Array,
  eps: Float32Array,
  t: number,
  prev: number,
  noise: Float32Array,
): Float32Array {
  const abar = alphaCumprod(t),
    abarPrev = alphaCumprod(prev);
  const alpha = abar / abarPrev;
  const std = prev === 0 ? 0 : Math.sqrt(((1 - alpha) * (1 - abarPrev)) / (1 - abar));
  const next = new Float32Array(x.length);
  for (let k = 0; k < x.length; k++) {
    const mu = Math.sqrt(1 / alpha) * (x[k]! - ((1 - alpha) * eps[k]!) / Math.sqrt(1 - abar));
    next[k] = mu + std * noise[k]!;
  }
  return next;
}

/** Classifier-free guidance as diffusers' torch.lerp: out = uncond + g (cond - uncond), with the
 * conditional half first in `both` (2B items of `per` values). */
export function guide(both: Float32Array, per: number, B: number, g: number): Float32Array {
  return Float32Array.from({ length: B * per }, (_, k) => both[B * per + k]! + g * (both[k]! - both[B * per + k]!));
}

export function concat(a: Float32Array, b: Float32Array): Float32Array {
  const out = new Float32Array(a.length + b.length);
  out.set(a);
  out.set(b, a.length);
  return out;
}
