// Checkpoints: work_dir/checkpoints/iter_N, each written whole or not at all, holding the
// adapters and AdamW's moments (training_state.safetensors), the counters, scaler, losses and
// resolved config (state.json), and the adapters in diffusers' format. Resuming restores all
// of it, so the run continues exactly as an uninterrupted one.
import { existsSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { LoraTrainConfig } from '../config/schema.js';
import type { Tensor } from '../core/tensor.js';
import { nullRecord } from '../core/untrusted.js';
import { writeFolderAtomically } from '../io/atomic.js';
import { getTensor, readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { Prior } from '../models/prior.js';
import { GradScaler, type GradScalerState } from './grad-scaler.js';

/** Where a run stands: what a checkpoint records besides the tensors. */
export interface TrainingState {
  /** Iterations done. */
  iteration: number;
  /** Optimizer steps done, skipped ones included (the LR schedule counts them). */
  optimizerSteps: number;
  /** Optimizer steps skipped for fp16 overflow (AdamW's own step count excludes them). */
  skippedSteps: number;
  scaler: GradScaler;
  /** The loss of every iteration so far. */
  losses: number[];
}

interface StateFile {
  iteration: number;
  optimizerSteps: number;
  skippedSteps?: number;
  scaler?: GradScalerState;
  seed: number;
  config: LoraTrainConfig;
  losses: number[];
}

export function freshState(prior: Prior): TrainingState {
  return {
    iteration: 0,
    optimizerSteps: 0,
    skippedSteps: 0,
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
 * max_keep_ckpts. */
export async function saveCheckpoint(prior: Prior, state: TrainingState, config: LoraTrainConfig): Promise<void> {
  const { work_dir: workDir, default_hooks: hooks } = config;
  await writeFolderAtomically(join(workDir, 'checkpoints', `iter_${state.iteration}`), (dir) => {
    const tensors: Record<string, Tensor> = {};
    for (const [k, v] of Object.entries(prior.loraWeights())) tensors[`lora.${k}`] = v;
    if (hooks.checkpoint.save_optimizer)
      for (const [k, v] of Object.entries(prior.optimizerState())) tensors[`optimizer.${k}`] = v;
    writeSafetensors(join(dir, 'training_state.safetensors'), tensors);
    prior.saveLora(dir);
    const { iteration, optimizerSteps, skippedSteps, scaler, losses } = state;
    const file: StateFile = {
      iteration,
      optimizerSteps,
      skippedSteps,
      scaler: scaler.toJSON(),
      seed: config.seed,
      config,
      losses,
    };
    writeFileSync(join(dir, 'state.json'), JSON.stringify(file));
  });
  prior.saveLora(workDir);
  for (const old of listCheckpoints(workDir).slice(0, -hooks.checkpoint.max_keep_ckpts))
    rmSync(old, { recursive: true, force: true });
}

/** Restores a checkpoint's adapters, moments and counters into the prior. */
export function loadCheckpoint(dir: string, prior: Prior, log: (line: string) => void): TrainingState {
  const file = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as StateFile;
  const tensors = readSafetensors(join(dir, 'training_state.safetensors'));
  const weights = nullRecord<Tensor>();
  const moments = nullRecord<Tensor>();
  for (const name of tensors.entries.keys())
    (name.startsWith('optimizer.') ? moments : weights)[name.replace(/^(optimizer|lora)\./, '')] = getTensor(
      tensors,
      name,
    );
  prior.setLoraWeights(weights);
  prior.setOptimizerState(moments);
  if (Object.keys(moments).length === 0)
    log(`lora-train: ${dir} holds no AdamW moments (save_optimizer: false): they start again from zero`);
  return {
    iteration: file.iteration,
    optimizerSteps: file.optimizerSteps,
    skippedSteps: file.skippedSteps ?? 0,
    scaler: new GradScaler(prior.precision === 'fp16', file.scaler),
    losses: file.losses,
  };
}

/** The state a run starts from: the checkpoint `resume` names ('auto': the work dir's newest,
 * if any), or a fresh one. */
export function startingState(config: LoraTrainConfig, prior: Prior, log: (line: string) => void): TrainingState {
  const { resume } = config;
  if (resume === undefined) return freshState(prior);
  const from = resume === 'auto' ? listCheckpoints(config.work_dir).at(-1) : resume;
  if (!from) {
    log(`lora-train: resume 'auto' found no checkpoint in ${config.work_dir}; starting fresh`);
    return freshState(prior);
  }
  if (!existsSync(join(from, 'state.json')))
    throw new Error(`resume '${resume}': no checkpoint there (no ${join(from, 'state.json')})`);
  const state = loadCheckpoint(from, prior, log);
  log(`lora-train: resumed from ${from} at iteration ${state.iteration}`);
  return state;
}
