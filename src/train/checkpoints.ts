// Checkpoints: work_dir/checkpoints/iter_N, each written whole or not at all, holding the
// adapters and AdamW's moments (training_state.safetensors), the counters, scaler, losses and
// resolved config (state.json), and the adapters in diffusers' format. Resuming restores all
// of it, so the run continues exactly as an uninterrupted one.
import { existsSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import type { LoraTrainConfig } from '../config/schema.js';
import { NonFiniteError, describeNonFinite } from '../core/finite.js';
import type { Tensor } from '../core/tensor.js';
import { nullRecord } from '../core/untrusted.js';
import { writeFileDurably, writeFolderAtomically } from '../io/atomic.js';
import { getTensor, readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { Prior } from '../models/prior.js';
import { GradScaler, type GradScalerState } from './grad-scaler.js';

/** Where a run stands: what a checkpoint records besides the tensors. */
export interface TrainingState {
  /** Iterations done. */
  iteration: number;
  /** Optimizer steps done, skipped ones included (the LR schedule counts them). */
  optimizerSteps: number;
  /** Optimizer steps skipped for a non-finite loss or gradient (AdamW's step count excludes them). */
  skippedSteps: number;
  /** The skipped steps since the last one taken. */
  skippedInARow: number;
  scaler: GradScaler;
  /** The loss of every iteration so far (NaN where it was not finite). */
  losses: number[];
}

interface StateFile {
  iteration: number;
  optimizerSteps: number;
  skippedSteps?: number;
  skippedInARow?: number;
  scaler?: GradScalerState;
  seed: number;
  config: LoraTrainConfig;
  /** JSON has no NaN: a non-finite loss is null. */
  losses: (number | null)[];
}

export function freshState(prior: Prior): TrainingState {
  return {
    iteration: 0,
    optimizerSteps: 0,
    skippedSteps: 0,
    skippedInARow: 0,
    scaler: new GradScaler(prior.precision === 'fp16'),
    losses: [],
  };
}

/** Checkpoint folders of a work dir, oldest first. */
export function listCheckpoints(workDir: string): string[] {
  const dir = join(workDir, 'checkpoints');
  if (!existsSync(dir)) return [];
  return readdirSync(dir)
    .filter((d) => /^iter_\d+$/.test(d) && existsSync(join(dir, d, 'state.json')))
    .sort((a, b) => Number(a.slice(5)) - Number(b.slice(5)))
    .map((d) => join(dir, d));
}

/** Writes checkpoints/iter_N, refreshes the work dir's LoRA file and keeps the newest
 * max_keep_ckpts. Adapters holding NaN or Inf are refused (NonFiniteError) before anything is
 * written, so the previous checkpoint and LoRA file stay. */
export async function saveCheckpoint(prior: Prior, state: TrainingState, config: LoraTrainConfig): Promise<void> {
  const { work_dir: workDir, default_hooks: hooks } = config;
  await writeFolderAtomically(join(workDir, 'checkpoints', `iter_${state.iteration}`), (dir) => {
    const tensors: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(prior.loraWeights())) tensors[`lora.${k}`] = v;
    if (hooks.checkpoint.save_optimizer)
      for (const [k, v] of Object.entries(prior.optimizerState())) tensors[`optimizer.${k}`] = v;
    writeSafetensors(join(dir, 'training_state.safetensors'), tensors);
    prior.saveLora(dir);
    const { iteration, optimizerSteps, skippedSteps, skippedInARow, scaler, losses } = state;
    const file: StateFile = {
      iteration,
      optimizerSteps,
      skippedSteps,
      skippedInARow,
      scaler: scaler.toJSON(),
      seed: config.seed,
      config,
      losses,
    };
    writeFileDurably(join(dir, 'state.json'), JSON.stringify(file));
  });
  prior.saveLora(workDir);
  for (const old of listCheckpoints(workDir).slice(0, -hooks.checkpoint.max_keep_ckpts))
    rmSync(old, { recursive: true, force: true });
}

/** A checkpoint read whole and checked, before any of it reaches the prior. */
interface ReadCheckpoint {
  file: StateFile;
  weights: Record<string, Tensor>;
  moments: Record<string, Tensor>;
}

const isCount = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;

/** What makes `f` not a state file, if anything. */
function stateProblem(value: unknown): string | undefined {
  if (typeof value !== 'object' || value === null || Array.isArray(value)) return 'not a JSON object';
  const f = value as Partial<StateFile>;
  if (!isCount(f.iteration) || !isCount(f.optimizerSteps)) return 'iteration and optimizerSteps must be integers >= 0';
  if (!Array.isArray(f.losses) || f.losses.length !== f.iteration)
    return `losses must list one loss per iteration (${f.iteration})`;
  if (!f.losses.every((l) => l === null || typeof l === 'number')) return 'losses must be numbers';
  if (![f.skippedSteps, f.skippedInARow].every((n) => n === undefined || isCount(n)))
    return 'skippedSteps and skippedInARow must be integers >= 0';
  if (f.scaler !== undefined && !(typeof f.scaler?.scale === 'number' && isCount(f.scaler.growthTracker)))
    return 'scaler must be { scale, growthTracker }';
  return undefined;
}

/** state.json, every field checked; errors name the file. */
function readStateFile(path: string): StateFile {
  let file: unknown;
  try {
    file = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new Error(`${path}: cannot read the checkpoint's state (${(e as Error).message})`);
  }
  const problem = stateProblem(file);
  if (problem) throw new Error(`${path}: not a lora-train checkpoint state: ${problem}`);
  return file as StateFile;
}

function readCheckpoint(dir: string): ReadCheckpoint {
  const file = readStateFile(join(dir, 'state.json'));
  const path = join(dir, 'training_state.safetensors');
  const tensors = readSafetensors(path);
  const weights = nullRecord<Tensor>();
  const moments = nullRecord<Tensor>();
  for (const name of tensors.entries.keys()) {
    const t = getTensor(tensors, name);
    const problem = describeNonFinite(name, t.data);
    if (problem) throw new NonFiniteError(`${path}: ${problem}`, name);
    (name.startsWith('optimizer.') ? moments : weights)[name.replace(/^(optimizer|lora)\./, '')] = t;
  }
  return { file, weights, moments };
}

/** Restores a checkpoint's adapters, moments and counters into the prior. Everything is read
 * and checked first, so a damaged checkpoint changes nothing. */
export function loadCheckpoint(dir: string, prior: Prior, log: (line: string) => void): TrainingState {
  const { file, weights, moments } = readCheckpoint(dir);
  checkSameAdapters(dir, file, prior);
  const withoutMoments = Object.keys(moments).length === 0;
  const missing = missingTensors(prior, weights, withoutMoments ? undefined : moments);
  if (withoutMoments && file.config?.default_hooks?.checkpoint?.save_optimizer !== false)
    missing.push("every AdamW moment (the run saved them: save_optimizer wasn't false)");
  if (missing.length)
    throw new Error(
      `${join(dir, 'training_state.safetensors')}: the checkpoint lacks tensors of these adapters:\n  - ${missing.join('\n  - ')}`,
    );
  prior.setLoraWeights(weights);
  prior.setOptimizerState(moments);
  if (withoutMoments)
    log(`lora-train: ${dir} holds no AdamW moments (save_optimizer: false): they start again from zero`);
  return {
    iteration: file.iteration,
    optimizerSteps: file.optimizerSteps,
    skippedSteps: file.skippedSteps ?? 0,
    skippedInARow: file.skippedInARow ?? 0,
    scaler: new GradScaler(prior.precision === 'fp16', file.scaler),
    losses: file.losses.map((l) => l ?? NaN),
  };
}

/** A checkpoint sound in itself that belongs to other adapters than the config's: not damage,
 * so resume 'auto' does not pass over it to older ones (which would differ the same way). */
export class CheckpointMismatchError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'CheckpointMismatchError';
  }
}

/** Refuses a checkpoint whose adapters (rank, alpha, target modules) the config changed. */
function checkSameAdapters(dir: string, file: StateFile, prior: Prior): void {
  const saved = file.config?.model?.prior_lora_config;
  const now = prior.loraState;
  if (!saved || !now) return;
  const targets = (list: readonly string[]) => JSON.stringify([...list].sort());
  const differences = [
    saved.r !== now.rank && `r ${saved.r} there, ${now.rank} now`,
    saved.lora_alpha !== now.alpha && `lora_alpha ${saved.lora_alpha} there, ${now.alpha} now`,
    targets(saved.target_modules) !== targets(now.targets) &&
      `target_modules ${targets(saved.target_modules)} there, ${targets(now.targets)} now`,
  ].filter((d): d is string => typeof d === 'string');
  if (differences.length)
    throw new CheckpointMismatchError(
      `${dir}: the checkpoint was trained with other adapters than model.prior_lora_config gives (${differences.join('; ')}); resume with the config it was trained with, or start another --work-dir`,
    );
}

/** The adapter tensors (and moments, when given) the prior has and the checkpoint lacks. */
function missingTensors(
  prior: Prior,
  weights: Record<string, Tensor>,
  moments: Record<string, Tensor> | undefined,
): string[] {
  const names = prior.loraParameterNames();
  const wanted = moments ? names.flatMap((n) => [n, `${n}.exp_avg`, `${n}.exp_avg_sq`]) : names;
  return wanted.filter((n) => !(n in weights) && !(moments && n in moments));
}

/** The state a run starts from: the checkpoint `resume` names, or with 'auto' the work dir's
 * newest that loads (a damaged one is passed over with a warning), or a fresh one. */
export function startingState(config: LoraTrainConfig, prior: Prior, log: (line: string) => void): TrainingState {
  const { resume } = config;
  if (resume === undefined) {
    const earlier = listCheckpoints(config.work_dir).at(-1);
    // A fresh run would interleave its checkpoints with these, and keeping the newest few
    // could delete its own.
    if (earlier)
      throw new Error(
        `${config.work_dir} holds checkpoints of an earlier run (the newest: ${earlier}): pass --resume auto to continue it, ` +
          `choose another --work-dir, or remove ${join(config.work_dir, 'checkpoints')} to start over`,
      );
    return freshState(prior);
  }
  if (resume !== 'auto') {
    if (!existsSync(join(resume, 'state.json')))
      throw new Error(`resume '${resume}': no checkpoint there (no ${join(resume, 'state.json')})`);
    return resumed(resume, loadCheckpoint(resume, prior, log), log);
  }
  const candidates = listCheckpoints(config.work_dir).reverse();
  if (candidates.length === 0) {
    log(`lora-train: resume 'auto' found no checkpoint in ${config.work_dir}; starting fresh`);
    return freshState(prior);
  }
  const failures: string[] = [];
  for (const dir of candidates) {
    try {
      return resumed(dir, loadCheckpoint(dir, prior, log), log);
    } catch (e) {
      if (e instanceof CheckpointMismatchError) throw e;
      failures.push((e as Error).message);
      log(`lora-train: warning: checkpoint ${dir} is damaged, so it is passed over: ${(e as Error).message}`);
    }
  }
  throw new Error(
    `resume 'auto': no checkpoint in ${config.work_dir} loads:\n  - ${failures.join('\n  - ')}\nRemove them (or the resume setting) to start fresh.`,
  );
}

function resumed(dir: string, state: TrainingState, log: (line: string) => void): TrainingState {
  log(`lora-train: resumed from ${dir} at iteration ${state.iteration}`);
  return state;
}
