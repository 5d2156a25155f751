// The adapters' optimizer as diffengine and diffusers run it: AdamW with global grad-norm
// clipping once per accumulative_counts iterations, the learning rate from diffusers' schedules,
// and in fp16 torch's dynamic loss scaling. A step whose loss or gradient is not finite is
// skipped in every precision, as torch's GradScaler skips an fp16 overflow: the adapters and
// AdamW's step count stay, the LR schedule moves on, and in fp16 the scale halves. Too many
// skips in a row mean the run has diverged, and it stops before writing anything worse.
import type { LoraTrainConfig } from '../config/schema.js';
import type { AdamWOptions, GradientSync, Prior } from '../models/prior.js';
import type { ProcessGroup } from '../parallel/group.js';
import type { TrainingState } from './checkpoints.js';
import type { TrainingPlan } from './plan.js';
import { lrFactor } from './schedule.js';

export interface OptimizerRecord {
  /** The learning rate of the step taken after this iteration, else null. */
  lr: number | null;
  /** The gradient norm before clipping (null: no step, or not finite). */
  gradNorm: number | null;
}

/** A run stopped because its loss or gradients stayed non-finite. */
export class DivergedError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DivergedError';
  }
}

export class AdapterOptimizer {
  /** Whether every loss of the current accumulation round was finite. */
  private roundFinite = true;

  constructor(
    private readonly prior: Prior,
    private readonly config: LoraTrainConfig,
    private readonly plan: TrainingPlan,
    private readonly state: TrainingState,
    private readonly log: (line: string) => void,
    /** The data-parallel group whose gradients are averaged before each step, if any. */
    private readonly group?: ProcessGroup,
  ) {}

  /** What this iteration's loss gradient is multiplied by (fp16; else 1). */
  get lossScale(): number {
    return this.state.scaler.scale;
  }

  /** What iteration `it` (1-based) sums its gradients over, when it ends an accumulation round
   * of data-parallel training. */
  gradientSync(it: number): GradientSync | undefined {
    return this.group && this.plan.endsOptimizerStep(it) ? this.group.gradientSync() : undefined;
  }

  /** Whether iteration `it` (1-based) adds to gradients already held. */
  accumulates(it: number): boolean {
    return (it - 1) % this.plan.accumulate !== 0;
  }

  /** After iteration `it` (1-based) with its loss: an optimizer step when it ends an
   * accumulation round, skipped when the round's loss or gradient is not finite. */
  async afterIteration(it: number, loss: number): Promise<OptimizerRecord> {
    this.roundFinite &&= Number.isFinite(loss);
    if (!this.plan.endsOptimizerStep(it)) return { lr: null, gradNorm: null };
    const state = this.state;
    const lr = this.learningRate();
    const lossScale = this.lossScale;
    const finiteLoss = this.roundFinite;
    this.roundFinite = true;
    // The native step leaves the adapters alone when the gradient norm is not finite.
    const gradNorm = finiteLoss ? await this.step(lr) : NaN;
    state.scaler.update(gradNorm);
    state.optimizerSteps++;
    if (Number.isFinite(gradNorm)) state.skippedInARow = 0;
    else
      this.skip(
        it,
        finiteLoss
          ? `fp16 gradients overflowed (loss scale ${lossScale} -> ${state.scaler.scale})`
          : 'the loss was not finite',
      );
    return { lr, gradNorm: Number.isFinite(gradNorm) ? gradNorm : null };
  }

  /** Clips and steps; the step's backward summed the gradients over the group, if any
   * (gradientSync), and they are divided by its size here. */
  private async step(lr: number): Promise<number> {
    return this.prior.optimizerStep({ ...this.stepOptions(lr), processes: this.group?.size ?? 1 }, this.adamStep());
  }

  private learningRate(): number {
    const { lr_scheduler: schedule, optim_wrapper: wrapper } = this.config;
    const factor = lrFactor(
      schedule.type,
      this.state.optimizerSteps,
      this.plan.totalOptimizerSteps,
      schedule.warmup_iters,
    );
    return wrapper.optimizer.lr * factor;
  }

  /** AdamW's own step count (1-based): skipped steps do not count, as in torch. */
  private adamStep(): number {
    return this.state.optimizerSteps - this.state.skippedSteps + 1;
  }

  private stepOptions(lr: number): AdamWOptions {
    const { optimizer, clip_grad: clip } = this.config.optim_wrapper;
    return {
      lr,
      beta1: optimizer.betas[0],
      beta2: optimizer.betas[1],
      eps: optimizer.eps,
      weightDecay: optimizer.weight_decay,
      maxNorm: clip?.max_norm ?? 0,
      lossScale: this.lossScale,
    };
  }

  /** Counts a skipped step. */
  private skip(it: number, why: string): void {
    const state = this.state;
    state.skippedSteps++;
    state.skippedInARow++;
    this.log(
      `lora-train: iteration ${it}: ${why}, so the optimizer step was skipped (${state.skippedInARow} in a row, ${state.skippedSteps} in all)`,
    );
  }

  /** Throws a DivergedError when max_consecutive_skips steps in a row up to iteration `it`
   * were skipped. */
  checkConverging(it: number): void {
    const limit = this.config.optim_wrapper.max_consecutive_skips;
    if (this.state.skippedInARow < limit) return;
    throw new DivergedError(
      `lora-train: training diverged: ${this.state.skippedInARow} optimizer steps in a row (up to iteration ${it}) had a non-finite loss or gradient ` +
        `(optim_wrapper.max_consecutive_skips: ${limit}). Lower optim_wrapper.optimizer.lr or set optim_wrapper.clip_grad; ` +
        'the checkpoints and LoRA already written stay as they were.',
    );
  }
}
