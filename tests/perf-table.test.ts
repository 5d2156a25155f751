// README's performance table is generated from a bench run's output (scripts/perf-table.mjs):
// it must be what the files in docs/bench give, so that nobody types figures into it by hand.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { renderTable } from '../scripts/perf-table.mjs';

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

  it("renders a run's GEMM probe and a step profile, and leaves profile lines out of the main table", () => {
    const lines = [
      { name: 'machine', cpu: 'x', cores: 2, kernels: 'avx2', peak_gflops: 200, gemm_probe_gflops: [170.5, 120.25] },
      { name: 'prior_lora_step', shape: 's', seconds: 0.5, gflops: null, peer: null },
      {
        name: 'prior_lora_step_profile',
        shape: 's',
        kernels: 'avx2',
        wall_ms: 500,
        categories: [{ part: 'attention', ms: 150, share: 0.3, gflops: 90, of_peak: 0.45 }],
        ops: [{ part: 'gelu_forward', calls: 4, ms: 12.5, share: 0.025, gflops: null, of_peak: null }],
      },
    ];
    const table = renderTable(lines.map((l) => JSON.stringify(l)).join('\n'), 'run.jsonl');
    expect(table).toContain('ran at 170.5 GFLOP/s before the cases and 120.25 after');
    expect(table).toContain('Where one step of `prior_lora_step s` spends its 500.0 ms');
    expect(table).toContain('| attention |  | 150.0 ms | 30.0% | 90 GFLOP/s (45% of peak) |');
    expect(table).toContain('| gelu_forward | 4 | 12.5 ms | 2.5% |  |');
    expect(table.match(/^\| prior_lora_step_profile/m)).toBeNull();
  });
});
