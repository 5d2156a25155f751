// Progress reporting: a redrawn bar on a TTY, plain periodic lines elsewhere (CI logs, pipes).
export interface ProgressOptions {
  /** Stream to write to (default process.stderr). */
  stream?: NodeJS.WriteStream | { write(s: string): boolean; isTTY?: boolean };
  /** Minimum milliseconds between non-TTY lines (default 5000). */
  lineInterval?: number;
  /** Counts bytes: shown as kB/MB/GB and a byte rate (default: items, it/s). */
  bytes?: boolean;
  /** What the items are, for the rate: "images" shows images/s (default "it"). */
  unit?: string;
}

/** n bytes in decimal units, as huggingface_hub's progress bars show them. */
export function formatBytes(n: number): string {
  const units = ['B', 'kB', 'MB', 'GB', 'TB'];
  let i = 0;
  for (; n >= 1000 && i < units.length - 1; i++) n /= 1000;
  return `${n.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}

export class Progress {
  private done = 0;
  private readonly start = Date.now();
  private lastLine = 0;
  private readonly stream: NonNullable<ProgressOptions['stream']>;
  private readonly tty: boolean;
  private readonly lineInterval: number;
  private readonly bytes: boolean;
  private readonly unit: string;

  constructor(
    private readonly label: string,
    private readonly total: number,
    options: ProgressOptions = {},
  ) {
    // In a data-parallel run only rank 0 reports progress; the others' bars would interleave.
    const quiet = !options.stream && Number(process.env.RANK ?? process.env.SLURM_PROCID ?? 0) > 0;
    this.stream = options.stream ?? (quiet ? { write: () => true } : process.stderr);
    this.tty = !!this.stream.isTTY;
    this.lineInterval = options.lineInterval ?? 5000;
    this.bytes = options.bytes ?? false;
    this.unit = options.unit ?? 'it';
  }

  /** Advances by n and redraws; `status` is appended (e.g. "loss 0.123"). */
  tick(n = 1, status = ''): void {
    this.done += n;
    const now = Date.now();
    const finished = this.done >= this.total;
    if (!this.tty && !finished && now - this.lastLine < this.lineInterval) return;
    this.lastLine = now;
    this.stream.write(this.render(status) + (this.tty && !finished ? '\r' : '\n'));
  }

  render(status = ''): string {
    const seconds = (Date.now() - this.start) / 1000;
    const rate = seconds > 0 ? this.done / seconds : 0;
    const eta = rate > 0 ? (this.total - this.done) / rate : 0;
    const fraction = this.total > 0 ? Math.min(1, this.done / this.total) : 1;
    const width = 24;
    const bar = '#'.repeat(Math.round(fraction * width)).padEnd(width, '.');
    const time = (s: number) => `${Math.floor(s / 60)}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
    const counts = this.bytes
      ? `${formatBytes(this.done)}/${formatBytes(this.total)} ${formatBytes(rate)}/s`
      : `${this.done}/${this.total} ${rate.toFixed(2)} ${this.unit}/s`;
    return `${this.label} [${bar}] ${counts} ETA ${time(eta)}${status ? ` ${status}` : ''}`;
  }
}
