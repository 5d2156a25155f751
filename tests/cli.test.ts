import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';

const bin = join(import.meta.dirname, '..', 'bin', 'lora-train.js');
const run = (...args: string[]) => runWith({}, ...args);
const runWith = (env: Record<string, string>, ...args: string[]) => spawnSync(process.execPath, [bin, ...args], { encoding: 'utf8', env: { ...process.env, ...env } });

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

  it('LORA_TRAIN_CPU_KERNEL forces a kernel set, and refuses one the CPU lacks', () => {
    const generic = runWith({ LORA_TRAIN_CPU_KERNEL: 'generic' }, 'info');
    expect(generic.status).toBe(0);
    expect(JSON.parse(generic.stdout).cpu.kernels).toBe('generic');
    const impossible = runWith({ LORA_TRAIN_CPU_KERNEL: 'avx9' }, 'info');
    expect(impossible.status).toBe(1);
    expect(impossible.stderr).toMatch(/LORA_TRAIN_CPU_KERNEL=avx9 is not available on this CPU \(available: .*generic\)/);
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
