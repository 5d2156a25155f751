// SIGINT and SIGTERM during training: the current step finishes, a checkpoint is written and
// the run returns, instead of the process dying mid-write. A second signal is obeyed at once
// (every file is written atomically, so nothing is left half-written).
export class StopRequest {
  private received: NodeJS.Signals | undefined;
  private readonly onSignal = (signal: NodeJS.Signals) => {
    if (this.received) {
      this.log(`lora-train: ${signal} again: stopping now, without a checkpoint`);
      this.dispose();
      this.obey(signal);
      return;
    }
    this.received = signal;
    this.log(`lora-train: stopping after this step (a checkpoint will be written; ${signal} again stops at once)`);
  };

  constructor(
    private readonly log: (line: string) => void,
    /** What a second signal does: the signal's default action, ending the process. */
    private readonly obey: (signal: NodeJS.Signals) => unknown = (signal) => process.kill(process.pid, signal),
  ) {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  get stopRequested(): boolean {
    return this.received !== undefined;
  }

  /** The signal that asked the run to stop, if one did. */
  get signal(): NodeJS.Signals | undefined {
    return this.received;
  }

  dispose(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
