// The adapters' optimizer as diffengine and diffusers run it: AdamW with global grad-norm
// clipping once per accumulative_counts iterations, the learning rate from diffusers' schedules,
// and in fp16 torch's dynamic loss scaling (an overflowing step is skipped, AdamW's step count
// with it, and the scale halves; the LR schedule moves on).
import type { LoraTrainConfig } from '../config/schema.js';
import type { Prior } from '../models/prior.js';
import type { TrainingState } from './checkpoints.js';
import type { TrainingPlan } from './plan.js';
import { lrFactor } from './schedule.js';

export interface OptimizerRecord {
  /** The learning rate of the step taken after this iteration, else null. */
  lr: number | null;
  /** The gradient norm before clipping (null: no step, or not finite). */
  gradNorm: number | null;
}

export class AdapterOptimizer {
  constructor(
    private readonly prior: Prior,
    private readonly config: LoraTrainConfig,
    private readonly plan: TrainingPlan,
    private readonly state: TrainingState,
    private readonly log: (line: string) => void,
  ) {}

  /** What this iteration's loss gradient is multiplied by (fp16; else 1). */
  get lossScale(): number {
    return this.state.scaler.scale;
  }

  /** Whether iteration `it` (1-based) adds to gradients already held. */
  accumulates(it: number): boolean {
    return (it - 1) % this.plan.accumulate !== 0;
  }

  /** After iteration `it` (1-based): an optimizer step when it ends an accumulation round. */
  async afterIteration(it: number): Promise<OptimizerRecord> {
    if (!this.plan.endsOptimizerStep(it)) return { lr: null, gradNorm: null };
    const { optimizer, clip_grad: clip } = this.config.optim_wrapper;
    const { lr_scheduler: schedule } = this.config;
    const state = this.state;
    const lr =
      optimizer.lr *
      lrFactor(schedule.type, state.optimizerSteps, this.plan.totalOptimizerSteps, schedule.warmup_iters);
    const lossScale = this.lossScale;
    const gradNorm = await this.prior.optimizerStep(
      {
        lr,
        beta1: optimizer.betas[0],
        beta2: optimizer.betas[1],
        eps: optimizer.eps,
        weightDecay: optimizer.weight_decay,
        maxNorm: clip?.max_norm ?? 0,
        lossScale,
      },
      state.optimizerSteps - state.skippedSteps + 1,
    );
    if (state.scaler.update(gradNorm)) {
      state.skippedSteps++;
      this.log(
        `lora-train: fp16 gradients overflowed at iteration ${it}: step skipped, loss scale ${lossScale} -> ${state.scaler.scale}`,
      );
    }
    state.optimizerSteps++;
    return { lr, gradNorm: Number.isFinite(gradNorm) ? gradNorm : null };
  }
}
