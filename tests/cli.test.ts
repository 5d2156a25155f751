import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const bin = join(import.meta.dirname, '..', 'bin', 'lora-train.js');
const run = (...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8' });

describe('lora-train CLI', () => {
  it('--help lists every training option', () => {
    const r = run('--help');
    expect(r.status).toBe(0);
    for (const option of ['--config', '--work-dir', '--cfg-options', '--resume', '--device', '--seed', 'info']) expect(r.stdout).toContain(option);
  });

  it('info reports the built backends and the CPU kernel set', () => {
    const r = run('info');
    expect(r.status).toBe(0);
    const info = JSON.parse(r.stdout);
    expect(info.backends).toContain('cpu');
    expect(info.cpu.availableKernels).toContain(info.cpu.kernels);
    expect(info.cpu.threads).toBeGreaterThan(0);
  });

  it('rejects unknown options and bad choices with the help text', () => {
    const unknown = run('--confg', 'x');
    expect(unknown.status).toBe(2);
    expect(unknown.stderr).toContain('Unknown argument: confg');
    const device = run('--device', 'tpu');
    expect(device.status).toBe(2);
    expect(device.stderr).toMatch(/Invalid values:\s+Argument: device, Given: "tpu", Choices: "cpu", "cuda"/);
  });
});
