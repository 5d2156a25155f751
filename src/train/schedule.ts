// Learning-rate schedules with diffusers' semantics (get_*_schedule_with_warmup): the
// optimizer step k (0-based) of K uses base_lr * factor(k).
export type ScheduleName = 'constant' | 'constant_with_warmup' | 'linear' | 'cosine';

export function lrFactor(name: ScheduleName, k: number, total: number, warmup: number): number {
  if (name === 'constant') return 1;
  if (k < warmup) return k / Math.max(1, warmup);
  if (name === 'constant_with_warmup') return 1;
  const progress = (k - warmup) / Math.max(1, total - warmup);
  if (name === 'linear') return Math.max(0, 1 - progress);
  return Math.max(0, 0.5 * (1 + Math.cos(Math.PI * progress)));
}
