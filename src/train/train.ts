// The training job (spec §4): frozen encoders turn each item into a text embedding and image
// embeddings (cached on disk), then every step noises the image embeddings at random
// timesteps and trains the prior's LoRA adapters to predict the noise. All randomness (data
// order, captions, crops, flips, noise, timesteps, dropout) is derived from (seed, epoch, item)
// or (seed, step), so a resumed run draws exactly what an uninterrupted one would.
import {
  appendFileSync,
  existsSync,
  mkdirSync,
  readFileSync,
  readdirSync,
  renameSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import type { LoadedConfig, LoraTrainConfig } from '../config/load.js';
import { ConfigError } from '../config/load.js';
import { ImageTransform } from '../data/transforms.js';
import { type DatasetItem, loadDataset } from '../data/dataset.js';
import { EmbeddingCache, sha256 } from '../data/embedding-cache.js';
import { TWEMOJI_DATASET_ID, twemojiDataset } from '../data/builtin.js';
import { writeReport } from './report.js';
import { type EvalItem, fixedNoiseLoss } from './evaluate.js';
import { addNoise } from '../models/noise-schedule.js';
import { GradScaler, type GradScalerState } from './grad-scaler.js';
import { setAllowTf32 } from '../native/ops.js';
import { textEncoderFolder } from '../models/text-encoder.js';
import { tokenizerFolder } from '../models/tokenizer.js';
import { weightFiles } from '../models/weights.js';
import { Progress } from '../core/progress.js';
import { generateEmbeddings, saveEmbeddings } from '../sample/generate.js';
import { loadImageEncoder, loadModels, required } from '../models/from-config.js';
import { Rng } from '../core/rng.js';
import { readSafetensors, getTensor, writeSafetensors } from '../io/safetensors.js';
import { lrFactor, type ScheduleName } from './schedule.js';
import type { Tensor } from '../core/tensor.js';

export interface TrainOptions {
  config: LoadedConfig;
  workDir?: string;
  /** 'auto': the work dir's latest checkpoint; or a checkpoint folder. */
  resume?: string;
  device?: 'cpu' | 'cuda';
  seed?: number;
  /** Stop after this many iterations of this run (tests; a killed run). */
  stopAfter?: number;
  /** Where human-readable lines go (default stderr). */
  log?: (line: string) => void;
  /** Embedding cache folder (default $LORA_TRAIN_CACHE or ~/.cache/lora-train/embeddings). */
  cacheDir?: string;
  /** Measure the denoising loss on fixed noise and timesteps before and after training
   * (over the items whose embeddings are fixed), with this many draws per item. */
  evaluateDraws?: number;
}

export interface TrainResult {
  workDir: string;
  loraFile: string;
  steps: number;
  losses: number[];
  skipped: string[];
  interrupted: boolean;
  /** Fixed-noise denoising loss without and with the trained adapters (evaluateDraws). */
  evaluation?: { before: number; after: number; items: number; draws: number; heldOut: boolean };
}

interface PreparedItem {
  item: DatasetItem;
  /** Text embeddings per caption, (T, c_cond). */
  text: Tensor[];
  /** Image embeddings [unflipped, flipped], (16, h, w), or null when a random crop varies. */
  image: [Tensor, Tensor | undefined] | null;
  /** The image's bytes and their hash, kept only when a random crop makes it encode every step. */
  bytes?: { data: Uint8Array; hash: string };
  geometry: { width: number; height: number };
}

/** A stream of numbers for one purpose, reproducible from the seed and its labels. */
function rngFor(seed: number, ...labels: (string | number)[]): Rng {
  return new Rng(Number.parseInt(sha256(`${seed}:${labels.join(':')}`).slice(0, 8), 16));
}

function permutation(n: number, rng: Rng): number[] {
  const order = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [order[i], order[j]] = [order[j]!, order[i]!];
  }
  return order;
}

/** Checkpoint folders under work_dir/checkpoints, oldest first. */
function checkpoints(workDir: string): string[] {
  const dir = join(workDir, 'checkpoints');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((d) => /^iter_\d+$/.test(d) && existsSync(join(dir, d, 'state.json')))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)))
    .map((d) => join(dir, d));
}

interface CheckpointState {
  iteration: number;
  optimizerSteps: number;
  /** Optimizer steps skipped for fp16 overflow (AdamW's own step count excludes them). */
  skippedSteps?: number;
  scaler?: GradScalerState;
  seed: number;
  config: LoraTrainConfig;
  losses: number[];
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const { config: cfg, file } = options.config;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const device = options.device ?? cfg.device ?? 'cpu';
  const seed = options.seed ?? cfg.seed ?? 0;
  const workDir = options.workDir ?? cfg.work_dir ?? join('work_dirs', options.config.name);
  mkdirSync(workDir, { recursive: true });

  // ---- models
  const { prior, tokenizer, textEncoder, textSnapshot } = await loadModels(cfg, file, seed, device);
  setAllowTf32(cfg.allow_tf32 ?? false, { device });
  if (prior.precision !== 'fp32')
    log(
      `lora-train: mixed precision ${prior.precision} (frozen weights and GEMM operands; LoRA weights, gradients and AdamW state fp32${prior.precision === 'fp16' ? ', dynamic loss scaling' : ''})`,
    );
  const { imageEncoder, imageFile } = loadImageEncoder(cfg, file, device);
  if (imageEncoder.config.latent_channels !== prior.config.c_in)
    throw new Error(
      `the image encoder's ${imageEncoder.config.latent_channels} latent channels differ from the prior's c_in ${prior.config.c_in}`,
    );

  // ---- data
  const loader = required(cfg.train_dataloader, 'train_dataloader', file);
  const ds = required(loader.dataset, 'train_dataloader.dataset', file);
  const batchSize = loader.batch_size ?? 1;
  const datasetId = required(ds.dataset, 'train_dataloader.dataset.dataset', file);
  const items = await loadDataset(datasetId === TWEMOJI_DATASET_ID ? await twemojiDataset() : datasetId, {
    imageColumn: ds.image_column,
    captionColumn: ds.caption_column,
    subset: ds.subset,
  });
  const transform = new ImageTransform(ds.pipeline ?? [], file);

  // ---- embeddings, through the cache
  const cache = new EmbeddingCache(
    options.cacheDir ?? process.env.LORA_TRAIN_CACHE ?? join(homedir(), '.cache', 'lora-train', 'embeddings'),
  );
  const useCache = cfg.cache_embeddings ?? true;
  const textFolder = textEncoderFolder(textSnapshot);
  const textPrint = cache.weightsFingerprint([
    join(textFolder, 'config.json'),
    ...weightFiles(textFolder, 'model'),
    join(tokenizerFolder(textSnapshot), 'tokenizer.json'),
  ]);
  const imagePrint = cache.weightsFingerprint([imageFile]);
  // Text embeddings for every distinct caption, the missing ones encoded in batches.
  const captions = [...new Set(items.flatMap((item) => item.captions))];
  const textBatch = 32;
  const encodeCaptions = async (texts: string[]) => {
    const out: Record<string, Tensor>[] = [];
    for (let i = 0; i < texts.length; i += textBatch) {
      const hidden = await textEncoder.encode(await tokenizer.encode(texts.slice(i, i + textBatch)));
      const per = hidden.data.length / hidden.shape[0]!;
      for (let b = 0; b < hidden.shape[0]!; b++)
        out.push({ embedding: { data: hidden.data.slice(b * per, (b + 1) * per), shape: hidden.shape.slice(1) } });
    }
    return out;
  };
  const textKeys = captions.map((caption) => EmbeddingCache.key({ kind: 'text', caption, encoder: textPrint }));
  const textValues = useCache
    ? await cache.getMany(textKeys, (missing) => encodeCaptions(missing.map((i) => captions[i]!)))
    : await encodeCaptions(captions);
  const textEmbedding = new Map(captions.map((c, i) => [c, textValues[i]!.embedding!]));
  const encodeImage = async (
    bytes: Uint8Array,
    contentHash: string,
    plan: ReturnType<ImageTransform['plan']>,
  ): Promise<Tensor> => {
    const run = async () => {
      const pixels = await transform.apply(bytes, plan);
      const latent = await imageEncoder.encode({ data: pixels, shape: [1, 3, plan.crop.height, plan.crop.width] });
      // spec §4: image_embeds = effnet(pixels).add(1).div(42)
      return { embedding: { data: latent.data.map((v) => (v + 1) / 42), shape: latent.shape.slice(1) } };
    };
    const key = EmbeddingCache.key({
      kind: 'image',
      content: contentHash,
      encoder: imagePrint,
      transform: transform.settings,
      plan,
    });
    return (useCache ? await cache.get(key, run) : await run()).embedding!;
  };

  const prepared: PreparedItem[] = [];
  const skipped: string[] = [];
  const progress = new Progress('embeddings', items.length);
  for (const item of items) {
    try {
      const bytes = await item.image();
      const geometry = await ImageTransform.geometry(bytes);
      const text = item.captions.map((caption) => textEmbedding.get(caption)!);
      let image: PreparedItem['image'] = null;
      const hash = sha256(bytes);
      if (!transform.cropVaries(geometry)) {
        const fixed = transform.plan(geometry, new Rng(0), item.source);
        const plain = await encodeImage(bytes, hash, { ...fixed, flip: false });
        const flipped =
          transform.flipProbability > 0 ? await encodeImage(bytes, hash, { ...fixed, flip: true }) : undefined;
        image = [plain, flipped];
      }
      prepared.push({ item, text, image, bytes: image ? undefined : { data: bytes, hash }, geometry });
    } catch (e) {
      skipped.push(item.source);
      log(`lora-train: skipping ${item.source}: ${(e as Error).message.split('\n')[0]}`);
    }
    progress.tick();
  }
  const holdoutCount = ds.holdout ?? 0;
  const heldOut = new Set(permutation(prepared.length, rngFor(seed, 'holdout')).slice(0, holdoutCount));
  const evaluationSet = prepared.filter((_, i) => heldOut.has(i));
  prepared.splice(0, prepared.length, ...prepared.filter((_, i) => !heldOut.has(i)));
  if (prepared.length === 0)
    throw new Error(`the dataset has no usable items (${skipped.length} skipped, ${holdoutCount} held out)`);
  log(
    `lora-train: ${prepared.length} items ready (${cache.stats.hits} cached embeddings reused, ${cache.stats.misses} computed, ${cache.stats.repaired} damaged entries recomputed, ${skipped.length} unreadable images skipped)`,
  );

  // ---- schedule
  const optim = cfg.optim_wrapper ?? {};
  const opt = optim.optimizer ?? {};
  const accumulate = optim.accumulative_counts ?? 1;
  const itersPerEpoch = Math.ceil(prepared.length / batchSize);
  const tc = cfg.train_cfg ?? {};
  const totalIters = tc.max_iters ?? (tc.max_epochs ?? 1) * itersPerEpoch;
  const totalOptSteps = Math.ceil(totalIters / accumulate);
  const sched = cfg.lr_scheduler ?? {};
  const ckpt = cfg.default_hooks?.checkpoint ?? {};
  const ckptEvery = (ckpt.interval ?? 1) * ((ckpt.by_epoch ?? tc.by_epoch ?? true) ? itersPerEpoch : 1);
  const keep = ckpt.max_keep_ckpts ?? 3;
  const logInterval = cfg.default_hooks?.logger?.interval ?? 10;

  // ---- resume
  let iteration = 0;
  let optimizerSteps = 0;
  let skippedSteps = 0;
  let scaler = new GradScaler(prior.precision === 'fp16');
  const losses: number[] = [];
  if (options.resume) {
    const from = options.resume === 'auto' ? checkpoints(workDir).at(-1) : options.resume;
    if (from) {
      const state = JSON.parse(readFileSync(join(from, 'state.json'), 'utf8')) as CheckpointState;
      const tensors = readSafetensors(join(from, 'training_state.safetensors'));
      const weights: Record<string, Tensor> = {};
      const moments: Record<string, Tensor> = {};
      for (const name of tensors.entries.keys())
        (name.startsWith('optimizer.') ? moments : weights)[name.replace(/^(optimizer|lora)\./, '')] = getTensor(
          tensors,
          name,
        );
      prior.setLoraWeights(weights);
      prior.setOptimizerState(moments);
      iteration = state.iteration;
      optimizerSteps = state.optimizerSteps;
      skippedSteps = state.skippedSteps ?? 0;
      scaler = new GradScaler(prior.precision === 'fp16', state.scaler);
      losses.push(...state.losses);
      log(`lora-train: resumed from ${from} at iteration ${iteration}`);
    } else if (options.resume !== 'auto') throw new Error(`--resume ${options.resume}: no such checkpoint`);
    else log('lora-train: --resume auto found no checkpoint; starting fresh');
  }

  const saveCheckpoint = () => {
    const dir = join(workDir, 'checkpoints', `iter_${iteration}`);
    const tmp = `${dir}.tmp-${process.pid}`;
    rmSync(tmp, { recursive: true, force: true });
    mkdirSync(tmp, { recursive: true });
    const tensors: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(prior.loraWeights())) tensors[`lora.${k}`] = v;
    for (const [k, v] of Object.entries(prior.optimizerState())) tensors[`optimizer.${k}`] = v;
    writeSafetensors(join(tmp, 'training_state.safetensors'), tensors);
    prior.saveLora(tmp);
    const state: CheckpointState = {
      iteration,
      optimizerSteps,
      skippedSteps,
      scaler: scaler.toJSON(),
      seed,
      config: cfg,
      losses,
    };
    writeFileSync(join(tmp, 'state.json'), JSON.stringify(state));
    rmSync(dir, { recursive: true, force: true });
    renameSync(tmp, dir); // the checkpoint appears whole or not at all
    prior.saveLora(workDir);
    for (const old of checkpoints(workDir).slice(0, -keep)) rmSync(old, { recursive: true, force: true });
  };

  // ---- batches
  let epochOrder = { epoch: -1, order: [] as number[] }; // an epoch's shuffle, drawn once
  const prepareBatch = async (it: number) => {
    const epoch = Math.floor(it / itersPerEpoch);
    if (epochOrder.epoch !== epoch)
      epochOrder = { epoch, order: permutation(prepared.length, rngFor(seed, 'order', epoch)) };
    const order = epochOrder.order;
    const start = (it % itersPerEpoch) * batchSize;
    const picks = order.slice(start, start + batchSize);
    const images: Tensor[] = [];
    const texts: Tensor[] = [];
    for (const index of picks) {
      const p = prepared[index]!;
      const rng = rngFor(seed, 'item', epoch, index);
      texts.push(p.text[Math.floor(rng.uniform() * p.text.length)]!);
      const plan = transform.plan(p.geometry, rng, p.item.source);
      images.push(
        p.image
          ? plan.flip && p.image[1]
            ? p.image[1]
            : p.image[0]
          : await encodeImage(p.bytes!.data, p.bytes!.hash, plan),
      );
    }
    const shape = images[0]!.shape;
    if (images.some((t) => t.shape.join() !== shape.join()))
      throw new Error('items of one batch have different image sizes: add a crop to the pipeline');
    const B = picks.length;
    const x = new Float32Array(B * images[0]!.data.length);
    images.forEach((t, b) => x.set(t.data, b * t.data.length));
    const clip = new Float32Array(B * texts[0]!.data.length);
    texts.forEach((t, b) => clip.set(t.data, b * t.data.length));
    const noiseRng = rngFor(seed, 'noise', it);
    const r = Float32Array.from({ length: B }, () => noiseRng.uniform());
    const noise = Float32Array.from({ length: x.length }, () => noiseRng.normal());
    return {
      epoch,
      x: { data: addNoise(x, noise, r), shape: [B, ...shape] },
      r: { data: r, shape: [B] },
      clip: { data: clip, shape: [B, ...texts[0]!.shape] },
      target: { data: noise, shape: [B, ...shape] },
    };
  };

  const evalItems: EvalItem[] = (evaluationSet.length ? evaluationSet : prepared)
    .filter((p) => p.image)
    .map((p) => ({ image: p.image![0], text: p.text[0]! }));
  const draws = options.evaluateDraws ?? (cfg.report ? (cfg.report.draws ?? 4) : 0);
  // "Without adapters" means B = 0 (no LoRA contribution), also when resuming trained ones.
  const withoutAdapters = async <T>(fn: () => Promise<T>): Promise<T> => {
    const trained = prior.loraWeights();
    const zeroB = Object.fromEntries(
      Object.entries(trained)
        .filter(([k]) => k.endsWith('.lora_B.weight'))
        .map(([k, t]) => [k, { data: new Float32Array(t.data.length), shape: t.shape }]),
    );
    prior.setLoraWeights(zeroB);
    try {
      return await fn();
    } finally {
      prior.setLoraWeights(trained);
    }
  };
  const before =
    draws && evalItems.length ? await withoutAdapters(() => fixedNoiseLoss(prior, evalItems, draws, seed)) : undefined;

  // ---- loop
  let stopRequested = false;
  const onSignal = () => {
    stopRequested = true;
    log('lora-train: stopping after this step (a checkpoint will be written)');
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  const logFile = join(workDir, 'log.jsonl');
  // diffengine's VisualizationHook: sample the hook's prompts before training and every
  // `interval` epochs (or iterations), saving the image embeddings under vis_data/.
  const hooks = (cfg.custom_hooks ?? []).filter((h) => h.type === 'VisualizationHook');
  const visualize = async (label: string) => {
    for (const [i, hook] of hooks.entries()) {
      const prompts = (Array.isArray(hook.prompt) ? hook.prompt : [hook.prompt]) as string[];
      if (!prompts.every((p) => typeof p === 'string'))
        throw new ConfigError(`${file}: custom_hooks[${i}].prompt must be a string or a list of strings`);
      const settings = {
        height: (hook.height as number) ?? 768,
        width: (hook.width as number) ?? 768,
        guidance: (hook.guidance as number) ?? 4,
        seed,
      };
      const { embeddings } = await generateEmbeddings(prior, tokenizer, textEncoder, { prompts, ...settings });
      saveEmbeddings(
        join(workDir, 'vis_data', `${label}${hooks.length > 1 ? `_hook${i}` : ''}.safetensors`),
        embeddings,
        prompts,
        settings,
      );
    }
  };
  const visEvery = (hook: Record<string, unknown>) =>
    ((hook.interval as number) ?? 1) * ((hook.by_epoch ?? true) ? itersPerEpoch : 1);
  if (hooks.length && iteration === 0) await visualize('iter_0');
  const bar = new Progress('train', totalIters - iteration);
  const start = Date.now();
  let runIters = 0;
  let next = iteration < totalIters ? prepareBatch(iteration) : undefined;
  try {
    while (iteration < totalIters && next) {
      const batch = await next;
      const micro = iteration % accumulate;
      // The next batch is prepared while the native step runs off the JS thread.
      const stepPromise = prior.step(batch.x, batch.r, batch.clip, batch.target, {
        seed: Number.parseInt(sha256(`${seed}:dropout:${iteration}`).slice(0, 12), 16),
        accumulate: micro !== 0,
        lossScale: scaler.scale,
      });
      next = iteration + 1 < totalIters ? prepareBatch(iteration + 1) : undefined;
      const loss = await stepPromise;
      let lr =
        (opt.lr ?? 1e-4) *
        lrFactor((sched.type ?? 'constant') as ScheduleName, optimizerSteps, totalOptSteps, sched.warmup_iters ?? 0);
      let gradNorm: number | undefined;
      if (micro === accumulate - 1 || iteration + 1 === totalIters) {
        const lossScale = scaler.scale;
        gradNorm = await prior.optimizerStep(
          {
            lr,
            beta1: opt.betas?.[0],
            beta2: opt.betas?.[1],
            eps: opt.eps,
            weightDecay: opt.weight_decay ?? 1e-2,
            maxNorm: optim.clip_grad?.max_norm ?? 0,
            lossScale,
          },
          optimizerSteps - skippedSteps + 1,
        );
        // As torch's GradScaler: an overflowing step is skipped (AdamW's step count with it) and
        // the scale halves; the learning-rate schedule moves on.
        if (scaler.update(gradNorm)) {
          skippedSteps++;
          log(
            `lora-train: fp16 gradients overflowed at iteration ${iteration + 1}: step skipped, loss scale ${lossScale} -> ${scaler.scale}`,
          );
        }
        optimizerSteps++;
      } else lr = Number.NaN;
      iteration++;
      runIters++;
      losses.push(loss);
      appendFileSync(
        logFile,
        `${JSON.stringify({ step: iteration, epoch: batch.epoch, loss, lr: Number.isNaN(lr) ? null : lr, grad_norm: gradNorm === undefined || !Number.isFinite(gradNorm) ? null : gradNorm, seconds: (Date.now() - start) / 1000 })}\n`,
      );
      bar.tick(1, `loss ${loss.toFixed(4)} lr ${Number.isNaN(lr) ? '-' : lr.toExponential(2)}`);
      if (!process.stderr.isTTY && iteration % logInterval === 0)
        log(`iter ${iteration}/${totalIters} epoch ${batch.epoch} loss ${loss.toFixed(5)}`);
      // A checkpoint holds no half-accumulated gradients: stop at the end of an optimizer step.
      const atBoundary = iteration % accumulate === 0;
      const stopNow =
        atBoundary && (stopRequested || (options.stopAfter !== undefined && runIters >= options.stopAfter));
      if ((atBoundary && iteration % ckptEvery === 0) || iteration === totalIters || stopNow) saveCheckpoint();
      if (hooks.length && (iteration % visEvery(hooks[0]!) === 0 || iteration === totalIters))
        await visualize(`iter_${iteration}`);
      if (stopNow) break;
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  if (iteration === 0) prior.saveLora(workDir);
  const evaluation =
    before !== undefined
      ? {
          before,
          after: await fixedNoiseLoss(prior, evalItems, draws, seed),
          items: evalItems.length,
          draws,
          heldOut: evaluationSet.length > 0,
        }
      : undefined;
  if (cfg.report) await writeReport(workDir, losses, evaluation, options.config.name);
  return {
    workDir,
    loraFile: join(workDir, 'pytorch_lora_weights.safetensors'),
    steps: iteration,
    losses,
    skipped,
    interrupted: stopRequested,
    evaluation,
  };
}
