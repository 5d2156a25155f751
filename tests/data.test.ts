// Datasets in every supported layout, and the sharp transforms against first principles.
import { copyFileSync, mkdirSync, mkdtempSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import sharp from 'sharp';
import { describe, expect, it } from 'vitest';
import { loadDataset } from '../src/data/dataset.js';
import type { TransformInput } from '../src/config/schema.js';
import { ImageTransform } from '../src/data/transforms.js';
import { Rng } from '../src/core/rng.js';
import { TINY_DATASET_SNAPSHOT, fixturesDir } from './helpers.js';

const hubDataset = TINY_DATASET_SNAPSHOT;

async function png(file: string, width: number, height: number, rgb: [number, number, number]) {
  await sharp({ create: { width, height, channels: 3, background: { r: rgb[0], g: rgb[1], b: rgb[2] } } })
    .png()
    .toFile(file);
}

describe('datasets', () => {
  it('reads a Hub dataset from the cache by id, and a parquet file by path', async () => {
    const saved = process.env.HF_HUB_CACHE;
    process.env.HF_HUB_CACHE = join(fixturesDir, 'datasets', 'hub');
    try {
      const items = await loadDataset('tiny/disc-captions');
      expect(items.map((i) => i.captions[0])).toEqual([
        'a red disc on stripes',
        'a green disc on stripes',
        'a blue disc on stripes',
        'a yellow disc on stripes',
        'a purple disc on stripes',
        'a cyan disc on stripes',
      ]);
      expect((await sharp(await items[0]!.image()).metadata()).width).toBe(48);
    } finally {
      if (saved === undefined) delete process.env.HF_HUB_CACHE;
      else process.env.HF_HUB_CACHE = saved;
    }
    const one = await loadDataset(join(hubDataset, 'data', 'train-00001-of-00002.parquet'), { subset: 1 });
    expect(one.map((i) => i.captions)).toEqual([['a purple disc on stripes']]);
  });

  it('reads image folders with metadata.jsonl, metadata.csv (caption lists too) or .txt captions', async () => {
    const root = mkdtempSync(join(tmpdir(), 'lora-train-ds-'));
    const jsonl = join(root, 'jsonl');
    mkdirSync(jsonl);
    await png(join(jsonl, 'a.png'), 8, 8, [1, 2, 3]);
    writeFileSync(
      join(jsonl, 'metadata.jsonl'),
      `${JSON.stringify({ file_name: 'a.png', caption: ['one', 'two'] })}\n`,
    );
    expect((await loadDataset(jsonl, { captionColumn: 'caption' }))[0]!.captions).toEqual(['one', 'two']);
    await expect(loadDataset(jsonl)).rejects.toThrow(/no caption column 'text' \(keys: file_name, caption\)/);
    const csv = join(root, 'csv');
    mkdirSync(csv);
    await png(join(csv, 'b.png'), 8, 8, [1, 2, 3]);
    writeFileSync(join(csv, 'metadata.csv'), 'file_name,text\nb.png,"a caption, with a comma"\n');
    expect((await loadDataset(csv))[0]!.captions).toEqual(['a caption, with a comma']);
    const txt = join(root, 'txt');
    mkdirSync(join(txt, 'sub'), { recursive: true });
    await png(join(txt, 'sub', 'c.png'), 8, 8, [1, 2, 3]);
    writeFileSync(join(txt, 'sub', 'c.txt'), 'a caption from a text file\n');
    expect((await loadDataset(txt))[0]!.captions).toEqual(['a caption from a text file']);
    await png(join(txt, 'd.png'), 8, 8, [1, 2, 3]);
    await expect(loadDataset(txt)).rejects.toThrow(/d\.png: no caption file d\.txt beside it/);
  });

  it("follows a Hub snapshot's links into its blobs/: parquet shards, metadata, captions and images", async () => {
    const repo = join(mkdtempSync(join(tmpdir(), 'lora-train-blobs-')), 'datasets--tiny--linked');
    const blob = (name: string) => join(repo, 'blobs', name);
    mkdirSync(join(repo, 'blobs'), { recursive: true });
    const shard = join(hubDataset, 'data', 'train-00000-of-00002.parquet');
    copyFileSync(shard, blob('shard'));
    await png(blob('image'), 8, 8, [1, 2, 3]);
    writeFileSync(blob('metadata'), `${JSON.stringify({ file_name: 'a.png', text: 'from metadata' })}\n`);
    writeFileSync(blob('caption'), 'from a caption file\n');
    /** A snapshot whose files are relative links into blobs/, as huggingface_hub makes them. */
    const snapshot = (commit: string, files: Record<string, string>) => {
      const dir = join(repo, 'snapshots', commit);
      for (const [file, target] of Object.entries(files)) {
        const depth = file.split('/').length + 1;
        mkdirSync(join(dir, file, '..'), { recursive: true });
        symlinkSync(join(...Array<string>(depth).fill('..'), 'blobs', target), join(dir, file));
      }
      return dir;
    };
    const parquet = snapshot('c1', { 'data/train-00000-of-00001.parquet': 'shard' });
    const direct = await loadDataset(shard);
    expect((await loadDataset(parquet)).map((i) => i.captions)).toEqual(direct.map((i) => i.captions));
    const metadata = snapshot('c2', { 'a.png': 'image', 'metadata.jsonl': 'metadata' });
    const [item] = await loadDataset(metadata);
    expect(item!.captions).toEqual(['from metadata']);
    expect(Buffer.from(await item!.image())).toEqual(readFileSync(blob('image')));
    const captions = snapshot('c3', { 'b.png': 'image', 'b.txt': 'caption' });
    expect((await loadDataset(captions)).map((i) => i.captions)).toEqual([['from a caption file']]);
  });
});

describe('dataset splits', () => {
  it("reads a Hub dataset's split by its file names, and everything as train where no file names one", async () => {
    const [first, second] = ['train-00000-of-00002.parquet', 'train-00001-of-00002.parquet'].map((f) =>
      join(hubDataset, 'data', f),
    );
    const root = mkdtempSync(join(tmpdir(), 'lora-train-splits-'));
    mkdirSync(join(root, 'data'));
    copyFileSync(first!, join(root, 'data', 'train-00000-of-00001.parquet'));
    copyFileSync(second!, join(root, 'data', 'test-00000-of-00001.parquet'));
    const [all, train, test] = await Promise.all([
      loadDataset(hubDataset),
      loadDataset(root),
      loadDataset(root, { split: 'test' }),
    ]);
    expect(train.map((i) => i.captions[0])).toEqual(all.slice(0, train.length).map((i) => i.captions[0]));
    expect(test.map((i) => i.captions[0])).toEqual(all.slice(train.length).map((i) => i.captions[0]));
    expect(train.length + test.length).toBe(all.length);
    await expect(loadDataset(root, { split: 'validation' })).rejects.toThrow(
      `${root}: no parquet files of split 'validation' (splits: test, train); set train_dataloader.dataset.split`,
    );
    const unnamed = mkdtempSync(join(tmpdir(), 'lora-train-unnamed-'));
    copyFileSync(first!, join(unnamed, 'shard-a.parquet'));
    copyFileSync(second!, join(unnamed, 'shard-b.parquet'));
    expect(await loadDataset(unnamed)).toHaveLength(all.length);
  });
});

describe('transforms', () => {
  const normalize: TransformInput = {
    type: 'torchvision/Normalize',
    mean: [0.485, 0.456, 0.406],
    std: [0.229, 0.224, 0.225],
  };

  it('resizes the shorter side, crops, flips with probability p and normalises', async () => {
    const t = new ImageTransform(
      [
        { type: 'torchvision/Resize', size: 32 },
        { type: 'CenterCrop', size: 32 },
        { type: 'RandomHorizontalFlip', p: 1 },
        normalize,
      ],
      'test',
    );
    expect(t.plan({ width: 96, height: 64 }, new Rng(1), 'x')).toEqual({
      resize: [48, 32],
      crop: { left: 8, top: 0, width: 32, height: 32 },
      flip: true,
    });
    // left half red, right half blue: after the flip, blue comes first
    const raw = Buffer.alloc(96 * 64 * 3);
    for (let y = 0; y < 64; y++)
      for (let x = 0; x < 96; x++) raw.set(x < 48 ? [255, 0, 0] : [0, 0, 255], (y * 96 + x) * 3);
    const bytes = await sharp(raw, { raw: { width: 96, height: 64, channels: 3 } })
      .png()
      .toBuffer();
    const out = await t.apply(bytes, t.plan({ width: 96, height: 64 }, new Rng(1), 'x'));
    expect(out.length).toBe(3 * 32 * 32);
    const red = (i: number) => out[i]!;
    const blue = (i: number) => out[2 * 1024 + i]!;
    expect(red(0)).toBeCloseTo((0 - 0.485) / 0.229, 5); // first column is blue now
    expect(blue(0)).toBeCloseTo((1 - 0.406) / 0.225, 5);
    expect(red(31)).toBeCloseTo((1 - 0.485) / 0.229, 5);
  });

  it('draws random crops and flips from the generator, and knows when the crop is fixed', () => {
    const t = new ImageTransform(
      [
        { type: 'torchvision/Resize', size: 64 },
        { type: 'RandomCrop', size: 64 },
        { type: 'RandomHorizontalFlip', p: 0.5 },
      ],
      'test',
    );
    expect(t.cropVaries({ width: 64, height: 64 })).toBe(false);
    expect(t.cropVaries({ width: 100, height: 64 })).toBe(true);
    const plans = Array.from({ length: 400 }, (_, i) => t.plan({ width: 100, height: 64 }, new Rng(i), 'x'));
    const flips = plans.filter((p) => p.flip).length;
    expect(flips).toBeGreaterThan(160);
    expect(flips).toBeLessThan(240);
    expect(new Set(plans.map((p) => p.crop.left)).size).toBeGreaterThan(20);
    expect(Math.max(...plans.map((p) => p.crop.left))).toBeLessThanOrEqual(100 - 64);
    expect(t.plan({ width: 100, height: 64 }, new Rng(7), 'x')).toEqual(
      t.plan({ width: 100, height: 64 }, new Rng(7), 'x'),
    );
  });

  it('refuses unknown transforms and crops larger than the image, naming them', () => {
    const jitter = [{ type: 'ColorJitter' }] as unknown as TransformInput[];
    expect(() => new ImageTransform(jitter, 'cfg.ts')).toThrow(
      `cfg.ts: 'train_dataloader.dataset.pipeline[0].type' must be one of "torchvision/Resize", "RandomCrop", "CenterCrop", "RandomHorizontalFlip", "torchvision/ToTensor", "torchvision/Normalize", "PackInputs", got "ColorJitter"`,
    );
    expect(() => new ImageTransform([{ type: 'RandomHorizontalFlip', p: 2 }], 'cfg.ts')).toThrow(
      `cfg.ts: 'train_dataloader.dataset.pipeline[0].p' must be a number in [0, 1], got 2`,
    );
    const t = new ImageTransform([{ type: 'RandomCrop', size: 64 }], 'cfg.ts');
    expect(() => t.plan({ width: 32, height: 32 }, new Rng(1), 'img.png')).toThrow(
      'img.png: image of 32x32 resized to 32x32 is smaller than the 64x64 crop',
    );
  });
});
