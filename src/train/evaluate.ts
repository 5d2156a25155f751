// Held-out style evaluation: the denoising loss on fixed noise and timesteps, without dropout,
// so that two adapters (or none) are compared on exactly the same draws.
import { addNoise } from '../models/noise-schedule.js';
import type { Prior } from '../models/prior.js';
import { Rng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';

export interface EvalItem {
  /** Image embedding (c_in, h, w) and text embedding (T, c_cond). */
  image: Tensor;
  text: Tensor;
}

/** Mean MSE over items x draws, each draw a fixed timestep and noise from `seed`. */
export async function fixedNoiseLoss(prior: Prior, items: EvalItem[], draws: number, seed: number): Promise<number> {
  let total = 0;
  let count = 0;
  for (let i = 0; i < items.length; i++) {
    const { image, text } = items[i]!;
    for (let d = 0; d < draws; d++) {
      const rng = new Rng(seed * 100003 + i * 977 + d);
      const r = new Float32Array([rng.uniform()]);
      const noise = Float32Array.from({ length: image.data.length }, () => rng.normal());
      const x = { data: addNoise(image.data, noise, r), shape: [1, ...image.shape] };
      const out = await prior.forward(x, { data: r, shape: [1] }, { data: text.data, shape: [1, ...text.shape] });
      let sum = 0;
      for (let k = 0; k < noise.length; k++) sum += (out.data[k]! - noise[k]!) ** 2;
      total += sum / noise.length;
      count++;
    }
  }
  return total / count;
}
