// Training batches: every item once per epoch in an order drawn from the seed (or the dataset's
// order without shuffling), the same batch for the same iteration in any process (so resumes are
// exact), and x noised from the image embeddings as sqrt(abar(t)) x0 + sqrt(1 - abar(t)) noise.
import { describe, expect, it } from 'vitest';
import { Batches } from '../src/data/batches.js';
import type { Embedder, PreparedItem } from '../src/data/embeddings.js';
import { ImageTransform } from '../src/data/transforms.js';
import { alphaCumprod } from '../src/models/noise-schedule.js';

const ITEMS = 6;
const tensor = (value: number, shape: number[]) => ({
  data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(value),
  shape,
});
// Item i: image embedding filled with i (its flip with -i), caption embedding filled with i.
const items: PreparedItem[] = Array.from({ length: ITEMS }, (_, i) => ({
  source: `item ${i}`,
  text: [tensor(i, [3, 2])],
  image: [tensor(i, [16, 2, 2]), tensor(-i, [16, 2, 2])],
  geometry: { width: 8, height: 8 },
}));
const embedder = { transform: new ImageTransform([{ type: 'RandomHorizontalFlip', p: 0.5 }], 'test') } as Embedder;
const itemsOf = (clip: Float32Array) => Array.from({ length: clip.length / 6 }, (_, b) => clip[b * 6]!);

describe('training batches', () => {
  it("takes the dataset's order without shuffling", async () => {
    const batches = new Batches(items, embedder, { batchSize: 2, seed: 1, shuffle: false });
    expect(batches.itersPerEpoch).toBe(3);
    const order = [];
    for (let it = 0; it < 6; it++) order.push(...itemsOf((await batches.get(it)).clip.data));
    expect(order).toEqual([0, 1, 2, 3, 4, 5, 0, 1, 2, 3, 4, 5]);
  });

  it('shuffles every epoch from the seed, each item once, the same in a new process', async () => {
    const batches = new Batches(items, embedder, { batchSize: 4, seed: 3, shuffle: true });
    expect(batches.itersPerEpoch).toBe(2);
    const epochs: number[][] = [[], []];
    for (let it = 0; it < 4; it++) epochs[Math.floor(it / 2)]!.push(...itemsOf((await batches.get(it)).clip.data));
    for (const order of epochs) expect([...order].sort()).toEqual([0, 1, 2, 3, 4, 5]);
    expect(epochs[0]).not.toEqual(epochs[1]);
    expect(epochs[0]).not.toEqual([0, 1, 2, 3, 4, 5]);
    const resumed = new Batches(items, embedder, { batchSize: 4, seed: 3, shuffle: true });
    expect(await resumed.get(3)).toEqual(await batches.get(3));
  });

  it('noises each image embedding at its timestep, flipped or not as drawn', async () => {
    const batch = await new Batches(items, embedder, { batchSize: 3, seed: 5, shuffle: false }).get(0);
    const per = 16 * 2 * 2;
    const flips: boolean[] = [];
    for (let b = 0; b < 3; b++) {
      const abar = alphaCumprod(batch.r.data[b]!);
      const x0 = (batch.x.data[b * per]! - Math.sqrt(1 - abar) * batch.target.data[b * per]!) / Math.sqrt(abar);
      expect(Math.abs(Math.abs(x0) - b)).toBeLessThan(1e-4);
      flips.push(x0 < 0);
    }
    expect(batch.x.shape).toEqual([3, 16, 2, 2]);
    expect(batch.clip.shape).toEqual([3, 3, 2]);
    expect(flips.slice(1)).not.toEqual([false, false]); // item 0's flip is -0: only items 1 and 2 show it
  });
});
