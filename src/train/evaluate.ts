// Held-out style evaluation: the denoising loss on fixed noise and timesteps, without dropout,
// so that two adapters (or none) are compared on exactly the same draws. A run measures it
// without the adapters before training and with them after (report.md).
import { addNoise } from '../models/noise-schedule.js';
import type { Prior } from '../models/prior.js';
import { Rng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';
import type { LoraTrainConfig } from '../config/schema.js';
import type { PreparedItem } from '../data/embeddings.js';
import type { Evaluation } from './report.js';

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

/** The fixed-noise loss without the adapters (B = 0), then with the trained ones: over the
 * held-out items, or the training items when none are held out; items whose random crop
 * varies are left out, as their embedding is not fixed. */
export class AdapterEvaluation {
  private constructor(
    private readonly prior: Prior,
    private readonly items: EvalItem[],
    private readonly settings: { draws: number; seed: number; heldOut: boolean },
    private readonly before: number,
  ) {}

  /** Measures the loss without adapters, when the config asks for a report. */
  static async begin(
    prior: Prior,
    data: { train: PreparedItem[]; heldOut: PreparedItem[] },
    config: LoraTrainConfig,
  ): Promise<AdapterEvaluation | undefined> {
    const draws = config.report?.draws;
    const heldOut = data.heldOut.length > 0;
    const items = (heldOut ? data.heldOut : data.train)
      .filter((p) => p.image)
      .map((p) => ({ image: p.image![0], text: p.text[0]! }));
    if (!draws || items.length === 0) return undefined;
    const before = await prior.withoutAdapters(() => fixedNoiseLoss(prior, items, draws, config.seed));
    return new AdapterEvaluation(prior, items, { draws, seed: config.seed, heldOut }, before);
  }

  /** The loss with the adapters as trained, beside the one without. */
  async finish(): Promise<Evaluation> {
    const { draws, seed, heldOut } = this.settings;
    const after = await fixedNoiseLoss(this.prior, this.items, draws, seed);
    return { before: this.before, after, items: this.items.length, draws, heldOut };
  }
}
