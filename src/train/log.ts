// What a run reports per iteration: a line of work_dir/log.jsonl (step, epoch, loss, lr,
// grad_norm, seconds), a progress bar on a terminal, and a plain line every logger interval
// elsewhere (CI logs, pipes).
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { Progress } from '../core/progress.js';
import type { OptimizerRecord } from './optimizer.js';
import type { TrainingPlan } from './plan.js';

export class TrainingLog {
  private readonly file: string;
  private readonly bar: Progress;
  private readonly start = Date.now();

  constructor(
    workDir: string,
    private readonly plan: TrainingPlan,
    fromIteration: number,
    private readonly log: (line: string) => void,
  ) {
    mkdirSync(workDir, { recursive: true });
    this.file = join(workDir, 'log.jsonl');
    this.bar = new Progress('train', plan.totalIters - fromIteration);
  }

  record(step: number, epoch: number, loss: number, { lr, gradNorm }: OptimizerRecord): void {
    const seconds = (Date.now() - this.start) / 1000;
    appendFileSync(this.file, `${JSON.stringify({ step, epoch, loss, lr, grad_norm: gradNorm, seconds })}\n`);
    this.bar.tick(1, `loss ${loss.toFixed(4)} lr ${lr === null ? '-' : lr.toExponential(2)}`);
    if (!process.stderr.isTTY && this.plan.logLineDue(step))
      this.log(`iter ${step}/${this.plan.totalIters} epoch ${epoch} loss ${loss.toFixed(5)}`);
  }
}
