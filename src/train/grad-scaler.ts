// Dynamic loss scaling for fp16 mixed precision, with torch.amp.GradScaler's rules and
// defaults: start at 2^16, halve and skip the step when gradients overflow, double after 2000
// steps in a row without one.
export interface GradScalerState {
  scale: number;
  /** Finite steps since the scale last changed. */
  growthTracker: number;
}

export class GradScaler {
  private state: GradScalerState;
  constructor(
    readonly enabled: boolean,
    state?: GradScalerState,
    private readonly growthInterval = 2000,
  ) {
    this.state = state ? { ...state } : { scale: enabled ? 2 ** 16 : 1, growthTracker: 0 };
  }

  /** What the loss's gradient is multiplied by (1 when disabled). */
  get scale(): number {
    return this.enabled ? this.state.scale : 1;
  }

  /** Records an optimizer step's gradient norm; returns whether the step was skipped. */
  update(gradNorm: number): boolean {
    if (!this.enabled) return false;
    if (!Number.isFinite(gradNorm)) {
      this.state = { scale: this.state.scale * 0.5, growthTracker: 0 };
      return true;
    }
    this.state.growthTracker++;
    if (this.state.growthTracker === this.growthInterval)
      this.state = { scale: this.state.scale * 2, growthTracker: 0 };
    return false;
  }

  toJSON(): GradScalerState {
    return { ...this.state };
  }
}
