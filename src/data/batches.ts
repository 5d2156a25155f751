// Training batches (docs/wuerstchen-prior.md §4): an epoch's items in an order drawn from the
// seed, for each a caption and a crop and flip drawn from (seed, epoch, item), then timesteps
// t ~ U(0, 1) and noise drawn from (seed, iteration), and the image embeddings noised to
// sqrt(abar(t)) x + sqrt(1 - abar(t)) noise. Nothing depends on what ran before, so a resumed
// run draws exactly what an uninterrupted one would. In a data-parallel run each rank takes
// every world-th row of the global batch (as torch's DistributedSampler gives rank r the items
// r, r + world, … of an epoch padded to a multiple of world), with the draws of those rows, so
// world ranks of batch b train exactly as one process of batch b × world.
import { permutation, seededRng } from '../core/rng.js';
import type { Tensor } from '../core/tensor.js';
import { addNoise } from '../models/noise-schedule.js';
import type { Embedder, PreparedItem } from './embeddings.js';

export interface Batch {
  epoch: number;
  /** Noised image embeddings (B, 16, h, w). */
  x: Tensor;
  /** Timesteps (B). */
  r: Tensor;
  /** Text embeddings (B, T, c_cond). */
  clip: Tensor;
  /** The noise the prior learns to predict, like x. */
  target: Tensor;
}

/** Items held out of training (to measure the adapters on), drawn from the seed. */
export function splitHoldout(items: PreparedItem[], count: number, seed: number) {
  const heldOut = new Set(permutation(items.length, seededRng(seed, 'holdout')).slice(0, count));
  return { train: items.filter((_, i) => !heldOut.has(i)), heldOut: items.filter((_, i) => heldOut.has(i)) };
}

function stack(tensors: Tensor[]): Tensor {
  const per = tensors[0]!.data.length;
  const data = new Float32Array(tensors.length * per);
  tensors.forEach((t, b) => data.set(t.data, b * per));
  return { data, shape: [tensors.length, ...tensors[0]!.shape] };
}

export class Batches {
  private epochOrder = { epoch: -1, order: [] as number[] };
  readonly itersPerEpoch: number;

  constructor(
    private readonly items: PreparedItem[],
    private readonly embedder: Embedder,
    private readonly options: { batchSize: number; seed: number; shuffle: boolean; rank?: number; world?: number },
  ) {
    this.world = options.world ?? 1;
    this.rank = options.rank ?? 0;
    this.itersPerEpoch = Math.ceil(this.paddedLength / this.world / options.batchSize);
  }

  private readonly world: number;
  private readonly rank: number;

  /** An epoch's length padded to a multiple of the world size (DistributedSampler's padding). */
  private get paddedLength(): number {
    return Math.ceil(this.items.length / this.world) * this.world;
  }

  /** The epoch's order, drawn once per epoch, padded by repeating its start. */
  private order(epoch: number): number[] {
    if (this.epochOrder.epoch !== epoch) {
      const n = this.items.length;
      const order = this.options.shuffle
        ? permutation(n, seededRng(this.options.seed, 'order', epoch))
        : Array.from({ length: n }, (_, i) => i);
      for (let i = 0; order.length < this.paddedLength; i++) order.push(order[i % n]!);
      this.epochOrder = { epoch, order };
    }
    return this.epochOrder.order;
  }

  /** One item's image embedding and caption embedding, with its draws for this epoch. */
  private async pick(index: number, epoch: number): Promise<{ image: Tensor; text: Tensor }> {
    const item = this.items[index]!;
    const rng = seededRng(this.options.seed, 'item', epoch, index);
    const text = item.text[Math.floor(rng.uniform() * item.text.length)]!;
    const plan = this.embedder.transform.plan(item.geometry, rng, item.source);
    if (!item.image) return { image: await this.embedder.image(item.bytes!.data, item.bytes!.hash, plan), text };
    return { image: plan.flip && item.image[1] ? item.image[1] : item.image[0], text };
  }

  /** This rank's part of the batch of iteration `it` (0-based). */
  async get(it: number): Promise<Batch> {
    const epoch = Math.floor(it / this.itersPerEpoch);
    const global = this.options.batchSize * this.world;
    const start = (it % this.itersPerEpoch) * global;
    const rows = this.order(epoch).slice(start, start + global); // the global batch
    const mine = rows.flatMap((index, row) => (row % this.world === this.rank ? [index] : []));
    const picks: { image: Tensor; text: Tensor }[] = [];
    for (const index of mine) picks.push(await this.pick(index, epoch));
    const shape = picks[0]!.image.shape.join();
    if (picks.some((p) => p.image.shape.join() !== shape))
      throw new Error('items of one batch have different image sizes: add a crop to the pipeline');
    const x = stack(picks.map((p) => p.image));
    // Drawn for the whole global batch, this rank's rows kept.
    const per = x.data.length / picks.length;
    const noiseRng = seededRng(this.options.seed, 'noise', it);
    const allR = Float32Array.from({ length: rows.length }, () => noiseRng.uniform());
    const allNoise = Float32Array.from({ length: rows.length * per }, () => noiseRng.normal());
    const r = new Float32Array(picks.length);
    const noise = new Float32Array(x.data.length);
    for (let k = 0; k < picks.length; k++) {
      const row = this.rank + k * this.world;
      r[k] = allR[row]!;
      noise.set(allNoise.subarray(row * per, (row + 1) * per), k * per);
    }
    return {
      epoch,
      x: { data: addNoise(x.data, noise, r), shape: x.shape },
      r: { data: r, shape: [picks.length] },
      clip: stack(picks.map((p) => p.text)),
      target: { data: noise, shape: x.shape },
    };
  }
}
