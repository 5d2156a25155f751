// The training job (docs/wuerstchen-prior.md §4): the frozen encoders turn every item into
// text and image embeddings once; then each iteration noises a batch of image embeddings at
// random timesteps, the prior predicts the noise, and the MSE's gradients train its LoRA
// adapters with AdamW. Every random draw comes from (seed, epoch, item) or (seed, iteration),
// so a resumed run draws exactly what an uninterrupted one would. The stages live beside this
// file (plan, optimizer, checkpoints, log, hooks, evaluate, report) and in data/ and models/.
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import { embeddingCacheDir } from '../core/paths.js';
import { nativeSeed } from '../core/rng.js';
import { Batches } from '../data/batches.js';
import { loadTrainingData } from '../data/from-config.js';
import { loadTrainingModels } from '../models/from-config.js';
import { DIFFUSERS_LORA_FILE } from '../models/prior.js';
import { saveCheckpoint, startingState } from './checkpoints.js';
import { AdapterEvaluation } from './evaluate.js';
import { Visualization } from './hooks.js';
import { TrainingLog } from './log.js';
import { AdapterOptimizer } from './optimizer.js';
import { TrainingPlan } from './plan.js';
import { type Evaluation, writeReport } from './report.js';
import { StopRequest } from './stop.js';

export interface TrainOptions {
  config: LoadedConfig;
  /** Where human-readable lines go (default stderr). */
  log?: (line: string) => void;
  /** The embedding cache's folder (default $LORA_TRAIN_CACHE, else ~/.cache/lora-train/embeddings). */
  cacheDir?: string;
  /** Stop after this many iterations of this run, at an optimizer step's end (tests). */
  stopAfter?: number;
}

export interface TrainResult {
  workDir: string;
  loraFile: string;
  steps: number;
  losses: number[];
  /** Items whose image could not be read. */
  skipped: string[];
  /** Stopped by SIGINT/SIGTERM before the end. */
  interrupted: boolean;
  /** Fixed-noise denoising loss without and with the trained adapters (config.report). */
  evaluation?: Evaluation;
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const { config } = options.config;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const models = await loadTrainingModels(options.config, log);
  const { prior } = models;
  const data = await loadTrainingData(options.config, models, {
    cacheDir: options.cacheDir ?? embeddingCacheDir(),
    log,
  });

  const { batch_size: batchSize, sampler } = config.train_dataloader;
  const batches = new Batches(data.train, data.embedder, { batchSize, seed: config.seed, shuffle: sampler.shuffle });
  const plan = new TrainingPlan(config, batches.itersPerEpoch);
  const state = startingState(config, prior, log);
  const optimizer = new AdapterOptimizer(prior, config, plan, state, log);
  const evaluation = await AdapterEvaluation.begin(prior, data, config);
  const visualization = new Visualization(models, config, plan);
  const stop = new StopRequest(log);
  try {
    if (state.iteration === 0) await visualization.after(0);
    const trainingLog = new TrainingLog(config.work_dir, plan, state.iteration, log);
    const firstIteration = state.iteration;
    let next = state.iteration < plan.totalIters ? batches.get(state.iteration) : undefined;
    while (next) {
      const batch = await next;
      const it = state.iteration + 1;
      const step = prior.step(batch.x, batch.r, batch.clip, batch.target, {
        seed: nativeSeed(config.seed, 'dropout', it - 1),
        accumulate: optimizer.accumulates(it),
        lossScale: optimizer.lossScale,
      });
      // The next batch is prepared while the native step runs off the JS thread.
      next = it < plan.totalIters ? batches.get(it) : undefined;
      const loss = await step;
      const record = await optimizer.afterIteration(it);
      state.iteration = it;
      state.losses.push(loss);
      trainingLog.record(it, batch.epoch, loss, record);
      const stopNow =
        plan.atStepBoundary(it) && (stop.stopRequested || it - firstIteration >= (options.stopAfter ?? Infinity));
      if (plan.checkpointDue(it) || stopNow) await saveCheckpoint(prior, state, config);
      await visualization.after(it);
      if (stopNow) break;
    }
  } finally {
    stop.dispose();
  }
  if (state.iteration === 0) prior.saveLora(config.work_dir);
  const result = await evaluation?.finish();
  if (config.report) await writeReport(config.work_dir, state.losses, result, options.config.name);
  return {
    workDir: config.work_dir,
    loraFile: join(config.work_dir, DIFFUSERS_LORA_FILE),
    steps: state.iteration,
    losses: state.losses,
    skipped: data.skipped,
    interrupted: stop.stopRequested,
    evaluation: result,
  };
}
