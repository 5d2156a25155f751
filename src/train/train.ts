// The training job (docs/wuerstchen-prior.md §4): the frozen encoders turn every item into
// text and image embeddings once; then each iteration noises a batch of image embeddings at
// random timesteps, the prior predicts the noise, and the MSE's gradients train its LoRA
// adapters with AdamW. Every random draw comes from (seed, epoch, item) or (seed, iteration),
// so a resumed run draws exactly what an uninterrupted one would. The stages live beside this
// file (plan, optimizer, checkpoints, log, hooks, evaluate, report) and in data/ and models/.
import { join } from 'node:path';
import type { LoadedConfig } from '../config/load.js';
import type { LoraTrainConfig } from '../config/schema.js';
import { embeddingCacheDir } from '../core/paths.js';
import { StartupTimes } from './startup.js';
import { nonFinite } from '../core/finite.js';
import { nativeSeed } from '../core/rng.js';
import { type Batch, Batches } from '../data/batches.js';
import { loadTrainingData } from '../data/from-config.js';
import { fetchForConfig } from '../hub/job.js';
import { loadPictureModels, loadTrainingModels } from '../models/from-config.js';
import { DIFFUSERS_LORA_FILE, type Prior } from '../models/prior.js';
import { type WorldPlace, worldFromEnv } from '../parallel/env.js';
import { ProcessGroup } from '../parallel/group.js';
import { type TrainingState, freshState, saveCheckpoint, startingState } from './checkpoints.js';
import { AdapterEvaluation } from './evaluate.js';
import { Visualization, activeHooks } from './hooks.js';
import { TrainingLog } from './log.js';
import { AdapterOptimizer, DivergedError } from './optimizer.js';
import { TrainingPlan } from './plan.js';
import { type Evaluation, writeReport } from './report.js';
import { agree, shareStartingState } from './parallel.js';
import { StopRequest } from './stop.js';
import { WorkDirLock, removeLeftovers } from './work-dir.js';

export interface TrainOptions {
  config: LoadedConfig;
  /** Where human-readable lines go (default stderr). */
  log?: (line: string) => void;
  /** The embedding cache's folder (default $LORA_TRAIN_CACHE, else ~/.cache/lora-train/embeddings). */
  cacheDir?: string;
  /** Stop after this many iterations of this run, at an optimizer step's end (tests). */
  stopAfter?: number;
  /** This process's place in a data-parallel run (default: from the environment, as torchrun
   * and SLURM set it); null for one process whatever the environment says. */
  world?: WorldPlace | null;
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
  /** The signal that stopped it. */
  signal?: NodeJS.Signals;
  /** Fixed-noise denoising loss without and with the trained adapters (config.report). */
  evaluation?: Evaluation;
}

export async function train(options: TrainOptions): Promise<TrainResult> {
  const { config } = options.config;
  const log = options.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  const place = options.world === undefined ? worldFromEnv() : (options.world ?? undefined);
  const group = place ? await ProcessGroup.join(place, config.device) : undefined;
  try {
    // Only rank 0 writes to the work dir; the others keep to themselves.
    if (group && !group.isMain) return await trainIn(options, () => undefined, group);
    if (group)
      log(
        `lora-train: data parallel over ${group.size} processes (global batch ${group.size * config.train_dataloader.batch_size}); gradients summed by ${group.gradientEngine === 'nccl' ? 'NCCL' : 'Gloo'}`,
      );
    const lock = WorkDirLock.acquire(config.work_dir, log);
    try {
      removeLeftovers(config.work_dir, log);
      return await trainIn(options, log, group);
    } finally {
      lock.release();
    }
  } finally {
    group?.close();
  }
}

async function trainIn(options: TrainOptions, log: (line: string) => void, group?: ProcessGroup): Promise<TrainResult> {
  const { config } = options.config;
  const main = !group || group.isMain;
  const startup = new StartupTimes();
  // Every process fetches what the config names; the locks beside the blobs let one download
  // each file while the others wait for it.
  const pictures = !!config.model.decoder_model && activeHooks(config).length > 0;
  await fetchForConfig(options.config, main ? log : () => undefined, false, pictures);
  startup.mark('downloads');
  const models = await loadTrainingModels(options.config, log);
  startup.mark('weights');
  const { prior } = models;
  const prepare = () =>
    loadTrainingData(options.config, models, { cacheDir: options.cacheDir ?? embeddingCacheDir(), log });
  // One process per machine fills the embedding cache; the others then read it.
  const data = group ? await group.localMainFirst('data', prepare) : await prepare();
  startup.mark('embeddings');
  const { batch_size: batchSize, sampler } = config.train_dataloader;
  const batches = new Batches(data.train, data.embedder, {
    ...{ batchSize, seed: config.seed, shuffle: sampler.shuffle },
    ...{ rank: group?.rank ?? 0, world: group?.size ?? 1 },
  });
  const plan = new TrainingPlan(config, batches.itersPerEpoch);
  const own = main ? startingState(config, prior, log) : freshState(prior);
  const state = group ? await shareStartingState(group, prior, own) : own;
  const evaluation = main ? await AdapterEvaluation.begin(prior, data, config) : undefined;
  const stop = new StopRequest(log);
  try {
    const run = {
      ...{ config, plan, state, batches, prior, log, stop, group, startup },
      stopAfter: options.stopAfter ?? Infinity,
    };
    const drawing = pictures ? () => loadPictureModels(options.config, prior) : undefined;
    await iterate(run, main ? new Visualization(models, config, plan, log, drawing) : undefined);
  } finally {
    stop.dispose();
  }
  if (main && state.iteration === 0) prior.saveLora(config.work_dir);
  const result = await evaluation?.finish();
  if (main && config.report) await writeReport(config.work_dir, state.losses, result, options.config.name);
  return {
    workDir: config.work_dir,
    loraFile: join(config.work_dir, DIFFUSERS_LORA_FILE),
    steps: state.iteration,
    losses: state.losses,
    skipped: data.skipped,
    interrupted: stop.stopRequested,
    signal: stop.signal,
    evaluation: result,
  };
}

interface Run {
  config: LoraTrainConfig;
  plan: TrainingPlan;
  state: TrainingState;
  batches: Batches;
  prior: Prior;
  log: (line: string) => void;
  stop: StopRequest;
  /** The data-parallel group, if any: only its rank 0 logs, checkpoints and samples. */
  group?: ProcessGroup;
  /** Iterations of this run after which it stops at an optimizer step's end. */
  stopAfter: number;
  /** Until the first step is logged: the run's start-up times. */
  startup?: StartupTimes;
}

/** The iterations from the state's to the plan's end (or a stop request), with the optimizer,
 * log, checkpoints and samples each is due. */
async function iterate(run: Run, visualization?: Visualization): Promise<void> {
  const { config, plan, state, batches, prior, group } = run;
  const optimizer = new AdapterOptimizer(prior, config, plan, state, run.log, group);
  if (state.iteration === 0) await visualization?.after(0);
  const trainingLog =
    group && !group.isMain ? undefined : new TrainingLog(config.work_dir, plan, state.iteration, run.log);
  const firstIteration = state.iteration;
  let next = state.iteration < plan.totalIters ? batches.get(state.iteration) : undefined;
  while (next) {
    const batch = await next;
    const it = state.iteration + 1;
    const step = prior.step(batch.x, batch.r, batch.clip, batch.target, {
      seed: dropoutSeed(run, it),
      accumulate: optimizer.accumulates(it),
      lossScale: optimizer.lossScale,
      sync: optimizer.gradientSync(it),
    });
    // The next batch is prepared while the native step runs off the JS thread.
    next = it < plan.totalIters ? batches.get(it) : undefined;
    const { loss, stop } = await consensus(run, await step);
    reportStartup(run);
    state.iteration = it;
    state.losses.push(loss);
    const record = await optimizer.afterIteration(it, loss);
    trainingLog?.record(it, batch.epoch, loss, record);
    optimizer.checkConverging(it);
    const stopNow = plan.atStepBoundary(it) && (stop || it - firstIteration >= run.stopAfter);
    if (visualization) await saveDue(run, it, loss, batch, stopNow, visualization);
    if (stopNow) break;
  }
}

/** Logs the start-up times once, after the run's first step. */
function reportStartup(run: Run): void {
  if (!run.startup) return;
  run.startup.mark('first step');
  run.log(run.startup.report());
  run.startup = undefined;
}

/** The iteration's loss and stop request as every rank sees them: the mean of the ranks' losses
 * and whether any was asked to stop (one process: its own). */
async function consensus(run: Run, loss: number): Promise<{ loss: number; stop: boolean }> {
  const stop = run.stop.stopRequested;
  return run.group ? agree(run.group, loss, stop) : { loss, stop };
}

/** Dropout masks of iteration `it`: one process keeps the seed it always had; ranks draw apart. */
function dropoutSeed(run: Run, it: number): number {
  const { seed } = run.config;
  return run.group ? nativeSeed(seed, 'dropout', it - 1, 'rank', run.group.rank) : nativeSeed(seed, 'dropout', it - 1);
}

/** Rank 0's writing after iteration `it`: the checkpoint and samples due. A run that ends on
 * adapters that give NaN or Inf fails rather than report a LoRA it did not write. */
async function saveDue(
  run: Run,
  it: number,
  loss: number,
  batch: Batch,
  stopNow: boolean,
  visualization: Visualization,
) {
  const { plan, config } = run;
  const lastOne = stopNow || it === plan.totalIters;
  if ((plan.checkpointDue(it) || stopNow) && !(await checkpoint(run, loss, batch)) && lastOne)
    throw new DivergedError(
      `lora-train: the run ended at iteration ${it} with adapters that give NaN or Inf, so neither a checkpoint nor ${DIFFUSERS_LORA_FILE} was written for them ` +
        `(${join(config.work_dir, DIFFUSERS_LORA_FILE)} holds the last good adapters, if any). Lower optim_wrapper.optimizer.lr or set optim_wrapper.clip_grad.`,
    );
  await visualization.after(it);
}

/** A checkpoint of the current adapters, unless they are known to be bad: the iteration's loss
 * was not finite, or the step just taken made their output on its batch non-finite (a diverging
 * step can leave finite weights of 1e29 behind). The last good checkpoint and LoRA file stay. */
async function checkpoint(run: Run, loss: number, batch: Batch): Promise<boolean> {
  const problem = Number.isFinite(loss) ? await outputProblem(run.prior, batch) : `its loss was ${loss}`;
  if (problem) {
    run.log(
      `lora-train: warning: no checkpoint at iteration ${run.state.iteration}: ${problem}; the last checkpoint and LoRA file stay`,
    );
    return false;
  }
  await saveCheckpoint(run.prior, run.state, run.config);
  return true;
}

async function outputProblem(prior: Prior, batch: Batch): Promise<string | undefined> {
  const { data } = await prior.forward(batch.x, batch.r, batch.clip);
  const { count } = nonFinite(data);
  return count
    ? `after its optimizer step the prior's output on its batch holds ${count} NaN or Inf values`
    : undefined;
}
