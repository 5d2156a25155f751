// What a run reports per iteration: a line of work_dir/log.jsonl (step, epoch, loss, lr,
// grad_norm, seconds; a non-finite loss is null), a progress bar on a terminal, and a plain
// line every logger interval elsewhere (CI logs, pipes).
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Progress } from '../core/progress.js';
import { writeError, writeFileDurably } from '../io/atomic.js';
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
    truncateLog(this.file, fromIteration);
    this.bar = new Progress('train', plan.totalIters - fromIteration);
  }

  record(step: number, epoch: number, loss: number, { lr, gradNorm }: OptimizerRecord): void {
    const seconds = (Date.now() - this.start) / 1000;
    try {
      appendFileSync(this.file, `${JSON.stringify({ step, epoch, loss, lr, grad_norm: gradNorm, seconds })}\n`);
    } catch (e) {
      throw writeError(this.file, e, 'the run stops here; resume it from its last checkpoint');
    }
    this.bar.tick(1, `loss ${loss.toFixed(4)} lr ${lr === null ? '-' : lr.toExponential(2)}`);
    if (!process.stderr.isTTY && this.plan.logLineDue(step))
      this.log(`iter ${step}/${this.plan.totalIters} epoch ${epoch} loss ${loss.toFixed(5)}`);
  }
}

/** Cuts a log back to the steps up to `iteration`: a run resumed from a checkpoint repeats the
 * steps a killed run logged after it, and a fresh run starts an empty log. A line cut short by
 * the kill goes too. */
function truncateLog(file: string, iteration: number): void {
  if (!existsSync(file)) return;
  const lines = readFileSync(file, 'utf8').split('\n');
  const kept = lines.filter((line) => {
    try {
      const { step } = JSON.parse(line) as { step?: unknown };
      return typeof step === 'number' && step <= iteration;
    } catch {
      return false;
    }
  });
  if (kept.length !== lines.length - 1 || lines.at(-1) !== '')
    writeFileDurably(file, kept.map((line) => `${line}\n`).join(''));
}
