// README's performance table is generated from a bench run's output (scripts/perf-table.mjs):
// it must be what the files in docs/bench give, so that nobody types figures into it by hand.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const script = join(import.meta.dirname, '..', 'scripts', 'perf-table.mjs');
const run = (...args: string[]) => spawnSync(process.execPath, [script, ...args], { encoding: 'utf8' });

describe('the performance table', () => {
  it("is README's, written from every docs/bench/*.jsonl", () => {
    const r = run('--check');
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
  });

  it('is refused from a file that is not bench output, and a changed figure fails the check', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lora-train-perf-'));
    const notBench = join(dir, 'notes.jsonl');
    writeFileSync(notBench, '{"name":"gemm","shape":"1x1x1","seconds":1}\n');
    expect(run('--check', notBench).stderr).toContain('no machine line');
    const other = join(dir, 'other.jsonl');
    writeFileSync(
      other,
      '{"name":"machine","cpu":"x","cores":2,"kernels":"avx2"}\n{"name":"gemm","shape":"1x1x1","seconds":2}\n',
    );
    const r = run('--check', other);
    expect(r.status).toBe(1);
    expect(r.stderr).toContain("README.md's performance table is not the one");
  });
});
