// The time from the start of a run to its first step, and its parts (the weights, the
// embeddings, the first step itself): what users compare trainers by before the steps settle.

export class StartupTimes {
  private readonly start = performance.now();
  private last = this.start;
  private readonly parts: [string, number][] = [];

  /** Ends the part `name` now. */
  mark(name: string): void {
    const now = performance.now();
    this.parts.push([name, (now - this.last) / 1000]);
    this.last = now;
  }

  /** One log line: the total and each part, in seconds. */
  report(): string {
    const total = (this.last - this.start) / 1000;
    const parts = this.parts.map(([name, s]) => `${name} ${s.toFixed(1)} s`).join(', ');
    return `lora-train: first step after ${total.toFixed(1)} s (${parts})`;
  }
}
