// How long a run is and when things happen in it, from the config and an epoch's iterations:
// iterations per epoch and in all, optimizer steps (one per accumulative_counts iterations),
// checkpoints and plain log lines. Iterations count from 1 here, as the log and checkpoints do.
import type { LoraTrainConfig } from '../config/schema.js';

export class TrainingPlan {
  readonly itersPerEpoch: number;
  readonly totalIters: number;
  readonly accumulate: number;
  readonly totalOptimizerSteps: number;
  private readonly checkpointEvery: number;

  constructor(
    private readonly config: LoraTrainConfig,
    itersPerEpoch: number,
  ) {
    const { train_cfg: loop, default_hooks: hooks } = config;
    this.itersPerEpoch = itersPerEpoch;
    this.totalIters = loop.max_iters ?? loop.max_epochs * this.itersPerEpoch;
    this.accumulate = config.optim_wrapper.accumulative_counts;
    this.totalOptimizerSteps = Math.ceil(this.totalIters / this.accumulate);
    this.checkpointEvery = this.iterations(hooks.checkpoint.interval, hooks.checkpoint.by_epoch);
  }

  /** `interval` epochs or iterations, in iterations. */
  iterations(interval: number, byEpoch: boolean): number {
    return interval * (byEpoch ? this.itersPerEpoch : 1);
  }

  /** Whether iteration `it` is the last of an optimizer step (or of the run). */
  endsOptimizerStep(it: number): boolean {
    return it % this.accumulate === 0 || it === this.totalIters;
  }

  /** Whether a checkpoint may be taken after `it`: no gradients are half accumulated. */
  atStepBoundary(it: number): boolean {
    return it % this.accumulate === 0;
  }

  /** Whether the checkpoint hook saves after iteration `it`. */
  checkpointDue(it: number): boolean {
    return (this.atStepBoundary(it) && it % this.checkpointEvery === 0) || it === this.totalIters;
  }

  /** Whether `it` gets a plain log line (the logger hook's interval). */
  logLineDue(it: number): boolean {
    return it % this.config.default_hooks.logger.interval === 0;
  }
}
