// Every test's temporary files go under one folder made for the run and removed after it, so
// that runs leave nothing behind in the system's temp folder. Workers and the processes tests
// spawn inherit TMPDIR, which os.tmpdir() and Python's tempfile read.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export default function setup(): () => void {
  const previous = process.env.TMPDIR;
  const runDir = mkdtempSync(join(tmpdir(), 'lora-train-tests-'));
  process.env.TMPDIR = runDir;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    rmSync(runDir, { recursive: true, force: true });
  };
}
