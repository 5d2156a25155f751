// One trainer per work dir. Two runs writing the same checkpoints, log and LoRA file would
// interleave them, so a run holds work_dir/.lock (its PID, host and start time) from start to
// end. A lock whose process is gone (a crash, kill -9) is taken over; one held by a live
// process stops the second run at once, naming both.
import { hostname } from 'node:os';
import { join } from 'node:path';
import { existsSync, linkSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { removeTemporaries, writeError } from '../io/atomic.js';

interface LockOwner {
  pid: number;
  host: string;
  started: string;
}

export class WorkDirLock {
  private constructor(
    readonly file: string,
    private readonly owner: LockOwner,
  ) {}

  /** Takes work_dir/.lock, or throws naming the run that holds it. */
  static acquire(workDir: string, log: (line: string) => void): WorkDirLock {
    if (existsSync(workDir) && !statSync(workDir).isDirectory())
      throw new Error(`${workDir}: work_dir is a file, not a folder`);
    mkdirSync(workDir, { recursive: true });
    const file = join(workDir, '.lock');
    const owner: LockOwner = { pid: process.pid, host: hostname(), started: new Date().toISOString() };
    // Written whole beside the lock, then linked into place: link fails if the lock exists, so
    // of two runs starting together exactly one wins, and a lock is never seen half-written.
    const draft = join(workDir, `..lock.${process.pid}.tmp`);
    try {
      writeFileSync(draft, JSON.stringify(owner));
    } catch (e) {
      throw writeError(draft, e, 'the work dir must be writable to train in it');
    }
    try {
      for (let attempt = 0; ; attempt++) {
        try {
          linkSync(draft, file);
          return new WorkDirLock(file, owner);
        } catch (e) {
          if ((e as NodeJS.ErrnoException).code !== 'EEXIST' || attempt > 0) throw e;
        }
        const holder = readOwner(file);
        if (holder && isAlive(holder))
          throw new Error(
            `${file}: another lora-train run (PID ${holder.pid} on ${holder.host}, started ${holder.started}) is training in ${workDir}; ` +
              'wait for it to end or stop it, or choose another --work-dir' +
              (holder.host === hostname()
                ? ''
                : ` (if that run has ended, remove ${file}: another host's process cannot be checked)`),
          );
        log(
          `lora-train: taking over ${file}, left by ${holder ? `PID ${holder.pid}, which has ended` : 'a run that ended'}`,
        );
        rmSync(file, { force: true });
      }
    } finally {
      rmSync(draft, { force: true });
    }
  }

  /** Gives the lock up, unless another run has since taken it over. */
  release(): void {
    if (readOwner(this.file)?.pid === this.owner.pid) rmSync(this.file, { force: true });
  }
}

function readOwner(file: string): LockOwner | undefined {
  try {
    const owner = JSON.parse(readFileSync(file, 'utf8')) as Partial<LockOwner>;
    if (typeof owner.pid === 'number' && typeof owner.host === 'string') return owner as LockOwner;
  } catch {
    // gone, or not a lock this code wrote: nobody holds it
  }
  return undefined;
}

/** Whether the lock's process runs. On another host this cannot be told, so it counts as live. */
function isAlive({ pid, host }: LockOwner): boolean {
  if (host !== hostname()) return true;
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM'; // alive, but another user's
  }
}

/** Removes what a killed or failed write left in the work dir: temporary checkpoint folders
 * and temporary files beside the LoRA file and the samples. */
export function removeLeftovers(workDir: string, log: (line: string) => void): void {
  for (const folder of [workDir, join(workDir, 'checkpoints'), join(workDir, 'vis_data')]) {
    const removed = removeTemporaries(folder);
    if (removed.length)
      log(`lora-train: removed ${removed.length} unfinished write(s) in ${folder}: ${removed.join(', ')}`);
  }
}
