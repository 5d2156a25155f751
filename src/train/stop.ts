// SIGINT and SIGTERM during training: the current step finishes, a checkpoint is written and
// the run returns, instead of the process dying mid-write.
export class StopRequest {
  private requested = false;
  private readonly onSignal = () => {
    this.requested = true;
    this.log('lora-train: stopping after this step (a checkpoint will be written)');
  };

  constructor(private readonly log: (line: string) => void) {
    process.on('SIGINT', this.onSignal);
    process.on('SIGTERM', this.onSignal);
  }

  get stopRequested(): boolean {
    return this.requested;
  }

  dispose(): void {
    process.off('SIGINT', this.onSignal);
    process.off('SIGTERM', this.onSignal);
  }
}
