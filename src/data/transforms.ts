// The image pipeline of a config (diffengine/torchvision transform names), executed with sharp:
// resize the shorter side (bilinear), random or center crop, horizontal flip with probability p,
// to tensor and normalise. Random choices come from the caller's generator, so a run (and a
// resumed run) draws the same crops and flips.
import sharp from 'sharp';
import { type TransformConfig, type TransformInput, pipelineSchema } from '../config/schema.js';
import { checkedParse } from '../config/validate.js';
import { Rng } from '../core/rng.js';

/** What sharp decodes from bytes alone, without vector formats that can reach other files. */
const RASTER_FORMATS: ReadonlySet<string | undefined> = new Set([
  'jpeg',
  'png',
  'webp',
  'gif',
  'tiff',
  'heif',
  'avif',
  'jp2',
  'jxl',
]);

export interface TransformPlan {
  resize: [number, number]; // width, height after resizing
  crop: { left: number; top: number; width: number; height: number };
  flip: boolean;
}

export interface ImageGeometry {
  width: number;
  height: number;
}

type Step =
  | { kind: 'resize'; size: number | [number, number] }
  | { kind: 'crop'; size: [number, number]; random: boolean }
  | { kind: 'flip'; p: number }
  | { kind: 'normalize'; mean: number[]; std: number[] };

/** torchvision's size: one side for both, or (height, width). */
const sizePair = (size: number | [number, number]): [number, number] => (Array.isArray(size) ? size : [size, size]);

/** A pipeline step's transform name without torchvision's prefix. */
const transformName = (t: TransformConfig) => t.type.replace(/^torchvision\//, '');

function stepOf(t: TransformConfig): Step | undefined {
  switch (t.type) {
    case 'Resize':
    case 'torchvision/Resize':
      return { kind: 'resize', size: t.size };
    case 'RandomCrop':
    case 'torchvision/RandomCrop':
    case 'CenterCrop':
    case 'torchvision/CenterCrop':
      return { kind: 'crop', size: sizePair(t.size), random: transformName(t) === 'RandomCrop' };
    case 'RandomHorizontalFlip':
    case 'torchvision/RandomHorizontalFlip':
      return { kind: 'flip', p: t.p };
    case 'Normalize':
    case 'torchvision/Normalize':
      return { kind: 'normalize', mean: t.mean, std: t.std };
    default:
      return undefined; // ToTensor and PackInputs: the output is always a normalised tensor
  }
}

export class ImageTransform {
  private readonly steps: Step[];

  /** The config's pipeline (train_dataloader.dataset.pipeline), checked against its schema;
   * `where` names the config for error messages. */
  constructor(pipeline: readonly TransformInput[], where: string) {
    const checked = checkedParse(pipelineSchema, pipeline, new Map([['', where]]), [
      'train_dataloader',
      'dataset',
      'pipeline',
    ]);
    this.steps = checked.map(stepOf).filter((s): s is Step => s !== undefined);
    const canonical = ['resize', 'crop', 'flip', 'normalize'];
    const ranks = this.steps.map((s) => canonical.indexOf(s.kind));
    if (ranks.some((r, i) => i > 0 && r <= ranks[i - 1]!))
      throw new Error(
        `${where}: the pipeline must be Resize, crop, flip, ToTensor, Normalize in that order, each at most once (got ${this.steps.map((s) => s.kind).join(', ')})`,
      );
  }

  /** The crop's [height, width], if the pipeline crops. */
  get cropSize(): [number, number] | undefined {
    return this.steps.find((s): s is Extract<Step, { kind: 'crop' }> => s.kind === 'crop')?.size;
  }

  /** Probability of a horizontal flip. */
  get flipProbability(): number {
    return this.steps.find((s): s is Extract<Step, { kind: 'flip' }> => s.kind === 'flip')?.p ?? 0;
  }

  /** The settings that determine the output (for cache keys). */
  get settings(): unknown {
    return this.steps;
  }

  private resized(g: ImageGeometry): [number, number] {
    const r = this.steps.find((s): s is Extract<Step, { kind: 'resize' }> => s.kind === 'resize');
    if (!r) return [g.width, g.height];
    if (Array.isArray(r.size)) return [r.size[1], r.size[0]];
    // torchvision: the shorter side becomes size, the longer int(size * long / short)
    if (g.width <= g.height) return [r.size, Math.floor((r.size * g.height) / g.width)];
    return [Math.floor((r.size * g.width) / g.height), r.size];
  }

  /** Whether the output depends on chance other than the flip (a random crop with room to move). */
  cropVaries(g: ImageGeometry): boolean {
    const c = this.steps.find((s): s is Extract<Step, { kind: 'crop' }> => s.kind === 'crop');
    if (!c || !c.random) return false;
    const [w, h] = this.resized(g);
    return w > c.size[1] || h > c.size[0];
  }

  /** Chooses crop and flip for one image. */
  plan(g: ImageGeometry, rng: Rng, source: string): TransformPlan {
    const [w, h] = this.resized(g);
    let crop = { left: 0, top: 0, width: w, height: h };
    const c = this.steps.find((s): s is Extract<Step, { kind: 'crop' }> => s.kind === 'crop');
    if (c) {
      const [ch, cw] = c.size;
      if (cw > w || ch > h)
        throw new Error(
          `${source}: image of ${g.width}x${g.height} resized to ${w}x${h} is smaller than the ${cw}x${ch} crop`,
        );
      crop = c.random
        ? {
            left: Math.floor(rng.uniform() * (w - cw + 1)),
            top: Math.floor(rng.uniform() * (h - ch + 1)),
            width: cw,
            height: ch,
          }
        : { left: Math.round((w - cw) / 2), top: Math.round((h - ch) / 2), width: cw, height: ch };
    }
    const p = this.flipProbability;
    return { resize: [w, h], crop, flip: p > 0 && rng.uniform() < p };
  }

  /** Decodes and transforms one image: (3, H, W) float, normalised. */
  async apply(bytes: Uint8Array, plan: TransformPlan): Promise<Float32Array> {
    await ImageTransform.geometry(bytes); // the format check; the header alone is read
    let img = sharp(bytes, { failOn: 'error' }).removeAlpha().toColourspace('srgb');
    const [w, h] = plan.resize;
    img = img.resize(w, h, { kernel: 'linear', fit: 'fill' });
    const { left, top, width, height } = plan.crop;
    if (left !== 0 || top !== 0 || width !== w || height !== h) img = img.extract({ left, top, width, height });
    if (plan.flip) img = img.flop();
    const { data, info } = await img.raw().toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded ${info.channels} channels, expected 3`);
    const n = info.width * info.height;
    const out = new Float32Array(3 * n);
    const norm = this.steps.find((s): s is Extract<Step, { kind: 'normalize' }> => s.kind === 'normalize');
    for (let c = 0; c < 3; c++) {
      const mean = norm ? norm.mean[norm.mean.length === 1 ? 0 : c]! : 0;
      const std = norm ? norm.std[norm.std.length === 1 ? 0 : c]! : 1;
      for (let i = 0; i < n; i++) out[c * n + i] = (data[i * 3 + c]! / 255 - mean) / std;
    }
    return out;
  }

  /** Width and height of an encoded image, or a clear error for a file that is not one. Only
   * raster formats are taken: an SVG or PDF (which sharp would also render) may refer to other
   * files, and a dataset image has no business doing so. */
  static async geometry(bytes: Uint8Array): Promise<ImageGeometry> {
    const meta = await sharp(bytes).metadata();
    if (!RASTER_FORMATS.has(meta.format))
      throw new Error(`${meta.format} is not an image format lora-train trains on (${[...RASTER_FORMATS].join(', ')})`);
    if (!meta.width || !meta.height) throw new Error('not an image sharp can read');
    return { width: meta.width, height: meta.height };
  }
}
